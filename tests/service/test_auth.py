"""API tokens: every route but health, the OpenAPI document and its page needs a live bearer
token (401 in our error format otherwise), only hashes are stored, hashes are compared in
constant time, and last_used_at is written at most once a minute."""

import dataclasses
import hmac
import re

import pytest
from sqlalchemy import select

from service.store.models import ApiToken
from service.store.tokens import create_token, hash_token, list_tokens, revoke_token

from .conftest import API, error_of

# Open without a token (service.api.auth.PUBLIC); the dashboard and static files enforce
# their own login, and are not the API's.
OPEN = ("health", "api-docs", "dashboard", "static")


@pytest.fixture
def settings(settings):
    """No failed-authentication limit: these tests send hundreds of bad tokens from one
    address (test_auth_failures.py tests the limit)."""
    return dataclasses.replace(settings, auth_failure_limit=None)


def protected_requests(app):
    """(method, url) of every route of the app that needs a token, with made-up ids."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] in OPEN:
            continue
        url = rule.rule
        for name in rule.arguments:
            url = re.sub(rf"<(?:[a-z]+:)?{name}>", "1" if "id" in name else "xor", url)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((method, url))
    return found


def revoked(new_token, sessions) -> str:
    token = new_token("alice")
    with sessions() as session:
        [row] = [t for t in list_tokens(session, "alice") if t.token_hash == hash_token(token)]
        assert revoke_token(session, row.id)
        session.commit()
    return token


def assert_401(response, what):
    error = error_of(response, 401)
    assert error["code"] == "unauthorized", what
    assert response.headers["WWW-Authenticate"].startswith("Bearer"), what


def test_every_protected_route_needs_a_live_token(app, new_token, sessions):
    routes = protected_requests(app)
    paths = {url for _, url in routes}
    # The API's own routes are all there (and whatever others add later, /metrics too).
    assert {f"{API}/runs", f"{API}/runs/1", f"{API}/runs/1/history", f"{API}/runs/1/params",
            f"{API}/runs/1/cancel", f"{API}/runs/1/predict", f"{API}/datasets",
            f"{API}/datasets/xor", f"{API}/sweeps", f"{API}/sweeps/preview",
            f"{API}/sweeps/1", f"{API}/sweeps/1/cancel"} <= paths
    assert "metrics" not in app.blueprints or "/metrics" in paths
    client = app.test_client()
    bad = {
        "no header": {},
        "another scheme": {"Authorization": f"Basic {new_token('x')}"},
        "no token": {"Authorization": "Bearer "},
        "unknown token": {"Authorization": "Bearer dsc_not-a-token-anyone-has"},
        "revoked token": {"Authorization": f"Bearer {revoked(new_token, sessions)}"},
    }
    for method, url in routes:
        for case, headers in bad.items():
            response = client.open(url, method=method, headers=headers, json={})
            assert_401(response, (method, url, case))
    # Unknown paths too: nothing about what exists is answered without a token.
    assert_401(client.get(f"{API}/nothing-here"), "unknown path")


def test_health_openapi_and_docs_are_open(app):
    client = app.test_client()
    assert client.get(f"{API}/health").status_code == 200
    assert client.get(f"{API}/openapi.json").status_code == 200
    assert client.get(f"{API}/docs").status_code == 200
    if "dashboard" in app.blueprints:  # its own cookie login decides, not the API's hook
        assert client.get("/").status_code != 401


def test_a_valid_token_passes_and_is_case_insensitive_in_its_scheme(app, token):
    client = app.test_client()
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = client.get(f"{API}/runs", headers={"Authorization": f"{scheme} {token}"})
        assert response.status_code == 200, (scheme, response.get_json())


def test_the_openapi_document_declares_the_bearer_scheme(app):
    document = app.test_client().get(f"{API}/openapi.json").get_json()
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer",
        "description": "an API token from `descent token create`"}
    assert document["security"] == [{"bearerAuth": []}]
    assert document["paths"][f"{API}/health"]["get"]["security"] == []
    assert "security" not in document["paths"][f"{API}/runs"]["post"]  # the global one


def test_only_the_hash_is_stored(new_token, sessions):
    token = new_token("alice")
    assert token.startswith("dsc_") and len(token) > 40
    with sessions() as session:
        rows = list(session.scalars(select(ApiToken)))
        stored = [str(getattr(row, column.key)) for row in rows
                  for column in ApiToken.__table__.columns]
    assert not any(token in value for value in stored)
    assert [row.token_hash for row in rows] == [hash_token(token)]
    assert rows[0].prefix == token[:12] and rows[0].user == "alice"


def test_hashes_are_compared_in_constant_time(client, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert client.get(f"{API}/runs").status_code == 200
    assert len(calls) == 1 and calls[0][0] == calls[0][1]


def test_last_used_at_is_written_at_most_once_a_minute(client, token, sessions, monkeypatch):
    from service.api import auth

    def last_used():
        with sessions() as session:
            return session.scalar(select(ApiToken.last_used_at)
                                  .where(ApiToken.token_hash == hash_token(token)))

    assert last_used() is None
    writes = []
    real = auth.store_tokens.touch_token
    monkeypatch.setattr(auth.store_tokens, "touch_token",
                        lambda *args, **kwargs: writes.append(args) or real(*args, **kwargs))
    for _ in range(5):
        assert client.get(f"{API}/runs").status_code == 200
    first = last_used()
    assert first is not None and len(writes) == 1
    # A minute later (this process's clock), the next request writes it again.
    later = auth.clock() + 61
    monkeypatch.setattr(auth, "clock", lambda: later)
    with sessions() as session:  # as if written a minute ago by any process
        session.execute(ApiToken.__table__.update().values(last_used_at=first.replace(
            year=first.year - 1)))
        session.commit()
    assert client.get(f"{API}/runs").status_code == 200
    assert len(writes) == 2 and last_used().year == first.year


def test_touch_token_skips_a_recent_write(sessions):
    from service.store.tokens import touch_token

    with sessions() as session:
        create_token(session, "alice")
        session.commit()
        [row] = list_tokens(session)
        touch_token(session, row.id)
        session.commit()
        first = session.scalar(select(ApiToken.last_used_at))
        touch_token(session, row.id)  # within the interval: no change
        session.commit()
        assert session.scalar(select(ApiToken.last_used_at)) == first


@pytest.mark.parametrize("header", ["Bearer a b", "Token abc", "Bearer", "dsc_abc"])
def test_malformed_headers_are_401(app, header):
    assert_401(app.test_client().get(f"{API}/runs", headers={"Authorization": header}), header)

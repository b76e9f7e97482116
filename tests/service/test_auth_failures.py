"""Failed authentications per client address (DESCENT_AUTH_FAILURE_LIMIT): a client rotating
made-up tokens is answered 429 with Retry-After once over its budget, before any token is
looked up; other addresses and successful requests are not affected; health never refuses."""

import dataclasses
import secrets

import pytest

from service.api import auth
from service.settings import Settings

from ..conftest import build_app, close_app
from .conftest import API, error_of


@pytest.fixture
def database_backend():
    """SQLite only: the counts live in the limiter's storage, not in the database."""
    return "sqlite"


@pytest.fixture
def failure_app(settings, app_sessions):
    """failure_app(limit, storage=None): a new app with that failed-authentication limit
    (on the test's database connection)."""
    apps = []

    def make(limit, storage=None, **changes):
        app = build_app(dataclasses.replace(settings, auth_failure_limit=limit,
                                            ratelimit_storage_url=storage, **changes),
                        app_sessions, TESTING=True)
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_app(app)


@pytest.fixture
def lookups(monkeypatch):
    """The tokens looked up in the database (a spy around the real query)."""
    seen = []
    real = auth.store_tokens.live_token

    def spy(session, token):
        seen.append(token)
        return real(session, token)

    monkeypatch.setattr(auth.store_tokens, "live_token", spy)
    return seen


def from_address(app, address="192.0.2.1"):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def random_token() -> dict:
    return {"Authorization": f"Bearer dsc_{secrets.token_urlsafe(24)}"}


def test_rotating_invalid_tokens_get_429_before_any_lookup(failure_app, lookups):
    client = from_address(failure_app("5/minute"))
    for _ in range(5):
        assert client.get(f"{API}/runs", headers=random_token()).status_code == 401
    assert len(lookups) == 5
    for _ in range(20):
        response = client.get(f"{API}/runs", headers=random_token())
        error = error_of(response, 429)
        assert error["code"] == "too_many_requests"
        assert "failed authentications" in error["message"]
        assert 0 < int(response.headers["Retry-After"]) <= 60
    assert len(lookups) == 5  # the blocked tries cost no query


def test_the_default_limit_stops_rotation_after_30(app, lookups):
    client = from_address(app)
    statuses = [client.get(f"{API}/runs", headers=random_token()).status_code
                for _ in range(40)]
    assert statuses == [401] * 30 + [429] * 10
    assert len(lookups) == 30


def test_a_valid_token_works_from_another_address(failure_app, token):
    app = failure_app("3/minute")
    attacker = from_address(app, "192.0.2.1")
    for _ in range(3):
        error_of(attacker.get(f"{API}/runs", headers=random_token()), 401)
    error_of(attacker.get(f"{API}/runs", headers=random_token()), 429)
    # The blocked address is refused before its token is read, a valid one included.
    error_of(attacker.get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"}), 429)
    other = from_address(app, "198.51.100.7")
    assert other.get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"}) \
        .status_code == 200


def test_missing_tokens_and_other_schemes_count_as_failures(failure_app):
    client = from_address(failure_app("2/minute"))
    error_of(client.get(f"{API}/runs"), 401)
    error_of(client.get(f"{API}/datasets", headers={"Authorization": "Basic abc"}), 401)
    error_of(client.get(f"{API}/runs"), 429)


def test_successful_requests_do_not_consume_the_budget(failure_app, token):
    client = from_address(failure_app("2/minute"))
    good = {"Authorization": f"Bearer {token}"}
    for _ in range(10):
        assert client.get(f"{API}/runs", headers=good).status_code == 200
    error_of(client.get(f"{API}/runs", headers=random_token()), 401)
    error_of(client.get(f"{API}/runs", headers=random_token()), 401)
    error_of(client.get(f"{API}/runs", headers=random_token()), 429)


def test_health_never_refuses_but_counts_bad_tokens(failure_app, lookups):
    client = from_address(failure_app("3/minute"))
    for _ in range(6):  # made-up tokens on health: anonymous answers, never a 401 or 429
        response = client.get(f"{API}/health", headers=random_token())
        assert response.status_code == 200
        assert "workers" not in response.get_json()
    assert client.get(f"{API}/health").status_code == 200  # no token: not a failure
    assert len(lookups) == 3  # health is no way around the budget either
    error_of(client.get(f"{API}/runs", headers=random_token()), 429)


def test_no_limit_when_set_empty(failure_app):
    client = from_address(failure_app(None))
    for _ in range(40):
        error_of(client.get(f"{API}/runs", headers=random_token()), 401)


def test_a_storage_outage_lets_requests_through(failure_app, token):
    client = from_address(failure_app("1/minute", storage="redis://127.0.0.1:1/0"))
    for _ in range(3):
        error_of(client.get(f"{API}/runs", headers=random_token()), 401)
    assert client.get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"}) \
        .status_code == 200


@pytest.mark.redis
def test_two_instances_share_the_failures_through_redis(failure_app, redis_url, lookups):
    first = from_address(failure_app("2/minute", storage=redis_url))
    second = from_address(failure_app("2/minute", storage=redis_url))
    error_of(first.get(f"{API}/runs", headers=random_token()), 401)
    error_of(second.get(f"{API}/runs", headers=random_token()), 401)
    response = first.get(f"{API}/runs", headers=random_token())
    error_of(response, 429)
    assert int(response.headers["Retry-After"]) > 0
    assert len(lookups) == 2


def test_settings_from_the_environment():
    assert Settings.from_env({}).auth_failure_limit == "30/minute"
    assert Settings.from_env({"DESCENT_AUTH_FAILURE_LIMIT": "5/second;100/hour"}) \
        .auth_failure_limit == "5/second;100/hour"
    assert Settings.from_env({"DESCENT_AUTH_FAILURE_LIMIT": ""}).auth_failure_limit is None


def test_redis_counts_have_socket_timeouts():
    """A hung Redis must not hold every request forever (redis-py's default: no timeout)."""
    from flask import Flask

    from service.api import ratelimit
    from service.web import authfailures

    settings = Settings(broker_url="redis://127.0.0.1:1/0", rate_limit="5/minute")
    failures = authfailures.failed_authentications(settings)
    limiter = ratelimit.install(Flask("bare"), settings)
    for storage in (failures.strategy.storage, limiter.storage):
        options = storage.storage.connection_pool.connection_kwargs
        assert (options["socket_timeout"], options["socket_connect_timeout"]) == (1, 1)

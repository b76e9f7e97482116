"""The dashboard's login form under DESCENT_AUTH_FAILURE_LIMIT: guessed tokens are counted
per client address, in the one budget the API's bearer tokens count into; over it the login
page answers 429 (the form still shown, a readable message, Retry-After) before the pasted
token is looked up. Successful logins cost nothing."""

import dataclasses
import re
import secrets

import pytest

from service.store import tokens as store_tokens

from ..conftest import build_app, close_app
from .conftest import API, error_of


@pytest.fixture
def database_backend():
    """SQLite only: the counts live in the limiter's storage, not in the database."""
    return "sqlite"


@pytest.fixture
def limited_app(settings, app_sessions):
    """limited_app(limit, storage=None): a new app with that failed-authentication limit."""
    apps = []

    def make(limit, storage=None):
        app = build_app(dataclasses.replace(settings, auth_failure_limit=limit,
                                            ratelimit_storage_url=storage),
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
    real = store_tokens.live_token

    def spy(session, token):
        seen.append(token)
        return real(session, token)

    monkeypatch.setattr(store_tokens, "live_token", spy)
    return seen


def browser_at(app, address="192.0.2.1"):
    """A test client (cookies kept, no Authorization header) from ``address``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def guess(token=None):
    return token or f"dsc_{secrets.token_urlsafe(24)}"


def post_login(browser, token):
    page = browser.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return browser.post("/login", data={"token": token, "csrf_token": csrf})


def assert_refused(response):
    """A 429 login page: readable message, the form still there, Retry-After."""
    assert response.status_code == 429
    assert response.mimetype == "text/html"
    assert "too many failed logins from this address; try again in" in response.text
    assert 'name="token"' in response.text and 'name="csrf_token"' in response.text
    assert 0 < int(response.headers["Retry-After"]) <= 60


def test_guessed_tokens_get_429_before_any_lookup(limited_app, lookups):
    browser = browser_at(limited_app("5/minute"))
    for _ in range(5):
        response = post_login(browser, guess())
        assert response.status_code == 401 and "unknown or revoked token" in response.text
    assert len(lookups) == 5
    for _ in range(20):
        assert_refused(post_login(browser, guess()))
    assert len(lookups) == 5  # the refused tries cost no query
    # The page itself still opens (only a try is refused).
    assert browser.get("/login").status_code == 200


def test_the_default_limit_stops_guessing_after_30(app, lookups):
    browser = browser_at(app)
    statuses = [post_login(browser, guess()).status_code for _ in range(35)]
    assert statuses == [401] * 30 + [429] * 5
    assert len(lookups) == 30


def test_a_blocked_address_cannot_log_in_but_another_can(limited_app, token):
    app = limited_app("2/minute")
    attacker = browser_at(app, "192.0.2.1")
    for _ in range(2):
        assert post_login(attacker, guess()).status_code == 401
    assert_refused(post_login(attacker, token))  # refused before the token is read
    other = browser_at(app, "198.51.100.7")
    assert post_login(other, token).status_code == 302


def test_successful_logins_do_not_consume_the_budget(limited_app, token):
    app = limited_app("2/minute")
    for _ in range(10):  # a new browser each time: a logged-in one is sent past the form
        assert post_login(browser_at(app), token).status_code == 302
    browser = browser_at(app)
    assert post_login(browser, guess()).status_code == 401
    assert post_login(browser, guess()).status_code == 401
    assert_refused(post_login(browser, guess()))


def test_api_failures_and_login_failures_share_one_budget(limited_app):
    app = limited_app("4/minute")
    api, browser = browser_at(app), browser_at(app)
    for _ in range(2):
        error_of(api.get(f"{API}/runs", headers={"Authorization": f"Bearer {guess()}"}), 401)
    for _ in range(2):
        assert post_login(browser, guess()).status_code == 401
    assert_refused(post_login(browser, guess()))
    response = api.get(f"{API}/runs", headers={"Authorization": f"Bearer {guess()}"})
    assert error_of(response, 429)["code"] == "too_many_requests"


def test_login_failures_block_the_api_too(limited_app, token):
    app = limited_app("2/minute")
    browser = browser_at(app)
    for _ in range(2):
        assert post_login(browser, guess()).status_code == 401
    error_of(browser_at(app).get(f"{API}/runs", headers={"Authorization": f"Bearer {token}"}),
             429)


def test_no_limit_when_set_empty(limited_app):
    browser = browser_at(limited_app(None))
    for _ in range(40):
        assert post_login(browser, guess()).status_code == 401


def test_a_storage_outage_lets_logins_through(limited_app, token):
    browser = browser_at(limited_app("1/minute", storage="redis://127.0.0.1:1/0"))
    for _ in range(3):
        assert post_login(browser, guess()).status_code == 401
    assert post_login(browser, token).status_code == 302


@pytest.mark.redis
def test_two_instances_share_login_failures_through_redis(limited_app, redis_url, lookups):
    first = browser_at(limited_app("2/minute", storage=redis_url))
    second = browser_at(limited_app("2/minute", storage=redis_url))
    assert post_login(first, guess()).status_code == 401
    error_of(second.get(f"{API}/runs", headers={"Authorization": f"Bearer {guess()}"}), 401)
    assert_refused(post_login(first, guess()))
    assert len(lookups) == 2

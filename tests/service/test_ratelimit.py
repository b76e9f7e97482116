"""Rate limits per token (DESCENT_RATE_LIMIT): 429 with Retry-After and the JSON error body,
separate budgets per token, counts shared through Redis by several API instances, health
never limited."""

import dataclasses

import pytest

from service.api.ratelimit import storage_url
from service.settings import Settings

from ..conftest import build_app, close_app
from .conftest import API, error_of


@pytest.fixture
def database_backend():
    """SQLite only: the limiter keeps no state in the database."""
    return "sqlite"


@pytest.fixture
def limited_app(settings, app_sessions):
    """limited_app(limit, storage=None): a new app with that rate limit (on the test's
    database connection)."""
    apps = []

    def make(limit: str, storage=None):
        app = build_app(dataclasses.replace(settings, rate_limit=limit,
                                            ratelimit_storage_url=storage),
                        app_sessions, TESTING=True)
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_app(app)


def client_with(app, token):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def test_over_the_limit_is_429_with_retry_after(limited_app, token):
    client = client_with(limited_app("3/minute"), token)
    for _ in range(3):
        assert client.get(f"{API}/runs").status_code == 200
    response = client.get(f"{API}/runs")
    error = error_of(response, 429)
    assert error["code"] == "too_many_requests"
    assert 0 < int(response.headers["Retry-After"]) <= 60
    # every endpoint draws on the same budget
    error_of(client.post(f"{API}/runs", json={"dataset": "xor", "layers": [2, 1]}), 429)


def test_every_route_draws_on_one_budget_per_token(limited_app, token):
    """Three different routes, then a fourth request: one budget, not one per route (each
    route had its own count before, so a client got the limit times the routes)."""
    client = client_with(limited_app("3/minute"), token)
    assert client.get(f"{API}/runs").status_code == 200
    assert client.get(f"{API}/datasets").status_code == 200
    assert client.get(f"{API}/sweeps").status_code == 200
    error_of(client.get(f"{API}/datasets/xor"), 429)
    error_of(client.get(f"{API}/runs"), 429)


def test_health_is_never_limited(limited_app, token):
    client = client_with(limited_app("2/minute"), token)
    for _ in range(5):
        assert client.get(f"{API}/health").status_code in (200, 503)
    assert client.get(f"{API}/runs").status_code == 200


def test_each_token_has_its_own_budget(limited_app, new_token, token):
    app = limited_app("2/minute")
    alice = client_with(app, token)
    bob = client_with(app, new_token("bob"))
    for _ in range(2):
        assert alice.get(f"{API}/runs").status_code == 200
    error_of(alice.get(f"{API}/runs"), 429)
    assert bob.get(f"{API}/runs").status_code == 200
    # a second token of the same user is another budget too: the key is the token
    again = client_with(app, new_token("alice"))
    assert again.get(f"{API}/runs").status_code == 200


def test_requests_without_a_token_are_limited_by_address(limited_app):
    client = limited_app("2/minute").test_client()
    for _ in range(2):
        assert client.get(f"{API}/runs").status_code == 401
    error_of(client.get(f"{API}/runs"), 429)


@pytest.mark.redis
def test_two_instances_share_the_count_through_redis(limited_app, token, redis_url):
    first = client_with(limited_app("3/minute", storage=redis_url), token)
    second = client_with(limited_app("3/minute", storage=redis_url), token)
    assert first.get(f"{API}/runs").status_code == 200
    assert second.get(f"{API}/runs").status_code == 200
    assert first.get(f"{API}/runs").status_code == 200
    response = second.get(f"{API}/runs")
    error_of(response, 429)
    assert int(response.headers["Retry-After"]) > 0


def test_no_limit_when_none_is_configured(client):
    for _ in range(50):
        assert client.get(f"{API}/runs").status_code == 200


def test_storage_defaults_to_the_brokers_redis_else_memory():
    assert storage_url(Settings(broker_url="filesystem://q")) == "memory://"
    assert storage_url(Settings(broker_url="redis://h:6379/0")) == "redis://h:6379/0"
    assert storage_url(Settings(broker_url="redis://h:6379/0",
                                ratelimit_storage_url="redis://other:6379/3")) \
        == "redis://other:6379/3"


def test_settings_from_the_environment():
    settings = Settings.from_env({"DESCENT_RATE_LIMIT": "600/minute",
                                  "DESCENT_RATELIMIT_STORAGE_URL": "redis://h:6379/2",
                                  "DESCENT_MAX_JSON_BYTES": "1000",
                                  "DESCENT_MAX_WORK": "5", "DESCENT_MAX_FEATURES": "7"})
    assert settings.rate_limit == "600/minute"
    assert settings.ratelimit_storage_url == "redis://h:6379/2"
    assert (settings.limits.max_json_bytes, settings.limits.max_work,
            settings.limits.max_features) == (1000, 5, 7)
    assert Settings.from_env({}).rate_limit is None


def test_the_openapi_document_lists_429_except_on_health(client):
    spec = client.get(f"{API}/openapi.json").get_json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert ("429" in operation["responses"]) == (not path.startswith(f"{API}/health")), \
                (method, path)
            assert "default" not in operation["responses"]
    response = spec["components"]["responses"]["TOO_MANY_REQUESTS_RETRY"]
    assert "Retry-After" in response["headers"]

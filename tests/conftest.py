"""Shared fixtures: migrated databases (SQLite, and PostgreSQL when reachable), Redis, an
embedded broker folder and the Flask app.

Tests marked ``postgres`` or ``redis`` skip when those servers are unreachable, unless
DESCENT_REQUIRE_SERVICES=1 (set by .ci/run), which makes them fail instead.
"""

import os
import uuid

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "DESCENT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DESCENT_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REQUIRE_SERVICES = os.environ.get("DESCENT_REQUIRE_SERVICES") == "1"


def _unavailable(what: str, error: Exception):
    message = f"{what} is unreachable: {error}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (DESCENT_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def sqlite_url(tmp_path):
    """A migrated SQLite database file of its own."""
    import migrations

    url = f"sqlite:///{tmp_path / 'descent.db'}"
    migrations.upgrade(url)
    return url


@pytest.fixture(scope="session")
def postgres_server():
    """The admin URL of a reachable PostgreSQL server."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, migrated PostgreSQL database of its own, dropped afterwards."""
    from sqlalchemy import text

    import migrations

    name = f"descent_test_{uuid.uuid4().hex[:12]}"
    with postgres_server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = postgres_server.url.set(database=name).render_as_string(hide_password=False)
    migrations.upgrade(url)
    yield url
    with postgres_server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request):
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def redis_url():
    """A Redis database of its own on the reachable server, emptied before and after."""
    import redis

    index = 1 + (uuid.uuid4().int % 15)
    url = f"{REDIS_URL}/{index}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.flushdb()
    except Exception as exc:
        _unavailable("Redis", exc)
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def embedded_broker_url(tmp_path):
    """A filesystem broker folder of its own (the embedded default transport)."""
    return f"filesystem://{tmp_path / 'queue'}"


@pytest.fixture
def settings(database_url, embedded_broker_url):
    """Settings on the parametrised database and an embedded broker."""
    from service.settings import Settings

    return Settings(database_url=database_url, broker_url=embedded_broker_url)


@pytest.fixture
def app(settings):
    """The Flask app on those settings, with the real queue client."""
    from service.app import create_app

    app = create_app({"SETTINGS": settings, "TESTING": True})
    yield app
    app.extensions["descent"]["engine"].dispose()


def make_token(database_url: str, user: str) -> str:
    """A new API token of ``user`` in the database at ``database_url``."""
    from service.store import make_engine, make_sessionmaker
    from service.store.tokens import create_token

    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            token = create_token(session, user)
            session.commit()
    finally:
        engine.dispose()
    return token


@pytest.fixture
def token(settings):
    """An API token of user "alice" in the test's database."""
    return make_token(settings.database_url, "alice")


@pytest.fixture
def auth_headers(token):
    """Request headers carrying alice's token."""
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(app, token):
    """A Flask test client that sends alice's token with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def client_of(app, settings):
    """A factory: ``client_of("bob")`` is a test client with a new token of user bob."""
    def make(user: str):
        other = app.test_client()
        other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {make_token(settings.database_url, user)}"
        return other
    return make

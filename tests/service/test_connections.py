"""Pooled PostgreSQL connections: one the server ended is replaced before its caller sees
it, and one in steady use is not pinged on every checkout (service.store.db)."""

import pytest
from sqlalchemy import text

from service.store import db
from tests.eventually import eventually


@pytest.fixture
def engine(postgres_url):
    engine = db.make_engine(postgres_url)
    yield engine
    engine.dispose()


def _backend_pid(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar()


def _count_pings(engine, monkeypatch) -> list:
    pings = []
    original = engine.dialect.do_ping

    def counted(dbapi_connection):
        pings.append(dbapi_connection)
        return original(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


@pytest.mark.postgres
def test_a_connection_the_server_ended_is_replaced_on_checkout(engine, postgres_server):
    first = _backend_pid(engine)
    with postgres_server.connect() as admin:
        assert admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar()
        gone = text("SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = :pid")
        eventually(lambda: admin.execute(gone, {"pid": first}).scalar(), timeout=10)
    assert _backend_pid(engine) != first  # and no error: the pool replaced it


@pytest.mark.postgres
def test_a_connection_back_in_use_at_once_is_not_pinged(engine, monkeypatch):
    _backend_pid(engine)
    pings = _count_pings(engine, monkeypatch)
    for _ in range(5):
        _backend_pid(engine)
    assert pings == []


@pytest.mark.postgres
def test_a_connection_idle_longer_than_the_limit_is_pinged(engine, monkeypatch):
    _backend_pid(engine)
    pings = _count_pings(engine, monkeypatch)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    _backend_pid(engine)
    assert len(pings) == 1


def test_another_drivers_connection_is_never_taken_as_quiet():
    """Only psycopg's connections show their socket; any other is pinged as before."""
    from types import SimpleNamespace

    assert not db.socket_quiet(SimpleNamespace(closed=False, broken=False))

"""The worker process's database connection: one engine per process, forgotten after fork."""

from sqlalchemy.orm import Session, sessionmaker

from service.store import make_engine, make_sessionmaker

_sessions: dict[str, sessionmaker[Session]] = {}


def sessions(database_url: str,
             idle_in_transaction_seconds: float | None = None) -> sessionmaker[Session]:
    """This process's session factory for ``database_url``, created on first use; on
    PostgreSQL its sessions end should they leave a transaction open for
    ``idle_in_transaction_seconds`` (see service.store.make_engine; the workers pass the
    stale interval: a worker that silent has lost its run anyway)."""
    if database_url not in _sessions:
        _sessions[database_url] = make_sessionmaker(
            make_engine(database_url, idle_in_transaction_seconds))
    return _sessions[database_url]


def reset_engines() -> None:
    """Forget the engines inherited from the parent process without closing its
    connections (they are the parent's: closing them here would break its sessions)."""
    for factory in _sessions.values():
        factory.kw["bind"].dispose(close=False)
    _sessions.clear()

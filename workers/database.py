"""The worker process's database connection: one engine per process, forgotten after fork;
and the guard that keeps the main process from forking while it is using the database."""

import os
import threading
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

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


# SQLite keeps its locks' bookkeeping in process memory, which a fork copies: a pool process
# forked while the main process's reaper was inside a write transaction believes that
# transaction still holds the write lock, and every write it tries fails "database is
# locked", for good. So the main process forks only between its uses of the database.
_fork_guard = threading.RLock()
os.register_at_fork(before=_fork_guard.acquire, after_in_parent=_fork_guard.release,
                    after_in_child=_fork_guard.release)


def forks_held_off(sessions: sessionmaker[Session]) -> Callable[[], ContextManager[Session]]:
    """``sessions`` whose sessions, while open, hold off this process's forks (the Celery
    pool replacing a process); the main process reaps through these."""

    @contextmanager
    def session() -> Iterator[Session]:
        with _fork_guard, sessions() as opened:
            yield opened

    return session

"""The worker process's database connection (one engine per process, reset after fork)."""

from typing import Optional

from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings
from service.store import make_engine, make_sessionmaker

_sessions: Optional[sessionmaker[Session]] = None


def sessions() -> sessionmaker[Session]:
    """This process's session factory, created on first use from the environment."""
    global _sessions
    if _sessions is None:
        _sessions = make_sessionmaker(make_engine(Settings.from_env().database_url))
    return _sessions


def reset_engine() -> None:
    """Forget the inherited engine without closing its (parent's) connections."""
    global _sessions
    if _sessions is not None:
        _sessions.kw["bind"].dispose(close=False)
    _sessions = None

"""The database's clock, as SQL: the one clock every host agrees on.

Heartbeats, claims and every other time the reaper judges are written as the database's
``now`` and compared, in SQL, with the database's ``now``; no worker's or reaper's own
clock enters the judgement, so a host whose clock is minutes off neither gets its live runs
taken back nor takes back others' (docs/scaling.md, fault 5).

On PostgreSQL ``now`` is ``CURRENT_TIMESTAMP`` (a ``timestamptz``, the start of the
transaction; every write that stores it comes at the start of a short transaction: first,
or after one read, as a worker's claim). SQLite keeps times as text in SQLAlchemy's format
(``YYYY-MM-DD HH:MM:SS.ffffff``, UTC, which the store writes): its ``now`` is rendered in
that very format (to the millisecond), so text comparisons order it correctly against the
times SQLAlchemy wrote.
"""

from sqlalchemy import DateTime, Float, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

# SQLAlchemy's SQLite storage format; %f is SS.SSS, padded to microseconds.
_SQLITE_FORMAT = "'%Y-%m-%d %H:%M:%f000'"


class db_now(FunctionElement):  # noqa: N801 (used like func.now())
    """The database server's current time (UTC), as a SQL expression."""

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "db_now"


class db_ago(FunctionElement):  # noqa: N801
    """The database server's current time minus ``seconds``, as a SQL expression."""

    type = DateTime(timezone=True)
    inherit_cache = True
    name = "db_ago"

    def __init__(self, seconds: float):
        # A bound value (so cached statements take each call's own), negated: SQL adds it.
        super().__init__(literal(-float(seconds), Float))


@compiles(db_now)
def _now(_element, _compiler, **_kw) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(db_now, "sqlite")
def _now_sqlite(_element, _compiler, **_kw) -> str:
    return f"strftime({_SQLITE_FORMAT}, 'now')"


@compiles(db_ago)
def _ago(element, compiler, **kw) -> str:
    offset = compiler.process(element.clauses, **kw)
    return f"(CURRENT_TIMESTAMP + make_interval(secs => {offset}))"


@compiles(db_ago, "sqlite")
def _ago_sqlite(element, compiler, **kw) -> str:
    offset = compiler.process(element.clauses, **kw)
    return f"strftime({_SQLITE_FORMAT}, 'now', printf('%+.6f seconds', {offset}))"


__all__ = ["db_now", "db_ago"]

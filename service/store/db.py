"""Engines and sessions: SQLite (WAL, busy timeout) by default, PostgreSQL in production."""

import os
import select
import time

from sqlalchemy import create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, idle_in_transaction_seconds: float | None = None) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and foreign keys, and a
    new one is created readable by its owner only. On PostgreSQL, with
    ``idle_in_transaction_seconds``, the server ends a session of this engine that leaves a
    transaction open that long (its client's host cut off mid-transaction: see below)."""
    if url.startswith("sqlite"):
        create_private_sqlite_file(url)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        # SQLite takes its write lock at the first write; BEGIN IMMEDIATE takes it up front,
        # so concurrent writers wait on busy_timeout instead of failing with "locked".
        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_connection, _record):
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args = {}
    if idle_in_transaction_seconds:
        # A client whose host is cut off between a statement and its COMMIT sends no FIN
        # and no RST: its transaction, and the row locks it took, would stay until TCP gives
        # up on the server's side (hours), and every reaper would wait on those rows.
        milliseconds = max(1, round(idle_in_transaction_seconds * 1000))
        connect_args["options"] = f"-c idle_in_transaction_session_timeout={milliseconds}"
    engine = create_engine(url, connect_args=connect_args)
    ping_when_in_doubt(engine)
    return engine


# A pooled connection back in use within this many seconds is trusted when its socket is
# quiet; one idle longer is pinged (a NAT or load balancer may have dropped it silently).
PING_AFTER_IDLE_SECONDS = 5.0


def ping_when_in_doubt(engine: Engine) -> None:
    """SQLAlchemy's pre-ping, for a pooled PostgreSQL connection only when it is in doubt:
    when the server has sent it something while idle (a server that restarts, or ends the
    session, says so and closes the socket), or when it has been idle more than
    PING_AFTER_IDLE_SECONDS. A ping is a round trip on every checkout; a worker checks out
    a connection twice per run, a request at least once, and on a busy 2-core machine each
    round trip waits for the server's process to be scheduled. A connection found dead is
    replaced by the pool before the caller sees it."""

    @event.listens_for(engine, "checkin")
    def _note_idle_since(_dbapi_connection, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check_alive(dbapi_connection, record, _proxy):
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None:  # a connection just opened
            return
        if (time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS
                and socket_quiet(dbapi_connection)):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError(f"connection found dead on checkout: {error}") from error


def socket_quiet(dbapi_connection) -> bool:
    """Whether a psycopg connection is open with nothing to read on its socket (an idle
    connection's server says nothing unless it is going away). False for another driver's
    connection, which is then pinged at every checkout, as by pool_pre_ping."""
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None or dbapi_connection.closed or dbapi_connection.broken:
        return False
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


def create_private_sqlite_file(url: str) -> None:
    """Create the SQLite database file of ``url`` empty with mode 0600 if it does not exist
    yet (SQLite would create it 0644, less the umask). SQLite gives its -wal and -shm files
    the database file's mode, so they are private too. An existing file keeps its mode, and
    memory or ``file:`` URI databases are not files of ours."""
    parsed = make_url(url)
    path = parsed.database
    if not path or path == ":memory:" or path.startswith("file:") or parsed.query.get("uri"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:  # it exists; or SQLite will say what is wrong when it opens it
        pass


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (handy in request handlers)."""
    return sessionmaker(engine, expire_on_commit=False)

"""Shared fixtures: migrated databases (SQLite, and PostgreSQL when reachable), Redis, an
embedded broker folder and the Flask app.

Store and API tests run on a database migrated once per test session and roll back their
work at the end: the app's sessions are joined into an outer transaction on one connection
(SQLAlchemy's "Joining a Session into an External Transaction"), so every ``commit`` of the
code under test releases a SAVEPOINT and nothing outlives the test. Tests that need a real
database of their own (other threads or processes on it, their own engine, migrations) say
so with ``@pytest.mark.real_database``; worker and integration tests take ``database_url``,
``sqlite_url`` or ``postgres_url``, which are fresh, migrated databases of their own.

Tests marked ``postgres`` or ``redis`` skip when those servers are unreachable, unless
DESCENT_REQUIRE_SERVICES=1 (set by .ci/run), which makes them fail instead.
"""

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "DESCENT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DESCENT_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REQUIRE_SERVICES = os.environ.get("DESCENT_REQUIRE_SERVICES") == "1"
# Redis databases 1..15 are handed out to tests; a claim in database 0 keeps two test
# sessions running at once from sharing (and emptying) one.
REDIS_DATABASES = range(1, 16)
REDIS_CLAIM_SECONDS = 3600

TESTS = Path(__file__).resolve().parent
_WARMUP = pytest.StashKey[subprocess.Popen]()
# Tests that need many kernel specialisations compiled, in this process or in the `celery
# worker` processes they start, and their rank: they run after the others (see below).
LATE_TESTS = {"kernels": 1, "service/test_cli.py": 2, "integration": 2, "multihost": 2,
              "browser": 2}
# Tests whose real worker processes race deadlines that are the behaviour under test (fast
# reapers, restarts, slow links): under pytest-xdist (make test) they run one at a time, in
# one group, beside the other tests but never beside each other.
TIMING_TESTS = ("integration/test_faults.py", "integration/test_sweeps_search.py", "multihost")
# Modules whose tests share a costly module fixture: under pytest-xdist each is one unit of
# work, so that one worker builds the fixture once (test_specialisations compiles the whole
# engine in an empty cache: 12-25 s, which two workers would both pay).
MODULE_UNITS = ("kernels/test_specialisations.py",)


def _relative(item) -> str | None:
    try:
        return Path(item.path).relative_to(TESTS).as_posix()
    except ValueError:
        return None


def _matches(path: str | None, prefixes) -> list[str]:
    return [prefix for prefix in prefixes
            if path is not None and (path == prefix or path.startswith(prefix + "/"))]


def _xdist_worker(config) -> bool:
    """Whether this process is a pytest-xdist worker (not the controller, not a plain run)."""
    return hasattr(config, "workerinput")


def pytest_sessionstart(session):
    """Fill numba's cache in the background. On a fresh clone it is empty, and the first
    worker process would spend a minute compiling every kernel while this one waits; done
    beside the other tests (on the other core, at a lower priority), it is ready when the
    LATE_TESTS run. With a warm cache this only loads it, in a second or two. Under
    pytest-xdist the controller does it, once for all its workers."""
    if _xdist_worker(session.config):
        return
    session.config.stash[_WARMUP] = subprocess.Popen(
        [sys.executable, "-c", "from workers.warmup import warm_kernels; warm_kernels()"],
        cwd=TESTS.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [str(TESTS.parent), os.environ.get("PYTHONPATH")]))},
        preexec_fn=lambda: os.nice(10))


def pytest_sessionfinish(session):
    warmup = session.config.stash.get(_WARMUP, None)
    if warmup is not None and warmup.poll() is None:
        warmup.kill()
        warmup.wait()


@pytest.hookimpl(optionalhook=True)  # pytest without xdist runs the suite in one process
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadgroup`` (make test), each test is a unit of work of its own but
    the TIMING_TESTS are one unit, which one xdist worker runs one test after another;
    being the largest unit, it is handed out first. Each of the MODULE_UNITS is a unit
    too. (The group comes from the test's path, not an ``xdist_group`` mark: pytest 9.2
    keeps a node's id where xdist 3.8 no longer appends the group to it.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class TimingGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0].removeprefix("tests/")
            if _matches(path, TIMING_TESTS):
                return "timing"
            return path if _matches(path, MODULE_UNITS) else nodeid

    return TimingGroup(config, log)


def pytest_collection_modifyitems(items):
    """The LATE_TESTS last, by rank (a stable sort: otherwise the usual order)."""
    def rank(item) -> int:
        return max((LATE_TESTS[prefix] for prefix in _matches(_relative(item), LATE_TESTS)),
                   default=0)

    items.sort(key=rank)


def _unavailable(what: str, error: Exception):
    message = f"{what} is unreachable: {error}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (DESCENT_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


# ------------------------------------------------------------- fresh databases of their own


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A SQLite file migrated once per test session, for copies (quicker than migrating)."""
    import migrations

    path = tmp_path_factory.mktemp("sqlite-template") / "descent.db"
    migrations.upgrade(f"sqlite:///{path}")
    # The migration's engine is disposed: everything is in the file, no WAL left beside it.
    assert not path.with_name(path.name + "-wal").exists()
    return path


def copy_sqlite(template: Path, folder: Path) -> str:
    """The URL of a copy of ``template`` in ``folder``."""
    path = folder / "descent.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template):
    """A migrated SQLite database file of its own."""
    return copy_sqlite(sqlite_template, tmp_path)


@pytest.fixture(scope="session")
def postgres_server():
    """The admin engine of a reachable PostgreSQL server."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    yield engine
    engine.dispose()


def _create_postgres_database(server, prefix: str, template: str | None = None) -> str:
    """Create a new database on ``server`` (a copy of the database ``template``, else
    migrated); return its URL."""
    from sqlalchemy import text

    import migrations

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    url = server.url.set(database=name).render_as_string(hide_password=False)
    if not template:
        migrations.upgrade(url)
    return url


def _drop_postgres_database(server, url: str) -> None:
    from sqlalchemy import make_url, text

    name = make_url(url).database
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_template(postgres_server):
    """The name of a PostgreSQL database migrated once per test session, to copy (CREATE
    DATABASE ... TEMPLATE is quicker than migrating). Nothing connects to it but the copy."""
    from sqlalchemy import make_url

    url = _create_postgres_database(postgres_server, "descent_template")
    yield make_url(url).database
    _drop_postgres_database(postgres_server, url)


@pytest.fixture
def postgres_url(postgres_server, postgres_template):
    """A fresh, migrated PostgreSQL database of its own, dropped afterwards."""
    url = _create_postgres_database(postgres_server, "descent_test", postgres_template)
    yield url
    _drop_postgres_database(postgres_server, url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_backend(request) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL. A module that needs
    only one overrides this fixture."""
    return request.param


@pytest.fixture
def database_url(request, database_backend):
    """A fresh, migrated database of its own on the parametrised backend."""
    return request.getfixturevalue(f"{database_backend}_url")


# ---------------------------------------------- shared databases, a rolled-back transaction


@dataclass
class SharedDatabase:
    """A database migrated once per test session, its engine and (PostgreSQL) sequences."""

    url: str
    engine: object
    sequences: tuple = ()


@pytest.fixture(scope="session")
def shared_sqlite(tmp_path_factory, sqlite_template):
    """The session's migrated SQLite file and its engine."""
    from service.store import make_engine

    url = copy_sqlite(sqlite_template, tmp_path_factory.mktemp("shared-sqlite"))
    engine = make_engine(url)
    yield SharedDatabase(url, engine)
    engine.dispose()


@pytest.fixture(scope="session")
def shared_postgres(postgres_server, postgres_template):
    """The session's migrated PostgreSQL database and its engine (dropped at the end)."""
    from sqlalchemy import text

    from service.store import make_engine

    url = _create_postgres_database(postgres_server, "descent_shared", postgres_template)
    engine = make_engine(url)
    with engine.connect() as connection:
        sequences = tuple(connection.scalars(text(
            "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences "
            "WHERE schemaname = current_schema()")))
    yield SharedDatabase(url, engine, sequences)
    engine.dispose()
    _drop_postgres_database(postgres_server, url)


def _real_database(request) -> bool:
    return request.node.get_closest_marker("real_database") is not None


@pytest.fixture
def db_connection(request, database_backend):
    """A connection to the shared database of the backend inside an outer transaction that
    is rolled back after the test: nothing the test commits outlives it."""
    from sqlalchemy import text

    shared = request.getfixturevalue(f"shared_{database_backend}")
    connection = shared.engine.connect()
    outer = connection.begin()
    # Ids start at 1, as on a fresh database: PostgreSQL's sequences ignore rollbacks, but
    # a RESTART is transactional (undone with the rest). SQLite's ids roll back anyway.
    for sequence in shared.sequences:
        connection.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))
    yield connection
    # Something that commits the connection itself (not a session) would leak its writes
    # into the next tests: say so rather than roll back nothing.
    assert outer.is_active, "the test's outer transaction ended early (committed?)"
    outer.rollback()
    connection.close()


@pytest.fixture
def app_sessions(request):
    """The sessionmaker the test's apps use: on ``db_connection``, each session in a SAVEPOINT
    of its outer transaction. None for ``real_database`` tests (the app makes its own
    engine)."""
    if _real_database(request):
        return None
    from sqlalchemy.orm import sessionmaker

    connection = request.getfixturevalue("db_connection")
    # expire_on_commit=False as service.store.make_sessionmaker's sessions.
    return sessionmaker(connection, expire_on_commit=False,
                        join_transaction_mode="create_savepoint")


# ---------------------------------------------------------------------- brokers and Redis


@pytest.fixture
def redis_url():
    """A Redis database of its own on the reachable server, emptied before and after. The
    database is claimed in database 0 first, so another test session never uses it at the
    same time."""
    import redis

    owner = uuid.uuid4().hex
    try:
        claims = redis.Redis.from_url(f"{REDIS_URL}/0", socket_connect_timeout=2)
        index = next((i for i in REDIS_DATABASES if claims.set(
            f"descent-test-lock:{i}", owner, nx=True, ex=REDIS_CLAIM_SECONDS)), None)
    except Exception as exc:
        _unavailable("Redis", exc)
    if index is None:
        pytest.fail("every Redis test database is claimed by other test sessions",
                    pytrace=False)
    url = f"{REDIS_URL}/{index}"
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
        yield url
        client.flushdb()
    finally:
        client.close()
        # Release the claim only if it is still ours (it may have expired and been taken).
        if claims.get(f"descent-test-lock:{index}") == owner.encode():
            claims.delete(f"descent-test-lock:{index}")
        claims.close()


@pytest.fixture
def embedded_broker_url(tmp_path):
    """A filesystem broker folder of its own (the embedded default transport)."""
    return f"filesystem://{tmp_path / 'queue'}"


# ------------------------------------------------------------------ the app and its tokens


@pytest.fixture
def settings(request, database_backend, embedded_broker_url):
    """Settings on the parametrised backend's shared database (``database_url``'s fresh one
    for ``real_database`` tests) and an embedded broker."""
    from service.settings import Settings

    if _real_database(request):
        url = request.getfixturevalue("database_url")
    else:
        url = request.getfixturevalue(f"shared_{database_backend}").url
    return Settings(database_url=url, broker_url=embedded_broker_url)


def build_app(settings, sessions=None, **config):
    """A Flask app on ``settings``; on ``sessions`` (a sessionmaker) when given. Close it
    with ``close_app``."""
    from service.app import create_app

    injected = {} if sessions is None else {"SESSIONS": sessions}
    return create_app({"SETTINGS": settings, **injected, **config})


def close_app(app) -> None:
    """Dispose of the app's engine, unless it runs on a test's connection."""
    from sqlalchemy.engine import Engine

    engine = app.extensions["descent"]["engine"]
    if isinstance(engine, Engine):
        engine.dispose()


@pytest.fixture
def app(settings, app_sessions):
    """The Flask app on those settings, with the real queue client."""
    app = build_app(settings, app_sessions, TESTING=True)
    yield app
    close_app(app)


def make_token(database_url: str, user: str) -> str:
    """A new API token of ``user`` in the (real, not shared) database at ``database_url``."""
    from service.store import make_engine, make_sessionmaker

    engine = make_engine(database_url)
    try:
        return create_token_with(make_sessionmaker(engine), user)
    finally:
        engine.dispose()


def create_token_with(sessions, user: str) -> str:
    """A new API token of ``user``, committed through ``sessions``."""
    from service.store.tokens import create_token

    with sessions() as session:
        token = create_token(session, user)
        session.commit()
    return token


@pytest.fixture
def new_token(settings, app_sessions):
    """new_token(user): a new API token of ``user`` in the test's database (through the
    test's connection when it has one, so the app sees it)."""
    def make(user: str) -> str:
        if app_sessions is not None:
            return create_token_with(app_sessions, user)
        return make_token(settings.database_url, user)
    return make


@pytest.fixture
def token(new_token):
    """An API token of user "alice" in the test's database."""
    return new_token("alice")


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
def client_of(app, new_token):
    """A factory: ``client_of("bob")`` is a test client with a new token of user bob."""
    def make(user: str):
        other = app.test_client()
        other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {new_token(user)}"
        return other
    return make

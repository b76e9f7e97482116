"""Fixtures for worker tests: a migrated database, its sessions, and stored runs."""

import pytest

import kernels
from service.runspec import complete_spec
from service.store import make_engine, make_sessionmaker
from service.store import datasets as store_datasets
from service.store import runs as store_runs


@pytest.fixture(autouse=True)
def _forget_cached_datasets():
    """Each test starts with a worker process that has read no dataset yet."""
    from workers import execute

    execute._DATASETS.clear()
    yield
    execute._DATASETS.clear()


@pytest.fixture
def sessions(sqlite_url):
    """Sessions on a migrated SQLite file of this test's own."""
    engine = make_engine(sqlite_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def store_run(sessions, **fields) -> int:
    """Store a queued run (a built-in dataset is stored on first use) and return its id.
    ``fields`` is a run spec; defaults are filled in as the API does."""
    spec = complete_spec({"dataset": "xor", "layers": [2, 4, 1], **fields})
    with sessions() as session:
        dataset = store_datasets.find_dataset(session, spec["dataset"])
        if dataset is None:
            X, y = kernels.load_dataset(spec["dataset"])
            dataset = store_datasets.add_dataset(session, spec["dataset"], X, y, builtin=True)
        run = store_runs.create_run(session, spec, dataset.id, name=spec.get("name"))
        session.commit()
        return run.id


@pytest.fixture
def make_run(sessions):
    """make_run(**spec) -> id of a stored, queued run."""
    return lambda **fields: store_run(sessions, **fields)


@pytest.fixture
def db_sessions(database_url):
    """Sessions on a migrated database: SQLite, then PostgreSQL (parametrised)."""
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()

"""Migrations on a database that already holds data: 0004 (owners, tokens, foreign key on
runs.sweep_id) over rows written at 0003, on SQLite (batch mode rebuilds tables that other
rows refer to) and on PostgreSQL."""

import json
import uuid

import pytest
import sqlalchemy as sa
from alembic import command

import migrations

ROWS_AT_0003 = [
    "INSERT INTO datasets (id, name, n_samples, n_features, target_kind, n_targets, "
    "content_hash, builtin, data, created_at) VALUES "
    "(1, 'xor', 4, 2, 'labels', 1, '0', true, '', '2026-01-01'), "
    "(2, 'mine', 4, 2, 'labels', 1, '0', false, '', '2026-01-01')",
    "INSERT INTO sweeps (id, base, space, kind, metric, status, cancel_requested, created_at) "
    "VALUES (1, '{}', '{}', 'grid', 'error', 'running', false, '2026-01-01')",
    "INSERT INTO runs (id, spec, tags, dataset_id, sweep_id, status, learning_rate, "
    "batch_mode, batch_size, epochs, seed, created_at, attempts, cancel_requested, "
    "epochs_done) VALUES "
    "(1, '{}', '{}', 2, NULL, 'succeeded', 0.1, 'full', 4, 1, 0, '2026-01-01', 1, false, 1), "
    "(2, '{}', '{}', 1, 1, 'queued', 0.1, 'full', 4, 1, 0, '2026-01-02', 0, false, 0), "
    "(3, '{}', '{}', 1, 1, 'queued', 0.1, 'full', 4, 1, 0, '2026-01-03', 0, false, 0)",
    "INSERT INTO sweep_cells (id, sweep_id, position, config_hash, config, run_id, dispatched) "
    "VALUES (1, 1, 0, 'a', '{}', 2, true), (2, 1, 1, 'b', '{}', 3, false)",
    "INSERT INTO epochs (run_id, epoch, error, seconds) VALUES (1, 0, 0.5, 0.0), (1, 1, 0.4, 0.1)",
]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path):
    """An empty database (no migrations yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"descent_mig_{uuid.uuid4().hex[:12]}"
    with server.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield server.url.set(database=name).render_as_string(hide_password=False)
    with server.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_0004_keeps_existing_rows_and_gives_them_to_local(empty_url):
    migrations.upgrade(empty_url, "0003")
    engine = sa.create_engine(empty_url)
    try:
        with engine.begin() as connection:
            for statement in ROWS_AT_0003:
                connection.execute(sa.text(statement))
        migrations.upgrade(empty_url)
        migrations.check(empty_url)
        with engine.connect() as connection:
            runs = connection.execute(sa.text(
                "SELECT id, owner, enqueued_at IS NOT NULL FROM runs ORDER BY id")).all()
            datasets = connection.execute(sa.text(
                "SELECT name, owner FROM datasets ORDER BY id")).all()
            sweeps = connection.execute(sa.text("SELECT owner FROM sweeps")).all()
            epochs = connection.execute(sa.text("SELECT count(*) FROM epochs")).scalar()
        # A waiting sweep cell (run 3) was never sent; the others were, when created.
        assert [tuple(r) for r in runs] == [(1, "local", True), (2, "local", True),
                                            (3, "local", False)]
        assert [tuple(d) for d in datasets] == [("xor", None), ("mine", "local")]
        assert [tuple(s) for s in sweeps] == [("local",)]
        assert epochs == 2
        with pytest.raises(sa.exc.IntegrityError):  # runs.sweep_id is a foreign key now
            with engine.begin() as connection:
                if engine.dialect.name == "sqlite":
                    connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.execute(sa.text("UPDATE runs SET sweep_id = 99 WHERE id = 1"))
    finally:
        engine.dispose()


def test_0005_fills_in_what_datasets_and_runs_occupy(empty_url):
    """A dataset's bytes and largest |value| (the float32 check), a finished run's stored
    bytes (its parameters and history rows) and a queued run's reservation (from its spec)."""
    import numpy as np

    from service.store import usage
    from service.store.arrays import to_npz

    migrations.upgrade(empty_url, "0004")
    data = to_npz(X=np.array([[1.0, -5e38], [0.0, 2.0]]), y=np.array([0, 1]))
    spec = {"layers": [2, 4, 1], "epochs": 9, "dtype": "float32"}
    engine = sa.create_engine(empty_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(
                "INSERT INTO datasets (id, name, owner, n_samples, n_features, target_kind, "
                "n_targets, content_hash, builtin, data, created_at) VALUES (1, 'mine', "
                "'alice', 2, 2, 'labels', 1, '0', false, :data, '2026-01-01')"), {"data": data})
            connection.execute(sa.text(
                "INSERT INTO runs (id, spec, tags, owner, dataset_id, status, learning_rate, "
                "batch_mode, batch_size, epochs, seed, created_at, attempts, "
                "cancel_requested, epochs_done) VALUES "
                "(1, '{}', '{}', 'alice', 1, 'succeeded', 0.1, 'full', 4, 5, 0, "
                "'2026-01-01', 1, false, 2), "
                f"(2, '{json.dumps(spec)}', '{{}}', 'alice', 1, 'queued', 0.1, 'full', 4, 9, 0, "
                "'2026-01-02', 0, false, 0)"))
            connection.execute(sa.text(
                "INSERT INTO params (run_id, which, dtype, data) VALUES "
                "(1, 'initial', 'float64', :a), (1, 'final', 'float64', :b)"),
                {"a": b"x" * 10, "b": b"y" * 20})
        migrations.upgrade(empty_url)
        migrations.check(empty_url)
        with engine.connect() as connection:
            dataset = connection.execute(sa.text(
                "SELECT n_bytes, max_abs FROM datasets")).one()
            runs = connection.execute(sa.text(
                "SELECT stored_bytes FROM runs ORDER BY id")).scalars().all()
        assert tuple(dataset) == (len(data), 5e38)
        assert runs == [30 + 3 * usage.HISTORY_ROW_BYTES, usage.run_bytes(spec)]
    finally:
        engine.dispose()


def test_0006_gives_existing_runs_the_sgd_optimizer(empty_url):
    """Runs stored before optimizers existed trained with plain gradient descent: they get
    optimizer 'sgd' and no stop_reason; the models and the database then agree."""
    migrations.upgrade(empty_url, "0005")
    engine = sa.create_engine(empty_url)
    try:
        with engine.begin() as connection:
            for statement in ROWS_AT_0003:
                connection.execute(sa.text(statement))
        migrations.upgrade(empty_url, "0006_optimizers")
        with engine.begin() as connection:
            runs = connection.execute(sa.text(
                "SELECT id, optimizer, stop_reason FROM runs ORDER BY id")).all()
            # A new row without an optimizer gets the column's default too.
            connection.execute(sa.text(
                "INSERT INTO runs (id, spec, tags, dataset_id, status, learning_rate, "
                "batch_mode, batch_size, epochs, seed, created_at, attempts, "
                "cancel_requested, epochs_done, stored_bytes) VALUES (4, '{}', '{}', 1, "
                "'queued', 0.1, 'full', 4, 1, 0, '2026-01-04', 0, false, 0, 0)"))
            fourth = connection.execute(sa.text(
                "SELECT optimizer FROM runs WHERE id = 4")).scalar()
        assert [tuple(r) for r in runs] == [(1, "sgd", None), (2, "sgd", None),
                                            (3, "sgd", None)]
        assert fourth == "sgd"
        command.downgrade(migrations.alembic_config(empty_url), "0005")
        with engine.connect() as connection:
            columns = {c["name"] for c in sa.inspect(connection).get_columns("runs")}
        assert "optimizer" not in columns and "stop_reason" not in columns
        migrations.upgrade(empty_url)
        migrations.check(empty_url)
    finally:
        engine.dispose()


def _insert_finished_runs(connection, *ids: int) -> None:
    """The xor dataset (ROWS_AT_0003's first row) and a succeeded run of it for each of
    ``ids`` (1-9), with the columns runs have from 0004 on."""
    connection.execute(sa.text(ROWS_AT_0003[0]))
    rows = ", ".join(f"({i}, '{{}}', '{{}}', 'local', 1, 'succeeded', 0.1, 'full', 4, 1, 0, "
                     f"'2026-01-0{i}', 1, false, 1)" for i in ids)
    connection.execute(sa.text(
        "INSERT INTO runs (id, spec, tags, owner, dataset_id, status, learning_rate, "
        "batch_mode, batch_size, epochs, seed, created_at, attempts, cancel_requested, "
        f"epochs_done) VALUES {rows}"))


def test_0007_adds_environments_and_rerun_links(empty_url):
    """Runs gain ``environment`` (NULL for runs trained before) and ``rerun_of``, a link
    that deleting the original run clears; the migration goes down and up again."""
    from alembic import command

    migrations.upgrade(empty_url, "0006_optimizers")
    engine = sa.create_engine(empty_url)
    try:
        with engine.begin() as connection:
            _insert_finished_runs(connection, 1, 2)
        migrations.upgrade(empty_url)
        migrations.check(empty_url)
        with engine.begin() as connection:
            rows = connection.execute(sa.text(
                "SELECT environment, rerun_of FROM runs ORDER BY id")).all()
            assert [tuple(r) for r in rows] == [(None, None), (None, None)]
            connection.execute(sa.text("UPDATE runs SET rerun_of = 1, environment = :e "
                                       "WHERE id = 2"), {"e": json.dumps({"dtype": "float64"})})
        with pytest.raises(sa.exc.IntegrityError):  # a foreign key
            with engine.begin() as connection:
                if engine.dialect.name == "sqlite":
                    connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.execute(sa.text("UPDATE runs SET rerun_of = 99 WHERE id = 2"))
        with engine.begin() as connection:
            if engine.dialect.name == "sqlite":
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.execute(sa.text("DELETE FROM runs WHERE id = 1"))
            row = connection.execute(sa.text("SELECT environment, rerun_of FROM runs")).one()
        environment = row[0] if isinstance(row[0], dict) else json.loads(row[0])
        assert environment == {"dtype": "float64"} and row[1] is None  # ON DELETE SET NULL
        command.downgrade(migrations.alembic_config(empty_url), "0006_optimizers")
        with engine.connect() as connection:
            columns = {c["name"] for c in sa.inspect(connection).get_columns("runs")}
        assert not {"environment", "rerun_of"} & columns
        migrations.upgrade(empty_url)
        migrations.check(empty_url)
    finally:
        engine.dispose()


def _params_storage(connection) -> str:
    """PostgreSQL's storage mode of params.data ('x' extended, 'e' external)."""
    return connection.execute(sa.text(
        "SELECT a.attstorage FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relname = 'params' AND a.attname = 'data'")).scalar()


def test_0008_stores_blobs_without_the_servers_compression(empty_url):
    """On PostgreSQL the parameter blobs are stored without pglz (STORAGE EXTERNAL) from
    0008 on, and as before after a downgrade; on both backends a blob stored
    before the migration and one stored after read back as they were written."""
    from alembic import command

    migrations.upgrade(empty_url, "0007_environment")
    engine = sa.create_engine(empty_url)
    before, after = bytes(range(256)) * 200, b"\0" * 50_000  # the second would deflate
    try:
        with engine.begin() as connection:
            _insert_finished_runs(connection, 1)
            connection.execute(sa.text(
                "INSERT INTO params (run_id, which, dtype, data) VALUES "
                "(1, 'initial', 'float64', :data)"), {"data": before})
            if engine.dialect.name == "postgresql":
                assert _params_storage(connection) == "x"
        migrations.upgrade(empty_url)
        migrations.check(empty_url)
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                assert _params_storage(connection) == "e"
            connection.execute(sa.text(
                "INSERT INTO params (run_id, which, dtype, data) VALUES "
                "(1, 'final', 'float64', :data)"), {"data": after})
        with engine.connect() as connection:
            stored = dict(connection.execute(sa.text(
                "SELECT which, data FROM params WHERE run_id = 1")).all())
            if engine.dialect.name == "postgresql":  # stored as it is: not deflated
                size = connection.execute(sa.text(
                    "SELECT pg_column_size(data) FROM params WHERE which = 'final'")).scalar()
                assert size >= len(after)
        assert {k: bytes(v) for k, v in stored.items()} == {"initial": before, "final": after}
        command.downgrade(migrations.alembic_config(empty_url), "0007_environment")
        if engine.dialect.name == "postgresql":
            with engine.connect() as connection:
                assert _params_storage(connection) == "x"
        migrations.upgrade(empty_url)
        migrations.check(empty_url)
    finally:
        engine.dispose()

"""execute_run on a sweep's runs, in this process (no Celery), on SQLite and PostgreSQL: the
transaction that ends a run dispatches the next cell, and successive halving stops a run
exactly at its rung with state stopped_early and its history kept."""

import threading

import pytest

import kernels
from service import sweepspace
from service.runspec import complete_spec
from service.store import datasets as store_datasets
from service.store import make_engine, make_sessionmaker
from service.store import runs as store_runs
from service.store import sweeps as store_sweeps
from service.store.usage import HISTORY_ROW_BYTES
from workers.execute import execute_run


def make_sweep(sessions, rates, max_concurrency=None, early_stopping=None):
    """A grid sweep over learning rates on xor (the API's work, done directly); returns
    (sweep id, run ids in position order, run ids dispatched at creation)."""
    with sessions() as session:
        dataset = store_datasets.find_dataset(session, "xor")
        if dataset is None:
            X, y = kernels.load_dataset("xor")
            dataset = store_datasets.add_dataset(session, "xor", X, y, builtin=True)
        base = {"dataset": "xor", "layers": [2, 4, 1], "batch_mode": "full", "epochs": 30}
        sweep = store_sweeps.create_sweep(
            session, base=base, space={"learning_rate": rates}, kind="grid",
            max_concurrency=max_concurrency, early_stopping=early_stopping, metric="error")
        ids = []
        for position, rate in enumerate(rates):
            config = {"learning_rate": rate}
            ids.append(store_sweeps.create_cell(
                session, sweep.id, position, config, sweepspace.config_hash(config),
                complete_spec({**base, **config}), dataset.id))
        session.commit()
        first = store_sweeps.fill_slots(session, sweep.id)
        session.commit()
        return sweep.id, ids, first


def test_ending_a_run_dispatches_the_next_cell(db_sessions):
    sweep_id, ids, first = make_sweep(db_sessions, [0.5, 1.0, 2.0], max_concurrency=1)
    assert first == [ids[0]]
    sent = []
    assert execute_run(db_sessions, ids[0], enqueue=sent.append) == "succeeded"
    assert sent == [ids[1]]
    assert execute_run(db_sessions, ids[1], enqueue=sent.append) == "succeeded"
    assert execute_run(db_sessions, ids[2], enqueue=sent.append) == "succeeded"
    assert sent == [ids[1], ids[2]]
    with db_sessions() as session:
        assert store_sweeps.get_sweep(session, sweep_id).status == "succeeded"


def test_a_cut_run_stops_at_its_rung_and_keeps_its_history(db_sessions):
    stopping = {"min_epochs": 10, "reduction_factor": 3}
    _, ids, _ = make_sweep(db_sessions, [2.0, 1e-4], early_stopping=stopping)
    assert execute_run(db_sessions, ids[0], enqueue=lambda _id: None) == "succeeded"
    assert execute_run(db_sessions, ids[1], enqueue=lambda _id: None) == "stopped_early"
    with db_sessions() as session:
        run = store_runs.get_run(session, ids[1])
        assert run.epochs_done == 10 and run.status == "stopped_early"
        assert [row.epoch for row in store_runs.history(session, ids[1])] == list(range(11))
        assert store_runs.get_params(session, ids[1], "final") is not None


@pytest.mark.postgres
def test_two_runs_of_one_sweep_ending_at_once_do_not_deadlock(postgres_url):
    """Two workers end runs of the same sweep at the same moment: each transaction writes
    its run (history, parameters, stored bytes) and then locks the sweep row to dispatch and
    settle. Neither may hold a lock on the sweep row before that (a second update of its run
    row would take a KEY SHARE lock on it through the runs -> sweeps foreign key), or the
    two wait on each other and PostgreSQL aborts one with a deadlock."""
    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    try:
        _, ids, _ = make_sweep(sessions, [0.5, 1.0])
        attempts = {}
        for run_id in ids:
            with sessions() as session:
                attempts[run_id] = store_runs.claim_run(session, run_id, "w").attempts
        barrier = threading.Barrier(2, timeout=30)
        errors, sent = [], []

        def end(run_id):
            def hook(session):
                barrier.wait()  # both runs written, neither sweep lock asked for yet
                sent.extend(store_sweeps.run_ended(session, sweep_id_of(session, run_id)))
            try:
                with sessions() as session:
                    store_runs.complete_run(
                        session, run_id, attempts[run_id], [row(run_id, 0), row(run_id, 1)],
                        {"epochs_done": 1, "final_error": 0.5}, "succeeded",
                        params={"final": ("float64", b"x" * 10)}, before_commit=hook)
            except Exception as exc:  # noqa: BLE001 - the test reports any failure
                errors.append(exc)

        threads = [threading.Thread(target=end, args=(run_id,)) for run_id in ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        with sessions() as session:
            for run_id in ids:
                run = store_runs.get_run(session, run_id)
                assert run.status == "succeeded"
                assert run.stored_bytes == 10 + 2 * HISTORY_ROW_BYTES
            assert store_sweeps.get_sweep(session, run.sweep_id).status == "succeeded"
    finally:
        engine.dispose()


def sweep_id_of(session, run_id):
    return store_runs.get_run(session, run_id).sweep_id


def row(run_id, epoch):
    return {"run_id": run_id, "epoch": epoch, "error": 0.5, "seconds": 0.0}

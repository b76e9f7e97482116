"""The store's worker-side state changes (claim, progress, finish, cancel) under
concurrency, on SQLite and PostgreSQL."""

import threading

import pytest
from sqlalchemy import func, select

from service.store import Epoch, Run
from service.store import runs as store_runs
from workers import execute, history

from .conftest import store_run


def row(run_id, epoch):
    return {"run_id": run_id, "epoch": epoch, "error": 0.5, "seconds": 0.0}


def count_epochs(sessions, run_id):
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Epoch)
                              .where(Epoch.run_id == run_id))


def test_only_one_of_concurrent_claims_wins(db_sessions):
    sessions = db_sessions
    run_id = store_run(sessions, epochs=5)
    barrier = threading.Barrier(4)
    results = []

    def claim(k):
        with sessions() as session:
            barrier.wait()
            run = store_runs.claim_run(session, run_id, f"w{k}", attempts=0)
            results.append(None if run is None else run.worker)

    threads = [threading.Thread(target=claim, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [r for r in results if r is not None]
    assert len(results) == 4 and len(winners) == 1
    with sessions() as session:
        run = session.get(Run, run_id)
        assert run.attempts == 1 and run.worker == winners[0] and run.status == "running"


def test_claim_takes_over_and_fences_the_earlier_attempt(db_sessions):
    sessions = db_sessions
    run_id = store_run(sessions, epochs=5)
    with sessions() as session:
        first = store_runs.claim_run(session, run_id, "first").attempts
        store_runs.record_progress(session, run_id, [row(run_id, 0), row(run_id, 1)],
                                   {"epochs_done": 1}, attempt=first)
    with sessions() as session:
        second = store_runs.claim_run(session, run_id, "second").attempts
    assert (first, second) == (1, 2)
    assert count_epochs(sessions, run_id) == 0  # the earlier attempt's history is gone
    with sessions() as session:
        with pytest.raises(store_runs.LostRun):
            store_runs.record_progress(session, run_id, [row(run_id, 2)], {"epochs_done": 2},
                                       attempt=first)
        assert not store_runs.finish_run(session, run_id, "succeeded", attempt=first)
        session.commit()
    assert count_epochs(sessions, run_id) == 0
    with sessions() as session:
        assert store_runs.record_progress(session, run_id, [row(run_id, 0)],
                                          {"epochs_done": 0}, attempt=second) is False
        assert store_runs.finish_run(session, run_id, "succeeded", attempt=second)
        session.commit()
        assert session.get(Run, run_id).status == "succeeded"
    with sessions() as session:  # a finished run is nobody's to write
        with pytest.raises(store_runs.LostRun):
            store_runs.record_progress(session, run_id, [], {"epochs_done": 1}, attempt=second)


def test_request_cancel(db_sessions):
    sessions = db_sessions
    queued, running, done = (store_run(sessions, epochs=5) for _ in range(3))
    with sessions() as session:
        store_runs.claim_run(session, running, "w")
        store_runs.claim_run(session, done, "w")
        store_runs.finish_run(session, done, "succeeded")
        session.commit()
    with sessions() as session:
        assert store_runs.request_cancel(session, 999) is None
        run = store_runs.request_cancel(session, queued)
        assert run.status == "cancelled" and run.cancel_requested and run.finished_at
        run = store_runs.request_cancel(session, running)
        assert run.status == "running" and run.cancel_requested
        run = store_runs.request_cancel(session, done)
        assert run.status == "succeeded" and not run.cancel_requested
    with sessions() as session:  # the running one learns it at its next write
        assert store_runs.record_progress(session, running, [], {"epochs_done": 1},
                                          attempt=1) is True
        assert store_runs.claim_run(session, queued, "w") is None


def test_two_workers_writing_history_at_once(db_sessions, monkeypatch):
    """Two runs trained side by side, each writing after every chunk: no lock errors on
    SQLite, exact histories on both databases."""
    sessions = db_sessions
    monkeypatch.setattr(history, "FLUSH_SECONDS", 0.0)
    ids = [store_run(sessions, dataset="circles", layers=[2, 8, 1], batch_size=8,
                     epochs=300, seed=k) for k in range(2)]
    results = {}

    def work(run_id):
        try:
            results[run_id] = execute.execute_run(sessions, run_id)
        except Exception as exc:  # surfaced below
            results[run_id] = repr(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: "succeeded" for i in ids}
    for run_id in ids:
        with sessions() as session:
            epochs = [e.epoch for e in store_runs.history(session, run_id)]
        assert epochs == list(range(301))

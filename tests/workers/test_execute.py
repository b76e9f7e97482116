"""workers.execute on a real database, without a broker: execute_run is called directly."""

import socket
import subprocess
import sys
import threading
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import insert, update

import kernels
from service.settings import ReaperSettings
from service.store import Epoch, Params, Run
from service.store import runs as store_runs
from service.store.arrays import params_from_npz, params_to_npz
from service.store.models import utcnow
from tests.eventually import eventually
from workers.execute import (ClaimInterrupted, execute_run, split_validation,
                             training_blas_threads)

from .conftest import store_run

NUMERIC = ("layers", "activation", "output_activation", "loss", "learning_rate", "batch_mode",
           "batch_size", "epochs", "seed", "shuffle", "init", "dtype")
# A run that takes minutes unless cancelled (digits, ~15 ms per epoch).
LONG = {"dataset": "digits", "layers": [64, 32, 10], "loss": "cross_entropy",
        "learning_rate": 0.05, "epochs": 100_000}


def independent_split(X, y, fraction, seed):
    """API contract of validation_split, written out again: the validation rows are the
    last floor(n * fraction) of default_rng(seed).permutation(n), both parts in dataset
    order."""
    n = len(X)
    n_val = int(n * fraction)
    order = np.random.default_rng(seed).permutation(n)
    train, val = np.sort(order[:n - n_val]), np.sort(order[n - n_val:])
    return X[train], y[train], X[val], y[val]


def direct(spec, **overrides):
    """kernels.train for a stored run's spec, as a worker should call it (with its
    threads: one thread and two may round differently)."""
    spec = {**spec, **overrides}
    X, y = kernels.load_dataset(spec["dataset"])
    validation = None
    if spec.get("validation_split"):
        X, y, Xv, yv = independent_split(X, y, spec["validation_split"], spec["seed"])
        validation = (Xv, yv)
    arguments = {**{k: spec[k] for k in NUMERIC}, "threads": spec.get("threads", 1)}
    with training_blas_threads(arguments, len(X)):
        return kernels.train(X, y, validation=validation, eval_every=spec.get("eval_every", 1),
                             **arguments)


def load(sessions, run_id):
    """(run, history rows, {which: params}) as stored."""
    with sessions() as session:
        run = store_runs.get_run(session, run_id)
        rows = store_runs.history(session, run_id)
        params = {}
        for which in ("initial", "final"):
            row = store_runs.get_params(session, run_id, which)
            if row is not None:
                params[which] = params_from_npz(row.data)
        session.expunge_all()
    return run, rows, params


def assert_same_params(stored, expected):
    assert len(stored["weights"]) == len(expected["weights"])
    for got, want in zip(stored["weights"] + stored["biases"],
                         expected["weights"] + expected["biases"]):
        assert got.dtype == want.dtype
        assert np.array_equal(got, want)


def errors_of(rows):
    return np.array([np.nan if r.error is None else r.error for r in rows])


def start_in_thread(sessions, run_id):
    """execute_run in a thread; returns (thread, outcome dict)."""
    outcome = {}

    def target():
        try:
            outcome["status"] = execute_run(sessions, run_id)
        except BaseException as exc:  # surfaced by the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def epochs_done(sessions, run_id):
    with sessions() as session:
        return session.get(Run, run_id).epochs_done


@pytest.mark.parametrize("fields", [
    {"dataset": "xor", "layers": [2, 4, 1], "learning_rate": 0.5, "batch_size": 2,
     "epochs": 60},
    {"dataset": "xor", "layers": [2, 3, 1], "batch_mode": "sgd", "epochs": 40,
     "activation": "tanh", "init": "xavier", "dtype": "float32"},
    # full batches in dataset order: errors arrive one step late (the lagging path)
    {"dataset": "circles", "layers": [2, 6, 1], "batch_mode": "full", "shuffle": False,
     "learning_rate": 1.0, "epochs": 45},
    {"dataset": "spirals", "layers": [2, 8, 3], "loss": "cross_entropy",
     "activation": ["relu"], "init": "he", "epochs": 25},
], ids=["xor-minibatch", "xor-sgd-float32", "circles-full-ordered", "spirals-softmax"])
def test_queued_run_is_trained_as_kernels_train_does(sessions, fields):
    run_id = store_run(sessions, **fields)
    assert execute_run(sessions, run_id) == "succeeded"
    run, rows, params = load(sessions, run_id)
    want = direct(run.spec)

    assert run.status == "succeeded"
    assert run.attempts == 1 and run.worker and run.error_message is None
    assert run.started_at is not None and run.finished_at is not None
    assert [r.epoch for r in rows] == list(range(fields["epochs"] + 1))
    assert np.array_equal(errors_of(rows), want.errors)
    assert np.array_equal([r.accuracy for r in rows], want.accuracy)
    assert all(r.val_error is None for r in rows)
    assert all(b.seconds >= a.seconds for a, b in zip(rows, rows[1:]))
    assert_same_params(params["final"], want.params)
    assert_same_params(params["initial"], want.initial_params)

    assert run.epochs_done == fields["epochs"]
    assert run.final_error == want.errors[-1]
    assert run.best_error == want.errors.min()
    assert run.best_epoch == int(np.argmin(want.errors))
    assert run.final_accuracy == want.accuracy[-1]
    assert run.final_val_error is None


def test_validation_split_records_val_error_on_the_documented_rows(sessions):
    run_id = store_run(sessions, dataset="circles", layers=[2, 8, 1], epochs=30,
                       validation_split=0.25, seed=7, learning_rate=0.5)
    assert execute_run(sessions, run_id) == "succeeded"
    run, rows, params = load(sessions, run_id)

    X, y = kernels.load_dataset("circles")
    mine = independent_split(X, y, 0.25, 7)
    theirs = split_validation(X, y, 0.25, 7)
    assert len(mine[2]) == 50
    for a, b in zip(mine[:2] + (mine[2:],), theirs[:2] + (theirs[2],)):
        if isinstance(a, tuple):
            assert all(np.array_equal(p, q) for p, q in zip(a, b))
        else:
            assert np.array_equal(a, b)

    want = direct(run.spec)
    assert len(rows) == 31
    assert np.array_equal(errors_of(rows), want.errors)  # training rows only
    assert np.array_equal([r.val_error for r in rows], want.val_errors)
    assert np.array_equal([r.val_accuracy for r in rows], want.val_accuracy)
    assert run.final_val_error == want.val_errors[-1]
    assert_same_params(params["final"], want.params)


def test_no_validation_rows_when_the_split_rounds_to_zero(sessions):
    run_id = store_run(sessions, dataset="xor", epochs=5, validation_split=0.2)  # 4 * 0.2 < 1
    assert execute_run(sessions, run_id) == "succeeded"
    run, rows, params = load(sessions, run_id)
    assert len(rows) == 6 and all(r.val_error is None for r in rows)
    assert_same_params(params["final"], direct(run.spec, validation_split=0.0).params)


def test_diverged_run_keeps_its_history(sessions):
    run_id = store_run(sessions, dataset="circles", layers=[2, 8, 1], activation="relu",
                       output_activation="linear", learning_rate=1e6, epochs=50)
    assert execute_run(sessions, run_id) == "diverged"
    run, rows, params = load(sessions, run_id)
    want = direct(run.spec)
    assert want.diverged and want.epochs_done < 50

    assert run.status == "diverged" and "diverged" in run.error_message
    assert run.epochs_done == want.epochs_done
    assert [r.epoch for r in rows] == list(range(want.epochs_done + 1))
    assert rows[-1].error is None  # the non-finite error is stored as NULL
    assert np.array_equal(errors_of(rows)[:-1], want.errors[:-1])
    assert run.final_error is None
    assert run.best_error == np.nanmin(want.errors[np.isfinite(want.errors)])
    assert "final" in params and "initial" in params


@pytest.mark.parametrize("change", [
    {"activation": "bogus"},
    {"layers": [3, 4, 1]},          # dataset has 2 features
    {"learning_rate": -1.0},
    {"seed": None},
], ids=["activation", "layers", "learning_rate", "seed"])
def test_bad_spec_that_slipped_through_fails_with_a_message(sessions, change):
    run_id = store_run(sessions, epochs=5)
    with sessions() as session:
        run = session.get(Run, run_id)
        spec = {**run.spec, **change}
        session.execute(update(Run).where(Run.id == run_id).values(spec=spec))
        session.commit()

    assert execute_run(sessions, run_id) == "failed"  # and does not raise
    run, rows, params = load(sessions, run_id)
    assert run.status == "failed" and run.finished_at is not None
    name = next(iter(change))
    assert run.error_message and (name in run.error_message or "Error" in run.error_message)
    assert params == {}


def test_missing_spec_field_fails_instead_of_raising(sessions):
    run_id = store_run(sessions, epochs=5)
    with sessions() as session:
        spec = dict(session.get(Run, run_id).spec)
        del spec["dtype"]
        session.execute(update(Run).where(Run.id == run_id).values(spec=spec))
        session.commit()
    assert execute_run(sessions, run_id) == "failed"
    run, _, _ = load(sessions, run_id)
    assert run.status == "failed" and "dtype" in run.error_message


def test_unreadable_dataset_fails_the_run(sessions):
    run_id = store_run(sessions, epochs=5)
    with sessions() as session:
        run = session.get(Run, run_id)
        run.dataset.data = b"not an npz"
        run.dataset.content_hash = "0" * 64
        session.commit()
    assert execute_run(sessions, run_id) == "failed"
    run, _, _ = load(sessions, run_id)
    assert run.status == "failed" and "dataset" in run.error_message


def test_cancelled_queued_run_never_starts(sessions):
    run_id = store_run(sessions, epochs=5)
    with sessions() as session:
        assert store_runs.request_cancel(session, run_id).status == "cancelled"

    assert execute_run(sessions, run_id) == "cancelled"
    run, rows, params = load(sessions, run_id)
    assert run.status == "cancelled"
    assert run.attempts == 0 and run.started_at is None and run.worker is None
    assert rows == [] and params == {}


def test_missing_run_is_skipped(sessions):
    assert execute_run(sessions, 12345) == "missing"


def test_finished_run_is_not_trained_again(sessions):
    run_id = store_run(sessions, epochs=5)
    assert execute_run(sessions, run_id) == "succeeded"
    before = load(sessions, run_id)
    assert execute_run(sessions, run_id) == "succeeded"  # a duplicate delivery
    after = load(sessions, run_id)
    assert after[0].attempts == 1
    assert [(r.epoch, r.error, r.seconds) for r in after[1]] == \
        [(r.epoch, r.error, r.seconds) for r in before[1]]


def test_redelivered_running_run_is_retrained_from_scratch(db_sessions):
    sessions = db_sessions
    run_id = store_run(sessions, dataset="xor", epochs=30, learning_rate=0.5)
    with sessions() as session:  # a worker claimed it, wrote some history and was lost
        session.execute(update(Run).where(Run.id == run_id).values(
            status="running", attempts=1, worker="lost-host:1", epochs_done=7,
            final_error=123.0, best_error=99.0, best_epoch=3,
            heartbeat_at=utcnow() - timedelta(seconds=ReaperSettings().stale_seconds + 1)))
        session.execute(insert(Epoch), [{"run_id": run_id, "epoch": k, "error": 123.0 + k,
                                         "seconds": 0.1} for k in range(8)])
        session.execute(insert(Params), [{"run_id": run_id, "which": "initial",
                                          "dtype": "float64",
                                          "data": params_to_npz({"weights": [np.zeros((1, 1))],
                                                                 "biases": [np.zeros(1)]})}])
        session.commit()

    assert execute_run(sessions, run_id) == "succeeded"
    run, rows, params = load(sessions, run_id)
    want = direct(run.spec)
    assert run.status == "succeeded" and run.attempts == 2
    assert run.worker != "lost-host:1"
    assert [r.epoch for r in rows] == list(range(31))
    assert np.array_equal(errors_of(rows), want.errors)
    assert run.best_error == want.errors.min() and run.final_error == want.errors[-1]
    assert_same_params(params["initial"], want.initial_params)
    assert_same_params(params["final"], want.params)


def mark_running(sessions, run_id, worker, heartbeat_age: float):
    with sessions() as session:
        session.execute(update(Run).where(Run.id == run_id).values(
            status="running", attempts=1, worker=worker,
            heartbeat_at=utcnow() - timedelta(seconds=heartbeat_age)))
        session.commit()


def test_duplicate_delivery_leaves_a_live_workers_run_alone(sessions):
    """A second delivery of a run another host is training (its last write is recent) does
    not touch it (workers.tasks then does nothing; the reaper requeues the run should that
    worker stop beating)."""
    run_id = store_run(sessions, epochs=5)
    mark_running(sessions, run_id, "other-host:4242", heartbeat_age=1.0)
    assert execute_run(sessions, run_id) == "busy"
    run, rows, _ = load(sessions, run_id)
    assert run.status == "running" and run.attempts == 1 and run.worker == "other-host:4242"
    # ...until that worker has gone quiet for STALE_SECONDS
    assert execute_run(sessions, run_id,
                       timings=ReaperSettings(stale_seconds=0.5)) == "succeeded"
    assert load(sessions, run_id)[0].attempts == 2


def test_run_of_a_dead_local_process_is_taken_over_at_once(sessions):
    """A pool process of this host that died (reject_on_worker_lost redelivers its run at
    once, while its last write is still fresh) is seen to be gone by its pid."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run_id = store_run(sessions, epochs=5)
    mark_running(sessions, run_id, f"{socket.gethostname()}:{gone.pid}", heartbeat_age=0.0)
    assert execute_run(sessions, run_id) == "succeeded"
    assert load(sessions, run_id)[0].attempts == 2


def test_cancel_requested_while_a_lost_worker_trained_ends_the_run(sessions):
    run_id = store_run(sessions, epochs=30)
    with sessions() as session:
        session.execute(update(Run).where(Run.id == run_id).values(
            status="running", attempts=1, worker="lost-host:1", cancel_requested=True))
        session.execute(insert(Epoch), [{"run_id": run_id, "epoch": k, "error": 0.3,
                                         "seconds": 0.1} for k in range(3)])
        session.commit()
    assert execute_run(sessions, run_id) == "cancelled"
    run, rows, _ = load(sessions, run_id)
    assert run.status == "cancelled" and run.attempts == 1 and run.finished_at is not None
    assert len(rows) == 3  # history kept


@pytest.mark.slow
@pytest.mark.parametrize("fields", [
    {},
    {"batch_mode": "full", "shuffle": False, "learning_rate": 0.5},  # the lagging path
], ids=["minibatch-shuffled", "full-ordered"])
def test_cancel_during_training_stops_at_a_chunk_boundary(sessions, fields):
    run_id = store_run(sessions, **{**LONG, **fields})
    thread, outcome = start_in_thread(sessions, run_id)
    # Wait for the first flushed progress, then cancel from another session.
    eventually(lambda: epochs_done(sessions, run_id) > 0, message="first progress")
    with sessions() as session:
        assert store_runs.request_cancel(session, run_id).status == "running"
    thread.join(30)
    assert not thread.is_alive(), "the run did not stop after its cancel"
    assert outcome == {"status": "cancelled"}

    run, rows, params = load(sessions, run_id)
    done = run.epochs_done
    assert run.status == "cancelled" and run.cancel_requested
    assert 0 < done < LONG["epochs"]
    assert [r.epoch for r in rows] == list(range(done + 1))  # history kept, no gaps
    want = direct(run.spec, epochs=done)  # the same run, stopped where this one stopped
    assert np.array_equal(errors_of(rows), want.errors)
    assert_same_params(params["final"], want.params)
    assert_same_params(params["initial"], want.initial_params)
    assert run.final_error == want.errors[-1]


@pytest.mark.slow
def test_superseded_attempt_stops_writing(db_sessions):
    """A second delivery of a running run's task takes it over; the first attempt notices at
    its next write, stops, and leaves the history to the new attempt."""
    sessions = db_sessions
    run_id = store_run(sessions, **LONG)
    thread, outcome = start_in_thread(sessions, run_id)
    eventually(lambda: epochs_done(sessions, run_id) > 0, message="first progress")
    with sessions() as session:
        claimed = store_runs.claim_run(session, run_id, "second-delivery:1")
        assert claimed is not None and claimed.attempts == 2
    thread.join(30)
    assert not thread.is_alive()
    assert outcome == {"status": "superseded"}
    run, rows, params = load(sessions, run_id)
    assert run.status == "running" and run.attempts == 2 and run.worker == "second-delivery:1"
    assert rows == [] and params == {}
    # The first attempt's final write is refused too.
    with sessions() as session:
        assert not store_runs.finish_run(session, run_id, "succeeded", attempt=1)
        with pytest.raises(store_runs.LostRun):
            store_runs.record_progress(session, run_id, [], {"epochs_done": 1}, attempt=1)


def test_database_errors_are_left_to_the_task_to_retry(sessions, monkeypatch):
    """A database that fails mid-run for longer than the stale interval (0 s here) does not
    fail the run: execute_run raises ClaimInterrupted, naming its claim, from the database's
    error (the task retries later) and the next delivery, in this same process, takes the
    run over. (Within the interval the history writer keeps its rows and tries again:
    tests/workers/test_history_retry.py.)"""
    from sqlalchemy.exc import OperationalError

    from workers import history

    run_id = store_run(sessions, epochs=20)
    real = store_runs.record_progress

    def down(*args, **kwargs):
        raise OperationalError("UPDATE runs ...", {}, Exception("server closed the connection"))

    monkeypatch.setattr(history, "FLUSH_SECONDS", 0.0)
    monkeypatch.setattr(store_runs, "record_progress", down)
    with pytest.raises(ClaimInterrupted) as raised:
        execute_run(sessions, run_id, timings=ReaperSettings(stale_seconds=0.0))
    assert raised.value.attempt == 1 and isinstance(raised.value.__cause__, OperationalError)
    run, _, _ = load(sessions, run_id)
    assert run.status == "running" and run.attempts == 1

    monkeypatch.setattr(store_runs, "record_progress", real)
    assert execute_run(sessions, run_id) == "succeeded"  # its owner (this process) is idle
    run, rows, _ = load(sessions, run_id)
    assert run.attempts == 2 and len(rows) == 21


def test_the_retry_of_an_interrupted_claim_takes_the_run_over_on_any_worker(sessions,
                                                                             monkeypatch):
    """A run whose final transaction lost the database, claimed by a worker on another host
    whose heartbeat is still fresh, is taken over at once by the retry that names the
    interrupted claim (resume_attempt), not left for the reaper; a delivery that names no
    claim, or an older one, still finds it busy."""
    from sqlalchemy.exc import OperationalError

    from workers import execute

    run_id = store_run(sessions, epochs=10)

    def lost(*args, **kwargs):
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(execute, "worker_name", lambda: "another-host:4242")
    monkeypatch.setattr(store_runs, "complete_run", lost)
    with pytest.raises(ClaimInterrupted) as raised:
        execute_run(sessions, run_id)
    monkeypatch.undo()
    run, _, _ = load(sessions, run_id)
    assert (run.status, run.worker, run.attempts) == ("running", "another-host:4242", 1)

    fresh = ReaperSettings(stale_seconds=3600.0)
    assert execute_run(sessions, run_id, timings=fresh) == "busy"
    assert execute_run(sessions, run_id, timings=fresh, resume_attempt=0) == "busy"
    assert execute_run(sessions, run_id, timings=fresh,
                       resume_attempt=raised.value.attempt) == "succeeded"
    run, rows, params = load(sessions, run_id)
    assert run.attempts == 2 and len(rows) == 11 and set(params) == {"initial", "final"}


def test_datasets_are_cached_by_content(sessions):
    """A worker decompresses a dataset once; a dataset row with other content (SQLite can
    reuse the id of a deleted one) is read again."""
    from service.store import Dataset
    from service.store.arrays import content_hash, to_npz
    from workers import execute

    first = store_run(sessions, dataset="xor", epochs=10)
    assert execute_run(sessions, first) == "succeeded"
    with sessions() as session:
        dataset = session.get(Dataset, session.get(Run, first).dataset_id)
        assert (dataset.id, dataset.content_hash) in execute._DATASETS
        X, y = kernels.load_dataset("xor")
        X2, y2 = X[::-1].copy(), 1 - y[::-1]  # XNOR: other targets, so other errors
        dataset.data, dataset.content_hash = to_npz(X=X2, y=y2), content_hash(X2, y2)
        session.commit()
    second = store_run(sessions, dataset="xor", epochs=10)
    assert execute_run(sessions, second) == "succeeded"
    run, rows, _ = load(sessions, second)
    spec = {k: run.spec[k] for k in NUMERIC}
    assert np.array_equal(errors_of(rows), kernels.train(X2, y2, **spec).errors)
    assert not np.array_equal(errors_of(rows), kernels.train(X, y, **spec).errors)


@pytest.mark.parametrize("batch_mode", ["sgd", "minibatch", "full"])
def test_runs_sharing_a_split_train_as_on_a_fresh_one(sessions, batch_mode):
    """A worker splits a cached dataset once per (fraction, seed): the second run with the
    same split reuses the arrays the first trained on, which training left as they were."""
    from workers import execute

    spec = dict(dataset="circles", layers=[2, 8, 1], epochs=4, validation_split=0.25,
                seed=3, learning_rate=0.5, batch_mode=batch_mode, shuffle=True)
    first = store_run(sessions, **spec)
    assert execute_run(sessions, first) == "succeeded"
    cached = [v for k, v in execute._SPLITS.items() if k[1:] == (0.25, 3)]
    assert len(cached) == 1
    X, y = kernels.load_dataset("circles")
    fresh = split_validation(X, y, 0.25, 3)
    for got, want in zip(cached[0][:2] + cached[0][2], fresh[:2] + fresh[2]):
        assert np.array_equal(got, want)
    second = store_run(sessions, **spec)
    assert execute_run(sessions, second) == "succeeded"
    (_, rows1, _), (_, rows2, _) = load(sessions, first), load(sessions, second)
    assert np.array_equal(errors_of(rows1), errors_of(rows2))
    assert np.array_equal(errors_of(rows2), direct(load(sessions, second)[0].spec).errors)

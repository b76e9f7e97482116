"""A worker trains a spec's ``eval_every``: the stored history holds the evaluated epochs
only (with their epoch numbers), the same rows a run evaluated every epoch stores there; a
cancel keeps the last epoch run; successive halving still reads its rungs."""

import numpy as np
import pytest

from service.store import Run
from service.store import runs as store_runs
from tests.eventually import eventually
from workers.execute import execute_run

from .conftest import store_run
from .test_execute import (
    LONG,
    assert_same_params,
    direct,
    epochs_done,
    errors_of,
    load,
    start_in_thread,
)
from .test_execute_optimizers import make_sweep


@pytest.mark.parametrize("fields", [
    {"batch_size": 2},
    {"batch_mode": "full", "shuffle": False},  # the lagging path
    {"batch_mode": "full", "validation_split": 0.25, "batch_size": 3},
], ids=["minibatch", "full-ordered", "validation"])
def test_the_history_holds_the_evaluated_epochs(sessions, fields):
    spec = {"dataset": "iris", "layers": [4, 5, 3], "loss": "cross_entropy",
            "learning_rate": 0.3, "epochs": 23, **fields}
    every_id = store_run(sessions, eval_every=5, **spec)
    all_id = store_run(sessions, **spec)
    assert execute_run(sessions, every_id) == execute_run(sessions, all_id) == "succeeded"
    run, rows, params = load(sessions, every_id)
    _, all_rows, all_params = load(sessions, all_id)
    assert [r.epoch for r in rows] == [0, 5, 10, 15, 20, 23]
    by_epoch = {r.epoch: r for r in all_rows}
    for row in rows:
        other = by_epoch[row.epoch]
        assert (row.error, row.accuracy, row.val_error, row.val_accuracy) == (
            other.error, other.accuracy, other.val_error, other.val_accuracy)
    assert_same_params(params["final"], all_params["final"])
    assert run.epochs_done == 23 and run.final_error == rows[-1].error
    want = direct(run.spec)
    assert list(want.epochs_evaluated) == [r.epoch for r in rows]
    assert np.array_equal(errors_of(rows), want.errors)


@pytest.mark.slow
def test_a_cancel_keeps_the_last_epoch_run(sessions):
    run_id = store_run(sessions, **{**LONG, "eval_every": 7})
    thread, outcome = start_in_thread(sessions, run_id)
    eventually(lambda: epochs_done(sessions, run_id) > 0, message="first progress")
    with sessions() as session:
        assert store_runs.request_cancel(session, run_id).status == "running"
    thread.join(30)
    assert not thread.is_alive() and outcome == {"status": "cancelled"}
    run, rows, params = load(sessions, run_id)
    done = run.epochs_done
    epochs = [r.epoch for r in rows]
    assert epochs[-1] == done and epochs[:-1] == list(range(0, done, 7))
    want = direct(run.spec, epochs=done)
    assert np.array_equal(errors_of(rows), want.errors)  # eval_every 7, last epoch done
    assert_same_params(params["final"], want.params)


def test_successive_halving_reads_rungs_off_the_schedule(db_sessions):
    """Rungs at epochs 10 and 20 with eval_every 7: each rung epoch is evaluated too."""
    base = {"dataset": "xor", "layers": [2, 4, 1], "batch_mode": "full", "epochs": 40,
            "learning_rate": 0.5, "eval_every": 7}
    configs = [{"learning_rate": 0.5}, {"learning_rate": 1e-5}]
    _, ids = make_sweep(db_sessions, base, configs,
                        early_stopping={"min_epochs": 10, "reduction_factor": 2})
    statuses = [execute_run(db_sessions, run_id, enqueue=lambda _id: None) for run_id in ids]
    assert statuses == ["succeeded", "stopped_early"]
    _, rows, _ = load(db_sessions, ids[0])
    assert [r.epoch for r in rows] == [0, 7, 10, 14, 20, 21, 28, 35, 40]
    _, rows, _ = load(db_sessions, ids[1])
    assert [r.epoch for r in rows] == [0, 7, 10]


def test_a_two_thread_run_is_bit_identical_to_itself_rerun(sessions):
    """Same spec, seed, dtype and threads => the same bits (API.md's promise), on a full
    batch where one and two OpenBLAS threads may round differently (they need not agree)."""
    from workers.execute import Threads

    spec = {"dataset": "digits", "layers": [64, 128, 10], "loss": "cross_entropy",
            "batch_mode": "full", "shuffle": False, "epochs": 8, "learning_rate": 0.5,
            "threads": 2, "eval_every": 3}
    ids = [store_run(sessions, **spec) for _ in range(2)]
    for run_id in ids:
        assert execute_run(sessions, run_id, threads=Threads(1, 2)) == "succeeded"
    (a, rows_a, params_a), (b, rows_b, params_b) = (load(sessions, i) for i in ids)
    with sessions() as session:
        assert [session.get(Run, i).environment["threads"] for i in ids] == [2, 2]
    assert [r.epoch for r in rows_a] == [r.epoch for r in rows_b] == [0, 3, 6, 8]
    assert np.array_equal(errors_of(rows_a), errors_of(rows_b))
    for which in ("initial", "final"):
        assert_same_params(params_a[which], params_b[which])
    want = direct(a.spec)  # kernels.train at the spec's two threads
    assert np.array_equal(errors_of(rows_a), want.errors)

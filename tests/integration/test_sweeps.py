"""Sweeps with real ``celery worker`` processes, on the embedded defaults and on Redis +
PostgreSQL: max_concurrency kept by the store, every cell run once, successive halving
stopping exactly the bad runs at the first rung, and cancelling a whole sweep."""

from datetime import datetime

import pytest

from tests.eventually import eventually

from .test_service import FINAL, LONG, history

pytestmark = pytest.mark.slow


def post_sweep(api, body) -> dict:
    response = api.post("/api/v1/sweeps", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def get_sweep(api, sweep_id, **params) -> dict:
    response = api.get(f"/api/v1/sweeps/{sweep_id}", query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def wait_sweep(api, workers, sweep_id, timeout=90.0, on_poll=None) -> dict:
    """The sweep once it and all its runs are final; ``on_poll(sweep)`` sees every poll."""
    def finished():
        sweep = get_sweep(api, sweep_id)
        if on_poll is not None:
            on_poll(sweep)
        if sweep["status"] in ("succeeded", "failed", "cancelled") and \
                all(run["status"] in FINAL for run in sweep["runs"]):
            return sweep
        workers.assert_alive()
        return None

    return eventually(finished, timeout, interval=0.05, message=lambda: (
        f"sweep not done after {timeout:.0f} s: {get_sweep(api, sweep_id)['counts']}\n"
        + "\n".join(w.log() for w in workers.workers)))


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_max_concurrency_is_kept_and_every_cell_runs_once(api, workers):
    workers.start(3)
    body = {"base": {"dataset": "digits", "layers": [64, 16, 10], "loss": "cross_entropy",
                     "batch_mode": "minibatch", "epochs": 40},
            "grid": {"learning_rate": [0.01, 0.05, 0.1, 0.5], "batch_size": [16, 64]},
            "max_concurrency": 2}
    sweep = post_sweep(api, body)
    assert sweep["total"] == 8
    seen = []

    def active(polled):
        seen.append(sum(1 for run in polled["runs"] if run["status"] == "running"
                        or (run["status"] == "queued" and run["dispatched"])))

    done = wait_sweep(api, workers, sweep["id"], on_poll=active)
    assert done["status"] == "succeeded" and done["counts"] == {"succeeded": 8}
    assert max(seen) <= 2
    # From the runs' own timestamps: never more than two trained at once.
    events = sorted([(_time(r["started_at"]), 1) for r in done["runs"]]
                    + [(_time(r["finished_at"]), -1) for r in done["runs"]],
                    key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 2
    assert all(run["attempts"] == 1 and run["epochs_done"] == 40 for run in done["runs"])
    board = get_sweep(api, sweep["id"], metric="final_accuracy")["leaderboard"]
    assert len(board) == 8
    accuracies = [entry["final_accuracy"] for entry in board]
    assert accuracies == sorted(accuracies, reverse=True)


def test_successive_halving_stops_exactly_the_bad_runs_at_the_first_rung(api, workers):
    workers.start(2)
    good, bad = [0.5, 1.0, 2.0], [1e-4, 2e-4, 3e-4]
    body = {"base": {"dataset": "xor", "layers": [2, 4, 1], "batch_mode": "full",
                     "epochs": 30, "seed": 0},
            # One at a time, in this order: each good run is the best so far at epoch 10,
            # and each bad one arrives after three better runs.
            "grid": {"learning_rate": good + bad}, "max_concurrency": 1,
            "early_stopping": {"min_epochs": 10, "reduction_factor": 3}}
    sweep = post_sweep(api, body)
    done = wait_sweep(api, workers, sweep["id"])
    assert done["status"] == "succeeded"
    by_lr = {run["spec"]["learning_rate"]: run for run in done["runs"]}
    for lr in good:
        assert by_lr[lr]["status"] == "succeeded" and by_lr[lr]["epochs_done"] == 30
    for lr in bad:
        run = by_lr[lr]
        assert run["status"] == "stopped_early" and run["epochs_done"] == 10, run
        assert [row["epoch"] for row in history(api, run["id"])] == list(range(11))
    assert done["counts"] == {"succeeded": 3, "stopped_early": 3}


def test_cancelling_a_sweep_cancels_its_queued_and_running_runs(api, workers):
    workers.start(2)
    body = {"base": LONG, "grid": {"learning_rate": [0.01, 0.02, 0.03, 0.04]},
            "max_concurrency": 2}
    sweep = post_sweep(api, body)

    def two_running() -> bool:
        polled = get_sweep(api, sweep["id"])
        running = [r for r in polled["runs"] if r["status"] == "running" and r["epochs_done"]]
        if len(running) == 2:
            return True
        workers.assert_alive()
        return False

    eventually(two_running, 60, interval=0.05,
               message=lambda: str(get_sweep(api, sweep["id"])["counts"]))
    response = api.post(f"/api/v1/sweeps/{sweep['id']}/cancel")
    assert response.status_code == 202
    done = wait_sweep(api, workers, sweep["id"], timeout=60)
    assert done["status"] == "cancelled" and done["counts"] == {"cancelled": 4}
    for run in done["runs"][:2]:
        assert run["epochs_done"] > 0 and history(api, run["id"])
    for run in done["runs"][2:]:
        assert run["started_at"] is None and not run["dispatched"]

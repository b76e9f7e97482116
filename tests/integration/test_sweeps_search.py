"""Model-based sweeps (search tpe) with real ``celery worker`` processes, on the embedded
defaults and on Redis + PostgreSQL: the workers ask each next run in the transaction that
ends one, a seeded sweep with one slot is reproducible, two slots stay two, and successive
halving stops runs of a TPE sweep."""

import pytest

from .test_sweeps import _time, post_sweep, wait_sweep

pytestmark = pytest.mark.slow

BODY = {"base": {"dataset": "xor", "layers": [2, 4, 1], "batch_mode": "full", "epochs": 15,
                 "seed": 0},
        "search": "tpe", "trials": 6, "seed": 11,
        "space": {"learning_rate": {"loguniform": [1e-3, 3.0]},
                  "layers": {"choice": [[2, 4, 1], [2, 8, 1], [2, 4, 4, 1]]},
                  "init": {"choice": ["uniform", "xavier"]}}}


def configs(sweep) -> list[dict]:
    return [run["config"] for run in sweep["runs"]]


def test_a_seeded_tpe_sweep_with_one_slot_runs_the_same_configurations_in_order(api, workers):
    workers.start(2)
    first = wait_sweep(api, workers, post_sweep(api, {**BODY, "max_concurrency": 1})["id"])
    again = wait_sweep(api, workers, post_sweep(api, {**BODY, "max_concurrency": 1})["id"])
    other = wait_sweep(api, workers, post_sweep(api, {**BODY, "max_concurrency": 1,
                                                      "seed": 12})["id"])
    for done in (first, again, other):
        assert done["status"] == "succeeded" and done["kind"] == "tpe"
        assert done["total"] == 6 and done["counts"] == {"succeeded": 6}
        assert all(run["attempts"] == 1 for run in done["runs"])
    assert configs(first) == configs(again) and configs(first) != configs(other)
    # Same configurations, same seeds: the same results (the runs are bit-reproducible).
    assert [r["final_error"] for r in first["runs"]] == [r["final_error"] for r in again["runs"]]
    # One slot: each run started after the one before it ended.
    runs = first["runs"]
    for before, after in zip(runs, runs[1:]):
        assert _time(after["started_at"]) >= _time(before["finished_at"])


def test_a_tpe_sweep_keeps_its_slots_and_spends_its_budget_once(api, workers):
    workers.start(3)
    sweep = post_sweep(api, {**BODY, "trials": 8, "max_concurrency": 2,
                             "early_stopping": {"min_epochs": 5, "reduction_factor": 2}})
    assert sweep["total"] == 2
    seen = []

    def active(polled):
        seen.append(sum(1 for run in polled["runs"] if run["status"] in ("queued", "running")))

    done = wait_sweep(api, workers, sweep["id"], on_poll=active)
    assert done["status"] == "succeeded" and done["total"] == 8 and max(seen) <= 2
    assert set(done["counts"]) <= {"succeeded", "stopped_early", "diverged"}
    assert len({str(c) for c in configs(done)}) == 8
    assert all(run["attempts"] == 1 for run in done["runs"])
    assert [entry["run_id"] for entry in done["leaderboard"]]

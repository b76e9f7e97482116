"""A run with Adam, a cosine schedule and stopping on a plateau, through a real ``celery
worker``: submitted over HTTP, trained, read back (issue 13). On the embedded defaults and on
Redis + PostgreSQL."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import kernels

from .test_service import WORKER_THREADS, assert_params_equal, get_run, history, params, \
    submit, wait_for

pytestmark = pytest.mark.slow

SPEC = {"dataset": "moons", "layers": [2, 8, 1], "learning_rate": 0.05, "batch_size": 16,
        "epochs": 500, "seed": 1, "optimizer": "adam", "weight_decay": 1e-4,
        "lr_schedule": {"kind": "cosine", "lr_min": 0.001},
        "stop_on_plateau": {"metric": "error", "patience": 5, "min_delta": 1e-3}}


def test_adam_cosine_run_stops_on_a_plateau(backend, workers, api):
    workers.start(1)
    run_id = submit(api, SPEC)
    run = wait_for(api, workers, [run_id])[run_id]
    spec = run["spec"]
    assert (spec["beta1"], spec["beta2"], spec["eps"]) == (0.9, 0.999, 1e-8)
    assert spec["lr_schedule"] == {"kind": "cosine", "lr_min": 0.001}
    assert run["status"] == "succeeded", run
    assert run["stop_reason"] == "plateau"
    assert run["epochs_done"] < run["epochs"] == 500
    assert run["epochs_done"] - run["best_epoch"] == 5
    X, y = kernels.load_dataset("moons")
    with threadpool_limits(WORKER_THREADS):
        want = kernels.train(X, y, **{k: v for k, v in spec.items()
                                      if k not in ("dataset", "validation_split", "name",
                                                   "tags", "threads")})
    assert want.stop_reason == "plateau" and want.best_epoch == run["best_epoch"]
    rows = history(api, run_id)
    assert [r["epoch"] for r in rows] == list(range(run["epochs_done"] + 1))
    assert np.array_equal([r["error"] for r in rows], want.errors)
    # restore_best (the default): the stored final parameters are the best epoch's
    assert_params_equal(params(api, run_id), want.params)
    found = api.get("/api/v1/runs", query_string={
        "where": 'optimizer = "adam" and stop_reason = plateau'}).get_json()["runs"]
    assert [r["id"] for r in found] == [run_id]
    assert get_run(api, run_id)["best_epoch"] == run["best_epoch"]

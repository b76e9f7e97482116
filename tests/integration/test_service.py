"""The whole path of a run with real ``celery worker`` processes: submit over HTTP, a
worker trains it, read it back. Each test runs on the embedded defaults (SQLite file and
filesystem broker) and on Redis + PostgreSQL."""

import io
import os
import signal

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import kernels
from tests.eventually import eventually

pytestmark = pytest.mark.slow

# BLAS threads per worker process (workers.celery_app.limit_threads, DESCENT_WORKER_THREADS).
WORKER_THREADS = 1

FINAL = ("succeeded", "failed", "diverged", "cancelled", "stopped_early")
NUMERIC = ("layers", "activation", "output_activation", "loss", "learning_rate", "batch_mode",
           "batch_size", "epochs", "seed", "shuffle", "init", "dtype")
# Minutes of training unless cancelled (digits, ~15 ms per epoch).
LONG = {"dataset": "digits", "layers": [64, 32, 10], "loss": "cross_entropy",
        "learning_rate": 0.05, "epochs": 100_000}


def submit(api, spec) -> int:
    response = api.post("/api/v1/runs", json=spec)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "queued"
    return body["id"]


def get_run(api, run_id) -> dict:
    response = api.get(f"/api/v1/runs/{run_id}")
    assert response.status_code == 200
    return response.get_json()


def wait_for(api, workers, run_ids, states=FINAL, timeout=60.0) -> dict:
    """{id: run} once every run is in one of ``states``; fails if a worker dies."""
    pending, runs = set(run_ids), {}

    def all_done():
        for run_id in sorted(pending):
            run = get_run(api, run_id)
            if run["status"] in states:
                runs[run_id] = run
                pending.discard(run_id)
        if pending:
            workers.assert_alive()
        return not pending

    def stuck() -> str:
        states_now = {i: get_run(api, i)["status"] for i in sorted(pending)}
        return (f"runs not done after {timeout:.0f} s: {states_now}\n"
                + "\n".join(w.log() for w in workers.workers))

    eventually(all_done, timeout, interval=0.05, message=stuck)
    return runs


def wait_running(api, run_id, workers=None, timeout=60.0) -> dict:
    """The run once it is running with some progress written; fails if it leaves the queue
    for any other state, or (given ``workers``) if a worker dies."""
    def progressed():
        run = get_run(api, run_id)
        if run["status"] == "running" and run["epochs_done"] > 0:
            return run
        assert run["status"] in ("queued", "running"), run
        if workers is not None:
            workers.assert_alive()
        return None

    return eventually(progressed, timeout,
                      message=lambda: f"run never made progress: {get_run(api, run_id)}")


def history(api, run_id) -> list[dict]:
    response = api.get(f"/api/v1/runs/{run_id}/history")
    assert response.status_code == 200
    return response.get_json()["history"]


def params(api, run_id, which="final") -> dict:
    response = api.get(f"/api/v1/runs/{run_id}/params?which={which}")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    dtype = np.dtype(body["dtype"])
    return {"weights": [np.array(W, dtype=dtype) for W in body["weights"]],
            "biases": [np.array(B, dtype=dtype) for B in body["biases"]]}


def direct(spec, **overrides):
    """kernels.train on the same data, spec and seed (no validation split here), with the
    workers' BLAS thread count: API.md promises bit-identical results for the same thread
    settings only, and OpenBLAS's multithreaded GEMM (its Haswell kernels, for one) rounds
    some outputs differently from its one-thread GEMM."""
    spec = {**spec, **overrides}
    assert not spec.get("validation_split")
    X, y = kernels.load_dataset(spec["dataset"])
    with threadpool_limits(WORKER_THREADS):
        return kernels.train(X, y, **{name: spec[name] for name in NUMERIC})


def assert_params_equal(got, want):
    for a, b in zip(got["weights"] + got["biases"], want["weights"] + want["biases"]):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def assert_shapes(got, layers):
    assert [W.shape for W in got["weights"]] == list(zip(layers[1:], layers[:-1]))
    assert [B.shape for B in got["biases"]] == [(n,) for n in layers[1:]]


def assert_trained_as_kernels_train(api, run):
    """History of epochs + 1 rows, parameter shapes from layers, final (and initial)
    parameters bit-identical to kernels.train for the same spec and seed."""
    spec = run["spec"]
    rows = history(api, run["id"])
    assert [r["epoch"] for r in rows] == list(range(spec["epochs"] + 1))
    want = direct(spec)
    assert np.array_equal([r["error"] for r in rows], want.errors)
    final = params(api, run["id"])
    assert_shapes(final, spec["layers"])
    assert_params_equal(final, want.params)
    assert_params_equal(params(api, run["id"], "initial"), want.initial_params)
    npz = api.get(f"/api/v1/runs/{run['id']}/params?format=npz")
    with np.load(io.BytesIO(npz.data)) as arrays:
        assert np.array_equal(arrays["W1"], want.params["weights"][0])
    assert run["epochs_done"] == spec["epochs"]
    assert run["final_error"] == want.errors[-1]
    assert run["attempts"] == 1 and run["worker"]


def test_submitted_runs_are_trained_by_a_worker(backend, workers, api):
    workers.start(1)
    specs = [
        {"dataset": "xor", "layers": [2, 8, 1], "learning_rate": 0.5, "batch_size": 2,
         "epochs": 300, "seed": 3},
        {"dataset": "spirals", "layers": [2, 16, 3], "loss": "cross_entropy",
         "activation": "relu", "init": "he", "dtype": "float32", "epochs": 40},
        {"dataset": "circles", "layers": [2, 6, 6, 1], "batch_mode": "full",
         "shuffle": False, "activation": ["tanh", "sigmoid"], "epochs": 75},
    ]
    ids = [submit(api, spec) for spec in specs]
    runs = wait_for(api, workers, ids)
    for run_id in ids:
        run = runs[run_id]
        assert run["status"] == "succeeded", run
        assert_trained_as_kernels_train(api, run)


def test_cancel_a_running_run(backend, workers, api):
    workers.start(1)
    run_id = submit(api, LONG)
    wait_running(api, run_id, workers, timeout=30)
    response = api.post(f"/api/v1/runs/{run_id}/cancel")
    assert response.status_code == 202
    run = wait_for(api, workers, [run_id], timeout=30)[run_id]

    assert run["status"] == "cancelled"
    done = run["epochs_done"]
    assert 0 < done < LONG["epochs"]
    rows = history(api, run_id)
    assert [r["epoch"] for r in rows] == list(range(done + 1))  # history kept
    want = direct(run["spec"], epochs=done)
    assert np.array_equal([r["error"] for r in rows], want.errors)
    assert_params_equal(params(api, run_id), want.params)
    # a finished run cannot be cancelled again
    assert api.post(f"/api/v1/runs/{run_id}/cancel").status_code == 409


def test_cancelled_queued_run_never_starts(backend, workers, api):
    # No worker yet: the run waits in the queue and is cancelled there.
    run_id = submit(api, {"dataset": "xor", "layers": [2, 4, 1], "epochs": 20})
    assert api.post(f"/api/v1/runs/{run_id}/cancel").get_json()["status"] == "cancelled"
    after = submit(api, {"dataset": "xor", "layers": [2, 4, 1], "epochs": 20})
    workers.start(1)
    runs = wait_for(api, workers, [after])  # queued behind the cancelled one
    assert runs[after]["status"] == "succeeded"
    run = get_run(api, run_id)
    assert run["status"] == "cancelled" and run["attempts"] == 0 and run["started_at"] is None
    assert history(api, run_id) == []


def test_two_workers_finish_20_concurrent_runs(backend, workers, api):
    workers.start(2)
    specs = []
    for k in range(20):
        dataset, layers = [("xor", [2, 4, 1]), ("circles", [2, 8, 1]),
                           ("moons", [2, 6, 1]), ("spirals", [2, 8, 3])][k % 4]
        specs.append({"dataset": dataset, "layers": layers, "epochs": 50 + 10 * k,
                      "seed": k, "learning_rate": 0.3, "batch_size": 16,
                      "loss": "cross_entropy" if layers[-1] == 3 else "mse"})
    ids = [submit(api, spec) for spec in specs]
    runs = wait_for(api, workers, ids, timeout=120)

    assert {run["status"] for run in runs.values()} == {"succeeded"}
    for run_id, spec in zip(ids, specs):
        rows = history(api, run_id)
        assert [r["epoch"] for r in rows] == list(range(spec["epochs"] + 1)), run_id
        assert runs[run_id]["epochs_done"] == spec["epochs"]
        assert runs[run_id]["attempts"] == 1
        assert_params_equal(params(api, run_id), direct(runs[run_id]["spec"]).params)
    # both worker processes took part
    assert len({run["worker"] for run in runs.values()}) == 2


def test_a_killed_pool_process_has_its_run_redelivered(backend, workers, api):
    """acks_late + reject_on_worker_lost: when the process training a run dies, the broker
    delivers the run again and it is retrained from scratch (attempt 2, no duplicate rows)."""
    workers.start(1)
    # About 2.5 s on a fast core: long enough past the first progress write (after 0.5 s,
    # workers.history.FLUSH_SECONDS) to be caught running (800 epochs could end first).
    spec = {"dataset": "digits", "layers": [64, 16, 10], "loss": "cross_entropy",
            "learning_rate": 0.05, "epochs": 4000}
    run = wait_running(api, submit(api, spec), timeout=30)
    run_id = run["id"]
    pid = int(run["worker"].rsplit(":", 1)[1])  # host:pid of the pool process
    assert pid not in [w.process.pid for w in workers.workers]
    os.kill(pid, signal.SIGKILL)

    run = wait_for(api, workers, [run_id], timeout=60)[run_id]
    assert run["status"] == "succeeded", run
    assert run["attempts"] == 2 and run["worker"] != f"{run['worker'].rsplit(':', 1)[0]}:{pid}"
    rows = history(api, run_id)
    assert [r["epoch"] for r in rows] == list(range(spec["epochs"] + 1))
    want = direct(run["spec"])
    assert np.array_equal([r["error"] for r in rows], want.errors)
    assert_params_equal(params(api, run_id), want.params)


@pytest.mark.parametrize("url", ["sqlite_url", pytest.param("postgres_url",
                                                            marks=pytest.mark.postgres)])
def test_alembic_check_finds_no_drift(request, url):
    import migrations

    migrations.check(request.getfixturevalue(url))

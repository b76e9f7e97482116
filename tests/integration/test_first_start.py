"""A worker's first start on a machine whose kernel cache is empty (a real ``celery worker``
with an empty NUMBA_CACHE_DIR, on the embedded defaults): it is ready at once and compiles
in the background; the example run trains interpreted meanwhile, with the bits of the
compiled kernels, and a larger run waits for the compile, then trains compiled."""

import time

import pytest

import kernels
from kernels import compilestate

from .test_service import NUMERIC, assert_params_equal, get_run, params, submit, wait_for

pytestmark = pytest.mark.slow

XOR = {"dataset": "xor", "layers": [2, 8, 1], "activation": "sigmoid",
       "output_activation": "sigmoid", "loss": "mse", "learning_rate": 2.0,
       "batch_mode": "full", "epochs": 3000, "seed": 0}
# Beyond workers.engines.INTERPRETED_BUDGET: it waits for the compiled kernels.
LARGER = {**XOR, "epochs": 200_000, "learning_rate": 0.5}
# On a loaded 2-core machine the background compile can take a minute.
COMPILE_TIMEOUT = 240.0


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_a_cold_worker_trains_the_example_at_once_and_the_rest_after_its_compile(
        backend, workers, api, tmp_path, monkeypatch):
    cache = tmp_path / "numba-cache"
    backend.env["NUMBA_CACHE_DIR"] = str(cache)
    started = time.monotonic()
    workers.start(1)
    ready = time.monotonic() - started
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(cache))  # this process looks at the same cache
    assert compilestate.first_compile_running(), workers.workers[0].log()
    assert not compilestate.training_kernels_cached()

    example = submit(api, XOR)
    larger = submit(api, LARGER)
    runs = wait_for(api, workers, [example], timeout=60)
    assert runs[example]["status"] == "succeeded"
    # The example ended before the compile did: it trained interpreted.
    assert compilestate.first_compile_running(), (ready, workers.workers[0].log())
    runs = wait_for(api, workers, [larger], timeout=COMPILE_TIMEOUT)
    assert runs[larger]["status"] == "succeeded"
    assert compilestate.training_kernels_cached()
    log = workers.workers[0].log()
    assert f"run {example}: the kernels are still compiling; training it interpreted" in log
    assert f"run {larger}: waiting for the kernels' first compile" in log

    monkeypatch.delenv("NUMBA_CACHE_DIR")  # the session's warm cache for the reference
    X, y = kernels.load_dataset("xor")
    for run_id, spec in ((example, XOR), (larger, LARGER)):
        want = kernels.train(X, y, **{name: spec[name] for name in NUMERIC if name in spec})
        assert_params_equal(params(api, run_id), want.params)
        assert get_run(api, run_id)["final_error"] == want.errors[-1]

"""``threads`` and ``eval_every`` with real ``celery worker`` processes (issue 15): a run on
two BLAS threads and its rerun are bit-identical and record their threads; an eval_every
run's history holds the evaluated epochs, bit-identical to kernels.train on the same spec
and threads. Each test runs on the embedded defaults and on Redis + PostgreSQL."""

import json
import os

import numpy as np
import pytest

import kernels
from workers.execute import training_blas_threads
from tests.service.test_cli import invoke

from .test_service import NUMERIC, assert_params_equal, history, params, submit, wait_for
from .test_verify import live, run_json  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif((os.cpu_count() or 1) < 2,
                                 reason="threads=2 needs DESCENT_MAX_THREADS >= 2 (its "
                                        "default is the machine's cores)")]

# Products of batch x fan-in x fan-out well above kernels.knobs.BLAS_MIN: BLAS does the work.
SPEC = {"dataset": "digits", "layers": [64, 96, 10], "loss": "cross_entropy",
        "batch_mode": "minibatch", "batch_size": 128, "epochs": 12, "learning_rate": 0.2,
        "seed": 5}


def direct(spec, threads):
    """kernels.train on the same data, spec and seed with ``threads`` threads."""
    X, y = kernels.load_dataset(spec["dataset"])
    arguments = {**{name: spec[name] for name in NUMERIC}, "threads": threads}
    with training_blas_threads(arguments, len(X)):
        return kernels.train(X, y, eval_every=spec.get("eval_every", 1), **arguments)


def test_a_two_thread_run_and_its_rerun_are_bit_identical(live, tmp_path):  # noqa: F811
    base_url, env = live
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    submitted = invoke(["submit", str(spec_file), "--threads", "2", "--eval-every", "5",
                        "--wait"], env=env)
    assert submitted.exit_code == 0, submitted.output
    origin = int(submitted.output.split()[2].rstrip(";"))
    verified = invoke(["verify", str(origin), "--timeout", "120"], env=env)
    assert verified.exit_code == 0, verified.output
    assert "bit-identical" in verified.output and "environment: the same" in verified.output
    again = int(verified.output.split(" as run ")[1].split(";")[0])
    a, b = run_json(base_url, str(origin)), run_json(base_url, str(again))
    assert a["spec"]["threads"] == b["spec"]["threads"] == 2
    assert a["environment"]["threads"] == 2 and a["environment"]["blas"]["num_threads"] == 2
    assert a["environment"] == b["environment"]
    verdict = run_json(base_url, f"{again}/verification")
    assert verdict["verdict"] == "bit-identical" and verdict["history"]["rows"] == 4


def test_runs_train_as_kernels_train_at_their_threads(backend, workers, api):
    workers.start(1)
    specs = [{**SPEC, "threads": 2, "eval_every": 5},
             {**SPEC, "threads": 1, "eval_every": 12},
             {**SPEC, "threads": 2, "batch_mode": "full", "shuffle": False, "eval_every": 4}]
    ids = [submit(api, spec) for spec in specs]
    runs = wait_for(api, workers, ids, timeout=120)
    expected_epochs = [[0, 5, 10, 12], [0, 12], [0, 4, 8, 12]]
    for run_id, spec, epochs in zip(ids, specs, expected_epochs):
        run = runs[run_id]
        assert run["status"] == "succeeded", run
        assert run["environment"]["threads"] == spec["threads"]
        rows = history(api, run_id)
        assert [r["epoch"] for r in rows] == epochs
        want = direct(run["spec"], spec["threads"])
        assert np.array_equal([r["error"] for r in rows], want.errors)
        assert_params_equal(params(api, run_id), want.params)
        assert run["final_error"] == want.errors[-1] and run["epochs_done"] == 12

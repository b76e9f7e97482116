"""Runs that prove they reproduce, end to end: `descent submit --wait` and `descent verify`
against a real `descent api` process, the runs trained by a real ``celery worker``. A run and
its rerun on the same worker are bit-identical, and both record where they trained. Each
test runs on the embedded defaults and on Redis + PostgreSQL."""

import json
import re

import numpy as np
import pytest
import requests
from sqlalchemy import update

from service.store import Params, make_engine, make_sessionmaker
from service.store.arrays import params_from_npz, params_to_npz
from tests.service.test_cli import auth, invoke, start_api, stop

pytestmark = pytest.mark.slow

# Shuffled minibatches, a validation split, softmax and cross-entropy, in float32: every
# source of order the contract fixes by the seed.
SPEC = {"dataset": "digits", "layers": [64, 24, 10], "loss": "cross_entropy",
        "batch_mode": "minibatch", "batch_size": 32, "shuffle": True, "epochs": 15,
        "learning_rate": 0.1, "seed": 11, "validation_split": 0.2, "init": "xavier",
        "dtype": "float32"}


@pytest.fixture
def live(backend, workers):
    """(base URL of a `descent api` process, the CLI's environment), one worker running."""
    workers.start(1)
    env = {"DESCENT_DATABASE_URL": backend.settings.database_url,
           "DESCENT_BROKER_URL": backend.settings.broker_url}
    process, base_url, log = start_api(backend.cwd, **env)
    try:
        yield base_url, {"DESCENT_API_URL": base_url}
    finally:
        stop(process, log, within=15)


def run_json(base_url: str, path: str) -> dict:
    response = requests.get(f"{base_url}/api/v1/runs/{path}", headers=auth(base_url),
                            timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_run_and_its_rerun_on_the_same_worker_are_bit_identical(live, backend, tmp_path):
    base_url, env = live
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    submitted = invoke(["submit", str(spec_file), "--wait"], env=env)
    assert submitted.exit_code == 0, submitted.output
    origin = int(submitted.output.split()[2].rstrip(";"))

    verified = invoke(["verify", str(origin), "--timeout", "120"], env=env)
    assert verified.exit_code == 0, verified.output
    assert f"Verification of run {origin} against run" in verified.output
    assert "bit-identical" in verified.output and "environment: the same" in verified.output
    again = int(verified.output.split(" as run ")[1].split(";")[0])

    a, b = run_json(base_url, str(origin)), run_json(base_url, str(again))
    assert b["rerun_of"] == origin and a["worker"] == b["worker"]
    env_a = a["environment"]
    assert env_a == b["environment"]
    assert env_a["dtype"] == "float32" and env_a["dataset"]["name"] == "digits"
    # One BLAS thread per worker process (DESCENT_WORKER_THREADS' default).
    assert env_a["blas"]["num_threads"] == 1
    verdict = run_json(base_url, f"{again}/verification")
    assert verdict["verdict"] == "bit-identical" and verdict["runs"] == [origin, again]
    assert verdict["history"]["rows"] == 16

    shown = invoke(["show", str(again)], env=env)
    assert shown.exit_code == 0, shown.output
    assert re.search(rf"rerun of +run {origin}\b", shown.output), shown.output
    assert "Environment" in shown.output and env_a["blas"]["internal_api"] in shown.output
    assert env_a["dataset"]["content_hash"] in shown.output
    assert "bit-identical" in shown.output

    # Had the rerun's final parameters come out otherwise, `descent show` would say where.
    engine = make_engine(backend.settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            row = session.get(Params, (again, "final"))
            params = params_from_npz(row.data)
            params["biases"][0][5] = np.float32(-params["biases"][0][5] or 1)
            session.execute(update(Params).where(Params.run_id == again,
                                                 Params.which == "final")
                            .values(data=params_to_npz(params)))
            session.commit()
    finally:
        engine.dispose()
    shown = invoke(["show", str(origin)], env=env)
    assert shown.exit_code == 0, shown.output
    assert "differs" in shown.output
    assert "final parameters: first differ at layer 1 B[5]" in shown.output

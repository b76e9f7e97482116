"""Fixtures and helpers of the API tests: the embedded broker's message folder, apps on
changed settings, direct store sessions, and runs trained in the test itself (no worker)."""

import base64
import dataclasses
import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

import kernels
from service.runspec import OPTIMIZER_FIELDS
from service.store import Epoch, Run
from service.store import runs as store_runs
from service.store.arrays import params_to_npz
from service.store.datasets import dataset_arrays

from ..conftest import build_app, close_app

API = "/api/v1"
# The run spec fields kernels.train takes as they are.
KERNEL_FIELDS = ("layers", "activation", "output_activation", "loss", "learning_rate",
                 "batch_mode", "batch_size", "epochs", "seed", "shuffle", "init", "dtype")


@pytest.fixture(autouse=True)
def kernel_status_of_its_own(tmp_path, monkeypatch):
    """In this process, each test reads and writes the workers' compile status
    (kernels.compilestate) in an empty folder of its own: the session's warm-up
    (tests/conftest.py) may be compiling the kernels meanwhile, which health and the
    dashboard would otherwise report. The kernels stay cached where they are, and
    processes the test starts use the real status folder."""
    from kernels import compilestate

    monkeypatch.setattr(compilestate, "_status_dir", lambda: tmp_path / "compile-status")


@pytest.fixture
def queue_dir(embedded_broker_url) -> Path:
    """Where the embedded (filesystem) broker of the ``app`` fixture writes task messages."""
    parsed = urlparse(embedded_broker_url)
    return Path(parsed.netloc + parsed.path) / "queue"


def queued_run_ids(queue_dir: Path) -> list[int]:
    """The run ids of the train_run messages waiting in an embedded broker folder, oldest
    first."""
    ids = []
    if not queue_dir.exists():
        return ids
    for path in sorted(queue_dir.glob("*.msg")):
        message = json.loads(path.read_text())
        assert message["headers"]["task"] == "workers.tasks.train_run"
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        ids.append(args[0])
    return ids


@pytest.fixture
def sessions(app):
    """The app's sessionmaker, for arranging state the way a worker would. Use it as
    ``with sessions() as session:`` and commit (a real_database test's open SQLite
    transaction would block the API's writes)."""
    return app.extensions["descent"]["sessions"]


@pytest.fixture
def make_client(settings, app_sessions, token):
    """make_client(**changes): a test client (sending alice's token) of an app whose
    Settings are the parametrised ones with ``changes`` (for instance limits=Limits(...) or
    another broker_url). It shares the test's database connection unless ``changes`` moves
    it to another database."""
    apps = []

    def make(**changes):
        sessions = None if "database_url" in changes else app_sessions
        app = build_app(dataclasses.replace(settings, **changes), sessions, TESTING=True)
        apps.append(app)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return client

    yield make
    for app in apps:
        close_app(app)


def error_of(response, status: int) -> dict:
    """The {"code", "message", "fields"} of an error response, checking its shape."""
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.is_json, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "fields"}, error
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fields"], dict)
    assert all(isinstance(m, str) and m for m in error["fields"].values()), error["fields"]
    return error


def submit(client, **spec) -> dict:
    """POST a run spec (xor, [2, 4, 1] unless given) and return the 202 body."""
    spec = {"dataset": "xor", "layers": [2, 4, 1], **spec}
    response = client.post(f"{API}/runs", json=spec)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def all_runs(client, **params) -> list[dict]:
    response = client.get(f"{API}/runs", query_string={"limit": 500, **params})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["next_cursor"] is None
    return response.get_json()["runs"]


def train_run(sessions, run_id: int, status: str = "succeeded"):
    """Do what a worker does, in the test: claim the run, train it with kernels.train, store
    its history, summary and parameters, and finish it. Returns the TrainResult."""
    with sessions() as session:
        run = store_runs.claim_run(session, run_id, "test-worker")
        assert run is not None
        spec = dict(run.spec)
        X, y = dataset_arrays(run.dataset)
    result = kernels.train(X, y, **{name: spec[name] for name in KERNEL_FIELDS},
                           **{name: spec[name] for name in OPTIMIZER_FIELDS if name in spec},
                           eval_every=spec.get("eval_every", 1))
    with sessions() as session:
        for k, (epoch, error) in enumerate(zip(result.epochs_evaluated.tolist(), result.errors)):
            session.add(Epoch(run_id=run_id, epoch=epoch, error=float(error),
                              accuracy=None if result.accuracy is None
                              else float(result.accuracy[k]),
                              seconds=0.001 * epoch))
        errors = [float(e) for e in result.errors]
        run = session.get(Run, run_id)
        run.epochs_done = result.epochs_done
        run.final_error = errors[-1]
        run.best_error = min(errors)
        run.best_epoch = (int(result.epochs_evaluated[errors.index(min(errors))])
                          if result.best_epoch is None else result.best_epoch)
        run.stop_reason = result.stop_reason
        if result.accuracy is not None:
            run.final_accuracy = float(result.accuracy[-1])
        store_runs.store_params(session, run_id, "initial", spec["dtype"],
                                params_to_npz(result.initial_params))
        store_runs.store_params(session, run_id, "final", spec["dtype"],
                                params_to_npz(result.params))
        store_runs.finish_run(session, run_id, status)
        session.commit()
    return result



def pytest_itemcollected(item):
    """Give each schemathesis case (one item per API operation) its own node id. Under
    pytest 9.2 they all keep the test function's id, and pytest-xdist, which hands out tests
    by id, would run only one of them."""
    from _pytest.nodeid import NodeId

    parent, _, last = item.nodeid.rpartition("::")
    if parent and last != item.name:
        item._id = NodeId.parse(f"{parent}::{item.name}")

"""Work and storage bounded by what they cost (issue 12): the work limit counts parameters x
samples x epochs, a run's stored parameter bytes are capped, each user has quotas on active
runs and stored bytes (429 quota_exceeded naming the quota), sweeps are checked cell by cell
and as a whole, and a float32 run on data beyond float32's range is refused at submit."""

import threading

import numpy as np
import pytest
from sqlalchemy import func, select, text

import kernels
from service.datasets import resolve_dataset
from service.errors import QuotaExceeded
from service.quotas import check_quotas
from service.runs import submit_run
from service.runspec import FLOAT32_MAX, RunSpecSchema, complete_spec
from service.settings import Limits
from service.store import Dataset, Run
from service.store import runs as store_runs
from service.store import usage
from service.store.arrays import params_to_npz
from tests.eventually import eventually

from .conftest import API, error_of, queued_run_ids
from .test_dashboard import FORM, csrf_of, log_in

XOR_RUN = {"dataset": "xor", "layers": [2, 4, 1], "epochs": 100}
# The network of the issue: 16,797,697 parameters, ~270 MB stored at 1 epoch.
WIDE = [2, 4096, 4096, 1]


@pytest.fixture
def limited(make_client):
    """limited(**limits): a client (alice's token) of an app with these Limits."""
    return lambda **limits: make_client(limits=Limits(**limits))


@pytest.fixture
def as_user(make_client, new_token):
    """as_user(client, "bob"): a client of the same app as ``client`` sending bob's token."""
    def make(client, user: str):
        other = client.application.test_client()
        other.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {new_token(user)}"
        return other
    return make


def count(sessions, model) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def quota_error(response, quota: str) -> str:
    """The message of a 429 quota_exceeded response naming ``quota``."""
    error = error_of(response, 429)
    assert error["code"] == "quota_exceeded"
    assert set(error["fields"]) == {quota}
    assert quota in error["message"]
    return error["fields"][quota]


def reserved(spec: dict) -> int:
    """The bytes a submitted run of (incomplete) ``spec`` reserves."""
    return usage.run_bytes(complete_spec(RunSpecSchema().load(spec)))


# ------------------------------------------------------------------------ per-run limits


def test_the_issues_wide_network_is_refused_for_its_parameter_bytes(client, sessions,
                                                                     queue_dir):
    """[2, 4096, 4096, 1] at 1 epoch passed every limit and stored ~270 MB of parameters."""
    response = client.post(f"{API}/runs", json={"dataset": "xor", "layers": WIDE,
                                                 "epochs": 1})
    error = error_of(response, 422)
    assert set(error["fields"]) == {"layers"}
    message = error["fields"]["layers"]
    assert "16797697 float64 parameters store 268766224 bytes" in message
    assert "DESCENT_MAX_PARAM_BYTES" in message
    assert count(sessions, Run) == 0 and queued_run_ids(queue_dir) == []


def test_parameter_bytes_count_the_dtype(limited):
    """float32 parameters take half the bytes: a network can fit in float32 only."""
    layers = [2, 64, 1]  # 257 parameters
    limit = usage.param_bytes(layers, "float32")
    assert usage.param_bytes(layers, "float64") > limit
    client = limited(max_param_bytes=limit)
    assert client.post(f"{API}/runs", json={"dataset": "xor", "layers": layers,
                                            "dtype": "float32"}).status_code == 202
    error = error_of(client.post(f"{API}/runs", json={"dataset": "xor", "layers": layers,
                                                      "dtype": "float64"}), 422)
    assert set(error["fields"]) == {"layers"}


def test_the_reservation_bounds_what_a_run_stores():
    """What usage reserves for parameters is what params_to_npz stores, give or take the
    NPZ headers; history rows are reserved one per epoch, epoch 0 included."""
    X, y = kernels.load_dataset("xor")
    for layers, dtype in (([2, 4, 1], "float64"), ([2, 33, 17, 1], "float32")):
        result = kernels.train(X, y, layers=layers, epochs=2, dtype=dtype)
        stored = len(params_to_npz(result.initial_params)) + len(params_to_npz(result.params))
        assert stored <= usage.param_bytes(layers, dtype) <= stored + 200, (layers, dtype)
    assert usage.history_bytes(99) == 100 * usage.HISTORY_ROW_BYTES


def test_the_work_limit_counts_parameters_samples_and_epochs(client, sessions):
    """digits at 10^6 epochs passed the old limit (epochs x samples); parameters x samples x
    epochs (2410 x 1797 x 10^6 = 4.3e12) is over the default 1e12."""
    spec = {"dataset": "digits", "layers": [64, 32, 10], "loss": "cross_entropy"}
    error = error_of(client.post(f"{API}/runs", json={**spec, "epochs": 1_000_000}), 422)
    assert set(error["fields"]) == {"epochs"}
    assert "2410 parameters x 1797 samples x 1000000 epochs is 4330770000000" \
        in error["fields"]["epochs"]
    assert "DESCENT_MAX_WORK" in error["fields"]["epochs"]
    assert count(sessions, Run) == 0
    # the same network for as long as the limit allows is accepted
    epochs = Limits().max_work // (2410 * 1797)
    assert client.post(f"{API}/runs", json={**spec, "epochs": epochs}).status_code == 202
    error = error_of(client.post(f"{API}/runs", json={**spec, "epochs": epochs + 1}), 422)
    assert set(error["fields"]) == {"epochs"}


def test_a_sweep_is_checked_cell_by_cell_naming_the_cell(client, sessions, queue_dir):
    body = {"base": {"dataset": "xor", "epochs": 1},
            "grid": {"layers": [[2, 4, 1], WIDE]}}
    error = error_of(client.post(f"{API}/sweeps", json=body), 422)
    assert set(error["fields"]) == {"grid.layers[1]"}
    message = error["fields"]["grid.layers[1]"]
    assert "DESCENT_MAX_PARAM_BYTES" in message
    assert "configuration #1: {\"layers\": [2, 4096, 4096, 1]}" in message
    # a limit on the base names the cell that breaks it
    body = {"base": {"dataset": "digits", "layers": [64, 32, 10], "epochs": 1_000_000},
            "random": {"learning_rate": {"uniform": [0.1, 0.2]}}, "trials": 2, "seed": 0}
    error = error_of(client.post(f"{API}/sweeps", json=body), 422)
    assert set(error["fields"]) == {"base.epochs"}
    assert "configuration #0" in error["fields"]["base.epochs"]
    assert count(sessions, Run) == 0 and queued_run_ids(queue_dir) == []


# ------------------------------------------------------------------------- quotas: runs


def test_active_runs_are_capped_per_user(limited, as_user, sessions, queue_dir):
    alice = limited(max_active_runs=2)
    first = alice.post(f"{API}/runs", json=XOR_RUN).get_json()
    assert alice.post(f"{API}/runs", json=XOR_RUN).status_code == 202
    runs, queued = count(sessions, Run), queued_run_ids(queue_dir)
    message = quota_error(alice.post(f"{API}/runs", json=XOR_RUN), "DESCENT_MAX_ACTIVE_RUNS")
    assert "2 runs queued or running and 1 more" in message
    assert count(sessions, Run) == runs and queued_run_ids(queue_dir) == queued
    # another user has a quota of their own
    assert as_user(alice, "bob").post(f"{API}/runs", json=XOR_RUN).status_code == 202
    # a run that ends frees its place
    assert alice.post(f"{API}/runs/{first['id']}/cancel").status_code == 202
    assert alice.post(f"{API}/runs", json=XOR_RUN).status_code == 202


def test_a_sweeps_cells_count_as_active_runs(limited, sessions):
    client = limited(max_active_runs=4)
    assert client.post(f"{API}/runs", json=XOR_RUN).status_code == 202
    grid = {"base": XOR_RUN, "grid": {"learning_rate": [0.1, 0.2, 0.3, 0.4]},
            "max_concurrency": 1}
    message = quota_error(client.post(f"{API}/sweeps", json=grid), "DESCENT_MAX_ACTIVE_RUNS")
    assert "1 runs queued or running and 4 more" in message
    assert count(sessions, Run) == 1
    # preview stores nothing, so it is not counted
    assert client.post(f"{API}/sweeps/preview", json=grid).status_code == 200
    grid["grid"]["learning_rate"] = [0.1, 0.2, 0.3]  # waiting cells count too
    assert client.post(f"{API}/sweeps", json=grid).status_code == 202
    quota_error(client.post(f"{API}/runs", json=XOR_RUN), "DESCENT_MAX_ACTIVE_RUNS")


# ------------------------------------------------------------------------ quotas: bytes


def test_stored_bytes_are_capped_per_user(limited, as_user, sessions, queue_dir):
    """Each run reserves its parameters and history; past the quota a run, a sweep and a
    dataset upload are 429 and store nothing."""
    one = reserved(XOR_RUN)
    client = limited(max_user_bytes=2 * one + 100)
    queued = client.post(f"{API}/runs", json=XOR_RUN).get_json()
    assert client.post(f"{API}/runs", json=XOR_RUN).status_code == 202
    runs = count(sessions, Run)
    message = quota_error(client.post(f"{API}/runs", json=XOR_RUN), "DESCENT_MAX_USER_BYTES")
    assert f"({2 * one} bytes) stored or reserved and" in message
    sweep = {"base": XOR_RUN, "grid": {"learning_rate": [0.1]}}
    quota_error(client.post(f"{API}/sweeps", json=sweep), "DESCENT_MAX_USER_BYTES")
    datasets = count(sessions, Dataset)
    response = client.post(f"{API}/datasets", json={"name": "mine", "X": [[0.5] * 2] * 40,
                                                    "y": [0] * 40})
    quota_error(response, "DESCENT_MAX_USER_BYTES")
    assert count(sessions, Run) == runs and count(sessions, Dataset) == datasets
    assert len(queued_run_ids(queue_dir)) == runs
    # bob stores nothing yet
    assert as_user(client, "bob").post(f"{API}/runs", json=XOR_RUN).status_code == 202
    # a run cancelled before it started stored nothing: its reservation is freed
    assert client.post(f"{API}/runs/{queued['id']}/cancel").status_code == 202
    assert client.post(f"{API}/runs", json=XOR_RUN).status_code == 202


def test_datasets_count_their_stored_bytes(limited, sessions):
    client = limited(max_user_bytes=300_000)
    body = {"name": "small", "X": [[0.25, 0.5]] * 10, "y": [0, 1] * 5}
    stored = client.post(f"{API}/datasets", json=body)
    assert stored.status_code == 201
    with sessions() as session:
        dataset = session.get(Dataset, stored.get_json()["id"])
        assert dataset.n_bytes == len(dataset.data) > 0
        assert usage.stored_bytes(session, "alice") == dataset.n_bytes
    # random floats barely deflate: 40,000 rows store about 600 KB
    rng = np.random.default_rng(0)
    big = {"name": "big", "X": rng.random((40_000, 2)).tolist(), "y": [0] * 40_000}
    quota_error(client.post(f"{API}/datasets", json=big), "DESCENT_MAX_USER_BYTES")
    assert count(sessions, Dataset) == 1


def test_a_run_that_ends_settles_its_reservation(client, sessions):
    """A run reserves its whole history at submit; once it ends it counts what it stored
    (here 3 epochs of 1000 and its parameters)."""
    run = client.post(f"{API}/runs", json={**XOR_RUN, "epochs": 1000}).get_json()
    with sessions() as session:
        assert session.get(Run, run["id"]).stored_bytes == reserved({**XOR_RUN,
                                                                     "epochs": 1000})
        claimed = store_runs.claim_run(session, run["id"], "test-worker")
        X, y = kernels.load_dataset("xor")
        result = kernels.train(X, y, layers=[2, 4, 1], epochs=3)
        params = {"initial": ("float64", params_to_npz(result.initial_params)),
                  "final": ("float64", params_to_npz(result.params))}
        rows = [{"run_id": run["id"], "epoch": e, "error": float(v), "seconds": 0.0}
                for e, v in enumerate(result.errors)]
        store_runs.complete_run(session, run["id"], claimed.attempts, rows,
                                {"epochs_done": 3}, "cancelled", params=params)
    with sessions() as session:
        expected = sum(len(data) for _, data in params.values()) + 4 * usage.HISTORY_ROW_BYTES
        assert session.get(Run, run["id"], populate_existing=True).stored_bytes == expected
        assert usage.stored_bytes(session, "alice") == expected


def test_a_run_evaluated_every_k_epochs_reserves_and_settles_its_rows(client, sessions):
    """eval_every 100 over 1000 epochs stores rows 0, 100, ..., 1000: the reservation counts
    those (plus rungs and a cancel's row), not 1001, and the settlement the rows stored."""
    spec = {**XOR_RUN, "epochs": 1000, "eval_every": 100}
    run = client.post(f"{API}/runs", json=spec).get_json()
    assert usage.history_rows(1000, 100) == 10 + 3 + (1000).bit_length() < 1001
    assert usage.history_rows(5, 100) == 6  # never more than one per epoch
    with sessions() as session:
        assert session.get(Run, run["id"]).stored_bytes == reserved(spec) \
            == usage.param_bytes([2, 4, 1], "float64") + 23 * usage.HISTORY_ROW_BYTES
        claimed = store_runs.claim_run(session, run["id"], "test-worker")
        X, y = kernels.load_dataset("xor")
        result = kernels.train(X, y, layers=[2, 4, 1], epochs=1000, eval_every=100)
        params = {"initial": ("float64", params_to_npz(result.initial_params)),
                  "final": ("float64", params_to_npz(result.params))}
        rows = [{"run_id": run["id"], "epoch": int(e), "error": float(v), "seconds": 0.0}
                for e, v in zip(result.epochs_evaluated, result.errors)]
        assert len(rows) == 11
        store_runs.complete_run(session, run["id"], claimed.attempts, rows,
                                {"epochs_done": 1000}, "succeeded", params=params)
    with sessions() as session:
        expected = sum(len(data) for _, data in params.values()) + 11 * usage.HISTORY_ROW_BYTES
        assert session.get(Run, run["id"], populate_existing=True).stored_bytes == expected


def test_the_openapi_document_lists_the_quota_responses(client):
    spec = client.get(f"{API}/openapi.json").get_json()
    quota = spec["components"]["responses"]["TOO_MANY_REQUESTS_OR_QUOTA"]
    assert "quota_exceeded" in quota["description"]
    for path in ("runs", "sweeps", "datasets"):
        response = spec["paths"][f"{API}/{path}"]["post"]["responses"]["429"]
        assert response == {"$ref": "#/components/responses/TOO_MANY_REQUESTS_OR_QUOTA"}


def test_the_dashboard_form_shows_the_quota(make_client, token, sessions):
    browser = make_client(limits=Limits(max_active_runs=0))
    del browser.environ_base["HTTP_AUTHORIZATION"]  # a browser: the session cookie only
    log_in(browser, token)
    response = browser.post("/submit", data={**FORM,
                                             "csrf_token": csrf_of(browser.get("/").text)})
    assert response.status_code == 429
    assert "DESCENT_MAX_ACTIVE_RUNS: 0 runs queued or running" in response.text
    assert 'value="2, 4, 1"' in response.text  # the form is kept to submit again
    assert count(sessions, Run) == 0


# ------------------------------------------------------------------------ the concurrency


@pytest.mark.real_database
@pytest.mark.parametrize("database_backend", [pytest.param("postgres",
                                                           marks=pytest.mark.postgres)])
def test_two_submits_racing_at_the_quota_do_not_both_pass(app, sessions):
    """A submit that has counted alice's quota holds her lock until it commits: a second one
    waits for it (seen in pg_locks), then counts the first's run and is refused. (SQLite
    needs no lock: every transaction there begins IMMEDIATE, one writer at a time.)"""
    limits = Limits(max_active_runs=1)
    queue = app.extensions["descent"]["queue"]
    fields = RunSpecSchema().load(XOR_RUN)
    with sessions() as setup:  # the built-in stored before, not inside, the race
        dataset_id = resolve_dataset(setup, "xor", "alice").id
    first = sessions()
    check_quotas(first, "alice", limits, runs=1)
    store_runs.create_run(first, complete_spec(fields), dataset_id, owner="alice")
    outcome = {}

    def second():
        with sessions() as session:
            try:
                outcome["run"] = submit_run(session, queue, limits, "alice", fields).id
            except QuotaExceeded as exc:
                outcome["refused"] = exc.fields

    thread = threading.Thread(target=second)
    thread.start()
    with sessions() as observer:
        eventually(lambda: not thread.is_alive() or observer.scalar(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")))
    first.commit()
    first.close()
    thread.join(30)
    assert set(outcome) == {"refused"}, outcome  # without the lock: {"run": 2}
    assert set(outcome["refused"]) == {"DESCENT_MAX_ACTIVE_RUNS"}
    assert count(sessions, Run) == 1


# --------------------------------------------------------------------------- float32


def test_float32_on_data_beyond_its_range_is_422_naming_dtype(client, sessions, queue_dir):
    huge = {"name": "huge", "X": [[0.0, 1e39], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]],
            "y": [0, 1, 1, 0]}
    assert client.post(f"{API}/datasets", json=huge).status_code == 201
    spec = {"dataset": "huge", "layers": [2, 4, 1]}
    error = error_of(client.post(f"{API}/runs", json={**spec, "dtype": "float32"}), 422)
    assert set(error["fields"]) == {"dtype"}
    assert "1e+39" in error["fields"]["dtype"] and "float64" in error["fields"]["dtype"]
    assert count(sessions, Run) == 0 and queued_run_ids(queue_dir) == []
    assert client.post(f"{API}/runs", json={**spec, "dtype": "float64"}).status_code == 202
    # a sweep names the cell's dtype
    error = error_of(client.post(f"{API}/sweeps", json={
        "base": spec, "grid": {"dtype": ["float64", "float32"]}}), 422)
    assert set(error["fields"]) == {"grid.dtype[1]"}


def test_float32_takes_data_up_to_its_largest_value(client):
    """Values within float32's range, the largest included, and a regression target of
    large values pass; a regression target beyond the range does not."""
    edge = {"name": "edge", "X": [[FLOAT32_MAX, -FLOAT32_MAX], [0.0, 1.0]], "y": [0, 1]}
    assert client.post(f"{API}/datasets", json=edge).status_code == 201
    assert client.post(f"{API}/runs", json={"dataset": "edge", "layers": [2, 1],
                                            "dtype": "float32"}).status_code == 202
    targets = {"name": "targets", "X": [[0.0], [1.0]], "y": [1.5, -4e38]}
    assert client.post(f"{API}/datasets", json=targets).status_code == 201
    error = error_of(client.post(f"{API}/runs", json={
        "dataset": "targets", "layers": [1, 1], "dtype": "float32"}), 422)
    assert set(error["fields"]) == {"dtype"}

"""Big responses stream or are bounded (issue 12): a run's parameters (JSON, NPZ) and history
(JSON, CSV) are written piece by piece, with what they were before, byte for byte, and a
peak of memory well under the body's size; predict refuses more rows x parameters than
DESCENT_MAX_PREDICT_WORK (422 naming inputs) and computes in slices of rows."""

import csv
import hashlib
import io
import json
import sqlite3
import tracemalloc

import numpy as np
import pytest
from sqlalchemy import make_url

import kernels
from service import runs as domain_runs
from service.datasets import resolve_dataset
from service.runspec import complete_spec
from service.settings import Limits
from service.store import Epoch
from service.store import runs as store_runs
from service.store.arrays import from_npz, params_to_npz, to_npz

from .conftest import API, error_of

# What Flask's jsonify wrote for these responses before they were streamed.
JSONIFY = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
COLUMNS = ["epoch", "error", "accuracy", "val_error", "val_accuracy", "seconds"]


def random_params(layers, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {"weights": [rng.standard_normal((n_out, n_in))
                        for n_in, n_out in zip(layers, layers[1:])],
            "biases": [rng.standard_normal(n_out) for n_out in layers[1:]]}


def store_run(sessions, layers, final=None, initial=None, history=(), owner="alice",
              **spec) -> int:
    """A succeeded run of ``owner`` stored straight through the store (no training), with
    the given NPZ blobs and history rows ({column: value}); its id."""
    with sessions() as session:
        dataset = resolve_dataset(session, "xor", owner)
        run = store_runs.create_run(session, complete_spec({"dataset": "xor", "layers": layers,
                                                            **spec}), dataset.id, owner=owner)
        for which, blob in (("final", final), ("initial", initial)):
            if blob is not None:
                store_runs.store_params(session, run.id, which, "float64", blob)
        if history:
            session.execute(Epoch.__table__.insert(),
                            [{"run_id": run.id, **row} for row in history])
        store_runs.finish_run(session, run.id, "succeeded")
        session.commit()
        return run.id


def streamed(client, url: str) -> tuple[bytes, int]:
    """The body of a streamed 200 response read chunk by chunk, as a server writes it, and
    the peak of traced memory (NumPy's buffers included) while it was made, above what was
    allocated before. Only the body's hash is kept while measuring."""
    digest, size = hashlib.sha256(), 0
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        response = client.get(url, buffered=False)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        assert response.is_streamed
        for chunk in response.iter_encoded():
            digest.update(chunk)
            size += len(chunk)
        response.close()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    body = client.get(url).data
    assert len(body) == size and hashlib.sha256(body).digest() == digest.digest()
    return body, peak


# ------------------------------------------------------------------------------ params


def test_params_json_is_streamed_with_the_stored_values(client, sessions):
    layers = [600, 500, 200]  # 400,700 parameters: 3.2 MB stored, 7.9 MB of JSON
    final, initial = random_params(layers, 1), random_params(layers, 2)
    final["biases"][1][:3] = [np.nan, np.inf, -np.inf]  # a diverged layer encodes as before
    blob = params_to_npz(final)
    run_id = store_run(sessions, layers, final=blob, initial=params_to_npz(initial))

    body, peak = streamed(client, f"{API}/runs/{run_id}/params")
    expected = {"run_id": run_id, "which": "final", "dtype": "float64",
                "weights": [W.tolist() for W in final["weights"]],
                "biases": [B.tolist() for B in final["biases"]]}
    assert body == (JSONIFY(expected) + "\n").encode()
    # Built whole, the body took about four times its size (Python floats, lists, text);
    # streamed, the stored blob (at most DESCENT_MAX_PARAM_BYTES) and one chunk of rows.
    assert peak < len(blob) + 4 * 1024 * 1024, (peak, len(blob))
    assert peak < len(body), (peak, len(body))

    got = json.loads(client.get(f"{API}/runs/{run_id}/params?which=initial").data)
    assert got["which"] == "initial"
    for array, want in zip(got["weights"] + got["biases"],
                           initial["weights"] + initial["biases"]):
        assert np.array_equal(np.array(array), want)


def test_params_npz_is_the_stored_blob_in_chunks(client, sessions):
    layers = [1000, 1500, 10]  # 12 MB stored: more than one chunk
    final = random_params(layers)
    blob = params_to_npz(final)
    run_id = store_run(sessions, layers, final=blob)
    response = client.get(f"{API}/runs/{run_id}/params?format=npz", buffered=False)
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"] == \
        f"attachment; filename=run-{run_id}-final-params.npz"
    chunks = list(response.iter_encoded())
    response.close()
    assert len(chunks) > 1 and max(map(len, chunks)) <= 1024 * 1024
    assert b"".join(chunks) == blob
    arrays = from_npz(b"".join(chunks))
    assert np.array_equal(arrays["W2"], final["weights"][1])


def test_params_stored_compressed_still_read(client, sessions):
    """Parameters stored deflated (not as params_to_npz stores them now) are decoded."""
    final = random_params([3, 4, 2])
    blob = to_npz(compress=True, W1=final["weights"][0], B1=final["biases"][0],
                  W2=final["weights"][1], B2=final["biases"][1])
    run_id = store_run(sessions, [3, 4, 2], final=blob)
    got = client.get(f"{API}/runs/{run_id}/params").get_json()
    assert got["weights"] == [W.tolist() for W in final["weights"]]
    assert got["biases"] == [B.tolist() for B in final["biases"]]
    response = client.post(f"{API}/runs/{run_id}/predict", json={"inputs": [[1, 2, 3]]})
    assert response.status_code == 200, response.get_json()


def test_errors_come_before_the_stream(client, client_of, sessions):
    """Checks that can fail answer proper JSON errors, not a broken 200 stream."""
    missing = store_run(sessions, [2, 3, 1])  # no parameters stored
    theirs = store_run(sessions, [2, 3, 1], final=params_to_npz(random_params([2, 3, 1])),
                       owner="bob")
    for query in ("", "?format=npz"):
        assert error_of(client.get(f"{API}/runs/{missing}/params{query}"),
                        409)["code"] == "not_ready"
        assert error_of(client.get(f"{API}/runs/{theirs}/params{query}"),
                        404)["code"] == "not_found"
    for query in ("", "?format=csv", "?max_points=5"):
        assert error_of(client.get(f"{API}/runs/{theirs}/history{query}"), 404)
    assert client_of("bob").get(f"{API}/runs/{theirs}/params").status_code == 200


# ----------------------------------------------------------------------------- history


def history_rows(n: int) -> list[dict]:
    """``n`` epochs whose lowest error is in the middle, with missing values."""
    errors = 1.0 + np.cos(np.linspace(0.0, 6.0, n)) / 3
    return [{"epoch": e, "error": None if e % 997 == 5 else float(errors[e]),
             "accuracy": float(e / n), "val_error": None if e % 2 else float(errors[e] / 3),
             "val_accuracy": None, "seconds": 0.001 * e} for e in range(n)]


def test_history_is_streamed_by_pages_as_json_and_csv(client, sessions):
    small = store_run(sessions, [2, 3, 1], history=history_rows(4_001))
    rows = history_rows(40_001)  # many pages of the store's reads
    big = store_run(sessions, [2, 3, 1], history=rows)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    for query, want in [("", JSONIFY({"run_id": big, "history": rows}) + "\n"),
                        ("?format=csv", out.getvalue())]:
        _, small_peak = streamed(client, f"{API}/runs/{small}/history{query}")
        body, peak = streamed(client, f"{API}/runs/{big}/history{query}")
        assert body == want.encode()
        # Built whole, the history took ten times its body (ORM rows, dicts, text) and
        # grew with it; streamed, one page: ten times the epochs, (nearly) the same peak.
        assert peak - small_peak < 0.2 * len(body), (query, small_peak, peak, len(body))
        assert peak < 0.8 * len(body), (query, peak, len(body))


@pytest.mark.real_database
@pytest.mark.parametrize("database_backend", ["sqlite"])
def test_a_history_download_holds_no_lock(client, sessions, settings):
    """On SQLite every transaction takes the write lock: a download that kept one open while
    a slow client reads it would stop the workers' writes. Each page is read in a transaction
    of its own, and the last one ends with the body."""
    run_id = store_run(sessions, [2, 3, 1], history=history_rows(12_001))
    path = make_url(settings.database_url).database

    def can_write() -> bool:
        other = sqlite3.connect(path, timeout=0.5)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            other.close()

    for query in ("", "?format=csv", "?max_points=100"):
        response = client.get(f"{API}/runs/{run_id}/history{query}", buffered=False)
        chunks = response.iter_encoded()
        next(chunks)
        next(chunks)
        assert can_write(), query  # mid-download
        for _ in chunks:
            pass
        response.close()
        assert can_write(), query  # after it


@pytest.mark.parametrize("max_points", [3, 4, 10, 2_345, 12_000, 12_001, 10**9])
def test_history_max_points_keeps_what_downsample_keeps(client, sessions, max_points):
    rows = history_rows(12_001)
    run_id = store_run(sessions, [2, 3, 1], history=rows)
    with sessions() as session:
        want = [{name: getattr(epoch, name) for name in COLUMNS} for epoch in
                store_runs.downsample(store_runs.history(session, run_id), max_points)]
    response = client.get(f"{API}/runs/{run_id}/history?max_points={max_points}")
    assert response.status_code == 200
    assert response.get_json() == {"run_id": run_id, "history": want}
    assert len(want) == len(rows) if max_points >= len(rows) else 3 <= len(want) <= max_points
    best = min((r["error"], r["epoch"]) for r in rows if r["error"] is not None)[1]
    assert {0, 12_000, best} <= {r["epoch"] for r in want}


def test_empty_history_streams_empty(client, sessions):
    run_id = store_run(sessions, [2, 3, 1])
    assert client.get(f"{API}/runs/{run_id}/history").data == \
        (JSONIFY({"history": [], "run_id": run_id}) + "\n").encode()
    assert client.get(f"{API}/runs/{run_id}/history?format=csv&max_points=3").data == \
        (",".join(COLUMNS) + "\r\n").encode()


# ----------------------------------------------------------------------------- predict


def test_predict_over_the_cost_bound_is_422_naming_inputs(make_client, sessions):
    layers = [4, 5, 3]  # 43 parameters
    final = random_params(layers)
    run_id = store_run(sessions, layers, final=params_to_npz(final), activation="tanh",
                       loss="cross_entropy")
    client = make_client(limits=Limits(max_predict_work=43 * 10))
    rows = np.random.default_rng(3).standard_normal((11, 4)).tolist()

    ok = client.post(f"{API}/runs/{run_id}/predict", json={"inputs": rows[:10]})
    assert ok.status_code == 200, ok.get_json()
    assert np.shape(ok.get_json()["outputs"]) == (10, 3)
    error = error_of(client.post(f"{API}/runs/{run_id}/predict", json={"inputs": rows}), 422)
    assert error["code"] == "validation_error" and set(error["fields"]) == {"inputs"}
    assert "11 rows x 43 parameters" in error["fields"]["inputs"]
    assert "at most 10 rows" in error["fields"]["inputs"]

    tiny = make_client(limits=Limits(max_predict_work=42))
    error = error_of(tiny.post(f"{API}/runs/{run_id}/predict", json={"inputs": rows[:1]}),
                     422)
    assert set(error["fields"]) == {"inputs"}


def test_predict_computes_in_slices_of_rows(client, sessions, monkeypatch):
    layers = [4, 5, 3]
    final = random_params(layers)
    run_id = store_run(sessions, layers, final=params_to_npz(final), activation="tanh",
                       loss="cross_entropy")
    calls = []
    predict = kernels.predict

    def spy(params, X, **kwargs):
        calls.append(len(X))
        return predict(params, X, **kwargs)

    monkeypatch.setattr(domain_runs, "PREDICT_CHUNK_VALUES", 10)  # 10 // 5 = 2 rows a slice
    monkeypatch.setattr(kernels, "predict", spy)
    inputs = np.random.default_rng(4).standard_normal((7, 4))
    response = client.post(f"{API}/runs/{run_id}/predict", json={"inputs": inputs.tolist()})
    assert response.status_code == 200, response.get_json()
    assert calls == [2, 2, 2, 1]
    want = predict(final, inputs, activation="tanh", loss="cross_entropy")
    np.testing.assert_allclose(np.array(response.get_json()["outputs"]), want, rtol=1e-12)

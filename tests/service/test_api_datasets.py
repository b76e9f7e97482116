"""/api/v1/datasets through the Flask test client, on SQLite and PostgreSQL: uploads as JSON,
CSV and NPZ, every rejected upload, listing, summaries and downloads, and runs on uploaded
datasets."""

import io

import numpy as np

import kernels
from service.settings import Limits
from service.store.arrays import from_npz

from .conftest import API, error_of, queued_run_ids, submit

DATASET_FIELDS = {"id", "name", "n_samples", "n_features", "target_kind", "n_targets",
                  "n_classes", "content_hash", "builtin", "created_at"}
XOR_X = [[0, 0], [0, 1], [1, 0], [1, 1]]


def upload_json(client, **body):
    return client.post(f"{API}/datasets", json=body)


def upload_file(client, name, content: bytes, filename: str, **form):
    data = {"file": (io.BytesIO(content), filename), **form}
    if name is not None:
        data["name"] = name
    return client.post(f"{API}/datasets", data=data, content_type="multipart/form-data")


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def download(client, ref):
    """(X, y) of a stored dataset, through both download formats (which must agree)."""
    as_json = client.get(f"{API}/datasets/{ref}?format=json")
    assert as_json.status_code == 200
    body = as_json.get_json()
    as_npz = client.get(f"{API}/datasets/{ref}", query_string={"format": "npz"})
    assert as_npz.status_code == 200
    assert as_npz.mimetype == "application/octet-stream"
    arrays = from_npz(as_npz.data)
    assert sorted(arrays) == ["X", "y"]
    assert np.array_equal(arrays["X"], np.array(body["X"]))
    assert np.array_equal(arrays["y"], np.array(body["y"]))
    return arrays["X"], arrays["y"]


def test_json_uploads_of_each_kind_of_target(client):
    labels = upload_json(client, name="labels", X=XOR_X, y=[0, 1, 2, 1])
    assert labels.status_code == 201
    body = labels.get_json()
    assert set(body) == DATASET_FIELDS
    assert body["name"] == "labels" and body["builtin"] is False
    assert (body["n_samples"], body["n_features"]) == (4, 2)
    assert (body["target_kind"], body["n_targets"], body["n_classes"]) == ("labels", 1, 3)
    assert len(body["content_hash"]) == 64 and body["created_at"].endswith("+00:00")
    X, y = download(client, "labels")
    assert X.dtype == np.float64 and np.array_equal(X, XOR_X)
    assert y.dtype.kind == "i" and y.tolist() == [0, 1, 2, 1]

    values = upload_json(client, name="values", X=XOR_X, y=[0.5, -1.25, 3, 0]).get_json()
    assert (values["target_kind"], values["n_targets"], values["n_classes"]) == ("values", 1, None)
    assert download(client, "values")[1].tolist() == [0.5, -1.25, 3.0, 0.0]

    matrix = upload_json(client, name="matrix", X=XOR_X,
                         y=[[1, 0], [0, 1], [0.5, 0.5], [0, 0]]).get_json()
    assert (matrix["target_kind"], matrix["n_targets"], matrix["n_classes"]) == ("matrix", 2, None)
    assert download(client, "matrix")[1].shape == (4, 2)

    booleans = upload_json(client, name="booleans", X=XOR_X, y=[False, True, True, False])
    assert booleans.get_json()["target_kind"] == "labels"
    assert booleans.get_json()["n_classes"] == 2
    # the same arrays under another name hash the same
    again = upload_json(client, name="labels.copy_2", X=XOR_X, y=[0, 1, 2, 1]).get_json()
    assert again["content_hash"] == body["content_hash"] and again["id"] != body["id"]


def test_csv_and_npz_uploads(client):
    with_header = b"x1,x2,label\n0,0,0\n0,1,1\n\n1,0,1\n1,1,0\n"
    response = upload_file(client, "csv-header", with_header, "data.csv")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert (body["n_samples"], body["n_features"], body["target_kind"]) == (4, 2, "labels")
    X, y = download(client, "csv-header")
    assert np.array_equal(X, XOR_X) and y.tolist() == [0, 1, 1, 0]

    no_header = b"0.5, 1.5, 0.25\n1.0, -2, 1.75\n3, 4, 5.5\n"
    body = upload_file(client, "csv-plain", no_header, "plain.txt").get_json()
    assert (body["n_samples"], body["n_features"], body["target_kind"]) == (3, 2, "values")
    X, y = download(client, "csv-plain")
    assert np.array_equal(X, [[0.5, 1.5], [1.0, -2], [3, 4]])
    assert y.tolist() == [0.25, 1.75, 5.5]

    X = np.random.default_rng(0).normal(size=(5, 3))
    y = np.array([0, 1, 2, 3, 1])
    body = upload_file(client, "npz-labels", npz_bytes(X=X, y=y), "arrays.npz").get_json()
    assert (body["n_samples"], body["n_features"], body["n_classes"]) == (5, 3, 4)
    X2, y2 = download(client, "npz-labels")
    assert np.array_equal(X2, X) and np.array_equal(y2, y)
    Y = np.eye(5)[:, :2]
    body = upload_file(client, "npz-matrix", npz_bytes(X=X, y=Y), "m.bin").get_json()
    assert (body["target_kind"], body["n_targets"]) == ("matrix", 2)
    assert np.array_equal(download(client, body["id"])[1], Y)
    # features of other dtypes are stored as float64
    for dtype in (np.float32, np.int64):
        X = np.arange(6, dtype=dtype).reshape(3, 2)
        name = f"typed-{np.dtype(dtype).name}"
        response = upload_file(client, name, npz_bytes(X=X, y=np.array([0, 1, 0])), "t.npz")
        assert response.status_code == 201
        stored_X, _ = download(client, name)
        assert stored_X.dtype == np.float64 and np.array_equal(stored_X, X)


def test_rejected_uploads_keep_nothing(client):
    before = client.get(f"{API}/datasets").get_json()["datasets"]
    json_cases = [
        ({"X": XOR_X, "y": [0, 1, 1, 0]}, {"name"}),
        ({"name": "ok"}, {"X", "y"}),
        ({"name": "1abc", "X": XOR_X, "y": [0, 1, 1, 0]}, {"name"}),
        ({"name": "", "X": XOR_X, "y": [0, 1, 1, 0]}, {"name"}),
        ({"name": "has space", "X": XOR_X, "y": [0, 1, 1, 0]}, {"name"}),
        ({"name": "a/b", "X": XOR_X, "y": [0, 1, 1, 0]}, {"name"}),
        ({"name": "n" * 201, "X": XOR_X, "y": [0, 1, 1, 0]}, {"name"}),
        ({"name": 5, "X": XOR_X, "y": [0, 1, 1, 0]}, {"name"}),
        ({"name": "ragged", "X": [[0, 0], [0], [1, 0], [1, 1]], "y": [0, 1, 1, 0]}, {"X"}),
        ({"name": "flat", "X": [0, 1, 2, 3], "y": [0, 1, 1, 0]},
         {"X[0]", "X[1]", "X[2]", "X[3]"}),
        ({"name": "empty", "X": [], "y": []}, {"X", "y"}),
        ({"name": "no-columns", "X": [[], []], "y": [0, 1]}, {"X"}),
        ({"name": "words", "X": [[0, "a"], [1, 1]], "y": [0, 1]}, {"X[0][1]"}),
        ({"name": "big", "X": [[0, 1e400], [1, 1]], "y": [0, 1]}, {"X[0][1]"}),
        ({"name": "short-y", "X": XOR_X, "y": [0, 1, 1]}, {"y"}),
        ({"name": "long-y", "X": XOR_X, "y": [0, 1, 1, 0, 1]}, {"y"}),
        ({"name": "text-y", "X": XOR_X, "y": ["a", "b", "a", "b"]}, {"y"}),
        ({"name": "mixed-y", "X": XOR_X, "y": [0, [1], 1, 0]}, {"y"}),
        ({"name": "null-y", "X": XOR_X, "y": [0, None, 1, 0]}, {"y[1]"}),
        ({"name": "negative-y", "X": XOR_X, "y": [0, -1, 1, 0]}, {"y"}),
        ({"name": "deep-y", "X": XOR_X, "y": [[[0]], [[1]], [[1]], [[0]]]}, {"y"}),
        ({"name": "huge-y", "X": XOR_X, "y": [0, 10**30, 1, 0]}, {"y"}),
        ({"name": "huge-x", "X": [[0, 10**400], [1, 1]], "y": [0, 1]}, {"X[0][1]"}),
        ({"name": "bool-x", "X": [[0, True], [1, 1]], "y": [0, 1]}, {"X[0][1]"}),
        ({"name": "extra", "X": XOR_X, "y": [0, 1, 1, 0], "z": 1}, {"z"}),
    ]
    for body, fields in json_cases:
        error = error_of(upload_json(client, **body), 422)
        assert error["code"] == "validation_error"
        assert set(error["fields"]) == fields, (body, error)
    # NaN and infinity, which strict JSON cannot even write
    for raw, fields in [('{"name": "nan-x", "X": [[NaN, 1]], "y": [0]}', {"X[0][0]"}),
                        ('{"name": "inf-x", "X": [[1, Infinity]], "y": [0]}', {"X[0][1]"}),
                        ('{"name": "nan-y", "X": [[1, 2], [3, 4]], "y": [0.5, NaN]}', {"y"})]:
        error = error_of(client.post(f"{API}/datasets", data=raw,
                                     content_type="application/json"), 422)
        assert set(error["fields"]) == fields, (raw, error)

    file_cases = [
        ("bad name", b"0,0,0\n1,1,1\n", "d.csv", {"name"}),
        (None, b"0,0,0\n1,1,1\n", "d.csv", {"name"}),
        ("words", b"a,b,c\n0,1,x\n1,1,1\n", "d.csv", {"file"}),
        ("one-col", b"1\n2\n3\n", "d.csv", {"file"}),
        ("ragged", b"0,0,0\n1,1\n", "d.csv", {"file"}),
        ("header-only", b"x1,x2,y\n", "d.csv", {"file"}),
        ("empty", b"", "d.csv", {"file"}),
        ("nan-csv", b"0,nan,0\n1,1,1\n", "d.csv", {"X"}),
        ("corrupt", b"PK\x03\x04 this is not a zip archive", "d.npz", {"file"}),
        ("garbage", b"\x00\x01\x02 not numpy", "d.npz", {"file"}),
        ("no-y", npz_bytes(X=np.zeros((2, 2))), "d.npz", {"file"}),
        ("objects", npz_bytes(X=np.array([[1, "a"]], dtype=object), y=np.array([0])), "d.npz",
         {"file"}),
        ("npz-mismatch", npz_bytes(X=np.zeros((3, 2)), y=np.zeros(2)), "d.npz", {"y"}),
        ("npz-3d", npz_bytes(X=np.zeros((3, 2, 2)), y=np.zeros(3)), "d.npz", {"X"}),
    ]
    for name, content, filename, fields in file_cases:
        error = error_of(upload_file(client, name, content, filename), 422)
        assert set(error["fields"]) == fields, (name, error)
    error = error_of(client.post(f"{API}/datasets", data={"name": "no-file"},
                                 content_type="multipart/form-data"), 422)
    assert set(error["fields"]) == {"file"}
    error = error_of(client.post(f"{API}/datasets", data="0,0,0", content_type="text/csv"), 415)
    assert error["code"] == "unsupported_media_type"
    error_of(client.post(f"{API}/datasets", data="{", content_type="application/json"), 400)
    error = error_of(client.post(f"{API}/datasets"), 422)
    assert "name" in error["fields"]
    assert client.get(f"{API}/datasets").get_json()["datasets"] == before


def test_names_already_taken(client):
    assert upload_json(client, name="mine", X=XOR_X, y=[0, 1, 1, 0]).status_code == 201
    for name in ("mine", "xor", "iris", "digits"):
        error = error_of(upload_json(client, name=name, X=XOR_X, y=[0, 1, 1, 0]), 409)
        assert error["code"] == "name_taken" and set(error["fields"]) == {"name"}
    error = error_of(upload_file(client, "mine", b"0,0,0\n", "d.csv"), 409)
    assert error["code"] == "name_taken"
    names = [d["name"] for d in client.get(f"{API}/datasets").get_json()["datasets"]]
    assert names == ["mine"]


def test_upload_limits(make_client):
    client = make_client(limits=Limits(max_samples=3, max_upload_bytes=2000))
    error = error_of(upload_json(client, name="four", X=XOR_X, y=[0, 1, 1, 0]), 422)
    assert set(error["fields"]) == {"X"}
    assert upload_json(client, name="three", X=XOR_X[:3], y=[0, 1, 1]).status_code == 201
    big = b"".join(b"%d,%d,0\n" % (i, i) for i in range(400))
    error = error_of(upload_file(client, "big", big, "big.csv"), 413)
    assert error["code"] == "request_entity_too_large"
    names = [d["name"] for d in client.get(f"{API}/datasets").get_json()["datasets"]]
    assert names == ["three"]


def test_list_get_and_download(client):
    listing = client.get(f"{API}/datasets").get_json()
    assert listing["datasets"] == []
    assert set(listing["builtin_available"]) >= {"xor", "circles", "moons", "spirals", "iris",
                                                  "digits"}
    mine = upload_json(client, name="mine", X=XOR_X, y=[0, 1, 2, 1]).get_json()
    submit(client)  # stores the built-in xor on first use
    listing = client.get(f"{API}/datasets").get_json()["datasets"]
    assert [d["name"] for d in listing] == ["mine", "xor"]
    assert all(set(d) == DATASET_FIELDS for d in listing)
    assert [d["builtin"] for d in listing] == [False, True]
    assert listing[0] == mine

    by_name = client.get(f"{API}/datasets/mine").get_json()
    by_id = client.get(f"{API}/datasets/{mine['id']}").get_json()
    assert by_name == by_id
    assert "X" not in by_name and "y" not in by_name
    assert {k: by_name[k] for k in DATASET_FIELDS} == mine
    summary = by_name["summary"]
    assert summary["X_mean"] == [0.5, 0.5] and summary["X_min"] == [0, 0]
    assert summary["X_max"] == [1, 1] and summary["X_std"] == [0.5, 0.5]
    assert summary["class_counts"] == [1, 2, 1]
    full = client.get(f"{API}/datasets/mine?format=json").get_json()
    assert full["X"] == XOR_X and full["y"] == [0, 1, 2, 1] and full["name"] == "mine"

    # a built-in is stored the first time it is asked for
    moons = client.get(f"{API}/datasets/moons")
    assert moons.status_code == 200 and moons.get_json()["builtin"] is True
    X, y = download(client, "moons")
    X_ref, y_ref = kernels.load_dataset("moons")
    assert np.array_equal(X, X_ref) and np.array_equal(y, y_ref)
    assert "moons" in [d["name"] for d in client.get(f"{API}/datasets").get_json()["datasets"]]

    for missing in ("nothing", "999999", str(2**70), "0"):
        assert error_of(client.get(f"{API}/datasets/{missing}"), 404)["code"] == "not_found"
        error_of(client.get(f"{API}/datasets/{missing}?format=npz"), 404)
    for params, field in [({"format": "csv"}, "format"), ({"fmt": "json"}, "fmt")]:
        error = error_of(client.get(f"{API}/datasets/mine", query_string=params), 422)
        assert set(error["fields"]) == {field}


def test_runs_on_uploaded_datasets(client, queue_dir):
    values = upload_json(client, name="reg", X=XOR_X, y=[0.1, 0.9, 0.8, 0.2]).get_json()
    matrix = upload_json(client, name="two-out", X=XOR_X,
                         y=[[1, 0], [0, 1], [0, 1], [1, 0]]).get_json()
    classes = upload_json(client, name="three-class", X=XOR_X, y=[0, 1, 2, 1]).get_json()
    by_name = submit(client, dataset="reg", layers=[2, 3, 1], output_activation="linear")
    assert by_name["dataset"] == {"id": values["id"], "name": "reg"}
    by_id = submit(client, dataset=values["id"], layers=[2, 1])
    assert by_id["dataset"] == {"id": values["id"], "name": "reg"}
    by_id_string = submit(client, dataset=str(matrix["id"]), layers=[2, 4, 2])
    assert by_id_string["dataset"]["name"] == "two-out"
    assert submit(client, dataset="three-class", layers=[2, 3], loss="cross_entropy")
    assert queued_run_ids(queue_dir) == [by_name["id"], by_id["id"], by_id_string["id"],
                                         by_id_string["id"] + 1]
    for spec in ({"dataset": "reg", "layers": [2, 2]},        # one target column
                 {"dataset": "two-out", "layers": [2, 3]},    # two target columns
                 {"dataset": "three-class", "layers": [2, 2]},  # three classes
                 {"dataset": "three-class", "layers": [2, 1]},
                 {"dataset": classes["id"], "layers": [3, 3]}):  # width
        error = error_of(client.post(f"{API}/runs", json=spec), 422)
        assert set(error["fields"]) == {"layers"}, (spec, error)
    assert len(queued_run_ids(queue_dir)) == 4
    runs = client.get(f"{API}/runs", query_string={"dataset": "reg"}).get_json()["runs"]
    assert sorted(r["id"] for r in runs) == [by_name["id"], by_id["id"]]

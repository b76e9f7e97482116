"""Bad input, on SQLite and PostgreSQL: bodies over the configured sizes (413, also through
waitress, the server of `descent api`), runs and datasets over the configured limits (422
naming the field, nothing stored or queued), and uploads with bad data in every format
(422 naming the field). Also the regressions schemathesis found."""

import http.client
import io
import json

import numpy as np
import pytest
from sqlalchemy import func, select

from service.settings import Limits
from service.store import Dataset, Run
from tests.waitress_thread import serving

from .conftest import API, error_of, queued_run_ids

XOR_X = [[0, 0], [0, 1], [1, 0], [1, 1]]


@pytest.fixture
def limited(make_client, token):
    """limited(**limits): a client (alice's token) of an app with these Limits."""
    def make(**limits):
        client = make_client(limits=Limits(**limits))
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return client
    return make


def count(sessions, model) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def upload_json(client, **body):
    return client.post(f"{API}/datasets", json=body)


def upload_file(client, name, content: bytes, filename: str):
    return client.post(f"{API}/datasets", content_type="multipart/form-data",
                       data={"name": name, "file": (io.BytesIO(content), filename)})


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def csv_bytes(X, y) -> bytes:
    return "".join(",".join(map(str, [*row, label])) + "\n"
                   for row, label in zip(X, y)).encode()


# ------------------------------------------------------------------------------ 413


def test_a_json_body_over_its_limit_is_413(limited, sessions, queue_dir):
    client = limited(max_json_bytes=200, max_upload_bytes=5000)
    spec = {"dataset": "xor", "layers": [2, 4, 1], "name": "x" * 150}
    error = error_of(client.post(f"{API}/runs", json=spec), 413)
    assert error["code"] == "request_entity_too_large"
    assert "DESCENT_MAX_JSON_BYTES" in error["message"] and set(error["fields"]) == {"body"}
    assert count(sessions, Run) == 0 and queued_run_ids(queue_dir) == []
    assert client.post(f"{API}/runs", json={**spec, "name": "x"}).status_code == 202
    # the same for every JSON body, e.g. a sweep or a prediction
    big = {"base": spec, "grid": {"learning_rate": [0.1] * 100}}
    assert error_of(client.post(f"{API}/sweeps", json=big), 413)


def test_a_dataset_upload_may_be_larger_than_a_json_body(limited, sessions):
    client = limited(max_json_bytes=200, max_upload_bytes=5000)
    X = [[i, i + 1] for i in range(30)]
    y = [i % 2 for i in range(30)]
    assert upload_json(client, name="as-json", X=X, y=y).status_code == 201
    assert upload_file(client, "as-csv", csv_bytes(X, y), "d.csv").status_code == 201
    X = [[i, i + 1] for i in range(600)]
    y = [i % 2 for i in range(600)]
    for response in (upload_json(client, name="too-big", X=X, y=y),
                     upload_file(client, "too-big", csv_bytes(X, y), "d.csv")):
        error = error_of(response, 413)
        assert "DESCENT_MAX_UPLOAD_BYTES" in error["message"]
    assert count(sessions, Dataset) == 2


def test_a_chunked_body_over_its_limit_is_413(limited, sessions):
    client = limited(max_json_bytes=200)
    body = json.dumps({"dataset": "xor", "layers": [2, 4, 1], "name": "x" * 300}).encode()

    # no Content-Length: what a server hands on of a chunked body
    response = client.post(f"{API}/runs", input_stream=io.BytesIO(body),
                           content_type="application/json",
                           headers={"Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})
    error_of(response, 413)
    assert count(sessions, Run) == 0


@pytest.fixture
def waitress_server(settings, token):
    """The app on waitress (as `descent api` serves it) on a free port, with small body
    limits: (port, token)."""
    import dataclasses

    from service.app import create_app
    from service.cli.serve import server_body_ceiling

    app = create_app({"SETTINGS": dataclasses.replace(
        settings, limits=Limits(max_json_bytes=1000, max_upload_bytes=100_000))})
    with serving(app, host="127.0.0.1", port=0, threads=2, ident="descent",
                 max_request_body_size=server_body_ceiling(settings.limits)) as server:
        yield server.effective_port, token
    app.extensions["descent"]["engine"].dispose()


def post_raw(port, token, path, body: bytes, content_type: str):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers={
            "Content-Type": content_type, "Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


# A real database: waitress serves the app from its own threads, which cannot share the
# test's connection.
@pytest.mark.real_database
def test_waitress_answers_413_with_the_json_error(waitress_server, sessions):
    port, token = waitress_server
    # 2 MB against a 1000-byte limit: the client sends it all and reads a 413, no reset
    body = json.dumps({"dataset": "xor", "layers": [2, 1], "name": "x" * 2_000_000}).encode()
    status, content_type, data = post_raw(port, token, f"{API}/runs", body, "application/json")
    assert status == 413
    assert content_type == "application/json"
    assert json.loads(data)["error"]["code"] == "request_entity_too_large"
    boundary = "b0undary"
    upload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nbig\r\n"
              f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
              f"filename=\"d.csv\"\r\n\r\n").encode() + b"1,2,0\n" * 50_000 \
        + f"\r\n--{boundary}--\r\n".encode()
    status, _, data = post_raw(port, token, f"{API}/datasets", upload,
                               f"multipart/form-data; boundary={boundary}")
    assert status == 413, data
    assert "DESCENT_MAX_UPLOAD_BYTES" in json.loads(data)["error"]["message"]
    assert count(sessions, Run) == 0 and count(sessions, Dataset) == 0
    # and the server still answers
    status, _, _ = post_raw(port, token, f"{API}/runs",
                            b'{"dataset": "xor", "layers": [2, 1]}', "application/json")
    assert status == 202


# -------------------------------------------------------------- limits on runs and data


def test_a_run_over_the_work_limit_is_422_and_queues_nothing(limited, sessions, queue_dir):
    # [2, 1] has 3 parameters and xor 4 samples: at most 100 epochs
    client = limited(max_work=1200)
    assert client.post(f"{API}/runs", json={"dataset": "xor", "layers": [2, 1],
                                            "epochs": 100}).status_code == 202
    runs, queued = count(sessions, Run), queued_run_ids(queue_dir)
    error = error_of(client.post(f"{API}/runs", json={"dataset": "xor", "layers": [2, 1],
                                                      "epochs": 101}), 422)
    assert set(error["fields"]) == {"epochs"}
    assert "3 parameters x 4 samples x 101 epochs is 1212" in error["fields"]["epochs"]
    assert "DESCENT_MAX_WORK" in error["fields"]["epochs"]
    # a sweep names the varied field and the cell
    error = error_of(client.post(f"{API}/sweeps", json={
        "base": {"dataset": "xor", "layers": [2, 1]}, "grid": {"epochs": [10, 200]}}), 422)
    assert set(error["fields"]) == {"grid.epochs[1]"}
    assert "configuration #1" in error["fields"]["grid.epochs[1]"]
    assert count(sessions, Run) == runs and queued_run_ids(queue_dir) == queued


def test_a_run_over_the_parameter_limit_is_422(limited, sessions):
    client = limited(max_params=20)
    error = error_of(client.post(f"{API}/runs", json={"dataset": "xor",
                                                      "layers": [2, 8, 1]}), 422)
    assert set(error["fields"]) == {"layers"}
    assert count(sessions, Run) == 0


@pytest.mark.parametrize("fmt", ["json", "csv", "npz"])
def test_datasets_over_the_row_and_column_limits_are_422(limited, sessions, fmt):
    client = limited(max_samples=4, max_features=3)
    for X, y, field in ((np.zeros((5, 2)), [0] * 5, "X"),
                        (np.zeros((4, 4)), [0] * 4, "X")):
        error = error_of(upload(client, fmt, "big", np.asarray(X), np.asarray(y)), 422)
        assert set(error["fields"]) == {field}
        assert "limit" in error["fields"][field]
    assert upload(client, fmt, "ok", np.zeros((4, 3)), np.zeros(4, int)).status_code == 201
    assert count(sessions, Dataset) == 1


# ------------------------------------------------------------------ bad data, per format


def upload(client, fmt: str, name: str, X, y):
    """Upload X and y (arrays or lists) as JSON, a CSV file or an NPZ file."""
    if fmt == "json":
        body = {"name": name, "X": np.asarray(X).tolist() if isinstance(X, np.ndarray) else X,
                "y": np.asarray(y).tolist() if isinstance(y, np.ndarray) else y}
        # allow_nan: send NaN and Infinity literals as a careless client would
        return client.post(f"{API}/datasets", data=json.dumps(body, allow_nan=True),
                           content_type="application/json")
    if fmt == "csv":
        lines = [",".join(str(v) for v in [*row, label]) for row, label in zip(X, y)]
        return upload_file(client, name, ("\n".join(lines) + "\n").encode(), "d.csv")
    return upload_file(client, name, npz_bytes(X=np.asarray(X), y=np.asarray(y)), "d.npz")


BAD_DATA = {
    # case: (X, y, the field named in JSON and NPZ, in CSV)
    "nan in X": ([[0.0, float("nan")], [1.0, 1.0]], [0, 1], "X", "X"),
    "infinity in X": ([[0.0, float("inf")], [1.0, 1.0]], [0, 1], "X", "X"),
    "nan in y": ([[0.0, 0.0], [1.0, 1.0]], [0.5, float("nan")], "y", "y"),
    "infinity in y": ([[0.0, 0.0], [1.0, 1.0]], [0.5, float("-inf")], "y", "y"),
    "negative label": ([[0, 0], [1, 1]], [0, -1], "y", "y"),
    "label out of range": ([[0, 0], [1, 1]], [0, 10**9], "y", "y"),
    "fewer y than X": ([[0, 0], [1, 1], [2, 2]], [0, 1], "y", None),
    "empty": (np.zeros((0, 2)), np.zeros(0, int), "X", "file"),
}


def names(error, field: str) -> bool:
    """Whether the error names ``field`` or an item of it (``X[0][1]``)."""
    return any(name == field or name.startswith(field + "[") for name in error["fields"])


@pytest.mark.parametrize("fmt", ["json", "csv", "npz"])
@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_422_naming_the_field(client, sessions, fmt, case):
    X, y, field, csv_field = BAD_DATA[case]
    if fmt == "csv" and csv_field is None:
        return  # a CSV row holds its own y: X and y cannot differ in length
    response = upload(client, fmt, "bad", X, y)
    error = error_of(response, 422)
    expected = csv_field if fmt == "csv" else field
    assert names(error, expected), (case, fmt, error)
    assert count(sessions, Dataset) == 0


RAGGED_OR_NOT_NUMBERS = [
    ("json", {"X": [[0, 0], [1]], "y": [0, 1]}, "X"),
    ("json", {"X": [[0, "a"], [1, 1]], "y": [0, 1]}, "X[0][1]"),
    ("json", {"X": [[0, 0], [1, 1]], "y": [0, "a"]}, "y"),
    ("json", {"X": [[0, 0], [1, 1]], "y": [0, None]}, "y"),
    ("json", {"X": [[0, 0], [1, 1]], "y": [[0], [1, 2]]}, "y"),
    ("json", {"X": [], "y": []}, "X"),
    ("json", {"X": [[]], "y": [0]}, "X"),
    ("csv", b"0,0,0\n1,1\n", "file"),
    ("csv", b"0,0,0\n1,a,1\n", "file"),
    ("csv", b"0,0,0\r1,1,1\r\n\x00", "file"),  # schemathesis found a 500 here
    ("csv", b"x,y\n", "file"),
    ("npz", {"X": np.array([["0", "a"], ["1", "1"]]), "y": np.array([0, 1])}, "X"),
    ("npz", {"X": np.array([[0, 1j], [1, 1]]), "y": np.array([0, 1])}, "X"),
    ("npz", {"X": np.zeros((2, 2)), "y": np.array(["a", "b"])}, "y"),
    ("npz", {"X": np.zeros((2, 2)), "y": np.array([1j, 2])}, "y"),
    ("npz", {"X": np.zeros((2, 2, 2)), "y": np.array([0, 1])}, "X"),
    ("npz", {"X": np.zeros((2, 2))}, "file"),
]


@pytest.mark.parametrize("fmt, data, field", RAGGED_OR_NOT_NUMBERS)
def test_ragged_or_non_numeric_data_is_422_naming_the_field(client, sessions, fmt, data,
                                                            field):
    if fmt == "json":
        response = client.post(f"{API}/datasets", json={"name": "bad", **data})
    elif fmt == "csv":
        response = upload_file(client, "bad", data, "d.csv")
    else:
        response = upload_file(client, "bad", npz_bytes(**data), "d.npz")
    error = error_of(response, 422)
    assert names(error, field), error
    assert count(sessions, Dataset) == 0


def test_csv_infinite_or_huge_targets_are_not_labels(client):
    # whole-number-looking floats too large for int64 stay regression values
    response = upload_file(client, "huge", b"0,0,1e300\n1,1,2\n", "d.csv")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["target_kind"] == "values"
    error = error_of(upload_file(client, "inf", b"0,0,inf\n1,1,2\n", "d.csv"), 422)
    assert set(error["fields"]) == {"y"} and "infinity" in error["fields"]["y"]


# -------------------------------------------------------- regressions from schemathesis


def test_a_dataset_ref_of_unicode_digits_is_not_an_id(client):
    # '²'.isdigit() is true but int('²') fails: this was a 500
    assert client.get(f"{API}/runs", query_string={"dataset": "²"}).status_code == 200
    assert error_of(client.get(f"{API}/datasets/²"), 404)
    response = client.get(f"{API}/runs", query_string={"where": 'dataset in ("²", "1")'})
    assert response.status_code == 200, response.get_json()


def test_non_integer_targets_where_classes_are_needed_are_422(client, sessions, queue_dir):
    # float targets are one regression column: several outputs need integer class labels
    assert upload(client, "json", "soft", XOR_X, [0.0, 0.5, 1.5, 2.0]).status_code == 201
    error = error_of(client.post(f"{API}/runs", json={"dataset": "soft",
                                                      "layers": [2, 4, 3]}), 422)
    assert set(error["fields"]) == {"layers"}
    # labels beyond the outputs: 0/1 only with one output
    assert upload(client, "json", "three", XOR_X, [0, 1, 2, 2]).status_code == 201
    error = error_of(client.post(f"{API}/runs", json={"dataset": "three",
                                                      "layers": [2, 4, 1]}), 422)
    assert set(error["fields"]) == {"layers"}
    assert count(sessions, Run) == 0 and queued_run_ids(queue_dir) == []


# ------------------------------------------------- never a 500 (issue 12; test_fuzz.py too)

SPEC = '{"dataset": "xor", "layers": [2, 1], %s}'
HUGE = "9" * 5000  # over int()'s 4300 digits


def post_json(client, path: str, text: str):
    """POST JSON text as it is (lone surrogates, huge integers, any nesting)."""
    return client.post(f"{API}{path}", data=text.encode(), content_type="application/json")


@pytest.mark.parametrize("path, body, fields", [
    ("/runs", SPEC % f'"seed": {HUGE}', {"seed"}),
    ("/runs", SPEC % f'"learning_rate": -{HUGE}', {"learning_rate"}),
    ("/runs", SPEC % '"name": "\\ud800"', {"name"}),
    ("/runs", SPEC % '"name": "a\\udc00b\\ud83d"', {"name"}),
    ("/runs", SPEC % '"name": "nul \\u0000"', {"name"}),
    ("/runs", SPEC % '"tags": {"a": "\\udfff"}', {"tags.a"}),
    ("/runs", SPEC % '"tags": {"\\ud800": "b"}', {"tags.\\ud800"}),
    ("/sweeps", '{"base": %s, "grid": {"seed": [1, %s]}}' % (SPEC % '"epochs": 1', HUGE),
     {"grid.seed[1]"}),
    ("/sweeps", '{"base": %s, "name": "\\ud800"}' % (SPEC % '"epochs": 1'), {"name"}),
    ("/datasets", '{"name": "d", "X": [[0, %s]], "y": [0]}' % HUGE, {"X[0][1]"}),
    ("/datasets", '{"name": "d\\u0000", "X": [[0, 1]], "y": [0]}', {"name"}),
    ("/trace", '{"layers": [2, 1], "x": [0, 1], "y": [1], "seed": %s}' % HUGE, {"seed"}),
    ("/trace", '{"layers": [2, 1], "x": [0, 1], "y": [1], "params": {"W%s": [[1, 2]]}}'
     % HUGE, {f"params.W{HUGE}", "params.W1", "params.B1"}),
])
def test_huge_integers_lone_surrogates_and_nul_are_422_naming_the_field(
        client, sessions, path, body, fields):
    error = error_of(post_json(client, path, body), 422)
    assert set(error["fields"]) == fields, error
    assert count(sessions, Run) == 0 and count(sessions, Dataset) == 0


def test_valid_unicode_is_kept(client):
    # a surrogate pair is one character (U+1F600), not a lone surrogate
    response = post_json(client, "/runs", SPEC % '"name": "\\ud83d\\ude00 ключ", '
                                                 '"tags": {"ключ": "😀"}')
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["name"] == "😀 ключ"


OPEN_MEMBER = '{"a":'


def nested(levels: int, inner: str = "1", opener: str = "[") -> str:
    closer = "]" if opener == "[" else "}"
    return opener * levels + inner + closer * levels


@pytest.mark.parametrize("levels", [65, 3000, 100_000])
@pytest.mark.parametrize("where", ["body", "tags", "dataset X"])
def test_json_nested_too_deeply_is_400(client, sessions, levels, where):
    if where == "body":
        path, body = "/runs", nested(levels)
    elif where == "tags":
        path, body = "/runs", SPEC % f'"tags": {nested(levels - 1, "1", OPEN_MEMBER)}'
    else:
        path, body = "/datasets", '{"name": "d", "X": %s, "y": [0]}' % nested(levels - 1)
    error = error_of(post_json(client, path, body), 400)
    assert error["fields"] == {"body": "nested deeper than 64 levels"}
    assert count(sessions, Run) == 0 and count(sessions, Dataset) == 0
    # also where the body is read by request.get_json (idempotency keys)
    error_of(client.post(f"{API}{path}", data=body, content_type="application/json",
                         headers={"Idempotency-Key": "deep"}), 400)


def test_json_nested_up_to_the_limit_is_read(client):
    from service.web.jsonbody import MAX_DEPTH

    # 64 levels: the schema says what is wrong (a 422 naming X), not the JSON decoder
    body = '{"name": "d", "X": %s, "y": [0]}' % nested(MAX_DEPTH - 2, "[1]")
    error = error_of(post_json(client, "/datasets", body), 422)
    assert all(name.startswith("X") for name in error["fields"]), error
    error_of(post_json(client, "/datasets", body.replace("[1]", "[[1]]")), 400)


def test_names_with_dollars_are_drawn_literally(client, sessions):
    # matplotlib read "$...$" in titles and labels as mathematics, and failed: a 500
    from .conftest import train_run

    run = client.post(f"{API}/runs", json={"dataset": "xor", "layers": [2, 1], "epochs": 3,
                                           "name": "$x^$ and $\\frac{$"}).get_json()
    train_run(sessions, run["id"])
    response = client.get(f"{API}/runs/{run['id']}/plot.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    sweep = client.post(f"{API}/sweeps", json={
        "base": {"dataset": "xor", "layers": [2, 1], "epochs": 2}, "name": "$\\undefined$",
        "grid": {"learning_rate": [0.1, 0.2]}})
    assert sweep.status_code == 202, sweep.get_json()
    response = client.get(f"{API}/sweeps/{sweep.get_json()['id']}/plot.png")
    assert response.status_code == 200 and response.mimetype == "image/png"


def test_where_filters_that_were_500s_are_answered(client):
    values = ",".join(["x"] * 1000)
    assert client.get(f"{API}/runs", query_string={
        "where": f"tag.a in ({values})"}).status_code == 200
    for expression, message in (('name = "a\x00b"', "unexpected character '\\x00'"),
                                ("id > 1" + "0" * 400, "a finite number for id")):
        error = error_of(client.get(f"{API}/runs", query_string={"where": expression}), 422)
        assert message in error["fields"]["where"], error


# ---------------------------------------------------------------------- the dashboard


@pytest.fixture
def alice_browser(app, token):
    from .test_dashboard import log_in

    browser = app.test_client()
    log_in(browser, token)
    return browser


def test_the_dashboards_where_box_answers_with_a_message_not_a_500(alice_browser):
    from service.store.where import MAX_DEPTH

    from .test_dashboard import errors_of

    values = ",".join(["x"] * 1000)
    assert alice_browser.get("/", query_string={
        "where": f"tag.a in ({values})"}).status_code == 200
    assert alice_browser.get("/", query_string={
        "where": "(" * MAX_DEPTH + "id > 0" + ")" * MAX_DEPTH}).status_code == 200
    for expression, message in (
            ("(" * (MAX_DEPTH + 1) + "id > 0" + ")" * (MAX_DEPTH + 1),
             f"nested deeper than {MAX_DEPTH} levels"),
            ('name = "a\x00b"', "unexpected character"),
            ("id > 1" + "0" * 400, "a finite number for id"),
            (f"tag.a in ({values},y)", "more than 1000 values")):
        response = alice_browser.get("/", query_string={"where": expression})
        assert response.status_code == 422
        assert message in errors_of(response.text)["where"].replace("&#39;", "'")


def test_the_dashboards_submit_form_answers_with_messages_not_a_500(alice_browser, sessions):
    from .test_dashboard import FORM, csrf_of, errors_of

    csrf = csrf_of(alice_browser.get("/submit").text)
    for field, value in (("seed", HUGE), ("name", "nul \x00"), ("name", "$x^$")):
        response = alice_browser.post("/submit", data={**FORM, field: value,
                                                       "csrf_token": csrf})
        if value == "$x^$":
            assert response.status_code == 302
            continue
        assert response.status_code == 422, response.text
        assert set(errors_of(response.text)) == {field}
        if field == "seed":
            assert "at most 20 digits" in errors_of(response.text)["seed"]
    assert count(sessions, Run) == 1

"""/api/v1/runs through the Flask test client, on SQLite and PostgreSQL (API.md sections 2-3):
submit (defaults, queueing, every 422 and the 503), list (filters, order, cursor pages),
get, history, params, cancel and predict."""

import base64
import csv
import io
import json
from datetime import datetime

import numpy as np
import pytest
from sqlalchemy import update

import kernels
from service.settings import Limits
from service.runspec import RUN_DEFAULTS
from service.store import Run
from service.store.models import Sweep
from service.store import runs as store_runs
from service.store.arrays import from_npz

from .conftest import API, all_runs, error_of, queued_run_ids, submit, train_run

SPEC_FIELDS = {"dataset", "layers", "activation", "output_activation", "loss", "learning_rate",
               "batch_mode", "batch_size", "epochs", "seed", "shuffle", "init", "dtype",
               "validation_split", "name", "tags", "optimizer", "weight_decay", "clip_norm",
               "lr_schedule", "stop_on_plateau", "eval_every", "threads"}
RUN_FIELDS = {"id", "name", "status", "spec", "tags", "dataset", "sweep_id", "created_at",
              "started_at", "finished_at", "epochs", "epochs_done", "final_error", "best_error",
              "best_epoch", "stop_reason", "final_accuracy", "final_val_error", "worker",
              "attempts", "cancel_requested", "error_message", "rerun_of"}
# An endpoint of one run also shows where it trained (lists of runs leave that out).
ONE_RUN_FIELDS = RUN_FIELDS | {"environment"}
DROP = object()  # a field to leave out of the base spec


# ------------------------------------------------------------------------------ submit


def test_submit_fills_every_default_and_queues_one_message_per_run(client, queue_dir):
    response = client.post(f"{API}/runs", json={"dataset": "xor", "layers": [2, 4, 1]})
    assert response.status_code == 202
    run = response.get_json()
    assert set(run) == ONE_RUN_FIELDS
    assert run["status"] == "queued" and isinstance(run["id"], int)
    spec = run["spec"]
    assert set(spec) == SPEC_FIELDS
    for name, default in RUN_DEFAULTS.items():
        if name != "output_activation":
            assert spec[name] == default, name
    assert spec["output_activation"] == "sigmoid"  # mse: sigmoid outputs
    assert spec["name"] is None and spec["tags"] == {}
    assert run["epochs"] == spec["epochs"] and run["epochs_done"] == 0 and run["attempts"] == 0
    assert run["dataset"]["name"] == "xor" and isinstance(run["dataset"]["id"], int)
    assert run["created_at"].endswith("+00:00")
    assert run["cancel_requested"] is False
    assert queued_run_ids(queue_dir) == [run["id"]]

    second = submit(client)
    third = submit(client, layers=[2, 3, 1])
    assert queued_run_ids(queue_dir) == [run["id"], second["id"], third["id"]]
    assert len({run["id"], second["id"], third["id"]}) == 3
    assert client.get(f"{API}/runs/{run['id']}").get_json() == run


def test_submit_keeps_every_given_field(client, queue_dir):
    spec = {"dataset": "iris", "layers": [4, 6, 5, 3], "activation": ["tanh", "relu"],
            "output_activation": "softmax", "loss": "cross_entropy", "learning_rate": 0.05,
            "batch_mode": "sgd", "batch_size": 7, "epochs": 0, "seed": 2**63 - 1,
            "shuffle": False, "init": "xavier", "dtype": "float32", "validation_split": 0.25,
            "name": "my run", "tags": {"team": "a", "dotted.key": "x y"}, "eval_every": 1,
            "threads": 1}
    run = submit(client, **spec)
    # (and plain gradient descent's resolved optimizer fields: see test_optimizer_spec.py)
    assert run["spec"] == {**spec, "optimizer": "sgd", "weight_decay": 0.0, "clip_norm": None,
                           "lr_schedule": {"kind": "constant"}, "stop_on_plateau": None}
    assert run["name"] == "my run" and run["tags"] == spec["tags"]
    assert run["epochs"] == 0
    # cross_entropy with several outputs defaults to softmax; an int learning rate is a number
    other = submit(client, dataset="iris", layers=[4, 3], loss="cross_entropy", learning_rate=1)
    assert other["spec"]["output_activation"] == "softmax"
    assert other["spec"]["learning_rate"] == 1.0
    # a dataset named by id; every hidden activation and init
    by_id = submit(client, dataset=run["dataset"]["id"], layers=[4, 3])
    assert by_id["dataset"] == run["dataset"]
    for activation in kernels.HIDDEN_ACTIVATIONS:
        submit(client, activation=activation)
    for init in kernels.INITS:
        submit(client, init=init)
    expected = 3 + len(kernels.HIDDEN_ACTIVATIONS) + len(kernels.INITS)
    assert len(queued_run_ids(queue_dir)) == expected


# (changes to a valid xor spec, the exact set of fields the 422 must name)
INVALID_SPECS = [
    ({"dataset": DROP, "layers": DROP}, {"dataset", "layers"}),
    ({"layers": DROP}, {"layers"}),
    ({"foo": 1}, {"foo"}),
    ({"foo": 1, "Layers": [2, 1]}, {"foo", "Layers"}),
    # wrong types
    ({"learning_rate": "0.5"}, {"learning_rate"}),
    ({"learning_rate": "fast"}, {"learning_rate"}),
    ({"learning_rate": True}, {"learning_rate"}),
    ({"learning_rate": None}, {"learning_rate"}),
    ({"epochs": 1.5}, {"epochs"}),
    ({"epochs": 10.0}, {"epochs"}),
    ({"epochs": "10"}, {"epochs"}),
    ({"batch_size": True}, {"batch_size"}),
    ({"seed": False}, {"seed"}),
    ({"shuffle": 1}, {"shuffle"}),
    ({"shuffle": "true"}, {"shuffle"}),
    ({"validation_split": "0.1"}, {"validation_split"}),
    ({"layers": "2,4,1"}, {"layers"}),
    ({"layers": 2}, {"layers"}),
    ({"layers": {"0": 2}}, {"layers"}),
    ({"layers": [2, 4.5, 1]}, {"layers[1]"}),
    ({"layers": [2, True, 1]}, {"layers[1]"}),
    ({"layers": [2, "4", 1]}, {"layers[1]"}),
    ({"name": 5}, {"name"}),
    ({"tags": ["a"]}, {"tags"}),
    ({"tags": {"a": 1}}, {"tags.a.value"}),
    ({"dataset": True}, {"dataset"}),
    ({"dataset": 2.5}, {"dataset"}),
    ({"dataset": ["xor"]}, {"dataset"}),
    ({"activation": 3}, {"activation"}),
    ({"learning_rate": "x", "epochs": 1.5, "layers": "x", "batch_size": True, "bogus": 0},
     {"learning_rate", "epochs", "layers", "batch_size", "bogus"}),
    # out of range
    ({"learning_rate": 0}, {"learning_rate"}),
    ({"learning_rate": -0.1}, {"learning_rate"}),
    ({"learning_rate": 1e400}, {"learning_rate"}),  # parses as infinity
    ({"batch_size": 0}, {"batch_size"}),
    ({"epochs": -1}, {"epochs"}),
    ({"seed": -1}, {"seed"}),
    ({"seed": 2**63}, {"seed"}),
    ({"validation_split": 1}, {"validation_split"}),
    ({"validation_split": 1.5}, {"validation_split"}),
    ({"validation_split": -0.1}, {"validation_split"}),
    ({"layers": [2]}, {"layers"}),
    ({"layers": []}, {"layers"}),
    ({"layers": [2, 0, 1]}, {"layers[1]"}),
    ({"layers": [2, 10**30, 1]}, {"layers[1]"}),  # beyond any integer column
    ({"batch_size": 2**31}, {"batch_size"}),
    ({"epochs": 10**30}, {"epochs"}),
    ({"learning_rate": 10**400}, {"learning_rate"}),
    ({"name": "n" * 201}, {"name"}),
    ({"learning_rate": 0, "batch_size": 0, "epochs": -1, "validation_split": 1, "seed": -1},
     {"learning_rate", "batch_size", "epochs", "validation_split", "seed"}),
    # unknown names
    ({"activation": "swish"}, {"activation"}),
    ({"output_activation": "swish"}, {"output_activation"}),
    ({"loss": "hinge"}, {"loss"}),
    ({"batch_mode": "stochastic"}, {"batch_mode"}),
    ({"init": "zeros"}, {"init"}),
    ({"dtype": "float16"}, {"dtype"}),
    ({"activation": "swish", "output_activation": "swish", "loss": "hinge",
      "batch_mode": "x", "init": "zeros", "dtype": "int8"},
     {"activation", "output_activation", "loss", "batch_mode", "init", "dtype"}),
    # the numeric contract
    ({"activation": "softmax"}, {"activation"}),
    ({"activation": ["softmax"]}, {"activation"}),
    ({"activation": ["tanh", "relu"]}, {"activation"}),
    ({"activation": []}, {"activation"}),
    ({"layers": [2, 3, 3, 1], "activation": ["tanh"]}, {"activation"}),
    ({"layers": [2, 3, 1], "activation": ["tanh", 5]}, {"activation"}),
    ({"loss": "cross_entropy", "output_activation": "linear"}, {"output_activation"}),
    ({"loss": "cross_entropy", "output_activation": "relu"}, {"output_activation"}),
    ({"output_activation": "softmax"}, {"output_activation"}),  # one output
    # the dataset
    ({"dataset": "no-such-set"}, {"dataset"}),
    ({"dataset": ""}, {"dataset"}),
    ({"dataset": 987654}, {"dataset"}),
    ({"dataset": "987654"}, {"dataset"}),
    ({"dataset": 2**80}, {"dataset"}),
    ({"layers": [3, 4, 1]}, {"layers"}),  # xor has 2 features
]


def _spec(changes: dict) -> dict:
    spec = {"dataset": "xor", "layers": [2, 4, 1]}
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not DROP}


def test_invalid_specs_name_each_bad_field_and_keep_nothing(client, queue_dir):
    before = client.get(f"{API}/runs").get_json()["runs"]
    for changes, expected in INVALID_SPECS:
        response = client.post(f"{API}/runs", json=_spec(changes))
        error = error_of(response, 422)
        assert error["code"] == "validation_error", changes
        assert set(error["fields"]) == expected, (changes, error)
    # wrong dataset shapes beyond xor: iris has 4 features and 3 classes
    for spec, expected in [
        ({"dataset": "iris", "layers": [4, 8, 2]}, {"layers"}),  # 3 classes, 2 outputs
        ({"dataset": "iris", "layers": [4, 8, 1]}, {"layers"}),  # 3 classes, 1 output
        ({"dataset": "iris", "layers": [2, 8, 3]}, {"layers"}),  # width
    ]:
        error = error_of(client.post(f"{API}/runs", json=spec), 422)
        assert set(error["fields"]) == expected, (spec, error)
    assert client.get(f"{API}/runs").get_json()["runs"] == before == []
    assert queued_run_ids(queue_dir) == []
    # two outputs on 0/1 labels is a one-hot spec, accepted
    assert submit(client, layers=[2, 4, 2])["status"] == "queued"


def test_sizes_over_the_configured_limits_are_422(make_client):
    client = make_client(limits=Limits(max_layers=3, max_width=8, max_params=20,
                                       max_epochs=200, max_samples=3))
    tiny = client.post(f"{API}/datasets", json={"name": "tiny", "X": [[0, 0], [0, 1], [1, 1]],
                                                "y": [0, 1, 0]})
    assert tiny.status_code == 201
    cases = [
        ({"dataset": "tiny", "layers": [2, 3, 3, 1]}, {"layers"}),   # 4 layers > 3
        ({"dataset": "tiny", "layers": [2, 9, 1]}, {"layers"}),      # width 9 > 8
        ({"dataset": "tiny", "layers": [2, 5, 1]}, {"layers"}),      # 21 parameters > 20
        ({"dataset": "tiny", "layers": [2, 1], "epochs": 201}, {"epochs"}),
        ({"dataset": "xor", "layers": [2, 1]}, {"dataset"}),         # 4 samples > 3
        ({"dataset": "xor", "layers": [2, 9, 1], "epochs": 1000},
         {"dataset", "layers", "epochs"}),
    ]
    for spec, expected in cases:
        error = error_of(client.post(f"{API}/runs", json=spec), 422)
        assert set(error["fields"]) == expected, (spec, error)
    assert client.get(f"{API}/runs").get_json()["runs"] == []
    # just at the limits: accepted (2*4+4 + 4+1 = 17 parameters)
    ok = client.post(f"{API}/runs", json={"dataset": "tiny", "layers": [2, 4, 1], "epochs": 200})
    assert ok.status_code == 202


def test_bodies_that_are_not_a_json_spec(client, queue_dir):
    error = error_of(client.post(f"{API}/runs", data="dataset=xor", content_type="text/plain"),
                     415)
    assert error["code"] == "unsupported_media_type"
    error = error_of(client.post(f"{API}/runs", data='{"dataset": "xor",',
                                 content_type="application/json"), 400)
    assert error["code"] == "invalid_json" and "body" in error["fields"]
    error = error_of(client.post(f"{API}/runs", data=b"\xff\xfe", content_type="application/json"),
                     400)
    assert error["code"] == "invalid_json"
    error = error_of(client.post(f"{API}/runs", json=[{"dataset": "xor"}]), 422)
    assert set(error["fields"]) == {"body"}
    error = error_of(client.post(f"{API}/runs", json="xor"), 422)
    assert set(error["fields"]) == {"body"}
    # no body, or a form: the required fields are missing
    error = error_of(client.post(f"{API}/runs"), 422)
    assert set(error["fields"]) == {"dataset", "layers"}
    error = error_of(client.post(f"{API}/runs", data={"dataset": "xor", "layers": "2,1"}), 422)
    assert set(error["fields"]) == {"dataset", "layers"}
    assert client.get(f"{API}/runs").get_json()["runs"] == []
    assert queued_run_ids(queue_dir) == []
    # methods and paths that do not exist answer JSON errors too
    assert error_of(client.delete(f"{API}/runs"), 405)["code"] == "method_not_allowed"
    assert error_of(client.put(f"{API}/runs/1"), 405)["code"] == "method_not_allowed"
    assert error_of(client.get(f"{API}/nothing-here"), 404)["code"] == "not_found"
    assert error_of(client.get(f"{API}/runs/abc"), 404)["code"] == "not_found"


def test_unreachable_broker_is_503_and_keeps_no_run(make_client):
    client = make_client(broker_url="redis://127.0.0.1:1/0")
    error = error_of(client.post(f"{API}/runs", json={"dataset": "xor", "layers": [2, 1]}), 503)
    assert error["code"] == "queue_unavailable"
    assert client.get(f"{API}/runs").get_json() == {"runs": [], "next_cursor": None}
    # validation still comes first: a bad spec is a 422, not a 503
    error = error_of(client.post(f"{API}/runs", json={"dataset": "xor", "layers": [3, 1]}), 422)
    assert set(error["fields"]) == {"layers"}


# ------------------------------------------------------------------------------- list


@pytest.fixture
def varied_runs(client, sessions):
    """Nine runs across datasets, states, tags, sweeps, learning rates and final errors.
    Returns {label: id}."""
    upload = client.post(f"{API}/datasets", json={"name": "mine", "X": [[0, 1], [1, 0]],
                                                  "y": [0.5, 1.5]})
    assert upload.status_code == 201
    ids = {}
    ids["a"] = submit(client, learning_rate=0.5, tags={"team": "x", "k.dot": "v"})["id"]
    ids["b"] = submit(client, learning_rate=0.1, tags={"team": "y"}, batch_size=4)["id"]
    ids["c"] = submit(client, learning_rate=0.5, tags={"team": "x", "size": "big"})["id"]
    ids["d"] = submit(client, dataset="mine", learning_rate=0.2, epochs=5)["id"]
    ids["e"] = submit(client, dataset="mine", learning_rate=0.05, epochs=3)["id"]
    ids["f"] = submit(client, learning_rate=1.0, epochs=7, batch_size=1)["id"]
    ids["g"] = submit(client, learning_rate=0.1, epochs=2)["id"]
    ids["h"] = submit(client, learning_rate=0.3, epochs=4)["id"]
    ids["i"] = submit(client, learning_rate=0.1, epochs=6)["id"]
    assert client.post(f"{API}/runs/{ids['b']}/cancel").status_code == 202
    with sessions() as session:
        store_runs.claim_run(session, ids["c"], "w1")
    train_run(sessions, ids["d"])
    train_run(sessions, ids["e"])
    train_run(sessions, ids["g"], status="failed")
    train_run(sessions, ids["i"])
    with sessions() as session:
        # Sweeps 7 and 8 of alice (runs.sweep_id is a foreign key)
        session.add_all([Sweep(id=i, owner="alice", base={}, space={}, kind="grid")
                         for i in (7, 8)])
        session.flush()
        session.execute(update(Run).where(Run.id.in_([ids["f"], ids["g"]])).values(sweep_id=7))
        session.execute(update(Run).where(Run.id == ids["h"]).values(sweep_id=8))
        # a tie on final_error, broken by id
        session.execute(update(Run).where(Run.id.in_([ids["e"], ids["i"]]))
                        .values(final_error=0.25))
        session.commit()
    return ids


def _ids(runs):
    return [run["id"] for run in runs]


def test_list_filters(client, varied_runs):
    ids = varied_runs
    every = all_runs(client)
    assert _ids(every) == sorted(ids.values(), reverse=True)  # newest first by default
    assert all(set(run) == RUN_FIELDS for run in every)

    def ids_of(**params):
        return set(_ids(all_runs(client, **params)))

    assert ids_of(status="queued") == {ids["a"], ids["f"], ids["h"]}
    assert ids_of(status="cancelled") == {ids["b"]}
    assert ids_of(status="running") == {ids["c"]}
    assert ids_of(status="succeeded,failed") == {ids["d"], ids["e"], ids["g"], ids["i"]}
    assert ids_of(status=" running , cancelled ") == {ids["b"], ids["c"]}
    assert ids_of(status="diverged") == set()
    mine_id = client.get(f"{API}/datasets/mine").get_json()["id"]
    assert ids_of(dataset="mine") == ids_of(dataset=str(mine_id)) == {ids["d"], ids["e"]}
    assert len(ids_of(dataset="xor")) == 7
    assert ids_of(dataset="nothing-by-that-name") == set()
    assert ids_of(dataset="iris") == set()  # a built-in not used yet
    assert ids_of(dataset=str(2**70)) == set()
    assert ids_of(sweep_id=7) == {ids["f"], ids["g"]}
    assert ids_of(sweep_id=8) == {ids["h"]}
    assert ids_of(sweep_id=2**40) == set()
    assert ids_of(**{"tag.team": "x"}) == {ids["a"], ids["c"]}
    assert ids_of(**{"tag.team": "x", "tag.size": "big"}) == {ids["c"]}
    assert ids_of(**{"tag.team": "z"}) == set()
    assert ids_of(**{"tag.k.dot": "v"}) == {ids["a"]}
    assert ids_of(learning_rate_min=0.3) == {ids["a"], ids["c"], ids["f"], ids["h"]}
    assert ids_of(learning_rate_max=0.1) == {ids["b"], ids["e"], ids["g"], ids["i"]}
    assert ids_of(learning_rate_min=0.1, learning_rate_max=0.2) == {
        ids["b"], ids["d"], ids["g"], ids["i"]}
    assert ids_of(epochs_min=3, epochs_max=5) == {ids["d"], ids["e"], ids["h"]}
    assert ids_of(batch_size_max=4) == {ids["b"], ids["f"]}
    final_errors = {run["id"]: run["final_error"] for run in all_runs(client)}
    assert ids_of(final_error_max=0.25) == {
        i for i, e in final_errors.items() if e is not None and e <= 0.25} >= {ids["e"], ids["i"]}
    assert ids_of(final_error_min=0) == {ids["d"], ids["e"], ids["g"], ids["i"]}
    assert ids_of(status="succeeded", learning_rate_max=0.1, dataset="xor") == {ids["i"]}


def test_list_rejects_bad_parameters(client, varied_runs):
    for params, field in [
        ({"status": "queued,done"}, "status"),
        ({"status": "QUEUED"}, "status"),
        ({"order_by": "spec"}, "order_by"),
        ({"order_by": "--id"}, "order_by"),
        ({"order_by": "+id"}, "order_by"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"sweep_id": "abc"}, "sweep_id"),
        ({"learning_rate_min": "abc"}, "learning_rate_min"),
        ({"final_error_max": "nan"}, "final_error_max"),
        ({"seed_min": 1}, "seed_min"),
        ({"colour": "red"}, "colour"),
        ({"tag.": "x"}, "tag."),
        ({"cursor": "not a cursor"}, "cursor"),
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": "W10"}, "cursor"),        # base64 of []
        ({"cursor": "eyJhIjogMX0"}, "cursor"),  # base64 of {"a": 1}
    ]:
        error = error_of(client.get(f"{API}/runs", query_string=params), 422)
        assert error["code"] == "validation_error"
        assert set(error["fields"]) == {field}, (params, error)
    assert client.get(f"{API}/runs", query_string={"limit": 500}).status_code == 200
    assert len(client.get(f"{API}/runs", query_string={"limit": 1}).get_json()["runs"]) == 1


def _value(run, field):
    if field == "dataset":  # sorted by its name
        return run["dataset"]["name"]
    return run[field] if field in run else run["spec"][field]


def _sort_key(run, field):
    value = _value(run, field)
    if field == "created_at":
        value = datetime.fromisoformat(value)
    return value


def _expected_order(runs, order_by):
    field = order_by.lstrip("-")
    descending = order_by.startswith("-")
    present = [r for r in runs if _value(r, field) is not None]
    missing = [r for r in runs if _value(r, field) is None]
    present.sort(key=lambda r: (_sort_key(r, field), r["id"]), reverse=descending)
    missing.sort(key=lambda r: r["id"], reverse=descending)
    return _ids(present + missing)  # NULLs last either way


def _walk(client, limit, **params):
    """Every page of GET /runs; returns (ids in page order, number of pages)."""
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": limit, **params}
        if cursor:
            query["cursor"] = cursor
        body = client.get(f"{API}/runs", query_string=query).get_json()
        pages += 1
        assert len(body["runs"]) <= limit
        seen += _ids(body["runs"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, pages
        assert pages < 100


def test_order_by_every_field_and_walk_the_pages(client, varied_runs):
    every = all_runs(client)
    assert len(every) == 9
    for field in store_runs.ORDERABLE:
        for order_by in (field, f"-{field}"):
            expected = _expected_order(every, order_by)
            assert _ids(all_runs(client, order_by=order_by)) == expected, order_by
            for limit in ((1, 2, 4) if field in ("id", "final_error") else (2,)):
                seen, pages = _walk(client, limit, order_by=order_by)
                assert seen == expected, (order_by, limit)
                assert pages == max(1, -(-len(expected) // limit)), (order_by, limit)
    # filters and pages together
    seen, _ = _walk(client, 2, order_by="learning_rate", dataset="xor")
    assert seen == _expected_order([r for r in every if r["dataset"]["name"] == "xor"],
                                   "learning_rate")


def test_pages_stay_stable_while_runs_arrive(client, varied_runs):
    for order_by in ("-id", "id", "learning_rate", "-learning_rate", "final_error",
                     "-created_at"):
        old = _expected_order(all_runs(client), order_by)
        seen, cursor, pages = [], None, 0
        while True:
            query = {"limit": 3, "order_by": order_by, **({"cursor": cursor} if cursor else {})}
            body = client.get(f"{API}/runs", query_string=query).get_json()
            seen += _ids(body["runs"])
            cursor, pages = body["next_cursor"], pages + 1
            if cursor is None:
                break
            if pages <= 2:  # new runs arrive: some sort before the cursor, some after
                for lr in (0.01, 0.3, 5.0):
                    submit(client, learning_rate=lr)
        assert len(seen) == len(set(seen)), (order_by, seen)  # no duplicates
        assert [i for i in seen if i in set(old)] == old, order_by  # no old run skipped
        if order_by in ("-id", "-created_at"):
            assert seen == old  # newer runs sort onto pages already read


def test_cursor_belongs_to_its_order(client, varied_runs):
    body = client.get(f"{API}/runs", query_string={"limit": 2, "order_by": "learning_rate"})
    cursor = body.get_json()["next_cursor"]
    assert cursor
    error = error_of(client.get(f"{API}/runs", query_string={"limit": 2, "cursor": cursor}), 422)
    assert set(error["fields"]) == {"cursor"}
    error = error_of(client.get(f"{API}/runs", query_string={
        "limit": 2, "cursor": cursor, "order_by": "-learning_rate"}), 422)
    assert set(error["fields"]) == {"cursor"}
    ok = client.get(f"{API}/runs", query_string={"limit": 2, "cursor": cursor,
                                                 "order_by": "learning_rate"})
    assert ok.status_code == 200
    # a cursor whose contents were tampered with
    values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    for bad in ([values[0], False, "abc", values[3]], [values[0], False, values[2], "7"],
                [values[0], "no", values[2], values[3]], [values[0], False, None, values[3]],
                [values[0], True, 0.5, values[3]], [values[0], False, values[2], 2**64],
                [values[0], False, 2**70, values[3]], [values[0], False, [1], values[3]],
                values[:3]):
        token = base64.urlsafe_b64encode(json.dumps(bad).encode()).decode()
        error = error_of(client.get(f"{API}/runs", query_string={
            "cursor": token, "order_by": "learning_rate"}), 422)
        assert set(error["fields"]) == {"cursor"}, bad


# -------------------------------------------------------------------------- one run


def test_get_a_run(client, sessions):
    run = submit(client, name="named", tags={"a": "b"})
    got = client.get(f"{API}/runs/{run['id']}").get_json()
    assert set(got) == ONE_RUN_FIELDS
    assert got["name"] == "named" and got["tags"] == {"a": "b"} and got["status"] == "queued"
    assert got["started_at"] is None and got["finished_at"] is None and got["worker"] is None
    train_run(sessions, run["id"])
    got = client.get(f"{API}/runs/{run['id']}").get_json()
    assert got["status"] == "succeeded" and got["worker"] == "test-worker"
    assert got["attempts"] == 1 and got["epochs_done"] == got["epochs"] == 100
    assert got["final_error"] is not None and got["best_error"] <= got["final_error"]
    for stamp in ("created_at", "started_at", "finished_at"):
        assert datetime.fromisoformat(got[stamp]).utcoffset().total_seconds() == 0
    for missing in (run["id"] + 1000, 0, 2**63, 10**30):
        error = error_of(client.get(f"{API}/runs/{missing}"), 404)
        assert error["code"] == "not_found"


def test_history_as_json_and_csv(client, sessions):
    run = submit(client, epochs=6, learning_rate=0.5, batch_size=2)
    empty = client.get(f"{API}/runs/{run['id']}/history")
    assert empty.status_code == 200
    assert empty.get_json() == {"run_id": run["id"], "history": []}
    empty_csv = client.get(f"{API}/runs/{run['id']}/history?format=csv")
    assert empty_csv.status_code == 200
    assert empty_csv.get_data(as_text=True).strip() == \
        "epoch,error,accuracy,val_error,val_accuracy,seconds"

    result = train_run(sessions, run["id"])
    body = client.get(f"{API}/runs/{run['id']}/history").get_json()
    rows = body["history"]
    assert len(rows) == 7
    assert [row["epoch"] for row in rows] == list(range(7))
    assert [row["error"] for row in rows] == [float(e) for e in result.errors]
    assert [row["accuracy"] for row in rows] == [float(a) for a in result.accuracy]
    assert all(row["val_error"] is None for row in rows)
    assert {"epoch", "error", "accuracy", "val_error", "seconds"} <= set(rows[0])

    response = client.get(f"{API}/runs/{run['id']}/history", query_string={"format": "csv"})
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [int(r["epoch"]) for r in table] == list(range(7))
    assert [float(r["error"]) for r in table] == [row["error"] for row in rows]
    assert [r["val_error"] for r in table] == [""] * 7

    error = error_of(client.get(f"{API}/runs/{run['id']}/history?format=xml"), 422)
    assert set(error["fields"]) == {"format"}
    error = error_of(client.get(f"{API}/runs/{run['id']}/history?fromat=csv"), 422)
    assert set(error["fields"]) == {"fromat"}
    assert error_of(client.get(f"{API}/runs/999999/history"), 404)["code"] == "not_found"


def test_params_initial_and_final_as_json_and_npz(client, sessions):
    run = submit(client, layers=[2, 3, 1], epochs=4)
    for which in ("final", "initial"):
        error = error_of(client.get(f"{API}/runs/{run['id']}/params?which={which}"), 409)
        assert error["code"] == "not_ready"
        error_of(client.get(f"{API}/runs/{run['id']}/params?which={which}&format=npz"), 409)
    result = train_run(sessions, run["id"])

    final = client.get(f"{API}/runs/{run['id']}/params").get_json()
    assert final["run_id"] == run["id"] and final["which"] == "final"
    assert final["dtype"] == "float64"
    assert [np.shape(W) for W in final["weights"]] == [(3, 2), (1, 3)]
    assert [np.shape(B) for B in final["biases"]] == [(3,), (1,)]
    for got, want in zip(final["weights"] + final["biases"],
                         result.params["weights"] + result.params["biases"]):
        assert np.array_equal(np.array(got), want)
    initial = client.get(f"{API}/runs/{run['id']}/params?which=initial").get_json()
    assert initial["which"] == "initial"
    for got, want in zip(initial["weights"] + initial["biases"],
                         result.initial_params["weights"] + result.initial_params["biases"]):
        assert np.array_equal(np.array(got), want)
    assert initial["weights"] != final["weights"]

    response = client.get(f"{API}/runs/{run['id']}/params?format=npz&which=initial")
    assert response.status_code == 200
    assert response.mimetype == "application/octet-stream"
    arrays = from_npz(response.data)
    assert sorted(arrays) == ["B1", "B2", "W1", "W2"]
    assert np.array_equal(arrays["W1"], result.initial_params["weights"][0])
    assert np.array_equal(arrays["B2"], result.initial_params["biases"][1])
    final_npz = from_npz(client.get(f"{API}/runs/{run['id']}/params?format=npz").data)
    assert np.array_equal(final_npz["W2"], result.params["weights"][1])

    for params, field in [({"which": "best"}, "which"), ({"format": "csv"}, "format"),
                          ({"extra": "1"}, "extra")]:
        error = error_of(client.get(f"{API}/runs/{run['id']}/params", query_string=params),
                         422)
        assert set(error["fields"]) == {field}
    assert error_of(client.get(f"{API}/runs/999999/params"), 404)["code"] == "not_found"


def test_cancel(client, sessions, queue_dir):
    queued = submit(client)
    response = client.post(f"{API}/runs/{queued['id']}/cancel")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "cancelled" and body["finished_at"] is not None
    assert body["cancel_requested"] is True
    # its message is still in the queue, but the run never starts
    assert queued["id"] in queued_run_ids(queue_dir)
    with sessions() as session:
        assert store_runs.claim_run(session, queued["id"], "late-worker") is None
    again = client.get(f"{API}/runs/{queued['id']}").get_json()
    assert again["status"] == "cancelled" and again["worker"] is None
    assert again["started_at"] is None
    error = error_of(client.post(f"{API}/runs/{queued['id']}/cancel"), 409)
    assert error["code"] == "already_finished"

    running = submit(client)
    with sessions() as session:
        assert store_runs.claim_run(session, running["id"], "w1") is not None
    body = client.post(f"{API}/runs/{running['id']}/cancel").get_json()
    assert body["status"] == "running" and body["cancel_requested"] is True
    assert body["finished_at"] is None
    # asking twice is harmless
    assert client.post(f"{API}/runs/{running['id']}/cancel").status_code == 202

    done = submit(client, epochs=2)
    train_run(sessions, done["id"])
    error = error_of(client.post(f"{API}/runs/{done['id']}/cancel"), 409)
    assert error["code"] == "already_finished"
    assert client.get(f"{API}/runs/{done['id']}").get_json()["status"] == "succeeded"
    assert error_of(client.post(f"{API}/runs/999999/cancel"), 404)["code"] == "not_found"
    assert error_of(client.get(f"{API}/runs/{done['id']}/cancel"), 405)


def test_predict(client, sessions):
    run = submit(client, dataset="iris", layers=[4, 5, 3], loss="cross_entropy",
                 activation="tanh", epochs=5, batch_mode="full")
    inputs = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [0, 0, 0, 0]]
    error = error_of(client.post(f"{API}/runs/{run['id']}/predict", json={"inputs": inputs}),
                     409)
    assert error["code"] == "not_ready"
    result = train_run(sessions, run["id"])

    response = client.post(f"{API}/runs/{run['id']}/predict", json={"inputs": inputs})
    assert response.status_code == 200
    body = response.get_json()
    assert body["run_id"] == run["id"]
    expected = kernels.predict(result.params, np.array(inputs), activation="tanh",
                               output_activation="softmax", loss="cross_entropy")
    assert np.array_equal(np.array(body["outputs"]), expected)
    assert np.allclose(np.sum(body["outputs"], axis=1), 1)
    one = client.post(f"{API}/runs/{run['id']}/predict", json={"inputs": [[1, 2, 3, 4]]})
    assert np.shape(one.get_json()["outputs"]) == (1, 3)

    for body, fields in [
        ({"inputs": [[1, 2, 3]]}, {"inputs"}),                      # wrong width
        ({"inputs": [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]}, {"inputs"}),
        ({"inputs": [[1, 2, 3, 4], [1, 2, 3]]}, {"inputs"}),        # ragged
        ({"inputs": []}, {"inputs"}),
        ({"inputs": [[]]}, {"inputs[0]"}),
        ({"inputs": [1, 2, 3, 4]}, {"inputs[0]", "inputs[1]", "inputs[2]", "inputs[3]"}),
        ({"inputs": [[1, 2, "x", 4]]}, {"inputs[0][2]"}),
        ({"inputs": [[1, 2, None, 4]]}, {"inputs[0][2]"}),
        ({"inputs": [[1, 2, 1e400, 4]]}, {"inputs[0][2]"}),
        ({"inputs": [[1, 2, 10**400, 4]]}, {"inputs[0][2]"}),
        ({"inputs": [[1, 2, True, 4]]}, {"inputs[0][2]"}),
        ({}, {"inputs"}),
        ({"inputs": [[1, 2, 3, 4]], "extra": 1}, {"extra"}),
    ]:
        error = error_of(client.post(f"{API}/runs/{run['id']}/predict", json=body), 422)
        assert set(error["fields"]) == fields, (body, error)
    error_of(client.post(f"{API}/runs/{run['id']}/predict", data="1,2,3,4",
                         content_type="text/csv"), 415)
    assert error_of(client.post(f"{API}/runs/999999/predict", json={"inputs": inputs}),
                    404)["code"] == "not_found"

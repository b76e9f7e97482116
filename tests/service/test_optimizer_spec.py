"""The optimizer fields of a run spec through the API (API.md section 1b, issue 13), on
SQLite and PostgreSQL: resolved defaults, every 422 naming its field (nested ones dotted),
runs stored before the fields existed, the run record's stop_reason and best_epoch, and the
run queries over optimizer, stop_reason and best_epoch."""

import pytest
from sqlalchemy import update

import kernels
from kernels.validation import check_optimizer, check_plateau, check_schedule
from service.runspec import OPTIMIZER_FIELDS, RunSpecSchema, complete_spec
from service.store import Run

from .conftest import API, all_runs, error_of, queued_run_ids, submit

SGD_FIELDS = {"optimizer": "sgd", "weight_decay": 0.0, "clip_norm": None,
              "lr_schedule": {"kind": "constant"}, "stop_on_plateau": None}


def optimizer_part(spec: dict) -> dict:
    """The optimizer fields of a stored spec."""
    return {k: spec[k] for k in OPTIMIZER_FIELDS if k in spec}


# ------------------------------------------------------------------- resolved defaults


@pytest.mark.parametrize("given, stored", [
    ({}, SGD_FIELDS),
    ({"optimizer": "momentum"}, {**SGD_FIELDS, "optimizer": "momentum", "momentum": 0.9}),
    ({"optimizer": "nesterov", "momentum": 0.5},
     {**SGD_FIELDS, "optimizer": "nesterov", "momentum": 0.5}),
    ({"optimizer": "adam"},
     {**SGD_FIELDS, "optimizer": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
    ({"optimizer": "adamw", "beta2": 0.99, "weight_decay": 0.01, "clip_norm": 1},
     {**SGD_FIELDS, "optimizer": "adamw", "beta1": 0.9, "beta2": 0.99, "eps": 1e-8,
      "weight_decay": 0.01, "clip_norm": 1.0}),
    ({"lr_schedule": {"kind": "step", "step_size": 10}},
     {**SGD_FIELDS, "lr_schedule": {"kind": "step", "step_size": 10, "gamma": 0.1}}),
    ({"lr_schedule": {"kind": "exponential", "gamma": 0.99}},
     {**SGD_FIELDS, "lr_schedule": {"kind": "exponential", "gamma": 0.99}}),
    ({"lr_schedule": {"kind": "cosine"}},
     {**SGD_FIELDS, "lr_schedule": {"kind": "cosine", "lr_min": 0.0}}),
    ({"lr_schedule": None}, SGD_FIELDS),
    ({"stop_on_plateau": {"metric": "error"}},
     {**SGD_FIELDS, "stop_on_plateau": {"metric": "error", "patience": 10, "min_delta": 0.0,
                                        "restore_best": True}}),
    ({"stop_on_plateau": {"patience": 3, "min_delta": 0.01, "restore_best": False},
      "validation_split": 0.5},
     {**SGD_FIELDS, "stop_on_plateau": {"metric": "val_error", "patience": 3,
                                        "min_delta": 0.01, "restore_best": False}}),
])
def test_stored_spec_holds_the_resolved_values_that_apply(client, given, stored):
    run = submit(client, **given)
    assert optimizer_part(run["spec"]) == stored
    assert client.get(f"{API}/runs/{run['id']}").get_json()["spec"] == run["spec"]
    assert run["stop_reason"] is None and run["best_epoch"] is None


def test_every_spec_the_api_accepts_the_kernels_accept_too():
    """The service's rules are at least the kernels' own (a run that passes submit never
    fails on its optimizer fields in a worker)."""
    schema = RunSpecSchema()
    for given in [{"optimizer": o} for o in kernels.OPTIMIZERS] + [
            {"optimizer": "adam", "beta1": 0.0, "beta2": 0.999999, "eps": 1e3},
            {"optimizer": "momentum", "momentum": 0.0, "weight_decay": 1e3, "clip_norm": 1e-9},
            {"lr_schedule": {"kind": "step", "step_size": 1, "gamma": 1}},
            {"lr_schedule": {"kind": "exponential", "gamma": 1e-9}},
            {"lr_schedule": {"kind": "cosine", "lr_min": 0.0999}},
            {"stop_on_plateau": {"metric": "error", "patience": 2**31 - 1, "min_delta": 1e9}}]:
        spec = complete_spec(schema.load({"dataset": "xor", "layers": [2, 1], **given}))
        check_optimizer(spec["optimizer"], *(spec.get(k, 0.5) for k in
                                             ("momentum", "beta1", "beta2", "eps")),
                        spec["weight_decay"], spec["clip_norm"])
        check_schedule(spec["lr_schedule"], spec["learning_rate"])
        check_plateau(spec["stop_on_plateau"], validated=False)


# ------------------------------------------------------------------------------- 422s

INVALID = [
    # fields of another optimizer, given explicitly
    ({"momentum": 0.9}, {"momentum"}),
    ({"optimizer": "adam", "momentum": 0.9}, {"momentum"}),
    ({"optimizer": "momentum", "beta1": 0.9, "eps": 1e-8}, {"beta1", "eps"}),
    ({"optimizer": "nesterov", "beta2": 0.9}, {"beta2"}),
    ({"beta1": 0.9, "beta2": 0.9, "eps": 1e-7}, {"beta1", "beta2", "eps"}),
    # names and types
    ({"optimizer": "rmsprop"}, {"optimizer"}),
    ({"optimizer": None}, {"optimizer"}),
    ({"optimizer": "adam", "beta1": "0.9"}, {"beta1"}),
    ({"optimizer": "momentum", "momentum": True}, {"momentum"}),
    ({"weight_decay": "0"}, {"weight_decay"}),
    ({"clip_norm": "1"}, {"clip_norm"}),
    # ranges
    ({"optimizer": "momentum", "momentum": 1}, {"momentum"}),
    ({"optimizer": "momentum", "momentum": -0.1}, {"momentum"}),
    ({"optimizer": "adam", "beta1": 1.0, "beta2": -1e-9}, {"beta1", "beta2"}),
    ({"optimizer": "adam", "eps": 0}, {"eps"}),
    ({"optimizer": "adam", "eps": 1e400}, {"eps"}),
    ({"weight_decay": -1e-9}, {"weight_decay"}),
    ({"weight_decay": 1e3 + 1}, {"weight_decay"}),
    ({"clip_norm": 0}, {"clip_norm"}),
    ({"clip_norm": -1}, {"clip_norm"}),
    # schedules: nested fields named with dots
    ({"lr_schedule": "cosine"}, {"lr_schedule"}),
    ({"lr_schedule": {}}, {"lr_schedule.kind"}),
    ({"lr_schedule": {"kind": "linear"}}, {"lr_schedule.kind"}),
    ({"lr_schedule": {"kind": "constant", "gamma": 0.5}}, {"lr_schedule.gamma"}),
    ({"lr_schedule": {"kind": "step"}}, {"lr_schedule.step_size"}),
    ({"lr_schedule": {"kind": "step", "step_size": 0}}, {"lr_schedule.step_size"}),
    ({"lr_schedule": {"kind": "step", "step_size": 2.5}}, {"lr_schedule.step_size"}),
    ({"lr_schedule": {"kind": "step", "step_size": 5, "gamma": 0}}, {"lr_schedule.gamma"}),
    ({"lr_schedule": {"kind": "step", "step_size": 5, "lr_min": 0}}, {"lr_schedule.lr_min"}),
    ({"lr_schedule": {"kind": "exponential"}}, {"lr_schedule.gamma"}),
    ({"lr_schedule": {"kind": "exponential", "gamma": 1.01}}, {"lr_schedule.gamma"}),
    ({"lr_schedule": {"kind": "cosine", "lr_min": -1}}, {"lr_schedule.lr_min"}),
    ({"lr_schedule": {"kind": "cosine", "lr_min": 0.1}}, {"lr_schedule.lr_min"}),  # = lr
    ({"lr_schedule": {"kind": "cosine", "step_size": 3, "foo": 1}},
     {"lr_schedule.step_size", "lr_schedule.foo"}),
    # plateaus
    ({"stop_on_plateau": True}, {"stop_on_plateau"}),
    ({"stop_on_plateau": {}}, {"stop_on_plateau.metric"}),  # val_error, no validation split
    ({"stop_on_plateau": {"metric": "val_error"}}, {"stop_on_plateau.metric"}),
    ({"stop_on_plateau": {"metric": "loss"}}, {"stop_on_plateau.metric"}),
    ({"stop_on_plateau": {"metric": "error", "patience": 0}}, {"stop_on_plateau.patience"}),
    ({"stop_on_plateau": {"metric": "error", "patience": 2**31}},
     {"stop_on_plateau.patience"}),
    ({"stop_on_plateau": {"metric": "error", "min_delta": -0.1}},
     {"stop_on_plateau.min_delta"}),
    ({"stop_on_plateau": {"metric": "error", "restore_best": "yes"}},
     {"stop_on_plateau.restore_best"}),
    ({"stop_on_plateau": {"metric": "error", "when": 3}}, {"stop_on_plateau.when"}),
    # xor's 4 samples: a 0.2 split leaves no validation row for val_error
    ({"stop_on_plateau": {"metric": "val_error"}, "validation_split": 0.2},
     {"stop_on_plateau.metric"}),
    # several at once
    ({"optimizer": "adam", "momentum": 0.5, "learning_rate": "x",
      "lr_schedule": {"kind": "step"}, "stop_on_plateau": {"patience": -1}},
     {"momentum", "learning_rate", "lr_schedule.step_size", "stop_on_plateau.patience"}),
]


def test_invalid_optimizer_fields_name_each_bad_field(client, queue_dir):
    for changes, expected in INVALID:
        response = client.post(f"{API}/runs", json={"dataset": "xor", "layers": [2, 4, 1],
                                                    **changes})
        error = error_of(response, 422)
        assert set(error["fields"]) == expected, (changes, error)
    assert all_runs(client) == [] and queued_run_ids(queue_dir) == []


def test_messages_say_what_applies(client):
    error = error_of(client.post(f"{API}/runs", json={
        "dataset": "xor", "layers": [2, 1], "optimizer": "adam", "momentum": 0.5}), 422)
    assert "momentum and nesterov" in error["fields"]["momentum"]
    error = error_of(client.post(f"{API}/runs", json={
        "dataset": "xor", "layers": [2, 1], "stop_on_plateau": {}}), 422)
    assert "validation_split" in error["fields"]["stop_on_plateau.metric"]
    error = error_of(client.post(f"{API}/runs", json={
        "dataset": "xor", "layers": [2, 1], "lr_schedule": {"kind": "constant", "gamma": 1}}),
        422)
    assert "constant" in error["fields"]["lr_schedule.gamma"]


def test_a_validation_split_with_rows_allows_a_val_error_plateau(client):
    # moons: 200 samples, 0.1 leaves 20 validation rows
    run = submit(client, dataset="moons", layers=[2, 4, 1], validation_split=0.1,
                 stop_on_plateau={"patience": 2})
    assert run["spec"]["stop_on_plateau"]["metric"] == "val_error"


# -------------------------------------------------- runs stored before the new fields


def test_a_run_stored_before_the_optimizer_fields_shows_plain_gradient_descent(
        client, sessions):
    run = submit(client, learning_rate=0.3)
    old_spec = {k: v for k, v in run["spec"].items() if k not in OPTIMIZER_FIELDS}
    with sessions() as session:
        session.execute(update(Run).where(Run.id == run["id"]).values(spec=old_spec))
        session.commit()
    shown = client.get(f"{API}/runs/{run['id']}").get_json()
    assert shown["spec"] == {**old_spec, **SGD_FIELDS}
    assert [r["id"] for r in all_runs(client, where='optimizer = "sgd"')] == [run["id"]]


# ------------------------------------------------------------------------- queries


@pytest.fixture
def optimizer_runs(client, sessions):
    """Six finished runs: sgd, momentum, adam (twice), adamw, nesterov; two stopped on a
    plateau, with best epochs; one without a best epoch."""
    made = []
    for optimizer, stop_reason, best_epoch in [
            ("sgd", None, 7), ("momentum", None, None), ("adam", "plateau", 3),
            ("adam", None, 12), ("adamw", "plateau", 3), ("nesterov", None, 0)]:
        run = submit(client, optimizer=optimizer, epochs=20)
        with sessions() as session:
            session.execute(update(Run).where(Run.id == run["id"]).values(
                status="succeeded", stop_reason=stop_reason, best_epoch=best_epoch,
                epochs_done=20 if stop_reason is None else best_epoch + 5))
            session.commit()
        made.append(run["id"])
    return made


def ids(runs):
    return [r["id"] for r in runs]


def test_where_and_filters_on_optimizer_and_stop_reason(client, optimizer_runs):
    sgd, momentum, adam1, adam2, adamw, nesterov = optimizer_runs
    assert ids(all_runs(client, where='optimizer = "adam"')) == [adam2, adam1]
    assert ids(all_runs(client, where="optimizer = adam")) == [adam2, adam1]
    assert ids(all_runs(client, where="optimizer in (adam, adamw)")) == [adamw, adam2, adam1]
    assert ids(all_runs(client, where="optimizer not in (adam, adamw, sgd)")) == [
        nesterov, momentum]
    assert ids(all_runs(client, where="optimizer != sgd and best_epoch <= 3")) == [
        nesterov, adamw, adam1]
    assert ids(all_runs(client, where='stop_reason = "plateau"')) == [adamw, adam1]
    assert ids(all_runs(client, where="stop_reason = null and optimizer = adam")) == [adam2]
    assert ids(all_runs(client, where="epochs_done < 20")) == [adamw, adam1]
    assert ids(all_runs(client, optimizer="adam,adamw")) == [adamw, adam2, adam1]
    assert ids(all_runs(client, stop_reason="plateau")) == [adamw, adam1]
    assert ids(all_runs(client, stop_reason="none", optimizer="adam")) == [adam2]
    records = {r["id"]: r for r in all_runs(client)}
    assert records[adam1]["stop_reason"] == "plateau" and records[adam1]["best_epoch"] == 3
    assert records[momentum]["stop_reason"] is None and records[momentum]["best_epoch"] is None
    for params, field in [({"where": 'optimizer = "adma"'}, "where"),
                          ({"where": "stop_reason = early"}, "where"),
                          ({"where": "optimizer > 3"}, "where"),
                          ({"optimizer": "adam,rmsprop"}, "optimizer"),
                          ({"stop_reason": "cancelled"}, "stop_reason")]:
        error = error_of(client.get(f"{API}/runs", query_string=params), 422)
        assert set(error["fields"]) == {field}, (params, error)
    assert "adamw" in error_of(client.get(f"{API}/runs", query_string={
        "where": "optimizer = rmsprop"}), 422)["fields"]["where"]


def test_order_by_best_epoch_pages_with_the_runs_without_one_last(client, optimizer_runs):
    sgd, momentum, adam1, adam2, adamw, nesterov = optimizer_runs
    # ties (adam1 and adamw at 3) by id; momentum (no best epoch) last either way
    ascending = [nesterov, adam1, adamw, sgd, adam2, momentum]
    descending = [adam2, sgd, adamw, adam1, nesterov, momentum]
    for order_by, expected in (("best_epoch", ascending), ("-best_epoch", descending)):
        assert ids(all_runs(client, order_by=order_by)) == expected
        for limit in (1, 2, 4):
            seen, cursor = [], None
            while True:
                query = {"limit": limit, "order_by": order_by,
                         **({"cursor": cursor} if cursor else {})}
                body = client.get(f"{API}/runs", query_string=query).get_json()
                seen += ids(body["runs"])
                cursor = body["next_cursor"]
                if cursor is None:
                    break
            assert seen == expected, (order_by, limit)
    by_optimizer = ids(all_runs(client, order_by="optimizer"))
    assert by_optimizer == [adam1, adam2, adamw, momentum, nesterov, sgd]


def test_openapi_documents_the_optimizer_fields(client):
    document = client.get(f"{API}/openapi.json").get_json()
    schemas = document["components"]["schemas"]
    spec = schemas["RunSpec"]["properties"]
    assert spec["optimizer"]["enum"] == list(kernels.OPTIMIZERS)
    assert spec["optimizer"]["default"] == "sgd"
    for name, default in (("momentum", 0.9), ("beta1", 0.9), ("beta2", 0.999)):
        assert spec[name]["minimum"] == 0 and spec[name]["maximum"] == 1
        assert spec[name]["default"] == default
    assert spec["eps"]["default"] == 1e-8
    assert spec["lr_schedule"]["default"] == {"kind": "constant"}
    assert spec["stop_on_plateau"]["default"] is None
    schedule = next(s for name, s in schemas.items() if name.startswith("LrSchedule"))
    assert schedule["properties"]["kind"]["enum"] == list(kernels.LR_SCHEDULES)
    assert set(schedule["properties"]) == {"kind", "step_size", "gamma", "lr_min"}
    plateau = next(s for name, s in schemas.items() if name.startswith("StopOnPlateau"))
    assert {name: field["default"] for name, field in plateau["properties"].items()} == {
        "metric": "val_error", "patience": 10, "min_delta": 0.0, "restore_best": True}
    run = schemas["Run"]["properties"]
    assert {"stop_reason", "best_epoch"} <= set(run)
    names = {p["name"] for p in document["paths"]["/api/v1/runs"]["get"]["parameters"]}
    assert {"optimizer", "stop_reason"} <= names

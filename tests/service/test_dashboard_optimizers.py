"""The dashboard's faces of optimizers, schedules, clipping and stopping on a plateau (API.md
section 1b), through the Flask test client: the submit form's fields and what it stores,
its messages under each field, the run page's settings and outcome, the runs table.
(tests/browser/test_optimizer_form_browser.py drives the same form in Chromium.)"""

import re

import numpy as np

from service.store import runs as store_runs
from service.store.arrays import params_to_npz
from service.store.models import Run

from .test_dashboard import (FORM, alice, browser, csrf_of, errors_of,  # noqa: F401
                             get_run, store)

ADAM = {**FORM, "optimizer": "adam", "beta1": "0.85", "beta2": "0.99", "eps": "1e-07",
        "weight_decay": "0.01", "clip_norm": "2.5", "lr_schedule": "cosine",
        "lr_min": "0.001", "validation_split": "0.25", "stop_on_plateau": "val_error",
        "patience": "4", "min_delta": "0.0001", "restore_best": "on"}


def post_form(alice, **changes):
    """The form posted with FORM's values and ``changes`` (None drops a field)."""
    data = {k: v for k, v in {**FORM, **changes}.items() if v is not None}
    return alice.post("/submit", data={**data, "csrf_token": csrf_of(alice.get("/submit").text)})


def submitted_spec(store, response) -> dict:
    assert response.status_code == 302, errors_of(response.text) or response.text
    return get_run(store, int(response.headers["Location"].rsplit("/", 1)[1])).spec


def test_the_form_offers_each_optimizer_with_the_fields_it_takes(alice):
    page = alice.get("/submit")
    assert page.status_code == 200
    text = page.text
    options = re.findall(r'<option value="([^"]+)"',
                         text.split('id="optimizer"')[1].split("</select>")[0])
    assert options == ["sgd", "momentum", "nesterov", "adam", "adamw"]
    shown_for = dict(re.findall(r'id="field-(\w+)" data-show-for="([^"]+)"', text))
    assert shown_for == {
        "momentum": "optimizer:momentum,nesterov", "beta1": "optimizer:adam,adamw",
        "beta2": "optimizer:adam,adamw", "eps": "optimizer:adam,adamw",
        "step_size": "lr_schedule:step", "gamma": "lr_schedule:step,exponential",
        "lr_min": "lr_schedule:cosine", "patience": "stop_on_plateau:val_error,error",
        "min_delta": "stop_on_plateau:val_error,error",
        "restore_best": "stop_on_plateau:val_error,error"}
    for field in ("weight_decay", "clip_norm", "validation_split"):  # for every optimizer
        assert f'id="field-{field}"' in text, field
    # Defaults: plain gradient descent, constant rate, no plateau; the others' defaults ready.
    assert re.search(r'<option value="sgd"\s+selected>', text)
    assert re.search(r'<option value="constant"\s+selected>', text)
    assert re.search(r'<option value="off"\s+selected>', text)
    assert 'name="beta2" id="beta2" type="text" value="0.999"' in text
    # Script only from the static file (the Content-Security-Policy forbids inline code).
    assert re.findall(r"<script[^>]*>", text) == [
        '<script defer src="/ui/static/dashboard.js">']
    assert " style=" not in text and "<style" not in text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_the_plain_form_still_stores_plain_gradient_descent(alice, store):
    spec = submitted_spec(store, post_form(alice))
    assert spec["optimizer"] == "sgd" and spec["lr_schedule"] == {"kind": "constant"}
    assert spec["stop_on_plateau"] is None and spec["clip_norm"] is None
    assert spec["weight_decay"] == 0.0
    assert not {"momentum", "beta1", "beta2", "eps"} & set(spec)


def test_adam_with_everything_is_stored_as_typed(alice, store):
    spec = submitted_spec(store, post_form(alice, **ADAM))
    assert {k: spec[k] for k in ("optimizer", "beta1", "beta2", "eps", "weight_decay",
                                 "clip_norm", "validation_split")} == {
        "optimizer": "adam", "beta1": 0.85, "beta2": 0.99, "eps": 1e-7, "weight_decay": 0.01,
        "clip_norm": 2.5, "validation_split": 0.25}
    assert "momentum" not in spec  # filled in on the form, but not adam's
    assert spec["lr_schedule"] == {"kind": "cosine", "lr_min": 0.001}
    assert spec["stop_on_plateau"] == {"metric": "val_error", "patience": 4,
                                       "min_delta": 0.0001, "restore_best": True}


def test_fields_of_choices_not_made_are_ignored(alice, store):
    """Without script every field is on the page and submitted: only the chosen optimizer's,
    schedule's and plateau rule's are used."""
    spec = submitted_spec(store, post_form(
        alice, **{**ADAM, "optimizer": "nesterov", "momentum": "0.5", "lr_schedule": "step",
                  "step_size": "7", "gamma": "0.5", "lr_min": "garbage",
                  "stop_on_plateau": "off", "patience": "-3", "restore_best": None}))
    assert spec["optimizer"] == "nesterov" and spec["momentum"] == 0.5
    assert not {"beta1", "beta2", "eps"} & set(spec)
    assert spec["lr_schedule"] == {"kind": "step", "step_size": 7, "gamma": 0.5}
    assert spec["stop_on_plateau"] is None
    # An unchecked "keep the best" box is restore_best false; blank fields take defaults.
    spec = submitted_spec(store, post_form(
        alice, **{**ADAM, "restore_best": None, "beta1": "", "patience": "",
                  "lr_schedule": "exponential", "gamma": "0.97"}))
    assert spec["beta1"] == 0.9 and spec["stop_on_plateau"]["patience"] == 10
    assert spec["stop_on_plateau"]["restore_best"] is False
    assert spec["lr_schedule"] == {"kind": "exponential", "gamma": 0.97}


def test_each_bad_value_is_named_under_its_field(alice, store):
    cases = [
        ({"optimizer": "momentum", "momentum": "1"}, "momentum", "less than 1"),
        ({"optimizer": "adam", "beta1": "fast"}, "beta1", "must be a number"),
        ({"optimizer": "adamw", "eps": "0"}, "eps", "greater than 0"),
        ({"optimizer": "rmsprop"}, "optimizer", "Must be one of"),
        ({"weight_decay": "-0.1"}, "weight_decay", "greater than or equal to 0"),
        ({"clip_norm": "0"}, "clip_norm", "greater than 0"),
        ({"lr_schedule": "step", "step_size": ""}, "step_size", "required with kind 'step'"),
        ({"lr_schedule": "step", "step_size": "2.5"}, "step_size", "must be a whole number"),
        ({"lr_schedule": "exponential", "gamma": "0"}, "gamma", "greater than 0"),
        ({"lr_schedule": "exponential", "gamma": ""}, "gamma", "required"),
        ({"lr_schedule": "cosine", "lr_min": "0.5"}, "lr_min", "must be below learning_rate"),
        ({"stop_on_plateau": "val_error"}, "stop_on_plateau", "validation_split"),
        ({"stop_on_plateau": "error", "patience": "0"}, "patience", "greater than or equal"),
        ({"stop_on_plateau": "error", "min_delta": "-1"}, "min_delta", "greater than or equal"),
        ({"validation_split": "1"}, "validation_split", "less than 1"),
    ]
    for change, field, message in cases:
        response = post_form(alice, **change)
        assert response.status_code == 422, change
        shown = errors_of(response.text)
        assert message in shown.get(field, ""), (change, shown)
        assert set(shown) == {field}, (change, shown)
        assert re.search(rf'class="invalid" id="field-{field}"', response.text), change
        # What was chosen stays chosen.
        for name, value in change.items():
            if name in ("optimizer", "lr_schedule", "stop_on_plateau") and value != "rmsprop":
                assert re.search(rf'<option value="{value}"\s+selected>', response.text)
    with store() as session:
        assert session.query(Run).count() == 0


def finish_on_a_plateau(store, run_id: int) -> None:
    """Store what a worker stores for a run that stopped on a plateau after epoch 6 of 20,
    best epoch 2."""
    with store() as session:
        run = store_runs.claim_run(session, run_id, "test-worker")
        rows = [{"run_id": run_id, "epoch": e, "error": 0.2 + 0.01 * abs(e - 2),
                 "accuracy": None, "val_error": 0.3 + 0.01 * abs(e - 2), "val_accuracy": None,
                 "seconds": 0.01 * e} for e in range(7)]
        params = params_to_npz({"weights": [np.ones((4, 2)), np.ones((1, 4))],
                                "biases": [np.zeros(4), np.zeros(1)]})
        store_runs.complete_run(session, run_id, run.attempts, rows,
                                {"epochs_done": 6, "final_error": 0.24, "best_error": 0.2,
                                 "best_epoch": 2, "final_val_error": 0.34,
                                 "stop_reason": "plateau"},
                                "succeeded", params={"initial": ("float64", params),
                                                     "final": ("float64", params)})


def facts(page_text: str) -> dict:
    """{id: text} of the run page's facts that carry an id."""
    return {key: value.replace("&#39;", "'") for key, value in
            re.findall(r'<dd id="([\w-]+)">([^<]*)</dd>', page_text)}


def test_the_run_page_says_what_trained_and_why_it_stopped(alice, store):
    response = post_form(alice, **{**ADAM, "epochs": "20"})
    run_id = int(response.headers["Location"].rsplit("/", 1)[1])
    queued = facts(alice.get(f"/runs/{run_id}").text)
    assert queued["training-optimizer"] == "adam (beta1 0.85, beta2 0.99, eps 1e-07)"
    assert queued["training-weight-decay"] == "0.01"
    assert queued["training-clip-norm"] == "2.5"
    assert queued["training-lr-schedule"] == "cosine (lr_min 0.001)"
    assert queued["training-plateau"] == (
        "stop after 4 epochs without val_error improving by more than 0.0001; "
        "restore the best epoch's parameters")
    assert "outcome-stop-reason" not in queued  # not finished yet

    finish_on_a_plateau(store, run_id)
    done = facts(alice.get(f"/runs/{run_id}").text)
    assert done["outcome-stop-reason"] == \
        "plateau: no val_error improvement for 4 epochs, stopped after epoch 6 of 20"
    assert done["outcome-best-epoch"] == \
        "2 (last to improve val_error by more than 0.0001, its parameters kept)"
    # best_epoch is the best validation epoch here: the best error is shown without it.
    assert done["best-error"] == "0.2"


def test_a_plain_run_page_shows_plain_gradient_descent(alice, client, store):
    run_id = client.post("/api/v1/runs", json={"dataset": "xor", "layers": [2, 4, 1],
                                               "epochs": 5}).json["id"]
    shown = facts(alice.get(f"/runs/{run_id}").text)
    assert (shown["training-optimizer"], shown["training-lr-schedule"],
            shown["training-plateau"], shown["training-clip-norm"]) == \
        ("sgd", "constant", "off", "none")


def test_the_runs_table_shows_and_filters_the_optimizer(alice, client):
    ids = {name: client.post("/api/v1/runs", json={
        "dataset": "xor", "layers": [2, 4, 1], "epochs": 5, "optimizer": name}).json["id"]
        for name in ("sgd", "adam", "nesterov")}
    page = alice.get("/").text
    for name, run_id in ids.items():
        row = page.split(f'<tr id="run-{run_id}">')[1].split("</tr>")[0]
        assert f'<td class="optimizer">{name}</td>' in row
    assert "<th>Optimizer</th>" in page

    def shown(where: str) -> list[int]:
        response = alice.get("/", query_string={"where": where})
        assert response.status_code == 200, errors_of(response.text)
        return [int(i) for i in re.findall(r'<tr id="run-(\d+)"', response.text)]

    assert shown('optimizer = "adam"') == [ids["adam"]]
    assert shown("optimizer in (sgd, nesterov)") == [ids["nesterov"], ids["sgd"]]
    assert shown('optimizer != "sgd"') == [ids["nesterov"], ids["adam"]]


def test_a_sweep_over_optimizers_shows_how_its_runs_stopped(alice, client, store):
    sweep = client.post("/api/v1/sweeps", json={
        "base": {"dataset": "xor", "layers": [2, 4, 1], "epochs": 20, "validation_split": 0.25,
                 "stop_on_plateau": {"patience": 4}},
        "grid": {"optimizer": ["sgd", "adam"], "lr_schedule": [
            {"kind": "constant"}, {"kind": "step", "step_size": 5}]}}).json
    assert len(sweep["runs"]) == 4
    by_config = {(r["config"]["optimizer"], r["config"]["lr_schedule"]["kind"]): r["id"]
                 for r in sweep["runs"]}
    stopped = by_config[("adam", "step")]
    finish_on_a_plateau(store, stopped)
    page = alice.get(f"/sweeps/{sweep['id']}")
    assert page.status_code == 200
    assert "<th>optimizer</th>" in page.text and "<th>lr_schedule</th>" in page.text
    assert '<th class="n">Best epoch</th><th>Stop</th>' in page.text
    row = page.text.split('id="leaderboard"')[1].split("</tr>")[1]  # the first run ranked
    assert f'href="/runs/{stopped}"' in row
    assert '<code>{"kind": "step", "step_size": 5}</code></td><td><code>"adam"</code>' in row
    assert '<td class="n">2</td><td class="stop">plateau</td>' in row

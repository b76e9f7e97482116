"""Sweeps over the optimizer fields (issue 13), through the API on SQLite and PostgreSQL:
grids and random spaces over optimizers, schedules and plateau rules, nested keys by dotted
name and whole objects as values, and every bad cell named."""

import pytest

from service import sweepspace

from .conftest import API, error_of, queued_run_ids

BASE = {"dataset": "moons", "layers": [2, 4, 1], "epochs": 20, "batch_mode": "full"}


def post(client, body, status=202):
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def preview(client, body):
    return post(client, {**body, "preview": True}, 200)["configurations"]


def test_a_grid_over_optimizers_and_whole_schedules(client, queue_dir):
    body = {"base": BASE, "grid": {
        "optimizer": ["sgd", "adam"],
        "lr_schedule": [{"kind": "constant"}, {"kind": "cosine"},
                        {"kind": "step", "step_size": 5}]}}
    cells = preview(client, body)
    assert len(cells) == 6
    assert cells[1]["config"] == {"lr_schedule": {"kind": "constant"}, "optimizer": "adam"}
    spec = cells[3]["spec"]
    assert spec["optimizer"] == "adam" and spec["lr_schedule"] == {"kind": "cosine",
                                                                   "lr_min": 0.0}
    assert (spec["beta1"], spec["beta2"], spec["eps"]) == (0.9, 0.999, 1e-8)
    assert "beta1" not in cells[2]["spec"] and "momentum" not in cells[2]["spec"]
    assert cells[4]["spec"]["lr_schedule"] == {"kind": "step", "step_size": 5, "gamma": 0.1}
    sweep = post(client, body)
    assert sweep["total"] == 6 and len(queued_run_ids(queue_dir)) == 6
    assert [run["spec"]["optimizer"] for run in sweep["runs"]] == ["sgd", "adam"] * 3


def test_dotted_names_vary_one_key_of_an_object_field(client):
    body = {"base": {**BASE, "validation_split": 0.2,
                     "lr_schedule": {"kind": "step", "step_size": 4},
                     "stop_on_plateau": {"patience": 3}},
            "grid": {"lr_schedule.gamma": [0.5, 0.9], "stop_on_plateau.patience": [2, 6],
                     "stop_on_plateau.metric": ["error"]}}
    cells = preview(client, body)
    assert [c["config"] for c in cells] == [
        {"lr_schedule.gamma": g, "stop_on_plateau.metric": "error",
         "stop_on_plateau.patience": p} for g in (0.5, 0.9) for p in (2, 6)]
    assert cells[3]["spec"]["lr_schedule"] == {"kind": "step", "step_size": 4, "gamma": 0.9}
    assert cells[3]["spec"]["stop_on_plateau"] == {"metric": "error", "patience": 6,
                                                   "min_delta": 0.0, "restore_best": True}
    # a whole object and a key of it: the key is set in each object
    cells = preview(client, {"base": BASE, "grid": {
        "lr_schedule": [{"kind": "step", "step_size": 2}, {"kind": "exponential"}],
        "lr_schedule.gamma": [0.5]}})
    assert [c["spec"]["lr_schedule"] for c in cells] == [
        {"kind": "step", "step_size": 2, "gamma": 0.5}, {"kind": "exponential", "gamma": 0.5}]
    # an object field the base leaves out starts empty (the plateau's defaults apply)
    cells = preview(client, {"base": BASE, "grid": {"stop_on_plateau.metric": ["error"],
                                                    "stop_on_plateau.patience": [1, 4]}})
    assert [c["spec"]["stop_on_plateau"]["patience"] for c in cells] == [1, 4]


def test_a_random_space_over_optimizer_fields(client):
    body = {"base": {**BASE, "optimizer": "adam", "lr_schedule": {"kind": "exponential",
                                                                  "gamma": 0.9}},
            "random": {"beta1": {"uniform": [0.5, 0.95]},
                       "weight_decay": {"loguniform": [1e-5, 1e-2]},
                       "lr_schedule.gamma": {"uniform": [0.8, 1.0]},
                       "optimizer": {"choice": ["adam", "adamw"]}},
            "trials": 5, "seed": 1}
    cells = preview(client, body)
    assert cells == preview(client, body) and len(cells) == 5
    for cell in cells:
        config, spec = cell["config"], cell["spec"]
        assert 0.5 <= config["beta1"] <= 0.95 and spec["beta1"] == config["beta1"]
        assert spec["lr_schedule"] == {"kind": "exponential",
                                       "gamma": config["lr_schedule.gamma"]}
        assert spec["optimizer"] in ("adam", "adamw")
        assert sweepspace.config_hash(config)  # canonical JSON of dotted names


@pytest.mark.parametrize("body, fields", [
    # a cell whose whole object is bad: its index in the grid, then the key
    ({"base": BASE, "grid": {"lr_schedule": [{"kind": "cosine"},
                                             {"kind": "constant", "gamma": 0.5}]}},
     {"grid.lr_schedule[1].gamma"}),
    # a bad value of a dotted name
    ({"base": {**BASE, "lr_schedule": {"kind": "exponential", "gamma": 0.5}},
      "grid": {"lr_schedule.gamma": [0.5, 1.5]}}, {"grid.lr_schedule.gamma[1]"}),
    # a key the object's schema does not have, or a field with no keys
    ({"base": BASE, "grid": {"lr_schedule.decay": [0.5]}}, {"grid.lr_schedule.decay"}),
    ({"base": BASE, "grid": {"learning_rate.x": [0.5]}}, {"grid.learning_rate.x"}),
    # a parameter of another optimizer, varied or in the base
    ({"base": BASE, "grid": {"optimizer": ["adam", "momentum"], "beta1": [0.8]}},
     {"grid.beta1[0]"}),
    ({"base": {**BASE, "momentum": 0.5}, "grid": {"optimizer": ["momentum", "adam"]}},
     {"base.momentum"}),
    # a plateau on val_error, with a varied validation split of 0 in one cell
    ({"base": {**BASE, "stop_on_plateau": {"patience": 2}},
      "grid": {"validation_split": [0.2, 0.0]}}, {"base.stop_on_plateau.metric"}),
    ({"base": BASE, "random": {"stop_on_plateau.patience": {"int": [0, 3]},
                               "stop_on_plateau.metric": {"choice": ["error"]}},
      "trials": 8, "seed": 0}, {"random.stop_on_plateau.patience"}),
    # cosine's lr_min against a varied learning rate
    ({"base": {**BASE, "lr_schedule": {"kind": "cosine", "lr_min": 0.05}},
      "grid": {"learning_rate": [0.1, 0.01]}}, {"base.lr_schedule.lr_min"}),
])
def test_a_bad_cell_is_a_422_naming_where_it_came_from(client, queue_dir, body, fields):
    error = error_of(client.post(f"{API}/sweeps", json=body), 422)
    assert set(error["fields"]) == fields, error
    assert queued_run_ids(queue_dir) == []


def test_a_base_error_a_cell_causes_names_the_cell(client):
    error = error_of(client.post(f"{API}/sweeps", json={
        "base": {**BASE, "stop_on_plateau": {"patience": 2}},
        "grid": {"validation_split": [0.2, 0.0]}}), 422)
    message = error["fields"]["base.stop_on_plateau.metric"]
    assert "validation_split" in message and "configuration #1" in message
    # an error of the base alone is told as it is, without a cell
    error = error_of(client.post(f"{API}/sweeps", json={
        "base": {**BASE, "optimizer": "rmsprop"}, "grid": {"learning_rate": [0.1, 0.2]}}), 422)
    assert "configuration" not in error["fields"]["base.optimizer"]


def test_the_leaderboard_shows_best_epoch_and_stop_reason(client, sessions):
    from sqlalchemy import update

    from service.store import Run

    sweep = post(client, {"base": {**BASE, "stop_on_plateau": {"metric": "error"}},
                          "grid": {"optimizer": ["adam", "sgd"]}})
    first, second = (run["id"] for run in sweep["runs"])
    with sessions() as session:
        for run_id, error, reason, best in ((first, 0.1, "plateau", 7), (second, 0.2, None, 20)):
            session.execute(update(Run).where(Run.id == run_id).values(
                status="succeeded", final_error=error, stop_reason=reason, best_epoch=best))
        session.commit()
    board = client.get(f"{API}/sweeps/{sweep['id']}").get_json()["leaderboard"]
    assert [(e["run_id"], e["config"], e["stop_reason"], e["best_epoch"]) for e in board] == [
        (first, {"optimizer": "adam"}, "plateau", 7), (second, {"optimizer": "sgd"}, None, 20)]

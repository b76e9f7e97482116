"""The run spec's ``eval_every`` and ``threads`` through the API (issue 15): defaults, the
422s naming the field (threads above the workers' cap DESCENT_MAX_THREADS, eval_every
above epochs), runs stored before the fields existed, the history of an eval_every run
(JSON and CSV: the evaluated epochs only), sweeps over them, and the OpenAPI document."""

import csv
import io

import pytest
from sqlalchemy import update

from service.settings import Limits, Settings
from service.store import Run

from .conftest import API, error_of, submit, train_run
from .test_dashboard import alice, browser, store  # noqa: F401  (fixtures)


def test_defaults_are_every_epoch_and_one_thread(client):
    run = submit(client)
    assert run["spec"]["eval_every"] == 1 and run["spec"]["threads"] == 1


def test_given_values_are_stored(client):
    run = submit(client, epochs=50, eval_every=10, threads=1)
    assert (run["spec"]["eval_every"], run["spec"]["threads"]) == (10, 1)
    assert client.get(f"{API}/runs/{run['id']}").get_json()["spec"]["eval_every"] == 10


@pytest.mark.parametrize("field,value,fragment", [
    ("eval_every", 0, "greater than or equal to 1"),
    ("eval_every", -3, "greater than or equal to 1"),
    ("eval_every", 2.5, "integer"),
    ("eval_every", "2", "integer"),
    ("eval_every", True, "integer"),
    ("eval_every", 2**40, "less than or equal to"),
    ("eval_every", 101, "at most epochs (100)"),
    ("threads", 0, "greater than or equal to 1"),
    ("threads", "2", "integer"),
    ("threads", None, "null"),
])
def test_bad_values_are_422_naming_the_field(client, field, value, fragment):
    error = error_of(client.post(f"{API}/runs", json={"dataset": "xor", "layers": [2, 4, 1],
                                                      field: value}), 422)
    assert set(error["fields"]) == {field}
    assert fragment.lower() in error["fields"][field].lower()


def test_eval_every_up_to_epochs_and_one_for_no_epochs(client):
    assert submit(client, epochs=7, eval_every=7)["spec"]["eval_every"] == 7
    assert submit(client, epochs=0, eval_every=1)["spec"]["eval_every"] == 1
    error = error_of(client.post(f"{API}/runs", json={"dataset": "xor", "layers": [2, 4, 1],
                                                      "epochs": 0, "eval_every": 2}), 422)
    assert set(error["fields"]) == {"eval_every"}


def test_threads_above_the_cap_is_422_naming_the_cap(make_client):
    client = make_client(limits=Limits(max_threads=2))
    assert submit(client, threads=2)["spec"]["threads"] == 2
    error = error_of(client.post(f"{API}/runs", json={"dataset": "xor", "layers": [2, 4, 1],
                                                      "threads": 3}), 422)
    assert set(error["fields"]) == {"threads"}
    assert "at most 2" in error["fields"]["threads"]
    assert "DESCENT_MAX_THREADS" in error["fields"]["threads"]


def test_the_cap_defaults_to_the_machines_cores_and_reads_its_variable():
    import os

    assert Limits().max_threads == (os.cpu_count() or 1)
    assert Settings.from_env({"DESCENT_MAX_THREADS": "3"}).limits.max_threads == 3


def test_a_run_stored_before_the_fields_shows_their_defaults(client, sessions):
    run = submit(client)
    with sessions() as session:
        spec = {k: v for k, v in run["spec"].items() if k not in ("eval_every", "threads")}
        session.execute(update(Run).where(Run.id == run["id"]).values(spec=spec))
        session.commit()
    shown = client.get(f"{API}/runs/{run['id']}").get_json()["spec"]
    assert shown["eval_every"] == 1 and shown["threads"] == 1


def test_history_holds_the_evaluated_epochs(client, sessions):
    run = submit(client, epochs=23, eval_every=5, learning_rate=0.5)
    result = train_run(sessions, run["id"])
    history = client.get(f"{API}/runs/{run['id']}/history").get_json()["history"]
    assert [row["epoch"] for row in history] == [0, 5, 10, 15, 20, 23]
    assert [row["error"] for row in history] == result.errors.tolist()
    text = client.get(f"{API}/runs/{run['id']}/history",
                      query_string={"format": "csv"}).get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(row["epoch"]) for row in rows] == [0, 5, 10, 15, 20, 23]
    spread = client.get(f"{API}/runs/{run['id']}/history",
                        query_string={"max_points": 3}).get_json()["history"]
    assert spread[0]["epoch"] == 0 and spread[-1]["epoch"] == 23


def test_a_sweep_can_vary_eval_every_and_threads(client):
    body = {"base": {"dataset": "xor", "layers": [2, 4, 1], "epochs": 20},
            "grid": {"eval_every": [1, 5, 20], "threads": [1]}}
    response = client.post(f"{API}/sweeps", json={**body, "preview": True})
    assert response.status_code == 200, response.get_json()
    assert [c["spec"]["eval_every"] for c in response.get_json()["configurations"]] == [1, 5, 20]
    bad = client.post(f"{API}/sweeps", json={**body, "grid": {"eval_every": [1, 21]}})
    error = error_of(bad, 422)
    assert any(name.startswith("grid.eval_every") for name in error["fields"]), error


def test_openapi_documents_both_fields(client):
    doc = client.get(f"{API}/openapi.json").get_json()
    spec = next(schema for name, schema in doc["components"]["schemas"].items()
                if name.startswith("RunSpec"))
    for name in ("eval_every", "threads"):
        field = spec["properties"][name]
        assert field["type"] == "integer" and field["minimum"] == 1
        assert field["description"]


# ------------------------------------------------------------------- the dashboard's form

def test_the_dashboard_form_stores_both_fields(alice, store):  # noqa: F811
    from .test_dashboard_optimizers import post_form, submitted_spec

    page = alice.get("/submit").text
    assert 'name="eval_every" id="eval_every" type="text" value="1"' in page
    assert 'name="threads" id="threads" type="text" value="1"' in page
    spec = submitted_spec(store, post_form(alice, eval_every="10", threads="1"))
    assert (spec["eval_every"], spec["threads"]) == (10, 1)
    spec = submitted_spec(store, post_form(alice, eval_every="", threads=""))
    assert (spec["eval_every"], spec["threads"]) == (1, 1)


@pytest.mark.parametrize("change,field,message", [
    ({"eval_every": "0"}, "eval_every", "greater than or equal to 1"),
    ({"eval_every": "2.5"}, "eval_every", "must be a whole number"),
    ({"eval_every": "21"}, "eval_every", "at most epochs"),
    ({"threads": "x"}, "threads", "must be a whole number"),
    ({"threads": "100000"}, "threads", "at most"),
])
def test_the_dashboard_names_a_bad_value_under_its_field(alice, change, field, message):  # noqa: F811
    from .test_dashboard import errors_of
    from .test_dashboard_optimizers import post_form

    response = post_form(alice, **change)
    assert response.status_code == 422
    shown = errors_of(response.text)
    assert set(shown) == {field} and message in shown[field], shown

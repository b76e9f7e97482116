"""Runs compared side by side: GET /api/v1/runs/compare, the dashboard's /compare page and
its chart's JSON (Flask test client), and `descent compare` against a real `descent api`."""

import json
import re

import numpy as np
import pytest

from service import compare
from service.store import make_engine, make_sessionmaker
from service.store import runs as store_runs
from service.store.arrays import params_to_npz

from .conftest import API, error_of
from .test_cli import invoke, service_env, start_api, stop

XOR = {"dataset": "xor", "layers": [2, 4, 1], "epochs": 30, "batch_mode": "full",
       "learning_rate": 0.5, "seed": 1}


def finish(sessions, run_id: int, epochs: int, scale: float = 1.0) -> None:
    """Store what a worker would for a run: ``epochs`` + 1 history rows, its summary, its
    parameters, and the succeeded state."""
    with sessions() as session:
        run = store_runs.claim_run(session, run_id, "test-worker")
        rows = [{"run_id": run_id, "epoch": e, "error": scale / (e + 1), "accuracy": None,
                 "val_error": None, "val_accuracy": None, "seconds": 0.01 * e}
                for e in range(epochs + 1)]
        params = params_to_npz({"weights": [np.ones((4, 2)), np.ones((1, 4))],
                                "biases": [np.zeros(4), np.zeros(1)]})
        store_runs.complete_run(session, run_id, run.attempts, rows,
                                {"epochs_done": epochs, "final_error": rows[-1]["error"],
                                 "best_error": rows[-1]["error"], "best_epoch": epochs},
                                "succeeded", params={"initial": ("float64", params),
                                                     "final": ("float64", params)})
        session.commit()


def submit(client, **changes) -> int:
    response = client.post(f"{API}/runs", json={**XOR, **changes})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


@pytest.fixture
def two_runs(client, sessions):
    """Two finished runs of alice's that differ in learning rate and activation."""
    a = submit(client, name="slow", tags={"team": "a"})
    b = submit(client, name="fast", learning_rate=2.0, activation="tanh", tags={"team": "b"})
    finish(sessions, a, 30, scale=1.0)
    finish(sessions, b, 30, scale=0.5)
    return a, b


# ----------------------------------------------------------------------------- the API


def test_spec_fields_are_dotted_paths_and_a_missing_field_differs():
    rows = compare.spec_fields([{"a": {"b": 1, "c": [1, 2]}, "d": 1, "name": "x"},
                                {"a": {"b": 1, "c": [1, 3]}, "name": "y"}])
    assert rows == [{"field": "a.b", "values": [1, 1], "differs": False},
                    {"field": "a.c", "values": [[1, 2], [1, 3]], "differs": True},
                    {"field": "d", "values": [1, None], "differs": True}]
    assert compare.spec_fields([{"d": None}, {}])[0]["differs"] is True


def test_the_api_compares_specs_results_and_curves(client, two_runs):
    a, b = two_runs
    response = client.get(f"{API}/runs/compare", query_string={"ids": f"{b},{a}"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [r["id"] for r in body["runs"]] == [b, a]  # in the order asked for
    assert body["differing"] == ["activation", "learning_rate"]
    rows = {row["field"]: row for row in body["fields"]}
    assert rows["learning_rate"] == {"field": "learning_rate", "values": [2.0, 0.5],
                                     "differs": True}
    assert rows["activation"]["values"] == ["tanh", "sigmoid"]
    assert rows["seed"] == {"field": "seed", "values": [1, 1], "differs": False}
    assert rows["layers"] == {"field": "layers", "values": [[2, 4, 1], [2, 4, 1]],
                              "differs": False}
    assert "name" not in rows and "tags" not in rows  # labels, not differences
    runs = {r["id"]: r for r in body["runs"]}
    assert runs[a]["name"] == "slow" and runs[b]["final_error"] == pytest.approx(0.5 / 31)
    assert [p["epoch"] for p in runs[a]["history"]] == list(range(31))
    assert runs[a]["history"][0] == {"epoch": 0, "error": 1.0, "val_error": None}


def test_the_api_downsamples_the_curves(client, two_runs):
    a, b = two_runs
    body = client.get(f"{API}/runs/compare",
                      query_string={"ids": f"{a},{b}", "max_points": 5}).get_json()
    for run in body["runs"]:
        epochs = [p["epoch"] for p in run["history"]]
        assert len(epochs) == 5 and epochs[0] == 0 and epochs[-1] == 30


@pytest.mark.parametrize("ids, message", [
    ("1", "give 2 to 10 run ids separated by commas (got 1)"),
    ("", "give 2 to 10 run ids separated by commas (got 0)"),
    (",".join(map(str, range(1, 12))), "give 2 to 10 run ids separated by commas (got 11)"),
    ("1,x", "'x' is not a run id (a whole number from 0)"),
    ("1,-2", "'-2' is not a run id (a whole number from 0)"),
    ("1,1.5", "'1.5' is not a run id (a whole number from 0)"),
    ("1,99999999999999999999", "'99999999999999999999' is not a run id (a whole number from 0)"),
    ("3,3", "run 3 is listed twice"),
], ids=["one", "none", "eleven", "letter", "negative", "fraction", "huge", "twice"])
def test_the_api_names_bad_ids(client, ids, message):
    error = error_of(client.get(f"{API}/runs/compare", query_string={"ids": ids}), 422)
    assert error["fields"] == {"ids": message}


def test_the_api_bounds_its_parameters(client, two_runs):
    a, b = two_runs
    missing = error_of(client.get(f"{API}/runs/compare"), 422)
    assert "ids" in missing["fields"]
    too_long = error_of(client.get(f"{API}/runs/compare",
                                   query_string={"ids": "1," + "9" * 5000}), 422)
    assert "ids" in too_long["fields"]
    for max_points in (2, 2001, "many"):
        error = error_of(client.get(f"{API}/runs/compare", query_string={
            "ids": f"{a},{b}", "max_points": max_points}), 422)
        assert "max_points" in error["fields"]
    error = error_of(client.get(f"{API}/runs/compare", query_string={
        "ids": f"{a},{b}", "colour": "red"}), 422)
    assert "colour" in error["fields"]


def test_other_users_runs_are_missing_ones(client, client_of, two_runs):
    a, b = two_runs
    bob = client_of("bob")
    theirs = submit(bob)
    for ids in (f"{a},{theirs}", f"{a},987654"):
        error = error_of(client.get(f"{API}/runs/compare", query_string={"ids": ids}), 404)
        assert error["code"] == "not_found" and "does not exist" in error["message"]
    error_of(bob.get(f"{API}/runs/compare", query_string={"ids": f"{a},{b}"}), 404)
    assert client.get(f"{API}/runs/compare", query_string={"ids": f"{a},{b}"},
                      headers={"Authorization": ""}).status_code == 401


def test_queued_runs_compare_with_empty_curves(client):
    a, b = submit(client), submit(client, layers=[2, 8, 1])
    body = client.get(f"{API}/runs/compare", query_string={"ids": f"{a},{b}"}).get_json()
    assert [r["status"] for r in body["runs"]] == ["queued", "queued"]
    assert [r["history"] for r in body["runs"]] == [[], []]
    assert body["differing"] == ["layers"]


# ----------------------------------------------------------------------- the dashboard


def csrf_of(page_text: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page_text).group(1)


@pytest.fixture
def alice(app, token):
    """A browser-like test client (no Authorization header) logged in as alice."""
    browser = app.test_client()
    response = browser.post("/login", data={
        "token": token, "csrf_token": csrf_of(browser.get("/login").text)})
    assert response.status_code == 302, response.text
    return browser


def differing_rows(page_text: str) -> list[str]:
    return re.findall(r'<tr id="field-([\w-]+)" class="differs">', page_text)


def test_the_page_shows_specs_side_by_side_with_the_differences_marked(alice, two_runs):
    a, b = two_runs
    response = alice.get(f"/compare?runs={a},{b}")
    assert response.status_code == 200, response.text
    page = response.text
    assert differing_rows(page) == ["activation", "learning_rate"]
    assert '<tr id="field-layers">' in page and '<tr id="field-seed">' in page
    assert "2 fields differ: activation, learning_rate" in page
    # The lower final error is marked; the chart's data comes from a JSON URL.
    best = re.search(r'<tr id="result-final-error">.*?</tr>', page, re.S).group(0)
    assert re.findall(r'<td class="n best">([^<]*)</td>', best) == [f"{0.5 / 31:.4g}"]
    assert f'data-url="/ui/compare.json?runs={a},{b}"' in page
    assert "<script>" not in page and "style=" not in page  # the CSP allows neither

    curves = alice.get(f"/ui/compare.json?runs={a},{b}").get_json()
    assert curves["final"] is True
    assert [r["id"] for r in curves["runs"]] == [a, b]
    assert curves["runs"][0]["label"] == f'#{a} activation="sigmoid", learning_rate=0.5'
    assert [len(r["history"]) for r in curves["runs"]] == [31, 31]


def test_the_runs_table_picks_runs_to_compare(alice, two_runs):
    a, b = two_runs
    table = alice.get("/").text
    assert '<form id="compare-form" method="get" action="/compare">' in table
    for run_id in (a, b):
        assert f'<input type="checkbox" name="runs" value="{run_id}"' in table
    # What the form sends (one parameter per ticked run) lands on the short address.
    response = alice.get(f"/compare?runs={a}&runs={b}")
    assert response.status_code == 302
    assert response.headers["Location"] == f"/compare?runs={a},{b}"


@pytest.mark.parametrize("query, message", [
    ("", "give 2 to 10 run ids separated by commas (got 0)"),
    ("?runs=1", "give 2 to 10 run ids separated by commas (got 1)"),
    ("?runs=1&runs=2&runs=3&runs=4&runs=5&runs=6&runs=7&runs=8&runs=9&runs=10&runs=11",
     "give 2 to 10 run ids separated by commas (got 11)"),
    ("?runs=1,abc", "&#39;abc&#39; is not a run id (a whole number from 0)"),
    ("?runs=4,4", "run 4 is listed twice"),
    ("?runs=4," + "9" * 5000, "&#39;" + "9" * 24 + "...&#39; is not a run id (a whole "
                                                     "number from 0)"),
    ("?runs=" + ",".join(map(str, range(100_000))),
     "give 2 to 10 run ids separated by commas (got 100000)"),
], ids=["none", "one", "eleven", "not-a-number", "twice", "5000-digits", "100000-ids"])
def test_the_page_says_what_is_wrong_with_the_ids(alice, query, message):
    response = alice.get(f"/compare{query}")
    assert response.status_code == 422
    assert f'<p class="flash error" id="compare-error">{message}</p>' in response.text
    assert alice.get(f"/ui/compare.json{query}").status_code == 422


def test_the_page_hides_other_users_runs(alice, client_of, two_runs):
    a, _ = two_runs
    theirs = submit(client_of("bob"))
    for path in (f"/compare?runs={a},{theirs}", f"/ui/compare.json?runs={a},{theirs}",
                 f"/compare?runs={a},987654"):
        response = alice.get(path)
        assert response.status_code == 404, path
        assert "does not exist" in response.text


def test_the_page_needs_a_login(app, two_runs):
    a, b = two_runs
    response = app.test_client().get(f"/compare?runs={a},{b}")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/compare")


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    """`descent api` on a migrated SQLite file with no worker; (base URL, sessionmaker on
    its database) to finish runs as a worker would."""
    folder = tmp_path_factory.mktemp("compare-api")
    env = service_env(folder)
    process, base_url, log = start_api(folder, **env)
    engine = make_engine(env["DESCENT_DATABASE_URL"])
    try:
        yield base_url, make_sessionmaker(engine)
    finally:
        engine.dispose()
        stop(process, log, within=15)


def submit_cli(base_url: str, *overrides) -> int:
    from .test_cli import XOR_SPEC

    result = invoke(["submit", str(XOR_SPEC), *overrides], env={"DESCENT_API_URL": base_url})
    assert result.exit_code == 0, result.output
    return int(result.output.split()[2])


@pytest.mark.slow
def test_cli_prints_specs_side_by_side_with_differences_marked(live_api):
    base_url, sessions = live_api
    a = submit_cli(base_url, "-s", "epochs=20")
    b = submit_cli(base_url, "-s", "epochs=20", "-s", "learning_rate=0.25")
    finish(sessions, a, 20, scale=1.0)
    finish(sessions, b, 20, scale=0.25)
    result = invoke(["compare", str(a), str(b)], env={"DESCENT_API_URL": base_url})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    marked = [line for line in lines if line.startswith("* ")]
    assert len(marked) == 1 and re.match(r"\* learning_rate\s+2\.0\s+0\.25\s*$", marked[0])
    layers = next(line for line in lines if line.startswith("  layers"))
    assert layers.split()[1:] == ["[2,8,1]", "[2,8,1]"]
    final = next(line for line in lines if "final error" in line)
    assert final.split()[2:] == [f"{1 / 21:.4g}", f"{0.25 / 21:.4g}", "(lowest:", f"#{b})"]
    assert any("best error" in line for line in lines)
    assert "1 field differs: learning_rate" in result.output

    as_json = invoke(["compare", str(a), str(b), "--json"], env={"DESCENT_API_URL": base_url})
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["differing"] == ["learning_rate"]


@pytest.mark.slow
def test_cli_reports_bad_and_missing_ids(live_api):
    base_url, _ = live_api
    env = {"DESCENT_API_URL": base_url}
    # A run of its own: the module's other tests may run in another xdist worker.
    run = str(submit_cli(base_url))
    one = invoke(["compare", run], env=env)
    assert one.exit_code == 2 and "give 2 to 10 run ids" in one.output, one.output
    twice = invoke(["compare", run, run], env=env)
    assert twice.exit_code == 2 and f"run {run} is listed twice" in twice.output
    missing = invoke(["compare", run, "987654"], env=env)
    assert missing.exit_code == 1 and "run 987654 does not exist" in missing.output

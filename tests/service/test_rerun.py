"""Runs that prove they reproduce: POST /runs/{id}/rerun, the environment each run records,
and the verdict on a run and its rerun (GET /runs/{id}/verification, /compare/{other}) in
the API and on the dashboard's run page. The runs are trained in this process by the
workers' own execute_run (tests/integration/test_verify.py uses real worker processes)."""

import html

import numpy as np
import pytest
from sqlalchemy import update

from service.errors import Conflict
from service.runs import rerun_run
from service.settings import Limits
from service.store import Epoch, Params, Run
from service.store.arrays import params_from_npz, params_to_npz
from workers.environment import process_environment
from workers.execute import execute_run

from .conftest import API, error_of, queued_run_ids, submit
from .test_cli import XOR_SPEC, invoke, live_api, submit_ok  # noqa: F401 (live_api: a fixture)
from .test_dashboard import alice, browser  # noqa: F401 (fixtures)

SPEC = {"dataset": "moons", "layers": [2, 6, 6, 1], "batch_mode": "minibatch",
        "batch_size": 16, "shuffle": True, "epochs": 12, "seed": 7, "learning_rate": 0.3,
        "validation_split": 0.2, "name": "moons", "tags": {"team": "a"}}


def train(sessions, run_id: int) -> None:
    """What a worker does with the run's task."""
    assert execute_run(sessions, run_id, enqueue=lambda _id: None) == "succeeded"


def rerun(client, run_id: int) -> dict:
    response = client.post(f"{API}/runs/{run_id}/rerun")
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def verdict_of(client, path: str) -> dict:
    response = client.get(f"{API}/runs/{path}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def pair(client, sessions):
    """(origin id, rerun id), both trained."""
    origin = submit(client, **SPEC)["id"]
    train(sessions, origin)
    again = rerun(client, origin)["id"]
    train(sessions, again)
    return origin, again


# ------------------------------------------------------------------------------ rerun


def test_a_rerun_queues_the_same_spec_seed_and_dataset_linked_to_its_origin(client, sessions,
                                                                            queue_dir):
    origin = submit(client, **SPEC)
    body = rerun(client, origin["id"])
    assert body["status"] == "queued" and body["id"] != origin["id"]
    assert body["rerun_of"] == origin["id"] and origin["rerun_of"] is None
    assert body["spec"] == origin["spec"] and body["spec"]["seed"] == 7
    assert body["dataset"] == origin["dataset"]
    assert body["name"] == "moons" and body["tags"] == {"team": "a"}
    assert body["sweep_id"] is None
    assert queued_run_ids(queue_dir) == [origin["id"], body["id"]]
    assert client.get(f"{API}/runs/{body['id']}").get_json()["rerun_of"] == origin["id"]


def test_a_rerun_of_a_sweep_cell_is_a_run_of_its_own(client):
    sweep = client.post(f"{API}/sweeps", json={
        "base": {"dataset": "xor", "layers": [2, 4, 1], "epochs": 5},
        "grid": {"learning_rate": [0.1, 1.0]}}).get_json()
    cell = sweep["runs"][0]
    body = rerun(client, cell["id"])
    assert body["sweep_id"] is None and body["rerun_of"] == cell["id"]
    assert body["spec"]["learning_rate"] == cell["spec"]["learning_rate"]


def test_another_users_run_cannot_be_rerun(client, client_of):
    origin = submit(client)["id"]
    bob = client_of("bob")
    error = error_of(bob.post(f"{API}/runs/{origin}/rerun"), 404)
    assert error["code"] == "not_found"
    assert error_of(client.post(f"{API}/runs/{10**9}/rerun"), 404)["code"] == "not_found"


def test_a_rerun_counts_against_the_quotas_as_a_submit(make_client):
    limited = make_client(limits=Limits(max_active_runs=1))
    origin = submit(limited)["id"]  # still queued: active
    error = error_of(limited.post(f"{API}/runs/{origin}/rerun"), 429)
    assert error["code"] == "quota_exceeded"


def test_a_rerun_is_checked_against_todays_limits(client, make_client):
    origin = submit(client, epochs=500)["id"]
    stricter = make_client(limits=Limits(max_epochs=100))
    error = error_of(stricter.post(f"{API}/runs/{origin}/rerun"), 422)
    assert "epochs" in error["fields"]


def test_a_run_whose_dataset_is_gone_cannot_be_rerun(client, sessions, app):
    """A dataset that runs use cannot be deleted (409 in_use), so this guards a state the
    API never makes: a run whose dataset row is missing."""
    origin_id = submit(client)["id"]
    with sessions() as session:
        origin = session.get(Run, origin_id)
        ghost = Run(id=10**6, owner=origin.owner, spec=dict(origin.spec),
                    dataset_id=10**6, status="succeeded")
        with pytest.raises(Conflict) as raised:
            rerun_run(session, None, Limits(), origin.owner, ghost)
    assert raised.value.code == "dataset_gone" and "dataset" in raised.value.fields


def test_deleting_the_origin_keeps_its_rerun_unlinked(client, pair):
    origin, again = pair
    assert client.delete(f"{API}/runs/{origin}").status_code == 204
    body = client.get(f"{API}/runs/{again}").get_json()
    assert body["status"] == "succeeded" and body["rerun_of"] is None
    assert error_of(client.get(f"{API}/runs/{again}/verification"), 404)["code"] == "not_found"


# ------------------------------------------------------------------------ environment


def test_get_run_shows_where_it_trained(client, pair):
    origin, _ = pair
    body = client.get(f"{API}/runs/{origin}").get_json()
    env = body["environment"]
    assert env["dtype"] == "float64" and env["dataset"]["name"] == "moons"
    assert len(env["dataset"]["content_hash"]) == 64
    assert env["numpy"] == process_environment()["numpy"]
    assert {"internal_api", "version", "architecture", "num_threads"} <= set(env["blas"])
    assert set(env["cpu"]["flags"]) >= {"avx2", "avx512f", "fma"}
    # Lists of runs leave it out (a column read on its own).
    listed = client.get(f"{API}/runs").get_json()["runs"]
    assert all("environment" not in run for run in listed)


def test_a_queued_run_has_no_environment_yet(client):
    body = client.get(f"{API}/runs/{submit(client)['id']}").get_json()
    assert body["environment"] is None


# --------------------------------------------------------------------------- verdicts


def test_a_run_and_its_rerun_are_bit_identical(client, pair):
    origin, again = pair
    for path in (f"{origin}/verification", f"{again}/verification",
                 f"{origin}/compare/{again}"):
        verdict = verdict_of(client, path)
        assert verdict["runs"] == [origin, again]
        assert verdict["verdict"] == "bit-identical", verdict
        assert verdict["history"] == {"identical": True, "rows": 13, "first_difference": None}
        for which in ("initial_params", "final_params"):
            assert verdict[which]["identical"] and verdict[which]["stored"] is True
        assert verdict["environment"] == {"identical": True, "recorded": [True, True],
                                          "differences": []}
        assert verdict["spec"]["identical"]
        assert verdict["summary"] == "bit-identical; same environment"


def test_the_verdict_waits_for_both_runs(client, sessions):
    origin = submit(client, **SPEC)["id"]
    train(sessions, origin)
    again = rerun(client, origin)["id"]
    verdict = verdict_of(client, f"{origin}/verification")
    assert verdict["verdict"] == "pending" and verdict["statuses"] == ["succeeded", "queued"]
    assert verdict["history"] is None and verdict["final_params"] is None
    assert verdict["environment"]["identical"] is None  # the rerun has none yet
    train(sessions, again)
    assert verdict_of(client, f"{origin}/verification")["verdict"] == "bit-identical"


def test_a_changed_environment_and_the_first_differences_are_named(client, sessions, pair):
    """A rerun stored as if it had trained elsewhere: another BLAS thread count and the
    AVX-512 flag flipped, its history off at epoch 5 and its final W2[0, 3] off by one
    ulp."""
    origin, again = pair
    with sessions() as session:
        run = session.get(Run, again)
        env = dict(run.environment)
        env["blas"] = {**env["blas"], "num_threads": env["blas"]["num_threads"] + 1}
        had_avx512 = env["cpu"]["flags"]["avx512f"]
        env["cpu"] = {**env["cpu"], "flags": {**env["cpu"]["flags"],
                                              "avx512f": not had_avx512}}
        session.execute(update(Run).where(Run.id == again).values(environment=env))
        row = session.get(Epoch, (again, 5))
        session.execute(update(Epoch).where(Epoch.run_id == again, Epoch.epoch == 5)
                        .values(error=np.nextafter(row.error, 1.0)))
        stored = session.get(Params, (again, "final"))
        params = params_from_npz(stored.data)
        params["weights"][1][0, 3] = np.nextafter(params["weights"][1][0, 3], np.inf)
        session.execute(update(Params).where(Params.run_id == again, Params.which == "final")
                        .values(data=params_to_npz(params)))
        session.commit()
    verdict = verdict_of(client, f"{origin}/verification")
    assert verdict["verdict"] == "differs"
    first = verdict["history"]["first_difference"]
    assert first["epoch"] == 5 and first["field"] == "error" and verdict["history"]["rows"] == 5
    assert verdict["initial_params"]["identical"] is True
    first = verdict["final_params"]["first_difference"]
    assert (first["layer"], first["array"], first["index"]) == (2, "W", [0, 3])
    assert first["values"][1] == np.nextafter(first["values"][0], np.inf)
    fields = {d["field"]: d["values"] for d in verdict["environment"]["differences"]}
    assert fields == {"blas.num_threads": [env["blas"]["num_threads"] - 1,
                                           env["blas"]["num_threads"]],
                      "cpu.flags.avx512f": [had_avx512, not had_avx512]}
    assert "history differs first at epoch 5 (error)" in verdict["summary"]
    assert "final parameters differ first at layer 2 W[0, 3]" in verdict["summary"]
    assert ("environment differs in blas.num_threads, cpu.flags.avx512f"
            in verdict["summary"])
    # The rerun's page of the API gives the same verdict.
    assert verdict_of(client, f"{again}/verification") == verdict


def test_comparing_two_different_runs_names_the_spec_fields(client, sessions):
    first = submit(client, dataset="xor", layers=[2, 4, 1], epochs=5, seed=1)["id"]
    second = submit(client, dataset="xor", layers=[2, 4, 1], epochs=5, seed=2)["id"]
    for run_id in (first, second):
        train(sessions, run_id)
    verdict = verdict_of(client, f"{first}/compare/{second}")
    assert verdict["verdict"] == "differs"
    assert verdict["spec"]["differences"] == [{"field": "seed", "values": [1, 2]}]
    assert verdict["initial_params"]["first_difference"]["index"] == [0, 0]


def test_verdicts_are_their_owners_only(client, client_of, pair):
    origin, again = pair
    bob = client_of("bob")
    mine = submit(bob)["id"]
    for response in (bob.get(f"{API}/runs/{origin}/verification"),
                     bob.get(f"{API}/runs/{mine}/compare/{again}"),
                     client.get(f"{API}/runs/{origin}/compare/{mine}")):
        assert error_of(response, 404)["code"] == "not_found"
    alone = submit(client)["id"]
    error = error_of(client.get(f"{API}/runs/{alone}/verification"), 404)
    assert "no rerun" in error["message"]


def test_the_endpoints_are_in_the_openapi_document(client):
    paths = client.get(f"{API}/openapi.json").get_json()["paths"]
    assert "202" in paths[f"{API}/runs/{{run_id}}/rerun"]["post"]["responses"]
    assert "200" in paths[f"{API}/runs/{{run_id}}/verification"]["get"]["responses"]
    assert "200" in paths[f"{API}/runs/{{run_id}}/compare/{{other_id}}"]["get"]["responses"]


# -------------------------------------------------------------------------- dashboard


def test_the_run_pages_show_the_environment_and_the_verdict(alice, pair):  # noqa: F811
    origin, again = pair
    for run_id in (origin, again):
        page = html.unescape(alice.get(f"/runs/{run_id}").text)
        assert 'id="verdict" class="verdict verdict-bit-identical">bit-identical<' in page
        assert "bit-identical; same environment" in page
        assert f'href="/runs/{again}"' in page and f'href="/runs/{origin}"' in page
        assert process_environment()["blas"]["internal_api"] in page
        assert "identical (13 rows)" in page
    assert f'id="rerun-of" href="/runs/{origin}"' in alice.get(f"/runs/{again}").text


def test_the_run_page_shows_a_difference(alice, sessions, pair):  # noqa: F811
    origin, again = pair
    with sessions() as session:
        env = dict(session.get(Run, again).environment)
        env["numba"] = "0.0.1"
        session.execute(update(Run).where(Run.id == again).values(environment=env))
        session.commit()
    page = html.unescape(alice.get(f"/runs/{origin}").text)
    assert "environment differs in numba" in page
    assert "<td><code>numba</code></td>" in page and "<td>0.0.1</td>" in page


def test_the_rerun_button_queues_a_rerun(alice, sessions, client, queue_dir):  # noqa: F811
    from .test_dashboard import csrf_of

    origin = submit(client, **SPEC)["id"]
    page = alice.get(f"/runs/{origin}").text
    assert "Rerun this run" in page  # no verdict yet: how to get one
    response = alice.post(f"/runs/{origin}/rerun", data={"csrf_token": csrf_of(page)})
    assert response.status_code == 302
    new_id = int(response.headers["Location"].rsplit("/", 1)[1])
    assert queued_run_ids(queue_dir) == [origin, new_id]
    page = html.unescape(alice.get(f"/runs/{new_id}").text)
    assert "pending" in page and f"a rerun of run {origin}" in page


def test_long_histories_are_compared_page_by_page(client, sessions):
    """Over several pages of history (store.history.PAGE_ROWS rows each): a difference on
    the second page is found at its epoch, and a history one run lacks rows of is named."""
    spec = {"dataset": "xor", "layers": [2, 3, 1], "batch_mode": "full", "epochs": 2500,
            "learning_rate": 0.5}
    origin = submit(client, **spec)["id"]
    train(sessions, origin)
    again = rerun(client, origin)["id"]
    train(sessions, again)
    assert verdict_of(client, f"{origin}/verification")["history"]["rows"] == 2501
    with sessions() as session:
        session.execute(update(Epoch).where(Epoch.run_id == again, Epoch.epoch == 2300)
                        .values(error=None))
        session.commit()
    verdict = verdict_of(client, f"{origin}/verification")
    assert verdict["history"] == {"identical": False, "rows": 2300, "first_difference": {
        "epoch": 2300, "field": "error",
        "values": [verdict["history"]["first_difference"]["values"][0], None]}}
    with sessions() as session:
        session.execute(Epoch.__table__.delete().where(Epoch.run_id == again,
                                                       Epoch.epoch >= 2100))
        session.commit()
    verdict = verdict_of(client, f"{origin}/verification")
    assert verdict["history"]["first_difference"] == {"epoch": 2100, "field": "epoch",
                                                      "values": [True, False]}
    assert verdict["verdict"] == "differs"


# ------------------------------------------------------------------------ command line


@pytest.mark.slow
def test_descent_rerun_and_a_verify_that_times_out(live_api):  # noqa: F811
    """Against `descent api` with no worker: runs stay queued."""
    env = {"DESCENT_API_URL": live_api}
    origin = submit_ok(live_api, str(XOR_SPEC))
    result = invoke(["rerun", str(origin)], env=env)
    assert result.exit_code == 0, result.output
    again = int(result.output.split()[2].rstrip(","))
    assert result.output.strip() == f"queued run {again}, a rerun of run {origin}"

    shown = invoke(["show", str(again)], env=env)
    assert shown.exit_code == 0, shown.output
    assert "Environment (where it trained):\n  not recorded" in shown.output
    assert f"Verification of run {origin} against run {again}: pending" in shown.output

    result = invoke(["verify", str(origin), "--timeout", "0.3"], env=env)
    assert result.exit_code == 1, result.output
    assert "is still queued after 0.3 s" in result.output

    result = invoke(["verify", str(10**9)], env=env)
    assert result.exit_code == 1 and "404" in result.output, result.output

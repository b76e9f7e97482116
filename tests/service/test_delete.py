"""Deleting runs and datasets (issue 12), so the per-user stored-bytes quota is not a lifetime
cap: DELETE /api/v1/runs/ID and /api/v1/datasets/REF, `descent rm` and `descent dataset rm`,
the dashboard's Delete button; and the reaper settling what a lost run it ends stored."""

from datetime import timedelta

import numpy as np
import pytest
import requests
from sqlalchemy import func, select, update

from service.settings import Limits, ReaperSettings
from service.store import Dataset, Epoch, Params, Run
from service.store import reaper
from service.store import sweeps as store_sweeps
from service.store import usage
from service.store.arrays import to_npz
from service.store.models import SweepCell, utcnow

from .conftest import API, error_of
from .test_cli import XOR_SPEC, auth, invoke, service_env, start_api, stop
from .test_dashboard import csrf_of, finish, log_in
from .test_quotas import reserved

XOR_RUN = {"dataset": "xor", "layers": [2, 4, 1], "epochs": 100}
AND_GATE = {"name": "and-gate", "X": [[0, 0], [0, 1], [1, 0], [1, 1]], "y": [0, 0, 0, 1]}


def submit(client, **spec) -> int:
    response = client.post(f"{API}/runs", json={**XOR_RUN, **spec})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def rows_of(sessions, model, run_id: int) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model)
                              .where(model.run_id == run_id))


def stored_bytes(sessions, owner: str = "alice") -> int:
    with sessions() as session:
        return usage.stored_bytes(session, owner)


def run_row(sessions, run_id: int):
    with sessions() as session:
        return session.get(Run, run_id)


# ----------------------------------------------------------------------------- runs


def test_deleting_a_finished_run_removes_its_history_and_params(client, sessions):
    run_id = submit(client)
    finish(sessions, run_id, epochs=5)
    other = submit(client)
    assert rows_of(sessions, Epoch, run_id) == 6 and rows_of(sessions, Params, run_id) == 2
    before, its_bytes = stored_bytes(sessions), run_row(sessions, run_id).stored_bytes
    assert its_bytes > 0

    response = client.delete(f"{API}/runs/{run_id}")
    assert response.status_code == 204 and response.data == b""
    assert rows_of(sessions, Epoch, run_id) == 0 and rows_of(sessions, Params, run_id) == 0
    assert run_row(sessions, run_id) is None
    assert stored_bytes(sessions) == before - its_bytes
    for path in ("", "/history", "/params"):
        assert error_of(client.get(f"{API}/runs/{run_id}{path}"), 404)["code"] == "not_found"
    assert error_of(client.delete(f"{API}/runs/{run_id}"), 404)["code"] == "not_found"
    assert client.get(f"{API}/runs/{other}").status_code == 200  # only that run


def test_a_user_at_the_bytes_quota_submits_again_after_deleting(make_client, sessions):
    client = make_client(limits=Limits(max_user_bytes=reserved(XOR_RUN) + 100))
    run_id = submit(client)
    finish(sessions, run_id, epochs=5)  # settled to what it stored: more than 100 bytes
    refused = error_of(client.post(f"{API}/runs", json=XOR_RUN), 429)
    assert set(refused["fields"]) == {"DESCENT_MAX_USER_BYTES"}
    assert client.delete(f"{API}/runs/{run_id}").status_code == 204
    assert stored_bytes(sessions) == 0
    submit(client)


def test_a_queued_or_running_run_is_409_until_cancelled(client, sessions):
    queued, running = submit(client), submit(client)
    with sessions() as session:
        session.execute(update(Run).where(Run.id == running).values(status="running"))
        session.commit()
    for run_id, status in ((queued, "queued"), (running, "running")):
        error = error_of(client.delete(f"{API}/runs/{run_id}"), 409)
        assert error["code"] == "not_finished"
        assert f"is {status}; cancel it first" in error["message"]
        assert run_row(sessions, run_id).status == status
    assert client.post(f"{API}/runs/{queued}/cancel").status_code == 202
    assert client.delete(f"{API}/runs/{queued}").status_code == 204


def test_another_users_run_is_404_as_a_missing_one(client, client_of, sessions):
    bob = client_of("bob")
    theirs = submit(bob)
    finish(sessions, theirs)
    error = error_of(client.delete(f"{API}/runs/{theirs}"), 404)
    assert error["message"] == error_of(client.delete(f"{API}/runs/987654"), 404)["message"] \
        .replace("987654", str(theirs))
    assert error_of(client.delete(f"{API}/runs/{2**63}"), 404)["code"] == "not_found"
    assert run_row(sessions, theirs) is not None
    assert bob.delete(f"{API}/runs/{theirs}").status_code == 204


def end_cell(sessions, run_id: int, sweep_id: int) -> None:
    """Finish a sweep's run as a worker would, the sweep's state updated with it."""
    finish(sessions, run_id)
    with sessions() as session:
        store_sweeps.update_status(session, sweep_id)
        session.commit()


def test_a_sweeps_runs_are_deleted_once_the_sweep_has_ended(client, sessions):
    """A cell's run can go only once none of the sweep's runs is queued or running (its
    early stopping compares the cells); the sweep and its leaderboard stay."""
    sweep = client.post(f"{API}/sweeps", json={
        "base": XOR_RUN, "grid": {"learning_rate": [0.1, 0.5]}}).get_json()
    first, second = [run["id"] for run in sweep["runs"]]
    end_cell(sessions, first, sweep["id"])
    error = error_of(client.delete(f"{API}/runs/{first}"), 409)
    assert error["code"] == "sweep_active" and f"sweep {sweep['id']}" in error["message"]

    end_cell(sessions, second, sweep["id"])
    assert client.delete(f"{API}/runs/{first}").status_code == 204
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(SweepCell)) == 1
    body = client.get(f"{API}/sweeps/{sweep['id']}").get_json()
    assert body["status"] == "succeeded" and body["total"] == 1
    assert [entry["run_id"] for entry in body["leaderboard"]] == [second]
    assert client.delete(f"{API}/runs/{second}").status_code == 204
    body = client.get(f"{API}/sweeps/{sweep['id']}").get_json()
    assert (body["status"], body["total"], body["leaderboard"], body["best"]) == \
        ("succeeded", 0, [], None)


# ------------------------------------------------------------------------- datasets


def upload(client, body=AND_GATE) -> dict:
    response = client.post(f"{API}/datasets", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_dataset_is_deleted_once_no_run_uses_it(client, sessions):
    dataset = upload(client)
    spare = upload(client, {**AND_GATE, "name": "spare"})
    run_id = submit(client, dataset="and-gate", epochs=5)
    before = stored_bytes(sessions)

    error = error_of(client.delete(f"{API}/datasets/and-gate"), 409)
    assert error["code"] == "in_use" and "used by 1 run" in error["message"]
    assert error["fields"] == {"runs": "1 run uses this dataset"}
    assert client.post(f"{API}/runs/{run_id}/cancel").status_code == 202
    assert client.delete(f"{API}/runs/{run_id}").status_code == 204

    response = client.delete(f"{API}/datasets/and-gate")  # by name
    assert response.status_code == 204 and response.data == b""
    assert error_of(client.get(f"{API}/datasets/{dataset['id']}"), 404)["code"] == "not_found"
    with sessions() as session:
        spare_bytes = session.get(Dataset, spare["id"]).n_bytes
        assert session.get(Dataset, dataset["id"]) is None
    assert stored_bytes(sessions) == spare_bytes < before
    assert client.delete(f"{API}/datasets/{spare['id']}").status_code == 204  # by id
    assert stored_bytes(sessions) == 0
    assert error_of(client.delete(f"{API}/datasets/and-gate"), 404)["code"] == "not_found"


def test_builtin_missing_and_other_users_datasets(client, client_of, sessions):
    submit(client, epochs=5)  # stores the built-in xor
    for ref in ("xor", "moons"):  # stored, and not yet stored
        error = error_of(client.delete(f"{API}/datasets/{ref}"), 409)
        assert error["code"] == "builtin_dataset"
    with sessions() as session:
        names = set(session.scalars(select(Dataset.name)))
    assert "xor" in names and "moons" not in names  # nothing stored to refuse it
    theirs = upload(client_of("bob"))
    for ref in (str(theirs["id"]), "nothing-here", "0", str(2**40)):
        assert error_of(client.delete(f"{API}/datasets/{ref}"), 404)["code"] == "not_found"
    with sessions() as session:
        assert session.get(Dataset, theirs["id"]) is not None


def test_a_user_at_the_bytes_quota_uploads_again_after_deleting(make_client, sessions):
    X, y = [[0.25, 0.5]] * 10, [0, 1] * 5
    one = len(to_npz(X=np.array(X), y=np.array(y)))  # what each of the two stores
    client = make_client(limits=Limits(max_user_bytes=one + one // 2))
    first = upload(client, {"name": "first", "X": X, "y": y})
    second = {"name": "second", "X": X, "y": y}
    refused = error_of(client.post(f"{API}/datasets", json=second), 429)
    assert set(refused["fields"]) == {"DESCENT_MAX_USER_BYTES"}
    assert client.delete(f"{API}/datasets/{first['id']}").status_code == 204
    upload(client, second)


def test_the_openapi_document_lists_every_status_of_both_deletes(client):
    paths = client.get(f"{API}/openapi.json").get_json()["paths"]
    for path in (f"{API}/runs/{{run_id}}", f"{API}/datasets/{{ref}}"):
        assert set(paths[path]["delete"]["responses"]) >= {"204", "404", "409"}, path


# ------------------------------------------------------------------- the reaper


def test_a_lost_run_the_reaper_ends_counts_what_it_stored(client, sessions):
    """A running run whose worker died ends here cancelled (or failed): it stored its
    history so far and no parameters, nothing at all when it never got to an epoch."""
    never, some, failed = submit(client), submit(client), submit(client)
    reservation = run_row(sessions, never).stored_bytes
    with sessions() as session:
        long_ago = utcnow() - timedelta(seconds=600)
        session.execute(update(Run).where(Run.id.in_([never, some, failed])).values(
            status="running", attempts=1, worker="gone:1", heartbeat_at=long_ago,
            enqueued_at=long_ago, cancel_requested=True))
        session.execute(update(Run).where(Run.id == failed)
                        .values(cancel_requested=False, attempts=3))
        session.add_all([Epoch(run_id=run_id, epoch=e, error=0.5, seconds=0.0)
                         for run_id in (some, failed) for e in range(3)])
        session.commit()
    reaped = reaper.reap(sessions, [].append, ReaperSettings())
    assert sorted(reaped.cancelled) == [never, some] and reaped.failed == [failed]
    three_rows = 3 * usage.HISTORY_ROW_BYTES
    assert [run_row(sessions, i).stored_bytes for i in (never, some, failed)] == \
        [0, three_rows, three_rows]
    assert reservation > three_rows
    assert stored_bytes(sessions) == 2 * three_rows


def test_a_redelivered_cancelled_run_counts_what_it_stored(client, sessions):
    """A running run whose cancel was requested while its worker was lost ends cancelled
    when its task is delivered again: it stored its history so far, not its reservation."""
    from service.store.runs import claim_run
    queued, running = submit(client), submit(client)
    with sessions() as session:
        session.execute(update(Run).where(Run.id.in_([queued, running]))
                        .values(cancel_requested=True))
        session.execute(update(Run).where(Run.id == running)
                        .values(status="running", attempts=1, worker="gone:1"))
        session.add_all([Epoch(run_id=running, epoch=e, error=0.5, seconds=0.0)
                         for e in range(4)])
        session.commit()
    for run_id in (queued, running):
        with sessions() as session:
            assert claim_run(session, run_id, "w2:1") is None
    assert [run_row(sessions, i).status for i in (queued, running)] == ["cancelled"] * 2
    assert [run_row(sessions, i).stored_bytes for i in (queued, running)] == \
        [0, 4 * usage.HISTORY_ROW_BYTES]


# ------------------------------------------------------------------------ dashboard


def test_delete_from_the_run_page(app, client, token, sessions, client_of):
    browser = app.test_client()
    log_in(browser, token)
    run_id = submit(client, epochs=5)
    page = browser.get(f"/runs/{run_id}").text
    assert f"/runs/{run_id}/cancel" in page and f"/runs/{run_id}/delete" not in page
    csrf = csrf_of(page)
    # a queued run stays, with the reason on its page
    response = browser.post(f"/runs/{run_id}/delete", data={"csrf_token": csrf})
    assert response.status_code == 302 and response.location.endswith(f"/runs/{run_id}")
    assert "cancel it first" in browser.get(f"/runs/{run_id}").text

    finish(sessions, run_id)
    page = browser.get(f"/runs/{run_id}").text
    assert f'action="/runs/{run_id}/delete"' in page and f"/runs/{run_id}/cancel" not in page
    assert browser.post(f"/runs/{run_id}/delete", data={}).status_code == 400  # no CSRF
    assert run_row(sessions, run_id) is not None
    theirs = submit(client_of("bob"), epochs=5)
    finish(sessions, theirs)
    assert browser.post(f"/runs/{theirs}/delete", data={"csrf_token": csrf}).status_code == 404

    response = browser.post(f"/runs/{run_id}/delete", data={"csrf_token": csrf})
    assert response.status_code == 302 and response.location.endswith("/")
    assert f"run {run_id} deleted" in browser.get(response.location).text
    assert run_row(sessions, run_id) is None and run_row(sessions, theirs) is not None
    assert browser.get(f"/runs/{run_id}").status_code == 404


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli_api(tmp_path_factory):
    """`descent api` on a migrated SQLite file and a queue folder, with no worker."""
    folder = tmp_path_factory.mktemp("delete-api")
    process, base_url, log = start_api(folder, **service_env(folder))
    try:
        yield base_url
    finally:
        stop(process, log, within=15)


def cli(base_url: str, *args):
    return invoke(list(args), env={"DESCENT_API_URL": base_url})


@pytest.mark.slow
def test_descent_rm_deletes_finished_runs_and_names_the_rest(cli_api):
    ids = []
    for _ in range(2):
        result = cli(cli_api, "submit", str(XOR_SPEC))
        assert result.exit_code == 0, result.output
        ids.append(int(result.output.split()[2]))
    refused = cli(cli_api, "rm", str(ids[0]))
    assert refused.exit_code == 1
    assert f"run {ids[0]}:" in refused.output and "not_finished" in refused.output
    for run_id in ids:
        assert cli(cli_api, "cancel", str(run_id)).exit_code == 0
    result = cli(cli_api, "rm", str(ids[0]), "987654", str(ids[1]), str(ids[0]))
    assert result.exit_code == 1, result.output
    assert f"deleted run {ids[0]}" in result.output and f"deleted run {ids[1]}" in result.output
    assert "run 987654: run 987654 does not exist (HTTP 404, not_found)" in result.output
    assert "Traceback" not in result.output
    for run_id in ids:
        assert requests.get(f"{cli_api}/api/v1/runs/{run_id}",
                            headers=auth(cli_api)).status_code == 404
    assert cli(cli_api, "rm").exit_code == 2  # an id is required


@pytest.mark.slow
def test_descent_dataset_rm(cli_api):
    response = requests.post(f"{cli_api}/api/v1/datasets", json=AND_GATE,
                             headers=auth(cli_api))
    assert response.status_code == 201, response.text
    result = cli(cli_api, "dataset", "rm", "and-gate")
    assert result.exit_code == 0, result.output
    assert "deleted dataset and-gate" in result.output
    assert requests.get(f"{cli_api}/api/v1/datasets/and-gate",
                        headers=auth(cli_api)).status_code == 404
    builtin = cli(cli_api, "dataset", "rm", "xor")
    assert builtin.exit_code == 1 and "builtin_dataset" in builtin.output
    missing = cli(cli_api, "dataset", "rm", "no/such name")
    assert missing.exit_code == 1 and "HTTP 404, not_found" in missing.output

"""The dashboard's views through the Flask test client: login, CSRF, ownership, the submit
form's messages, the runs table's filters and pages, run and sweep pages and their JSON.
(tests/browser/ drives the same pages in Chromium against a real worker.)"""

import io
import json
import os
import re
import stat

import numpy as np
import pytest

import kernels

from service.dashboard.secret import key_file, secret_key
from service.settings import Settings
from service.store import runs as store_runs
from service.store.arrays import params_to_npz
from service.store.models import Run
from service.store.tokens import live_token, revoke_token

XOR = {"dataset": "xor", "layers": [2, 4, 1], "epochs": 5, "batch_mode": "full"}
FORM = {"dataset": "xor", "layers": "2, 4, 1", "activation": "sigmoid", "loss": "mse",
        "learning_rate": "0.5", "batch_mode": "full", "batch_size": "4", "epochs": "20",
        "seed": "3", "name": "from the form"}


def csrf_of(page_text: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page_text).group(1)


def errors_of(page_text: str) -> dict:
    """{field: message} shown beside the form's fields."""
    return {name: message.replace("&#39;", "'") for name, message in
            re.findall(r'<p class="error" id="error-([\w]+)">([^<]*)</p>', page_text)}


def log_in(browser, token: str):
    response = browser.post("/login", data={"token": token,
                                            "csrf_token": csrf_of(browser.get("/login").text)})
    assert response.status_code == 302, response.text
    return response


@pytest.fixture
def browser(app):
    """A test client without an Authorization header: a browser, not an API client."""
    return app.test_client()


@pytest.fixture
def alice(browser, token):
    """The browser, logged in as alice."""
    log_in(browser, token)
    return browser


@pytest.fixture
def store(sessions):
    """store() is a new session on the test's database, as the app's (each short-lived:
    use it in a ``with`` block)."""
    return sessions


def get_run(store, run_id: int) -> Run:
    with store() as session:
        return session.get(Run, run_id)


def finish(store, run_id: int, epochs: int = 5) -> None:
    """Train nothing, but store what a worker would: history, summary, parameters."""
    with store() as session:
        _finish(session, run_id, epochs)


def _finish(session, run_id: int, epochs: int) -> None:
    run = store_runs.claim_run(session, run_id, "test-worker")
    rows = [{"run_id": run_id, "epoch": e, "error": 0.25 / (e + 1), "accuracy": None,
             "val_error": None, "val_accuracy": None, "seconds": 0.01 * e}
            for e in range(epochs + 1)]
    params = params_to_npz({"weights": [np.ones((4, 2)), np.full((1, 4), -0.5)],
                            "biases": [np.zeros(4), np.ones(1)]})
    store_runs.complete_run(session, run_id, run.attempts, rows,
                            {"epochs_done": epochs, "final_error": rows[-1]["error"],
                             "best_error": rows[-1]["error"], "best_epoch": epochs},
                            "succeeded", params={"initial": ("float64", params),
                                                 "final": ("float64", params)})


# ----------------------------------------------------------------------- login, CSRF


def test_every_page_needs_a_login(browser):
    for path in ("/", "/runs/1", "/sweeps", "/sweeps/1", "/submit"):
        response = browser.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"] == f"/login?next={path}"
    for path in ("/ui/runs/1/params-final.npz", "/ui/runs/1/network.svg"):
        assert browser.get(path).status_code == 302, path
    # What the charts poll answers 401, not a login page.
    for path in ("/ui/runs/1/history.json", "/ui/sweeps/1/curves.json"):
        assert browser.get(path).status_code == 401, path
    page = browser.get("/login")
    assert page.status_code == 200 and 'name="token"' in page.text
    # The static files need no login (the login page uses them too).
    assert browser.get("/ui/static/dashboard.css").status_code == 200
    assert browser.get("/ui/static/vendor/chartjs/chart.umd.min.js").status_code == 200


def test_login_keeps_the_user_not_the_token_in_a_strict_cookie(browser, token):
    bad = browser.post("/login", data={"token": "dsc_wrong",
                                       "csrf_token": csrf_of(browser.get("/login").text)})
    assert bad.status_code == 401 and "unknown or revoked token" in bad.text
    response = browser.post("/login?next=/sweeps", data={
        "token": token, "next": "/sweeps", "csrf_token": csrf_of(browser.get("/login").text)})
    assert response.status_code == 302 and response.headers["Location"] == "/sweeps"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("descent_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert token not in cookie and token[4:20] not in cookie
    page = browser.get("/")
    assert page.status_code == 200 and "<span>alice</span>" in page.text


def test_login_redirects_only_within_the_site(app, token):
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        browser = app.test_client()
        response = browser.post("/login", data={
            "token": token, "next": target, "csrf_token": csrf_of(browser.get("/login").text)})
        assert response.headers["Location"] == "/", target


def test_logout_and_revoked_tokens_end_the_session(alice, token, store):
    page = alice.get("/")
    assert page.status_code == 200
    assert alice.post("/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 302
    assert alice.get("/").status_code == 302

    log_in(alice, token)
    assert alice.get("/").status_code == 200
    with store() as session:
        assert revoke_token(session, live_token(session, token).id)
        session.commit()
    response = alice.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_every_post_needs_the_session_csrf_token(alice, browser, app, token):
    page = alice.get("/submit")
    for data in ({}, {"csrf_token": "forged"}):
        assert alice.post("/submit", data={**FORM, **data}).status_code == 400
        assert alice.post("/logout", data=data).status_code == 400
        assert alice.post("/runs/1/cancel", data=data).status_code == 400
    # Another session's token is no good either.
    other = app.test_client()
    log_in(other, token)
    foreign = csrf_of(other.get("/submit").text)
    assert alice.post("/submit", data={**FORM, "csrf_token": foreign}).status_code == 400
    assert alice.get("/").status_code == 200  # still logged in: the logouts were refused
    assert alice.post("/submit", data={**FORM, "csrf_token": csrf_of(page.text)}) \
        .status_code == 302
    # The login form is protected too (login CSRF).
    assert browser.post("/login", data={"token": token}).status_code == 400


# ------------------------------------------------------------------------ ownership


def test_a_user_sees_only_their_own_runs_and_sweeps(alice, client, client_of, store):
    mine = client.post("/api/v1/runs", json={**XOR, "name": "alice's"}).json["id"]
    bob = client_of("bob")
    theirs = bob.post("/api/v1/runs", json={**XOR, "name": "bob's"}).json["id"]
    their_sweep = bob.post("/api/v1/sweeps", json={
        "base": XOR, "grid": {"learning_rate": [0.1, 0.2]}}).json["id"]
    finish(store, theirs)

    table = alice.get("/").text
    assert f'id="run-{mine}"' in table and "alice&#39;s" in table
    assert f'id="run-{theirs}"' not in table and "bob&#39;s" not in table
    assert alice.get("/?where=id%20%3E%200&status=queued&status=succeeded").text \
        .count('<tr id="run-') == 1
    for path in (f"/runs/{theirs}", f"/ui/runs/{theirs}/history.json",
                 f"/ui/runs/{theirs}/history.csv", f"/ui/runs/{theirs}/params-final.npz",
                 f"/ui/runs/{theirs}/network.svg", f"/sweeps/{their_sweep}",
                 f"/ui/sweeps/{their_sweep}/curves.json"):
        assert alice.get(path).status_code == 404, path
    csrf = csrf_of(table)
    assert alice.post(f"/runs/{theirs}/cancel", data={"csrf_token": csrf}).status_code == 404
    assert alice.post(f"/sweeps/{their_sweep}/cancel",
                      data={"csrf_token": csrf}).status_code == 404
    assert f"sweep-{their_sweep}" not in alice.get("/sweeps").text


# ----------------------------------------------------------------------- submit form


def test_the_form_shows_the_api_messages_beside_the_fields(alice, store):
    csrf = csrf_of(alice.get("/submit").text)
    cases = [
        ({"layers": "3, 4, 1"}, "layers", "layers[0] is 3 but dataset 'xor' has 2 features"),
        ({"layers": "two, 4"}, "layers", "whole numbers separated by commas"),
        ({"learning_rate": "fast"}, "learning_rate", "must be a number"),
        ({"learning_rate": "-1"}, "learning_rate", "greater than 0"),
        ({"epochs": "1.5"}, "epochs", "must be a whole number"),
        ({"dataset": "nope"}, "dataset", "no dataset named 'nope'"),
        ({"activation": "swish"}, "activation", "swish"),
    ]
    for change, field, message in cases:
        response = alice.post("/submit", data={**FORM, **change, "csrf_token": csrf})
        assert response.status_code == 422, change
        shown = errors_of(response.text)
        assert message in shown.get(field, ""), (change, shown)
        assert "The run was not submitted" in response.text
        if field in ("layers", "learning_rate", "epochs"):  # what was typed stays
            assert f'value="{change[field]}"' in response.text, change
    with store() as session:
        assert session.query(Run).count() == 0  # nothing was stored or queued

    response = alice.post("/submit", data={**FORM, "csrf_token": csrf})
    assert response.status_code == 302
    run_id = int(response.headers["Location"].rsplit("/", 1)[1])
    run = get_run(store, run_id)
    assert run.owner == "alice" and run.status == "queued" and run.name == "from the form"
    assert (run.spec["layers"], run.spec["learning_rate"], run.spec["epochs"],
            run.spec["seed"], run.spec["batch_mode"]) == ([2, 4, 1], 0.5, 20, 3, "full")
    assert "run {} queued".format(run_id) in alice.get(response.headers["Location"]).text


def test_an_unreachable_broker_is_said_on_the_form(make_client, token, store):
    browser = make_client(broker_url="redis://127.0.0.1:1/0")
    del browser.environ_base["HTTP_AUTHORIZATION"]  # a browser: the session cookie only
    log_in(browser, token)
    response = browser.post("/submit", data={**FORM,
                                             "csrf_token": csrf_of(browser.get("/").text)})
    assert response.status_code == 503
    assert "the broker is unreachable; nothing was queued" in response.text
    assert 'value="2, 4, 1"' in response.text  # the form is kept to submit again
    with store() as session:
        assert session.query(Run).count() == 0


def test_the_form_offers_the_builtins_and_the_users_uploads(alice, client, client_of):
    assert client.post("/api/v1/datasets", json={"name": "and-gate", "X": [[0, 0], [1, 1]],
                                                 "y": [0, 1]}).status_code == 201
    assert client_of("bob").post("/api/v1/datasets", json={
        "name": "bobs-set", "X": [[0], [1]], "y": [0, 1]}).status_code == 201
    page = alice.get("/submit").text
    options = re.findall(r'<option value="([^"]+)"', page.split('id="dataset"')[1]
                         .split("</select>")[0])
    assert set(kernels.BUILTIN_DATASETS) <= set(options)
    assert "and-gate" in options and "bobs-set" not in options


# ------------------------------------------------------------------------ runs table


def test_the_runs_table_filters_sorts_and_pages(alice, client, store):
    ids = [client.post("/api/v1/runs", json={**XOR, "learning_rate": lr}).json["id"]
           for lr in (0.3, 0.1, 0.2)]
    finish(store, ids[0])

    def shown(query: str) -> list[int]:
        page = alice.get("/?" + query)
        assert page.status_code == 200, page.text
        return [int(i) for i in re.findall(r'<tr id="run-(\d+)"', page.text)]

    assert shown("") == sorted(ids, reverse=True)
    assert shown("status=succeeded") == [ids[0]]
    assert shown("status=queued&status=running") == sorted(ids[1:], reverse=True)
    assert shown("order=learning_rate&direction=asc") == [ids[1], ids[2], ids[0]]
    assert shown("where=learning_rate+%3E%3D+0.2") == sorted([ids[0], ids[2]], reverse=True)
    assert shown(f"dataset={get_run(store, ids[0]).dataset_id}&status=succeeded") \
        == [ids[0]]

    first = alice.get("/?order=learning_rate&direction=asc&limit=2")
    assert [int(i) for i in re.findall(r'<tr id="run-(\d+)"', first.text)] == [ids[1], ids[2]]
    next_url = re.search(r'id="next-page" href="([^"]+)"', first.text).group(1)
    second = alice.get(next_url.replace("&amp;", "&"))
    assert [int(i) for i in re.findall(r'<tr id="run-(\d+)"', second.text)] == [ids[0]]
    assert 'id="next-page"' not in second.text and "First page" in second.text

    bad = alice.get("/?where=learning_rate+%3E%3E+1")
    assert bad.status_code == 422
    assert "at character" in errors_of(bad.text)["where"]
    bad_order = alice.get("/?order=color")
    assert bad_order.status_code == 422 and "order" in errors_of(bad_order.text)
    assert alice.get("/?cursor=garbage").status_code == 422


# ------------------------------------------------------------------- run and sweep


def test_a_run_page_its_curve_downloads_and_network(alice, client, store):
    run_id = client.post("/api/v1/runs", json={**XOR, "name": "shown"}).json["id"]
    queued = alice.get(f"/runs/{run_id}")
    assert queued.status_code == 200 and 'data-final="false"' in queued.text
    assert "Cancel" in queued.text and "not stored yet" in queued.text
    assert alice.get(f"/ui/runs/{run_id}/history.json").json == {
        "id": run_id, "status": "queued", "final": False, "epochs": 5, "epochs_done": 0,
        "final_error": None, "best_error": None, "best_epoch": None, "final_accuracy": None,
        "waiting": None, "history": []}
    assert alice.get(f"/ui/runs/{run_id}/params-final.npz").status_code == 404

    finish(store, run_id)
    page = alice.get(f"/runs/{run_id}")
    assert 'data-final="true"' in page.text and 'id="network"' in page.text
    assert "&#34;layers&#34;: [2, 4, 1]" in page.text  # the spec
    curve = alice.get(f"/ui/runs/{run_id}/history.json").json
    assert curve["final"] and curve["status"] == "succeeded"
    assert [p["epoch"] for p in curve["history"]] == list(range(6))
    assert curve["history"][1]["error"] == pytest.approx(0.125)

    npz = alice.get(f"/ui/runs/{run_id}/params-final.npz")
    assert npz.status_code == 200
    assert f"run-{run_id}-final-params.npz" in npz.headers["Content-Disposition"]
    arrays = np.load(io.BytesIO(npz.data))
    assert arrays["W1"].shape == (4, 2) and arrays["B2"].tolist() == [1.0]
    params = json.loads(alice.get(f"/ui/runs/{run_id}/params-initial.json").data)
    assert params["weights"][1] == [[-0.5] * 4] and params["which"] == "initial"
    assert alice.get(f"/ui/runs/{run_id}/params-other.npz").status_code == 404
    csv = alice.get(f"/ui/runs/{run_id}/history.csv").text.splitlines()
    assert csv[0].startswith("epoch,error") and len(csv) == 7
    svg = alice.get(f"/ui/runs/{run_id}/network.svg")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    assert b"<svg" in svg.data[:500]


def test_cancel_from_the_run_page(alice, client, store):
    run_id = client.post("/api/v1/runs", json=XOR).json["id"]
    csrf = csrf_of(alice.get(f"/runs/{run_id}").text)
    response = alice.post(f"/runs/{run_id}/cancel", data={"csrf_token": csrf})
    assert response.status_code == 302
    assert get_run(store, run_id).status == "cancelled"
    page = alice.get(f"/runs/{run_id}").text
    assert "cancel requested" in page and "cancelled" in page


def test_a_sweep_page_its_leaderboard_and_curves(alice, client, store):
    sweep = client.post("/api/v1/sweeps", json={
        "name": "rates", "base": XOR, "grid": {"learning_rate": [0.1, 0.5, 2.0]}}).json
    assert f'id="sweep-{sweep["id"]}"' in alice.get("/sweeps").text
    page = alice.get(f"/sweeps/{sweep['id']}")
    assert page.status_code == 200 and "No run has a final_error yet" in page.text
    run_ids = [run["id"] for run in sweep["runs"]]
    finish(store, run_ids[1])
    page = alice.get(f"/sweeps/{sweep['id']}")
    assert 'id="leaderboard"' in page.text and "<th>learning_rate</th>" in page.text
    assert f'href="/runs/{run_ids[1]}"' in page.text
    curves = alice.get(f"/ui/sweeps/{sweep['id']}/curves.json").json
    assert curves["total"] == 3 and not curves["final"]
    assert [r["id"] for r in curves["runs"]] == sorted(run_ids)
    by_id = {r["id"]: r for r in curves["runs"]}
    assert len(by_id[run_ids[1]]["history"]) == 6 and by_id[run_ids[0]]["history"] == []
    assert "learning_rate=0.5" in by_id[run_ids[1]]["label"]


def test_unknown_pages_answer_html(alice):
    response = alice.get("/runs/987654")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "run 987654 does not exist" in response.text


# ------------------------------------------------------------------- session secret


def test_the_secret_key_is_generated_once_beside_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'descent.db'}"
    settings = Settings.from_env({"DESCENT_DATABASE_URL": url})
    key = secret_key(settings)
    path = key_file(url, settings.token_file)
    assert path == tmp_path / "descent.db.secret-key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secret_key(settings) == key and len(key) == 64
    assert secret_key(Settings.from_env({"DESCENT_DATABASE_URL": url,
                                         "DESCENT_SECRET_KEY": "from-env"})) == "from-env"
    in_memory = Settings(database_url="sqlite://")
    assert secret_key(in_memory) != secret_key(in_memory)
    assert [p.name for p in tmp_path.iterdir()] == ["descent.db.secret-key"]


def test_without_sqlite_the_secret_key_sits_in_the_token_folder(tmp_path):
    url = "postgresql+psycopg://descent@db-host/descent"
    settings = Settings.from_env({"DESCENT_DATABASE_URL": url,
                                  "DESCENT_TOKEN_FILE": str(tmp_path / "tokens" / "token")})
    assert key_file(url, settings.token_file) == tmp_path / "tokens" / "secret-key"
    key = secret_key(settings)
    assert (tmp_path / "tokens" / "secret-key").read_text().strip() == key
    assert stat.S_IMODE(os.stat(tmp_path / "tokens").st_mode) == 0o700

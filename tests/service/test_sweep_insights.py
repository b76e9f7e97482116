"""What mattered in a sweep, through the Flask test client on SQLite and PostgreSQL: the
importance endpoint (grid, random, tpe), its 409s and 404s, the parallel-coordinates and
scatter PNGs, names with ``$`` drawn literally, and the sweep page's card."""

from service.store.models import Sweep, SweepCell
from service.web import plots_sweep
from service import importance

from .conftest import API, error_of
from .test_sweeps import finish
from .test_plots import png_size, PNG_MAGIC

BASE = {"dataset": "xor", "layers": [2, 4, 1], "epochs": 20, "batch_mode": "full"}
GRID = {"base": BASE, "grid": {"learning_rate": [0.01, 0.1, 1.0],
                                "layers": [[2, 4, 1], [2, 8, 1]]}}


def post(client, body):
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def finish_all(sessions, sweep, error_of_config):
    """Finish every run (and the ones freed slots dispatch) with error_of_config(config)."""
    done = set()
    while True:
        with sessions() as session:
            rows = [(c.config, c.run_id) for c in session.query(SweepCell)
                    .filter_by(sweep_id=sweep["id"], dispatched=True)]
        todo = [(config, run_id) for config, run_id in rows if run_id not in done]
        if not todo:
            return
        for config, run_id in todo:
            finish(sessions, run_id, final_error=error_of_config(config))
            done.add(run_id)


def test_importance_of_a_grid_sweep_names_the_field_that_decides(client, sessions):
    sweep = post(client, GRID)
    # the learning rate decides; the layers barely matter
    finish_all(sessions, sweep, lambda c: c["learning_rate"] + 0.001 * c["layers"][1])
    response = client.get(f"{API}/sweeps/{sweep['id']}/importance")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["metric"] == "final_error" and body["runs"] == 6
    assert body["evaluator"] == "PedAnovaImportanceEvaluator"
    assert set(body["importance"]) == {"learning_rate", "layers"}
    assert body["importance"]["learning_rate"] > body["importance"]["layers"]
    assert abs(sum(body["importance"].values()) - 1.0) < 1e-9


def test_importance_of_random_and_tpe_sweeps(client, sessions):
    space = {"learning_rate": {"loguniform": [1e-3, 1.0]}, "epochs": {"int": [5, 30]}}
    rnd = post(client, {"base": BASE, "random": space, "trials": 12, "seed": 3})
    tpe = post(client, {"base": BASE, "search": "tpe", "space": space, "trials": 12,
                        "seed": 3, "max_concurrency": 3})
    for sweep in (rnd, tpe):
        finish_all(sessions, sweep, lambda c: c["learning_rate"])
        body = client.get(f"{API}/sweeps/{sweep['id']}/importance").get_json()
        assert body["runs"] == 12, body
        assert body["importance"]["learning_rate"] > body["importance"]["epochs"], body
    with sessions() as session:
        data = importance.sweep_points(session, session.get(Sweep, tpe["id"]))
    assert [(a.name, a.scale) for a in data.axes] == [("epochs", "linear"),
                                                      ("learning_rate", "log")]


def test_too_few_runs_or_nothing_varied_is_a_409_and_others_get_404(client, sessions,
                                                                   client_of):
    sweep = post(client, GRID)
    error = error_of(client.get(f"{API}/sweeps/{sweep['id']}/importance"), 409)
    assert "at least 2" in error["message"]
    finish(sessions, sweep["runs"][0]["id"], final_error=0.2)
    error_of(client.get(f"{API}/sweeps/{sweep['id']}/importance"), 409)
    # the PNGs still answer: an empty chart saying why
    for path in ("parallel.png", "scatter.png?field=learning_rate"):
        response = client.get(f"{API}/sweeps/{sweep['id']}/{path}")
        assert response.status_code == 200 and response.get_data()[:8] == PNG_MAGIC
    bob = client_of("bob")
    for path in ("importance", "parallel.png", "scatter.png?field=learning_rate"):
        error_of(bob.get(f"{API}/sweeps/{sweep['id']}/{path}"), 404)
        error_of(client.get(f"{API}/sweeps/{sweep['id'] + 1000}/{path}"), 404)
    one = post(client, {"base": BASE, "grid": {"learning_rate": [0.1]}})
    finish(sessions, one["runs"][0]["id"])
    error_of(client.get(f"{API}/sweeps/{one['id']}/importance"), 409)


def test_scatter_field_is_checked(client, sessions):
    sweep = post(client, GRID)
    for query in ("", "?field=colour", "?field=" + "x" * 201):
        error = error_of(client.get(f"{API}/sweeps/{sweep['id']}/scatter.png{query}"), 422)
        assert "field" in error["fields"]


def test_charts_are_pngs_and_names_with_dollars_are_drawn_literally(client, sessions):
    sweep = post(client, {**GRID, "name": "costs in $ and $\\frac{1}{"})
    finish_all(sessions, sweep, lambda c: c["learning_rate"])
    # A field named with dollars, put in through the store (the API only takes spec fields).
    odd = "lr $x$ {"
    with sessions() as session:
        row = session.get(Sweep, sweep["id"])
        row.space = {odd if k == "learning_rate" else k: v for k, v in row.space.items()}
        for cell in session.query(SweepCell).filter_by(sweep_id=sweep["id"]):
            cell.config = {odd if k == "learning_rate" else k: v
                           for k, v in cell.config.items()}
        session.commit()
    body = client.get(f"{API}/sweeps/{sweep['id']}/importance").get_json()
    assert set(body["importance"]) == {odd, "layers"}
    parallel = client.get(f"{API}/sweeps/{sweep['id']}/parallel.png")
    assert parallel.status_code == 200 and parallel.mimetype == "image/png"
    assert png_size(parallel.get_data()) == (900, 480)
    for name in (odd, "layers"):
        response = client.get(f"{API}/sweeps/{sweep['id']}/scatter.png",
                              query_string={"field": name})
        assert response.status_code == 200 and png_size(response.get_data()) == (640, 420)
    with sessions() as session:
        data = importance.sweep_points(session, session.get(Sweep, sweep["id"]))
    fig = plots_sweep.parallel_figure(data)
    texts = [t for t in fig.axes[0].texts]
    assert odd + " (log)" in [t.get_text() for t in texts]
    assert all(not t.get_parse_math() for t in texts)
    assert fig.axes[0].title.get_text().startswith(f"sweep {sweep['id']}: costs in $")
    assert not fig.axes[0].title.get_parse_math()
    runs = [line for line in fig.axes[0].get_lines() if (line.get_gid() or "").startswith("run-")]
    assert len(runs) == 6
    scatter = plots_sweep.scatter_figure(data, odd)
    assert scatter.axes[0].get_xscale() == "log"
    assert scatter.axes[0].xaxis.label.get_text() == odd + " (log scale)"
    assert not scatter.axes[0].xaxis.label.get_parse_math()
    categories = plots_sweep.scatter_figure(data, "layers")
    assert [t.get_text() for t in categories.axes[0].get_xticklabels()] == ["[2,4,1]",
                                                                            "[2,8,1]"]


def test_the_endpoints_are_in_the_openapi_document(client):
    paths = client.get(f"{API}/openapi.json").get_json()["paths"]
    for path in ("/api/v1/sweeps/{sweep_id}/importance", "/api/v1/sweeps/{sweep_id}/parallel.png",
                 "/api/v1/sweeps/{sweep_id}/scatter.png"):
        assert path in paths


def test_the_sweep_page_shows_the_importance_and_the_charts(app, token, client, sessions):
    from .test_dashboard import log_in

    sweep = post(client, GRID)
    browser = app.test_client()
    log_in(browser, token)
    page = browser.get(f"/sweeps/{sweep['id']}").text
    assert 'id="importance-note"' in page and "at least 2" in page
    finish_all(sessions, sweep, lambda c: c["learning_rate"])
    page = browser.get(f"/sweeps/{sweep['id']}").text
    assert 'id="importance"' in page and "<code>learning_rate</code>" in page
    assert page.index("<code>learning_rate</code>") < page.index("<code>layers</code>")
    assert f'/ui/sweeps/{sweep["id"]}/parallel.png' in page
    for path in ("parallel.png", "scatter.png?field=layers"):
        response = browser.get(f"/ui/sweeps/{sweep['id']}/{path}")
        assert response.status_code == 200 and response.get_data()[:8] == PNG_MAGIC
    assert browser.get(f"/ui/sweeps/{sweep['id']}/scatter.png?field=colour").status_code == 404

"""Error-curve plots (PNG) of runs and sweeps, the annotated network (SVG) and `descent plot`,
through the Flask test client on SQLite and PostgreSQL, and the plot functions' figures."""

import io
import re
import xml.etree.ElementTree as ET

import numpy as np
import requests
from click.testing import CliRunner
from flask import g

from service.cli import cli
from service.cli import plots as cli_plot
from service.cli.client import Client
from service.store import Epoch, Run
from service.web import plots

from .conftest import API, error_of, submit, train_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_NS = "{http://www.w3.org/2000/svg}"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def sweep_of(client, sessions, rates, epochs=20, train=True) -> dict:
    """A learning-rate grid sweep on xor, each run trained in the test (no worker)."""
    body = {"base": {"dataset": "xor", "layers": [2, 3, 1], "epochs": epochs, "batch_mode": "full"},
            "grid": {"learning_rate": rates}}
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 202, response.get_json()
    sweep = response.get_json()
    if train:
        for run in sweep["runs"]:
            train_run(sessions, run["id"])
    return sweep


def curve_lines(fig):
    """The labelled lines of a figure (diverged markers and the like are labelled _...)."""
    (ax,) = fig.axes
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


# ------------------------------------------------------------------------ error curves


def test_a_run_plot_is_a_png_of_its_error_curve(client, sessions):
    run = submit(client, epochs=30)
    train_run(sessions, run["id"])
    response = client.get(f"{API}/runs/{run['id']}/plot.png")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    data = response.get_data()
    assert png_size(data) == (800, 480)
    assert len(data) > 10_000
    log = client.get(f"{API}/runs/{run['id']}/plot.png?log=true")
    assert log.status_code == 200 and png_size(log.get_data()) == (800, 480)
    assert log.get_data() != data
    # validation error never recorded: still a picture, saying so
    val = client.get(f"{API}/runs/{run['id']}/plot.png?metric=val_error")
    assert val.status_code == 200 and val.get_data()[:8] == PNG_MAGIC
    # a queued run has no epochs yet: an empty plot, not an error
    queued = submit(client)
    assert client.get(f"{API}/runs/{queued['id']}/plot.png").status_code == 200


def test_plot_arguments_are_checked(client):
    run = submit(client)
    for query in ("metric=accuracy", "log=maybe", "colour=red"):
        error = error_of(client.get(f"{API}/runs/{run['id']}/plot.png?{query}"), 422)
        assert query.split("=")[0] in error["fields"]


def test_plots_of_missing_and_foreign_runs_and_sweeps_are_404(client, client_of, sessions):
    run = submit(client)
    sweep = sweep_of(client, sessions, [0.1], train=False)
    for path in (f"/runs/{run['id'] + 1000}/plot.png", f"/runs/{run['id'] + 1000}/network.svg",
                 f"/sweeps/{sweep['id'] + 1000}/plot.png", f"/runs/{2**63}/plot.png"):
        error_of(client.get(API + path), 404)
    bob = client_of("bob")
    for path in (f"/runs/{run['id']}/plot.png", f"/runs/{run['id']}/network.svg",
                 f"/sweeps/{sweep['id']}/plot.png"):
        error_of(bob.get(API + path), 404)


def test_a_sweep_plot_has_one_line_per_run_labelled_by_the_varied_field(client, sessions, app):
    rates = [0.01, 0.5, 5.0]
    sweep = sweep_of(client, sessions, rates)
    response = client.get(f"{API}/sweeps/{sweep['id']}/plot.png?log=true")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert png_size(response.get_data()) == (800, 480)
    # The figure the endpoint draws, from the same curves.
    from service.api.plots import sweep_curves

    with app.test_request_context():
        g.user = "alice"  # the token's user, as the auth hook would set it
        curves, title = sweep_curves(sweep["id"], "error")
    assert title.startswith(f"sweep {sweep['id']}")
    fig = plots.error_curves_figure(curves, log=True)
    lines = curve_lines(fig)
    assert [line.get_label() for line in lines] == [f"learning_rate={r:g}" for r in rates]
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [f"learning_rate={r:g}" for r in rates]
    assert fig.axes[0].get_yscale() == "log"
    # each line is that run's stored history
    for line, run in zip(lines, sorted(sweep["runs"], key=lambda r: r["id"])):
        history = client.get(f"{API}/runs/{run['id']}/history").get_json()["history"]
        assert list(line.get_xdata()) == [row["epoch"] for row in history]
        np.testing.assert_allclose(line.get_ydata(), [row["error"] for row in history])


def test_a_diverged_run_ends_in_a_marked_x(client, sessions):
    run = submit(client, epochs=5)
    train_run(sessions, run["id"])
    with sessions() as session:
        row = session.get(Run, run["id"])
        row.status = "diverged"
        session.add(Epoch(run_id=run["id"], epoch=6, error=None, seconds=0.01))
        session.commit()
    history = client.get(f"{API}/runs/{run['id']}/history").get_json()["history"]
    curve = plots.curve_of(history, "lr=5", status="diverged")
    assert curve.diverged and curve.epochs == list(range(6))
    fig = plots.error_curves_figure([curve, plots.Curve("ok", [0, 1], [0.3, 0.2])])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["diverged"]
    assert len(curve_lines(fig)) == 2
    markers = [line for line in ax.get_lines() if line.get_label() == "_diverged"]
    assert len(markers) == 1 and list(markers[0].get_xdata()) == [5]
    # a missing last error means divergence even without the status
    assert plots.curve_of(history, "x").diverged
    assert not plots.curve_of(history[:-1], "x").diverged
    assert client.get(f"{API}/runs/{run['id']}/plot.png").status_code == 200


def test_a_linear_axis_keeps_the_other_curves_readable_when_one_diverges():
    fine = plots.Curve("lr=0.1", list(range(50)), list(np.linspace(0.3, 0.05, 50)))
    blown = plots.Curve("lr=10", list(range(20)), [0.3 * 10 ** k for k in range(20)], True)
    ax = plots.error_curves_figure([fine, blown]).axes[0]
    assert ax.get_ylim()[1] < 1.0


def test_labels_name_the_fields_that_differ():
    assert plots.config_label({"learning_rate": 0.001, "batch_size": 8}) == \
        "batch_size=8, learning_rate=0.001"
    assert plots.config_label({"layers": [2, 8, 1]}) == "layers=[2,8,1]"
    specs = [{"learning_rate": 0.1, "epochs": 5, "name": "a"},
             {"learning_rate": 1.0, "epochs": 5, "name": "b"}]
    assert plots.varied_fields(specs) == ["learning_rate"]


# ------------------------------------------------------------------------- the network


def svg_root(response):
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "image/svg+xml"
    return ET.fromstring(response.get_data())


def groups(root) -> dict:
    return {g.get("id"): g for g in root.iter(f"{SVG_NS}g") if g.get("id")}


def stroke_of(group) -> str:
    path = group.find(f".//{SVG_NS}path")
    return re.search(r"stroke: (#[0-9a-f]{6})", path.get("style")).group(1)


def test_the_network_svg_labels_layers_and_colours_edges_by_weight_sign(client, sessions):
    run = submit(client, layers=[2, 3, 1], epochs=20)
    error_of(client.get(f"{API}/runs/{run['id']}/network.svg"), 409)
    train_run(sessions, run["id"])
    root = svg_root(client.get(f"{API}/runs/{run['id']}/network.svg"))
    ids = groups(root)
    assert {"layer-X", "layer-h_i-h_o", "layer-y_i-yhat", "weights-W1", "weights-W2"} <= set(ids)
    assert {f"unit-label-X-{k}" for k in (1, 2)} | {f"unit-label-h_i-h_o-{k}" for k in (1, 2, 3)} \
        <= set(ids)
    assert "h_i → h_o" in root.find(f"{SVG_NS}desc").text
    params = client.get(f"{API}/runs/{run['id']}/params").get_json()
    signs = {plots.POSITIVE: 1, plots.NEGATIVE: -1}
    for l, W in enumerate(params["weights"], start=1):
        for o, row in enumerate(W, start=1):
            for i, w in enumerate(row, start=1):
                assert signs[stroke_of(ids[f"edge-W{l}-{o}-{i}"])] == np.sign(w), (l, o, i)
    # the initial parameters on request; they differ from the final ones
    initial = client.get(f"{API}/runs/{run['id']}/network.svg?which=initial")
    assert initial.status_code == 200 and initial.get_data() != \
        client.get(f"{API}/runs/{run['id']}/network.svg").get_data()
    error_of(client.get(f"{API}/runs/{run['id']}/network.svg?which=best"), 422)


def test_a_wide_network_is_drawn_elided(client, sessions):
    run = submit(client, layers=[2, 30, 1], epochs=2)
    train_run(sessions, run["id"])
    ids = set(groups(svg_root(client.get(f"{API}/runs/{run['id']}/network.svg?which=final"))))
    assert "elided-h_i-h_o-19" in ids  # 30 units: 5 + "⋮ 19 more" + 6
    hidden = {int(i.rsplit("-", 1)[1]) for i in ids if i.startswith("unit-label-h_i-h_o-")}
    assert hidden == {1, 2, 3, 4, 5, 25, 26, 27, 28, 29, 30}
    assert not any(i.startswith("elided-X") for i in ids)


def test_deeper_networks_get_per_layer_labels():
    params = {"weights": [np.ones((4, 3)), -np.ones((5, 4)), np.ones((2, 5))],
              "biases": [np.zeros(4), np.zeros(5), np.zeros(2)]}
    root = ET.fromstring(plots.network_svg(params, title="deep"))
    ids = set(groups(root))
    assert {"layer-X", "layer-h1_i-h1_o", "layer-h2_i-h2_o", "layer-y_i-yhat"} <= ids
    assert "layer-h_i-h_o" not in ids
    assert stroke_of(groups(root)["edge-W2-1-1"]) == plots.NEGATIVE
    assert root.find(f"{SVG_NS}title").text == "deep"


# ----------------------------------------------------------------------- descent plot


class FlaskAdapter(requests.adapters.BaseAdapter):
    """requests' transport into a Flask test client: the CLI's API client talks to the app
    in-process."""

    def __init__(self, test_client):
        super().__init__()
        self.test_client = test_client

    def send(self, request, **kwargs):
        url = requests.utils.urlparse(request.url)
        answer = self.test_client.open(url.path, method=request.method, query_string=url.query,
                                       data=request.body, headers=dict(request.headers))
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = requests.structures.CaseInsensitiveDict(answer.headers)
        response.raw = io.BytesIO(answer.get_data())
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


def test_descent_plot_draws_runs_and_a_sweep(client, sessions, monkeypatch, tmp_path):
    session = requests.Session()
    session.mount("http://descent.test", FlaskAdapter(client))

    def api(url=None):  # token="": the test client sends alice's token already
        return Client("http://descent.test", session=session, token="")

    monkeypatch.setattr(cli_plot, "client_for", lambda settings, api_url=None: api())
    sweep = sweep_of(client, sessions, [0.1, 1.0], epochs=10)
    one, two = (submit(client, epochs=5, learning_rate=lr) for lr in (0.1, 0.2))
    for run in (one, two):
        train_run(sessions, run["id"])
    runs = [one["id"], two["id"]]
    out = tmp_path / "runs.png"
    result = CliRunner().invoke(cli, ["plot", *map(str, runs), "-o", str(out), "--log"])
    assert result.exit_code == 0, result.output
    assert "2 curves" in result.output and png_size(out.read_bytes()) == (800, 480)
    curves, title = cli_plot.curves_for(api(), runs)
    assert [c.label for c in curves] == [f"run {one['id']}: learning_rate=0.1",
                                         f"run {two['id']}: learning_rate=0.2"]
    assert all(len(c.values) == 6 for c in curves)
    with monkeypatch.context():
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(cli, ["plot", "--sweep", str(sweep["id"])])
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"sweep-{sweep['id']}.png").read_bytes()[:8] == PNG_MAGIC
    curves, _ = cli_plot.curves_for(api(), [], sweep["id"])
    assert [c.label for c in curves] == ["learning_rate=0.1", "learning_rate=1"]
    assert CliRunner().invoke(cli, ["plot"]).exit_code == 2
    missing = CliRunner().invoke(cli, ["plot", str(runs[1] + 100), "-o", str(out)])
    assert missing.exit_code == 1 and "not_found" in missing.output

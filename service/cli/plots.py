"""``descent plot ID... [-o FILE.png] [--log] [--sweep ID]``: error curves of runs, drawn
from their histories (fetched through the API) with service.web.plots."""

from __future__ import annotations

from pathlib import Path

import click

from service.web import plots
from service.cli.client import Client
from service.cli.clientcommand import ClientCommand, api_url_option, client_for
from service.cli.context import CONTEXT, pass_settings
from service.cli.output import console

MAX_POINTS = 2000


def history_of(client: Client, run_id: int, max_points: int = MAX_POINTS) -> list[dict]:
    """A run's history rows, at most ``max_points`` of them (always the first, last, best)."""
    body = client.request("GET", f"/runs/{int(run_id)}/history",
                          params={"max_points": max_points})
    return body["history"]


def curves_for(client: Client, run_ids, sweep_id=None, metric: str = "error"):
    """(curves, title): the sweep's runs labelled by its varied fields, then the given runs
    labelled by the spec fields in which they differ."""
    curves, titles = [], []
    if sweep_id is not None:
        sweep = client.get_sweep(sweep_id)
        runs = sorted(sweep.get("runs") or [], key=lambda r: r["id"])
        for run in runs:
            label = plots.config_label(run.get("config") or {}) or f"run {run['id']}"
            curves.append(plots.curve_of(history_of(client, run["id"]), label, metric,
                                         run["status"]))
        titles.append(f"sweep {sweep['id']}" + (f": {sweep['name']}" if sweep.get("name")
                                                 else ""))
    runs = [client.get_run(run_id) for run_id in run_ids]
    varied = plots.varied_fields([run["spec"] for run in runs]) if len(runs) > 1 else []
    for run in runs:
        fields = {name: run["spec"].get(name) for name in varied}
        label = f"run {run['id']}" + (f": {plots.config_label(fields)}" if fields else "")
        curves.append(plots.curve_of(history_of(client, run["id"]), label, metric,
                                     run["status"]))
    if runs:
        titles.append("runs " + ", ".join(str(run["id"]) for run in runs) if len(runs) > 1
                      else f"run {runs[0]['id']} ({runs[0]['status']})")
    return curves, "; ".join(titles)


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="Draw the error curves of runs or a sweep into a PNG file.")
@click.argument("run_ids", nargs=-1, type=int, metavar="ID...")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              default=None, metavar="FILE.png",
              help="Where to write the PNG (default: run-ID[-ID...].png or sweep-ID.png).")
@click.option("--log", "log_scale", is_flag=True, help="A log-scale error axis.")
@click.option("--sweep", "sweep_id", type=int, metavar="ID",
              help="Every run of this sweep, labelled by the fields it varies.")
@click.option("--metric", type=click.Choice(("error", "val_error")), default="error",
              show_default=True, help="The training or the validation error.")
@api_url_option
@pass_settings
def plot(settings, run_ids, output, log_scale, sweep_id, metric, api_url):
    """Draw the error per epoch of runs (one line each), or with --sweep of a sweep's
    runs, into a PNG file: the same picture as GET /runs/{id}/plot.png and
    /sweeps/{id}/plot.png. Diverged runs end in an x marked "diverged".

    \b
    Examples:
      descent plot 3 -o run3.png
      descent plot 4 5 6 --log            # lines labelled by the fields that differ
      descent plot --sweep 2 -o lr.png     # learning_rate=0.01, learning_rate=0.1, ...
    """
    if not run_ids and sweep_id is None:
        raise click.UsageError("give run IDs, --sweep ID, or both")
    client = client_for(settings, api_url)
    curves, title = curves_for(client, run_ids, sweep_id, metric)
    if output is None:
        output = (f"sweep-{sweep_id}.png" if sweep_id is not None and not run_ids
                  else "run-" + "-".join(map(str, run_ids)) + ".png")
    png = plots.error_curves_png(curves, log=log_scale, metric=metric, title=title)
    Path(output).write_bytes(png)
    console().print(f"wrote {output} ({len(curves)} curve{'s' if len(curves) != 1 else ''})")

"""``descent sweep SWEEP.json [--wait] [--preview]``: submit a sweep, follow it, show the
leaderboard."""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape
from rich.table import Table

from service.cli.clientcommand import ClientCommand, api_url_option, client_for
from service.cli.context import CONTEXT, pass_settings
from service.cli.follow import follow_sweep
from service.cli.output import EXIT_FAILED, EXIT_INTERRUPTED, console, fmt_number, styled_status
from service.cli.specfile import load_spec

METRICS = ("final_error", "best_error", "final_val_error", "final_accuracy")


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def configurations_table(preview: dict) -> Table:
    """The configurations a sweep would run, one row each (``--preview``)."""
    configs = [c["config"] for c in preview["configurations"]]
    names = sorted({name for config in configs for name in config})
    table = Table(show_edge=False, title=f"{preview['count']} configurations")
    table.add_column("#", justify="right")
    for name in names:
        table.add_column(name)
    for c in preview["configurations"]:
        table.add_row(str(c["position"]), *[_value(c["config"].get(n, "")) for n in names])
    return table


def describe_kind(sweep: dict) -> str:
    """A sweep's search kind as the CLI prints it: ``grid``, ``random``, or a model-based
    search with its runs so far and budget (``tpe, 12 of 50 runs``)."""
    if sweep.get("kind") in ("tpe", "cmaes"):
        return f"{sweep['kind']}, {sweep['total']} of {sweep['trials']} runs"
    return str(sweep.get("kind"))


def leaderboard_table(sweep: dict, metric: str) -> Table:
    """A sweep's runs ranked by ``metric``, with their configurations and results; the
    validation error, and how runs stopped on a plateau, when any run has them."""
    names = sorted({name for run in sweep["runs"] for name in run["config"]})
    runs = sweep["runs"]
    with_val = any(run.get("final_val_error") is not None for run in runs)
    with_plateau = any((run.get("spec") or {}).get("stop_on_plateau") or run.get("stop_reason")
                       for run in runs)
    table = Table(show_edge=False, title=f"sweep {sweep['id']} ({describe_kind(sweep)}) "
                                         f"leaderboard by {metric}")
    table.add_column("rank", justify="right")
    table.add_column("run", justify="right")
    for name in names:
        table.add_column(name)
    columns = ["status", "epochs", "final error", "best error"]
    columns += ["val error"] * with_val + ["accuracy"] + ["best epoch", "stop"] * with_plateau
    for column in columns:
        table.add_column(column, justify="left" if column in ("status", "stop") else "right")
    ranked = {entry["run_id"]: entry["rank"] for entry in sweep["leaderboard"]}
    for run in sorted(runs, key=lambda r: (ranked.get(r["id"], 10**9), r["id"])):
        cells = [styled_status(run["status"]), str(run.get("epochs_done") or 0),
                 fmt_number(run.get("final_error")) or "-",
                 fmt_number(run.get("best_error")) or "-"]
        if with_val:
            cells.append(fmt_number(run.get("final_val_error")) or "-")
        cells.append(fmt_number(run.get("final_accuracy")) or "-")
        if with_plateau:
            best = run.get("best_epoch")
            cells += ["-" if best is None else str(best), escape(run.get("stop_reason") or "-")]
        table.add_row(str(ranked.get(run["id"], "-")), str(run["id"]),
                      *[_value(run["config"].get(n, "")) for n in names], *cells)
    return table


def _runs_text(sweep: dict) -> str:
    if sweep.get("kind") in ("tpe", "cmaes"):
        return describe_kind(sweep)
    return f"{sweep['total']} runs"


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="Submit a sweep; --wait follows it and shows the leaderboard.")
@click.argument("sweep_file", metavar="SWEEP.json",
                type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--wait", "-w", is_flag=True,
              help="Follow the sweep with a progress bar over its runs, then print the "
                   "leaderboard; exit 1 unless the sweep succeeds.")
@click.option("--preview", is_flag=True,
              help="Print the configurations the sweep would run; queue nothing.")
@click.option("--metric", type=click.Choice(METRICS), default="final_error",
              show_default=True, help="What the leaderboard ranks by.")
@api_url_option
@pass_settings
def sweep(settings, sweep_file, wait, preview, metric, api_url):
    """Submit a hyperparameter sweep described by SWEEP.json (`-` reads stdin).

    \b
    A sweep is a base run spec and a grid (every combination), random draws, or a
    model-based search (Optuna's TPE or CMA-ES asks each run as a slot opens):
      {"base": {"dataset": "xor", "layers": [2, 8, 1], "epochs": 500},
       "grid": {"learning_rate": [0.01, 0.1, 1, 10]}, "max_concurrency": 2}
      {"base": {...}, "random": {"learning_rate": {"loguniform": [0.001, 1]},
       "batch_size": {"choice": [8, 32]}}, "trials": 20, "seed": 0}
      {"base": {...}, "search": "tpe", "space": {<as random>}, "trials": 50,
       "seed": 0, "objective": "final" | "best"}
    Optional: "name", "max_concurrency" (tpe/cmaes: 4 unless given), "early_stopping":
    {"min_epochs": 10, "reduction_factor": 3}, "metric": "error" | "val_error" (what
    early stopping compares and tpe/cmaes minimise).
    Any run field can vary, objects and nested fields included, e.g.
      "grid": {"optimizer": ["sgd", "adam"], "learning_rate": [0.01, 0.1],
               "lr_schedule": [{"kind": "constant"}, {"kind": "cosine"}]}
      "random": {"lr_schedule.gamma": {"uniform": [0.5, 0.99]}}
    (see examples/sweep-optimizers.json).

    \b
    Exit codes: 0 submitted (with --wait: the sweep succeeded); 1 it failed or was
    cancelled, or the API is unreachable; 2 the API rejected the sweep (each bad field
    is named) or the file is not a JSON object.
    """
    body = load_spec(sweep_file, ())
    client = client_for(settings, api_url)
    out = console()
    if preview:
        out.print(configurations_table(client.submit_sweep({**body, "preview": True})))
        return
    created = client.submit_sweep(body)
    if not wait:
        out.print(f"submitted sweep {created['id']} ({_runs_text(created)}, "
                  f"{created['status']})")
        return
    out.print(f"submitted sweep {created['id']} ({_runs_text(created)}); following it "
              "(Ctrl-C stops following, not the sweep)")
    try:
        final = follow_sweep(client, created, out)
    except KeyboardInterrupt:
        out.print(f"\nstopped following sweep {created['id']}; it goes on")
        sys.exit(EXIT_INTERRUPTED)
    final = client.get_sweep(final["id"], metric=metric)
    out.print(leaderboard_table(final, metric))
    out.print(f"sweep {final['id']} {escape(final['status'])}")
    if final["status"] != "succeeded":
        sys.exit(EXIT_FAILED)

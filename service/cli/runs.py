"""Using the service over HTTP: ``descent submit``, ``runs``, ``show``, ``cancel``, ``rm``
and ``health``."""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape

from service.cli.client import ApiError
from service.cli.clientcommand import ClientCommand, api_url_option, client_for
from service.cli.context import CONTEXT, pass_settings
from service.cli.follow import follow_run
from service.cli.output import EXIT_FAILED, EXIT_INTERRUPTED, console
from service.cli.runview import print_outcome, print_run, runs_table
from service.cli.specfile import load_spec, parse_pairs


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="Submit a run; --wait follows it.")
@click.argument("spec_file", metavar="SPEC.json", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--wait", "-w", is_flag=True,
              help="Follow the run with a progress bar until it ends; exit 1 unless it succeeds.")
@click.option("--set", "-s", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="Override a spec field; repeatable, applied in order. VALUE is JSON if "
                   "it parses (numbers, true/false/null, objects, lists), else a string: "
                   "-s learning_rate=0.1 -s 'layers=[2,16,1]' -s optimizer=adam "
                   "-s 'lr_schedule={\"kind\": \"cosine\"}'. A dotted FIELD sets one "
                   "field of an object: -s lr_schedule.kind=step -s lr_schedule.step_size=10 "
                   "-s stop_on_plateau.patience=5.")
@click.option("--eval-every", "eval_every", type=click.IntRange(min=1), metavar="K",
              help="Evaluate the whole training set (and validation rows) every K epochs and "
                   "at the last only (spec field eval_every; default 1, every epoch).")
@click.option("--threads", type=click.IntRange(min=1), metavar="N",
              help="Threads the run trains with: large batches split in N parts on N cores, "
                   "else N BLAS threads (spec field threads; default 1; at most the workers' "
                   "cap, DESCENT_MAX_THREADS).")
@api_url_option
@pass_settings
def submit(settings, spec_file, wait, overrides, eval_every, threads, api_url):
    """Submit a training run described by SPEC.json (`-` reads standard input).

    \b
    A spec needs `dataset` and `layers`; everything else has a default, e.g.
      {"dataset": "xor", "layers": [2, 8, 1], "learning_rate": 0.5, "epochs": 2000}
    Optimizers and their fields (API.md section 1b), e.g.
      descent submit examples/xor.json -s optimizer=adam -s learning_rate=0.01 \\
        -s lr_schedule='{"kind": "cosine"}' -s validation_split=0.25 \\
        -s stop_on_plateau='{"metric": "val_error", "patience": 20}'
    A big run evaluated every 10 epochs on two BLAS threads:
      descent submit big.json --eval-every 10 --threads 2
    Prints the run id. With --wait, polls the run about five times a second and ends with
    its final status, errors and accuracy.

    \b
    Exit codes: 0 submitted (with --wait: succeeded); 1 the run failed, diverged or was
    cancelled, or the API is unreachable; 2 the API rejected the spec (each bad field is
    named) or the file is not a JSON object.
    """
    spec = load_spec(spec_file, overrides)
    for name, value in (("eval_every", eval_every), ("threads", threads)):
        if value is not None:
            spec[name] = value
    client = client_for(settings, api_url)
    run = client.submit_run(spec)
    out = console()
    if not wait:
        out.print(f"submitted run {run['id']} ({run['status']})")
        return
    out.print(f"submitted run {run['id']}; following it (Ctrl-C stops following, not the run)")
    try:
        run = follow_run(client, run, out)
    except KeyboardInterrupt:
        out.print(f"\nstopped following run {run['id']}; it goes on: `descent show {run['id']}`"
                  f" or `descent cancel {run['id']}`")
        sys.exit(EXIT_INTERRUPTED)
    print_outcome(out, run)
    if run["status"] not in ("succeeded", "stopped_early"):
        sys.exit(EXIT_FAILED)


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="Query the run history as a table.")
@click.option("--status", "statuses", multiple=True, metavar="STATE",
              help="queued, running, succeeded, failed, diverged, cancelled or stopped_early; "
                   "repeatable or comma-separated.")
@click.option("--dataset", metavar="NAME|ID", help="Runs on this dataset.")
@click.option("--sweep", "sweep_id", type=int, metavar="ID", help="Runs of this sweep.")
@click.option("--optimizer", "optimizers", multiple=True, metavar="NAME",
              help="sgd, momentum, nesterov, adam or adamw; repeatable or comma-separated.")
@click.option("--stop-reason", metavar="REASON",
              help="plateau (runs stop_on_plateau ended early) or none.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Runs with this tag; repeatable (all must match).")
@click.option("--filter", "filters", multiple=True, metavar="PARAM=VALUE",
              help="Any other GET /runs query parameter, e.g. final_error_max=0.01 or "
                   "learning_rate_min=0.1 (FIELD_min/FIELD_max for learning_rate, batch_size, "
                   "epochs, final_error, best_error); repeatable.")
@click.option("--where", metavar="EXPR",
              help="A filter expression, ANDed with the other filters: comparisons "
                   "(= != < <= > >=), in (...), not, and, or and parentheses over status, "
                   "dataset, sweep_id, name, batch_mode, optimizer, stop_reason, tag.KEY and "
                   "the numeric "
                   "and time fields, e.g. 'status in (succeeded, diverged) and "
                   "optimizer in (adam, adamw) and (learning_rate >= 0.1 "
                   "or tag.team = \"vision\") and created_at >= \"2026-11-01\"'.")
@click.option("--order-by", default="-id", show_default=True, metavar="FIELD",
              help="id, created_at, started_at, finished_at, learning_rate, batch_size, "
                   "epochs, seed, epochs_done, final_error, best_error, best_epoch, "
                   "final_accuracy, final_val_error, sweep_id, batch_mode, optimizer or "
                   "stop_reason; '-' first for "
                   "descending; runs without a value come last.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1),
              help="Show at most this many runs.")
@click.option("--all", "everything", is_flag=True, help="Show every matching run (pages through).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON lines.")
@api_url_option
@pass_settings
def runs(settings, statuses, dataset, sweep_id, optimizers, stop_reason, tags, filters, where,
         order_by, limit, everything, as_json, api_url):
    """Query the run history as a table, newest first.

    \b
    Examples:
      descent runs --status running,queued
      descent runs --dataset moons --order-by final_error --limit 5
      descent runs --tag experiment=lr-scan --filter final_error_max=0.05 --all
      descent runs --where 'final_error < 0.05 and (batch_mode = sgd or epochs >= 1000)'
      descent runs --optimizer adam,adamw --stop-reason plateau --order-by best_epoch
    """
    params = query_params(statuses, dataset, sweep_id, tags, filters, where, order_by)
    if optimizers:
        params["optimizer"] = _joined(optimizers)
    if stop_reason:
        params["stop_reason"] = stop_reason
    found, cursor = fetch_runs(client_for(settings, api_url), params, limit, everything)
    out = console()
    if as_json:
        for run in found:
            click.echo(json.dumps(run))
        return
    if not found:
        out.print("No runs match.")
        return
    out.print(runs_table(found))
    if cursor and not everything:
        out.print(f"[dim]{len(found)} shown; more may match: raise --limit or use --all.[/]")



def query_params(statuses, dataset, sweep_id, tags, filters, where, order_by) -> dict:
    """The GET /runs query parameters of the options of ``descent runs``."""
    params = {**parse_pairs(filters, "--filter"),
              **{f"tag.{k}": v for k, v in parse_pairs(tags, "--tag").items()}}
    if statuses:
        params["status"] = _joined(statuses)
    if dataset:
        params["dataset"] = dataset
    if sweep_id is not None:
        params["sweep_id"] = sweep_id
    if where is not None:
        params["where"] = where
    params["order_by"] = order_by
    return params


def _joined(groups) -> str:
    """Repeated and comma-separated option values as one comma-separated list."""
    return ",".join(s.strip() for group in groups for s in group.split(",") if s.strip())


def fetch_runs(client, params: dict, limit: int, everything: bool) -> tuple[list, object]:
    """(runs, next cursor): ``limit`` runs, or with ``everything`` all, page by page."""
    found, cursor = [], None
    while True:
        size = 500 if everything else min(500, limit - len(found))
        page = client.list_runs(**params, limit=size, cursor=cursor)
        found += page["runs"]
        cursor = page.get("next_cursor")
        if not cursor or not page["runs"] or (not everything and len(found) >= limit):
            return found, cursor


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="One run with its spec and history.")
@click.argument("run_id", type=int, metavar="ID")
@click.option("--history", "everything", is_flag=True, help="Every epoch, not a compact history.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run and its history as one JSON object.")
@api_url_option
@pass_settings
def show(settings, run_id, everything, as_json, api_url):
    """One run: its state, spec, where it trained (its environment), the verdict on it and
    its rerun if there is one (`descent verify`), and a compact history (first, 1, 10,
    100, ... epochs, the best and the last)."""
    client = client_for(settings, api_url)
    run = client.get_run(run_id)
    history = client.history(run_id)
    verdict = run_verification(client, run_id)
    if as_json:
        click.echo(json.dumps({**run, "history": history, "verification": verdict}, indent=2))
        return
    print_run(console(), run, history, everything, verdict=verdict)


def run_verification(client, run_id: int) -> dict | None:
    """The verdict on the run and its rerun (GET /runs/{id}/verification), None when it has
    no rerun and is none."""
    try:
        return client.verification(run_id)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="Cancel a queued or running run.")
@click.argument("run_id", type=int, metavar="ID")
@click.option("--sweep", "is_sweep", is_flag=True,
              help="ID is a sweep: cancel all of its queued and running runs.")
@api_url_option
@pass_settings
def cancel(settings, run_id, is_sweep, api_url):
    """Cancel a queued or running run (a running one stops at its next chunk and keeps its
    history), or with --sweep a whole sweep."""
    if is_sweep:
        sweep = client_for(settings, api_url).cancel_sweep(run_id)
        console().print(f"cancel requested for sweep {sweep['id']} ({sweep['status']})")
        return
    run = client_for(settings, api_url).cancel_run(run_id)
    console().print(f"cancel requested for run {run['id']} ({run['status']})")


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="Delete finished runs with their history and parameters.")
@click.argument("run_ids", type=int, nargs=-1, required=True, metavar="ID...")
@api_url_option
@pass_settings
def rm(settings, run_ids, api_url):
    """Delete finished runs (succeeded, failed, diverged, cancelled or stopped early) with
    their history and parameters, freeing their bytes from your DESCENT_MAX_USER_BYTES
    quota. A queued or running run is refused: `descent cancel ID` first.

    \b
    Exit codes: 0 every run deleted; 1 some could not be (each is named, the others are
    still deleted).
    """
    client = client_for(settings, api_url)
    out, err = console(), console(stderr=True)
    failed = False
    for run_id in dict.fromkeys(run_ids):  # each once, in the order given
        try:
            client.delete_run(run_id)
        except ApiError as exc:
            if exc.status == 401:
                raise  # the same for every run: reported once, as for any command
            failed = True
            err.print(f"[bold red]error:[/] run {run_id}: {escape(exc.message)} "
                      f"(HTTP {exc.status}, {exc.code})", soft_wrap=True)
        else:
            out.print(f"deleted run {run_id}")
    if failed:
        sys.exit(EXIT_FAILED)


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="Check the API, database, broker and workers.")
@api_url_option
@pass_settings
def health(settings, api_url):
    """Check that the API answers and reaches its database, broker and workers.
    Exit 0 when healthy enough to take runs (database and broker up), else 1."""
    body = client_for(settings, api_url, timeout=5).health()
    out = console()
    for key in ("api", "database", "broker"):
        ok = bool(body.get(key))
        out.print(f"{key:9} {'[green]ok[/]' if ok else '[red]unreachable[/]'}")
    workers, count = body.get("workers"), body.get("worker_count")
    if workers is None and count is None:
        out.print("workers   [dim]not visible on this broker (embedded queue folder)[/]")
    elif workers is None:  # no token: the API gives the count, not the names
        out.print(f"workers   {count} answering" if count else
                  "workers   [yellow]none answering[/]")
    else:
        out.print(f"workers   {', '.join(workers) if workers else '[yellow]none answering[/]'}")
    out.print(f"status    {body.get('status')}")
    if not (body.get("database") and body.get("broker")):
        sys.exit(EXIT_FAILED)

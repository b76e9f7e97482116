"""Runs that prove they reproduce: ``descent rerun`` and ``descent verify``."""

from __future__ import annotations

import json
import sys
import time

import click

from service.cli.client import FINAL_STATES
from service.cli.clientcommand import ClientCommand, api_url_option, client_for
from service.cli.context import CONTEXT, pass_settings
from service.cli.follow import follow_run
from service.cli.output import EXIT_FAILED, EXIT_INTERRUPTED, console, fail
from service.cli.runview import print_outcome, print_verdict

# Seconds between looks at a verdict still pending (the original run still training).
VERDICT_POLL = 0.5


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="Queue a run again: same spec, seed and dataset.")
@click.argument("run_id", type=int, metavar="ID")
@click.option("--wait", "-w", is_flag=True,
              help="Follow the rerun until it ends; exit 1 unless it succeeds.")
@api_url_option
@pass_settings
def rerun(settings, run_id, wait, api_url):
    """Queue run ID again as a new run: the same spec and seed on the very dataset it
    trained on, checked and counted against your quotas like a submit. Prints the new
    run's id; `descent show NEW_ID` then compares the two once both have finished.

    \b
    Exit codes: 0 queued (with --wait: succeeded); 1 the rerun failed, or the API is
    unreachable, or run ID's dataset was deleted; 2 over a quota or a limit.
    """
    client = client_for(settings, api_url)
    run = client.rerun_run(run_id)
    out = console()
    out.print(f"queued run {run['id']}, a rerun of run {run_id}")
    if not wait:
        return
    run = _follow(client, run, out, None)
    print_outcome(out, run)
    if run["status"] not in ("succeeded", "stopped_early"):
        sys.exit(EXIT_FAILED)


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="Rerun a run and check the two are bit-identical.")
@click.argument("run_id", type=int, metavar="ID")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Give up waiting after this many seconds (default: wait until the rerun "
                   "ends).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@api_url_option
@pass_settings
def verify(settings, run_id, timeout, as_json, api_url):
    """Rerun run ID, follow the rerun until it ends, then compare the two bit for bit:
    their history (every recorded metric of every epoch), their initial and their final
    parameters. Prints "bit-identical", or the first epoch and the first parameter (layer,
    W or B, index) where they differ, and which fields of the environments they trained in
    (versions, BLAS, CPU, dtype, dataset hash) differ. The contract promises bit-identical
    results on workers of the same machine type and thread settings.

    \b
    Exit codes: 0 bit-identical; 1 they differ, the rerun did not end within --timeout,
    or the API is unreachable; 2 over a quota or a limit.
    """
    client = client_for(settings, api_url)
    out = console(stderr=as_json)  # with --json, stdout holds the verdict alone
    started = time.monotonic()
    rerun_run = client.rerun_run(run_id)
    out.print(f"rerunning run {run_id} as run {rerun_run['id']}; following it "
              "(Ctrl-C stops following, not the run)")
    rerun_run = _follow(client, rerun_run, out, timeout)
    if rerun_run["status"] not in FINAL_STATES:
        fail(f"run {rerun_run['id']} is still {rerun_run['status']} after {timeout:g} s; it "
             f"goes on: `descent show {rerun_run['id']}` shows the verdict once it ends")
    verdict = client.compare_runs(run_id, rerun_run["id"])
    while verdict["verdict"] == "pending":  # the original run has not finished yet
        if timeout is not None and time.monotonic() - started >= timeout:
            fail(f"run {run_id} is still {verdict['statuses'][0]} after {timeout:g} s: "
                 f"`descent show {rerun_run['id']}` shows the verdict once it ends")
        time.sleep(VERDICT_POLL)
        verdict = client.compare_runs(run_id, rerun_run["id"])
    if as_json:
        click.echo(json.dumps(verdict, indent=2))
    else:
        print_verdict(console(), verdict)
    if verdict["verdict"] != "bit-identical":
        sys.exit(EXIT_FAILED)


def _follow(client, run: dict, out, timeout) -> dict:
    """follow_run, reporting Ctrl-C as a stop of following (the run goes on)."""
    try:
        return follow_run(client, run, out, timeout=timeout)
    except KeyboardInterrupt:
        out.print(f"\nstopped following run {run['id']}; it goes on: "
                  f"`descent show {run['id']}` or `descent cancel {run['id']}`")
        sys.exit(EXIT_INTERRUPTED)

"""Following a run (``descent submit --wait``) or a sweep (``descent sweep --wait``): one
polling loop under a rich progress bar until it ends."""

from __future__ import annotations

import time
from typing import Callable

from service.cli.client import FINAL_STATES, ApiError, ApiUnreachable, Client
from service.cli.output import fmt_number, styled_status
from service.compiling import compiling_note, seconds_left

SWEEP_FINAL = ("succeeded", "failed", "cancelled")
# How long the API may stay unreachable (a restart, say) before following gives up.
UNREACHABLE_SECONDS = 10.0
# The first wait between fetches; each next one doubles, up to the caller's ``poll``: a tiny
# run that ends in tens of milliseconds is shown ended at once, a long one costs no more.
FIRST_POLL_SECONDS = 0.025


def poll_until(fetch: Callable[[], dict], current: dict, show: Callable[[dict], None],
               finished: Callable[[dict], bool], poll: float,
               timeout: float | None = None) -> dict:
    """Show ``current``; until ``finished(current)``, wait (FIRST_POLL_SECONDS, doubling up
    to ``poll`` seconds), ``fetch()`` it again and show it. Failed fetches (ApiUnreachable)
    are tolerated for UNREACHABLE_SECONDS in a row. Returns the final state, or after
    ``timeout`` seconds (if given) the state then, unfinished."""
    failures_since = None
    deadline = None if timeout is None else time.monotonic() + timeout
    wait = min(FIRST_POLL_SECONDS, poll)
    while True:
        show(current)
        if finished(current) or (deadline is not None and time.monotonic() >= deadline):
            return current
        time.sleep(wait)
        wait = min(wait * 2, poll)
        try:
            current = fetch()
            failures_since = None
        except ApiUnreachable:
            failures_since = failures_since or time.monotonic()
            if time.monotonic() - failures_since > UNREACHABLE_SECONDS:
                raise


class KernelsWatch:
    """Whether the workers are compiling the training kernels, from GET /health's
    ``kernels``, asked at most once a second (never again if the API refuses to answer)."""

    EVERY = 1.0

    def __init__(self, client: Client):
        self.client, self.asked, self.last, self.broken = client, None, None, False

    def poll(self):
        """Health's ``kernels`` now (asked again after EVERY seconds), or None."""
        now = time.monotonic()
        if not self.broken and (self.asked is None or now - self.asked >= self.EVERY):
            self.asked = now
            try:
                self.last = self.client.health().get("kernels")
            except ApiUnreachable:
                self.last = None
            except ApiError:  # e.g. an API that limits health: show nothing about it
                self.broken, self.last = True, None
        return self.last


def follow_run(client: Client, run: dict, out, poll: float = 0.2,
               timeout: float | None = None) -> dict:
    """Poll a run (about 5 times a second) with a progress bar until it ends, or for at most
    ``timeout`` seconds; the run as last seen."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    columns = (TextColumn("run {task.fields[run_id]}"), TextColumn("{task.fields[status]}"),
               BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
               TextColumn("error {task.fields[error]}"), TimeElapsedColumn())
    started = time.monotonic()
    with Progress(*columns, console=out, transient=False) as progress:
        task = progress.add_task("train", total=max(run.get("epochs") or 0, 1), completed=0,
                                 run_id=run["id"], status=styled_status(run["status"]), error="-")

        compiling = KernelsWatch(client)

        told = []

        def show(current: dict) -> None:
            status = styled_status(current["status"])
            kernels = compiling.poll() if current["status"] == "queued" or (
                current["status"] == "running" and not current.get("epochs_done")) else None
            if kernels and not told:  # the whole sentence once, above the bar
                told.append(True)
                progress.console.print(f"[dim]The worker is {compiling_note(kernels)}.[/]")
            if kernels:  # short, for the bar's line of a narrow terminal
                status += (f" [dim](compiling kernels, ~{seconds_left(kernels)} s)[/]"
                           if kernels.get("expected_seconds") else " [dim](compiling kernels)[/]")
            elif current["status"] == "queued" and time.monotonic() - started > 3:
                status += " [dim](waiting for a worker)[/]"
            done = current.get("epochs_done") or 0
            if current["status"] == "succeeded" and not current.get("epochs"):
                done = 1  # a full bar for a run of no epochs
            progress.update(task, total=max(current.get("epochs") or 0, 1), completed=done,
                            status=status,
                            error=fmt_number(current.get("final_error"), ".5g") or "-")

        return poll_until(lambda: client.get_run(run["id"]), run, show,
                          lambda current: current["status"] in FINAL_STATES, poll, timeout)


def follow_sweep(client: Client, sweep: dict, out, poll: float = 0.3) -> dict:
    """A progress bar over the sweep's runs until the sweep ends; the final sweep."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    columns = (TextColumn("sweep {task.fields[sweep_id]}"), TextColumn("{task.fields[status]}"),
               BarColumn(), MofNCompleteColumn(), TextColumn("runs"),
               TextColumn("{task.fields[counts]}"), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=False) as progress:
        # A model-based sweep asks its runs as it goes: its bar is over its trials budget.
        planned = sweep["trials"] if sweep.get("kind") in ("tpe", "cmaes") else sweep["total"]
        task = progress.add_task("sweep", total=max(planned, 1), completed=0,
                                 sweep_id=sweep["id"], status=sweep["status"], counts="")

        def show(current: dict) -> None:
            done = sum(n for state, n in current["counts"].items() if state in FINAL_STATES)
            counts = ", ".join(f"{n} {state}" for state, n in sorted(current["counts"].items()))
            progress.update(task, completed=done, status=current["status"], counts=counts)

        return poll_until(lambda: client.get_sweep(sweep["id"]), sweep, show,
                          lambda current: current["status"] in SWEEP_FINAL, poll)

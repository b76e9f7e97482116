"""The ``descent`` command line.

Running the service: ``up`` (API, workers and migrations in the foreground), ``api``,
``worker`` and ``db upgrade`` (the parts one at a time, for compose files and scale-out).
Using it over HTTP (service.client): ``submit``, ``runs``, ``show``, ``cancel``, ``health``.
Configuration comes from the environment (service.settings).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import click
from rich.markup import escape

from service.client import FINAL_STATES, ApiError, ApiUnreachable, Client
from service.settings import Settings

log = logging.getLogger("descent")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)
STATUS_STYLES = {"queued": "cyan", "running": "yellow", "succeeded": "green", "failed": "red",
                 "diverged": "magenta", "cancelled": "bright_black", "stopped_early": "blue"}
# Exit codes: 0 done, 1 failed (run not succeeded, API unreachable, other errors),
# 2 invalid input (a spec the API rejects, bad options), 130 interrupted while following.
EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 1, 2, 130


def main() -> None:
    """Console-script entry point (``descent``)."""
    cli(prog_name="descent")


@click.group(name="descent", context_settings=CONTEXT)
@click.version_option(package_name="descent", prog_name="descent")
def cli():
    """Descent: batch training of fully connected networks, as a service.

    \b
    Run the service (configured by environment variables):
      descent up                  API and workers in the foreground, on embedded defaults
      descent api | worker        one API server or one worker, for compose and scale-out
      descent db upgrade          apply database migrations
      descent reap                requeue runs of lost workers (every worker does it too)
    \b
    Use it (talks to DESCENT_API_URL, default http://127.0.0.1:8000):
      descent submit SPEC.json --wait
      descent runs --status succeeded
      descent show ID

    \b
    Environment: DESCENT_DATABASE_URL (default sqlite:///descent.db in the working
    directory), DESCENT_BROKER_URL (default filesystem://descent-queue, a queue folder that
    needs no server; redis://HOST:6379/0 in production), DESCENT_API_URL, DESCENT_MAX_*
    (size limits).
    """


# --------------------------------------------------------------------------------------
# Helpers


def console(stderr: bool = False):
    """A rich Console on the current stdout/stderr (so click's test runner captures it).
    Output to a pipe or file is not cut to 80 columns: tables keep every column whole."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, highlight=False, width=250)
    return out


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":***"
    return urlunparse(parsed._replace(netloc=f"{userinfo}@{netloc[1]}"))


def describe_database(url: str) -> str:
    """The database URL for people: a SQLite file as an absolute path, passwords hidden."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            return f"sqlite:///{Path(path).resolve()}"
    return redact(url)


def describe_broker(url: str) -> str:
    """The broker URL for people: the embedded queue folder as an absolute path."""
    parsed = urlparse(url)
    if parsed.scheme == "filesystem":
        folder = Path((parsed.netloc + parsed.path) or "descent-queue").resolve()
        return f"filesystem://{folder} (embedded queue folder, no server)"
    return redact(url)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def parse_pairs(pairs, option: str) -> dict:
    """``KEY=VALUE`` strings as a dict; a UsageError naming ``option`` otherwise."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{option} expects KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def fail(message: str, code: int = EXIT_FAILED):
    """Print ``error: message`` on stderr and exit with ``code``."""
    console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)


def report_api_error(exc: ApiError) -> None:
    """An API error on stderr; exits 2 for validation errors (422), else 1."""
    err = console(stderr=True)
    if exc.status == 401:
        from service.credentials import client_token, token_file

        if client_token() is None:
            fail("no token: run `descent token create --user NAME` and set DESCENT_TOKEN "
                 f"(or start `descent up` here, which writes {token_file()})")
        fail("the API refused the token (unknown or revoked, or made for another "
             "database): run `descent token create --user NAME` and set DESCENT_TOKEN")
    if exc.status == 422:
        err.print(f"[bold red]rejected (HTTP 422):[/] {escape(exc.message)}", soft_wrap=True)
        for field, message in sorted(exc.fields.items()):
            err.print(f"  [bold]{escape(str(field))}[/]: {escape(str(message))}",
                      soft_wrap=True)
        sys.exit(EXIT_INVALID)
    err.print(f"[bold red]error:[/] {escape(exc.message)} (HTTP {exc.status}, {exc.code})",
              soft_wrap=True)
    sys.exit(EXIT_FAILED)


class ClientCommand(click.Command):
    """A command that talks to the API: unreachable API and API errors become clear
    messages and exit codes instead of tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ApiUnreachable as exc:
            fail(f"{exc}\nStart the service with `descent up`, or point DESCENT_API_URL "
                 "(or --api-url) at it.")
        except ApiError as exc:
            report_api_error(exc)


def api_url_option(function):
    return click.option(
        "--api-url", metavar="URL", default=None,
        help="The API to talk to (default: $DESCENT_API_URL, else http://127.0.0.1:8000).",
    )(function)


def fmt_number(value, spec: str = ".4g") -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def fmt_time(value) -> str:
    """An ISO timestamp from the API as local time, to the second."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def duration(run: dict):
    """Seconds from start to finish (or to now while running), or None."""
    try:
        start = datetime.fromisoformat(str(run.get("started_at")).replace("Z", "+00:00"))
    except ValueError:
        return None
    end_text = run.get("finished_at")
    if end_text:
        end = datetime.fromisoformat(str(end_text).replace("Z", "+00:00"))
    else:
        end = datetime.now(start.tzinfo)
    return max(0.0, (end - start).total_seconds())


def styled_status(status: str) -> str:
    return f"[{STATUS_STYLES.get(status, 'white')}]{status}[/]"


def batch_text(spec: dict) -> str:
    mode = spec.get("batch_mode", "")
    if mode == "minibatch":
        return f"mini {spec.get('batch_size')}"
    return mode


def compact_json(value: dict) -> str:
    """A JSON object with one field a line, each value on one line."""
    lines = [f"  {json.dumps(key)}: {json.dumps(item)}" for key, item in value.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


def layers_text(spec: dict) -> str:
    return "-".join(str(n) for n in spec.get("layers", []))


def load_spec(path: str, overrides) -> dict:
    """The run spec in ``path`` (``-`` for stdin) with ``--set`` overrides applied."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_INVALID)
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON: {exc}", EXIT_INVALID)
    if not isinstance(spec, dict):
        fail(f"{path} must hold a JSON object (the run spec)", EXIT_INVALID)
    for key, value in parse_pairs(overrides, "--set").items():
        try:
            spec[key] = json.loads(value)
        except json.JSONDecodeError:
            spec[key] = value  # a bare string such as --set activation=tanh
    return spec


# --------------------------------------------------------------------------------------
# Showing runs


def summary_line(run: dict) -> str:
    """One line about a finished (or current) run."""
    parts = [f"run {run['id']} {styled_status(run['status'])}",
             f"{run.get('epochs_done', 0)}/{run.get('epochs', 0)} epochs"]
    if run.get("final_error") is not None:
        parts.append(f"final error {fmt_number(run['final_error'], '.6g')}")
    if run.get("best_error") is not None:
        parts.append(f"best {fmt_number(run['best_error'], '.6g')} "
                     f"at epoch {run.get('best_epoch')}")
    if run.get("final_accuracy") is not None:
        parts.append(f"accuracy {run['final_accuracy']:.3f}")
    if run.get("final_val_error") is not None:
        parts.append(f"val error {fmt_number(run['final_val_error'], '.6g')}")
    seconds = duration(run)
    if seconds is not None:
        parts.append(f"{seconds:.2f} s")
    return ", ".join(parts)


def milestone_epochs(history: list[dict], best_epoch) -> dict[int, str]:
    """{row index: label} for a compact history: first, 1, 10, 100, ..., best and last."""
    if not history:
        return {}
    epochs = [row["epoch"] for row in history]
    index = {epoch: i for i, epoch in enumerate(epochs)}
    picked = {0: "first"}
    power = 1
    while power < epochs[-1]:
        if power in index:
            picked.setdefault(index[power], "")
        power *= 10
    if best_epoch is not None and best_epoch in index:
        picked[index[best_epoch]] = "best"
    last = len(history) - 1
    picked[last] = "best, last" if picked.get(last) == "best" else "last"
    if picked.get(0) == "best":
        picked[0] = "first, best"
    return dict(sorted(picked.items()))


def history_table(history: list[dict], best_epoch, everything: bool):
    from rich.table import Table

    has = {key: any(row.get(key) is not None for row in history)
           for key in ("accuracy", "val_error", "val_accuracy")}
    table = Table(show_edge=False)
    table.add_column("epoch", justify="right")
    table.add_column("error", justify="right")
    for key in ("accuracy", "val_error", "val_accuracy"):
        if has[key]:
            table.add_column(key.replace("_", " "), justify="right")
    table.add_column("seconds", justify="right")
    if not everything:
        table.add_column("")
    rows = (dict.fromkeys(range(len(history)), "") if everything
            else milestone_epochs(history, best_epoch))
    for i, label in rows.items():
        row = history[i]
        cells = [str(row["epoch"]), fmt_number(row.get("error"), ".6g")]
        for key in ("accuracy", "val_error", "val_accuracy"):
            if has[key]:
                cells.append(fmt_number(row.get(key), ".4f" if "accuracy" in key else ".6g"))
        cells.append(fmt_number(row.get("seconds"), ".3f"))
        if not everything:
            cells.append(label)
        table.add_row(*cells)
    return table


def print_run(out, run: dict, history: list[dict] | None, everything: bool = False,
              with_spec: bool = True) -> None:
    """A run's state, spec and (compact) history."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    spec = run.get("spec") or {}
    dataset = run.get("dataset") or {}
    rows = [
        ("run", f"{run['id']}" + (f"  {escape(run['name'])}" if run.get("name") else "")),
        ("status", styled_status(run["status"])),
        ("dataset", f"{escape(str(dataset.get('name')))} (id {dataset.get('id')})"),
        ("network", f"{layers_text(spec)}, {spec.get('activation')} -> "
                    f"{spec.get('output_activation')}, {spec.get('loss')}"),
        ("training", f"lr {spec.get('learning_rate')}, {batch_text(spec)}, "
                     f"seed {spec.get('seed')}, {spec.get('dtype')}"),
        ("epochs", f"{run.get('epochs_done', 0)}/{run.get('epochs', 0)}"),
        ("final error", fmt_number(run.get("final_error"), ".6g")),
        ("best error", (f"{fmt_number(run.get('best_error'), '.6g')} at epoch "
                        f"{run.get('best_epoch')}") if run.get("best_error") is not None else ""),
        ("accuracy", fmt_number(run.get("final_accuracy"), ".4f")),
        ("val error", fmt_number(run.get("final_val_error"), ".6g")),
        ("sweep", run.get("sweep_id")),
        ("tags", escape(", ".join(f"{k}={v}" for k, v in (run.get("tags") or {}).items()))),
        ("created", fmt_time(run.get("created_at"))),
        ("started", fmt_time(run.get("started_at"))),
        ("finished", fmt_time(run.get("finished_at"))),
        ("worker", escape(f"{run.get('worker') or ''}")
                   + (f" (attempt {run['attempts']})" if (run.get("attempts") or 0) > 1 else "")),
        ("message", f"[red]{escape(run['error_message'])}[/]" if run.get("error_message")
         else ""),
    ]
    for key, value in rows:
        if value not in (None, ""):
            grid.add_row(key, str(value))
    out.print(grid)
    if with_spec:
        out.print()
        out.print("[bold]Spec[/] (save it to resubmit with `descent submit`):")
        out.print(compact_json(spec), markup=False, highlight=False, soft_wrap=True)
    if history is not None:
        out.print()
        if history:
            if not everything:
                out.print("[bold]History[/]: first epoch, powers of ten, best, last "
                          "(--history for every epoch)")
            out.print(history_table(history, run.get("best_epoch"), everything))
        else:
            out.print("No history yet.")


def follow_run(client: Client, run: dict, out, poll: float = 0.2) -> dict:
    """Poll a run (about 5 times a second) with a progress bar until it ends; the final run.
    The API may be briefly unreachable (restarts): up to 10 s of failed polls are tolerated."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)

    columns = (TextColumn("run {task.fields[run_id]}"), TextColumn("{task.fields[status]}"),
               BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
               TextColumn("error {task.fields[error]}"), TimeElapsedColumn())
    failures_since = None
    started = time.monotonic()
    with Progress(*columns, console=out, transient=False) as progress:
        task = progress.add_task("train", total=max(run.get("epochs") or 0, 1), completed=0,
                                 run_id=run["id"], status=styled_status(run["status"]), error="-")
        while True:
            status = styled_status(run["status"])
            if run["status"] == "queued" and time.monotonic() - started > 3:
                status += " [dim](waiting for a worker; a worker's first start compiles the " \
                          "kernels)[/]"
            progress.update(task, total=max(run.get("epochs") or 0, 1),
                            completed=run.get("epochs_done") or 0, status=status,
                            error=fmt_number(run.get("final_error"), ".5g") or "-")
            if run["status"] in FINAL_STATES:
                if run["status"] == "succeeded" and not run.get("epochs"):
                    progress.update(task, completed=1)
                break
            time.sleep(poll)
            try:
                run = client.get_run(run["id"])
                failures_since = None
            except ApiUnreachable:
                failures_since = failures_since or time.monotonic()
                if time.monotonic() - failures_since > 10:
                    raise
    return run


# --------------------------------------------------------------------------------------
# Running the service


@cli.group(context_settings=CONTEXT)
def db():
    """The database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True,
              help="Alembic revision to upgrade to.")
def db_upgrade(revision):
    """Apply the database migrations to DESCENT_DATABASE_URL.

    Creates the SQLite file (default: descent.db in the working directory) or the tables in
    PostgreSQL (postgresql+psycopg://USER:PASSWORD@HOST/DB) as needed; running it again is
    harmless. `descent up` does this itself before it starts.
    """
    settings = Settings.from_env()
    current = apply_migrations(settings.database_url, revision)
    click.echo(f"database {describe_database(settings.database_url)} is at revision {current}")


def apply_migrations(database_url: str, revision: str = "head") -> str:
    """Migrate, then return the database's revision; exits 1 when the database is down."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    import migrations

    try:
        migrations.upgrade(database_url, revision)
        engine = create_engine(database_url)
        try:
            with engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        finally:
            engine.dispose()
    except OperationalError as exc:
        fail(f"cannot reach the database {describe_database(database_url)}: "
             f"{str(exc.orig).strip() if exc.orig else exc}")


@cli.command(context_settings=CONTEXT,
             short_help="Take back runs of lost workers and send unsent runs, once.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def reap(as_json):
    """One pass of the reaper that every worker runs periodically (service.store.reaper):
    running runs whose worker stopped beating for DESCENT_STALE_SECONDS go back on the queue
    (or end `failed`, "worker lost", after DESCENT_MAX_ATTEMPTS claims), queued runs whose
    task never reached the broker are sent, and sweeps get the state their runs say.

    Safe to run while workers run. Exits 1 when some run could not be sent (the broker is
    down) or the database is unreachable.
    """
    from sqlalchemy.exc import OperationalError

    from service.queue import QueueClient
    from service.store import make_engine, make_sessionmaker
    from service.store import reaper

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    try:
        done = reaper.reap(make_sessionmaker(engine), QueueClient(settings.broker_url).enqueue_run)
    except OperationalError as exc:
        fail(f"cannot reach the database {describe_database(settings.database_url)}: "
             f"{str(exc.orig).strip() if exc.orig else exc}")
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(vars(done)))
    else:
        for what, ids in vars(done).items():
            if ids:
                click.echo(f"{what}: {', '.join(map(str, ids))}")
        if not done:
            click.echo("nothing to reap")
    if done.unsent:
        sys.exit(EXIT_FAILED)


@cli.command(context_settings=CONTEXT, short_help="Serve the REST API (one server).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface, as in a container).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Request-handling threads.")
@click.option("--loglevel", default="info", show_default=True, type=LOG_LEVELS)
def api(host, port, threads, loglevel):
    """Serve the REST API (waitress, a production WSGI server) in the foreground.

    Reads DESCENT_DATABASE_URL and DESCENT_BROKER_URL; the database must be migrated
    (`descent db upgrade`). Stops cleanly on Ctrl-C or SIGTERM. Run several behind a load
    balancer if one is not enough: they share nothing but the database and the broker.
    """
    from waitress import create_server

    from service.app import create_app
    from service.api.bodysize import server_body_ceiling

    setup_logging(loglevel)
    settings = Settings.from_env()
    app = create_app({"SETTINGS": settings})
    try:
        server = create_server(app, host=host, port=port, threads=threads, ident="descent",
                               max_request_body_size=server_body_ceiling(settings.limits))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    if hasattr(server, "effective_host"):
        addresses = [(server.effective_host, server.effective_port)]
    else:  # several sockets (a host name with several addresses)
        addresses = list(server.effective_listen)
    for address, bound_port in addresses:
        shown = f"[{address}]" if ":" in str(address) else address
        log.info("Descent API listening on http://%s:%s/api/v1", shown, bound_port)
    log.info("database %s; broker %s", describe_database(settings.database_url),
             describe_broker(settings.broker_url))

    def stop(signum, _frame):
        raise SystemExit(0)  # waitress's run() catches it and closes its sockets and threads

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # /predict runs kernels in this process: load them now rather than in the first request.
    from service.warmup import warm_predict

    threading.Thread(target=warm_predict, name="warm-predict", daemon=True).start()
    server.run()
    app.extensions["descent"]["engine"].dispose()
    log.info("Descent API stopped")


def celery_worker_argv(concurrency: int, loglevel: str, name: str | None = None,
                       quiet: bool = False, extra=()) -> list[str]:
    """The command line of one Celery worker of the Descent app (prefork pool)."""
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app"]
    if quiet:
        argv.append("--quiet")  # no banner
    argv += ["worker", "--concurrency", str(concurrency), "--loglevel", loglevel.upper()]
    if name:
        argv += ["--hostname", name]
    return argv + list(extra)


@cli.command(context_settings={**CONTEXT, "ignore_unknown_options": True},
             short_help="Run one Celery worker that trains queued runs.")
@click.option("--concurrency", "-c", default=1, show_default=True, type=click.IntRange(1, 1024),
              help="Training processes in this worker (each trains one run at a time).")
@click.option("--loglevel", "-l", default="info", show_default=True, type=LOG_LEVELS)
@click.option("--name", "-n", default=None, metavar="NAME@HOST",
              help="Celery node name (default celery@HOSTNAME); must differ per worker on "
                   "one host.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- CELERY OPTIONS]")
def worker(concurrency, loglevel, name, celery_args):
    """Run one Celery worker that trains queued runs (replaces this process with
    `celery -A workers.celery_app worker`).

    Reads DESCENT_DATABASE_URL and DESCENT_BROKER_URL. Start as many as you like, on this
    machine or others sharing the database and a Redis broker; each compiles (or loads from
    numba's cache) the kernels once at start, then forks its training processes. Options
    after `--` go to celery as they are (e.g. `-- --max-tasks-per-child 1000`).
    SIGTERM: finish running runs, then stop; SIGQUIT: stop now, runs go back on the queue.
    """
    argv = celery_worker_argv(concurrency, loglevel, name, extra=celery_args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


class StopRequested(Exception):
    """SIGINT, SIGTERM or SIGHUP reached `descent up`."""


class UpFailed(Exception):
    """A part of `descent up` failed on its own."""


class ChildExited(UpFailed):
    def __init__(self, name: str, code: int):
        super().__init__(f"the {name} exited unexpectedly (exit code {code})")
        self.name, self.code = name, code


class Supervisor:
    """Starts child processes, watches them, and stops them all (no orphans).

    Each child leads a process group of its own, so a Ctrl-C at the terminal reaches only
    `descent up`, which then stops the children in order; on Linux each child also gets
    SIGTERM should `descent up` itself die (PR_SET_PDEATHSIG)."""

    def __init__(self, out):
        self.out = out
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.signals = 0
        self.interruptible = False
        self._libc = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                self._libc = ctypes.CDLL(None, use_errno=True)
            except OSError:
                self._libc = None

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        self.signals += 1
        if self.interruptible:
            self.interruptible = False
            raise StopRequested(signum)

    def _child_setup(self):
        libc, parent = self._libc, os.getpid()

        def setup():
            if libc is not None:
                libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
        return setup

    def spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        process = subprocess.Popen(argv, env=env, process_group=0,
                                   preexec_fn=self._child_setup())
        self.children.append((name, process))
        return process

    def check(self) -> None:
        for name, process in self.children:
            code = process.poll()
            if code is not None:
                raise ChildExited(name, code)

    def sleep(self, seconds: float) -> None:
        """Sleep, watching the children; StopRequested on a signal."""
        if self.signals:
            raise StopRequested()
        time.sleep(seconds)
        self.check()

    def alive(self):
        return [(name, p) for name, p in self.children if p.poll() is None]

    def _wait(self, seconds: float, hurry_at: int) -> None:
        deadline = time.monotonic() + seconds
        while self.alive() and time.monotonic() < deadline and self.signals < hurry_at:
            time.sleep(0.05)

    def stop(self, grace: float, busy=lambda: 0) -> None:
        """SIGTERM everything (workers: warm shutdown, running runs may finish); after
        ``grace`` seconds (or at a second Ctrl-C) SIGQUIT the workers (cold shutdown: their
        runs go back on the queue); after 10 s more, SIGKILL whole process groups.
        ``busy()`` counts the runs still training here, for the message."""
        self.interruptible = False
        hurry_at = self.signals + 1
        for _name, process in self.alive():
            process.send_signal(signal.SIGTERM)
        running = busy() if any(n.startswith("worker") for n, _ in self.alive()) else 0
        if running:
            self.out.print(f"{running} run{'s' if running > 1 else ''} still training: waiting "
                           f"up to {grace:g} s (Ctrl-C again to stop now; unfinished runs go "
                           "back on the queue and start over next time).", soft_wrap=True)
        self._wait(grace, hurry_at)
        for name, process in self.alive():
            process.send_signal(signal.SIGQUIT if name.startswith("worker") else signal.SIGKILL)
        self._wait(10.0, 10**9)
        for _name, process in self.children:
            if process.poll() is None:
                self._killpg(process)
                process.wait()
            self._killpg(process)  # any grandchild left in the group (pool processes)

    @staticmethod
    def _killpg(process) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def wait_until_ready(supervisor: Supervisor, client: Client, timeout: float = 60.0) -> dict:
    """The API's health once it answers; ChildExited if a child dies first, UpFailed if
    nothing answers within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.health()
        except (ApiUnreachable, ApiError):
            if time.monotonic() > deadline:
                raise UpFailed(f"the API did not answer at {client.base_url} within "
                               f"{timeout:g} s") from None
        supervisor.sleep(0.1)


@cli.command(context_settings=CONTEXT,
             short_help="Migrations, API and workers in the foreground.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address the API listens on (0.0.0.0 for every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="Port the API listens on.")
@click.option("--workers", "-w", default=2, show_default=True, type=click.IntRange(1, 256),
              help="Training processes: runs trained at the same time.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="API request-handling threads.")
@click.option("--grace", default=10.0, show_default=True, type=click.FloatRange(0),
              help="Seconds running runs get to finish when stopping; after that they go "
                   "back on the queue and start again next time.")
@click.option("--loglevel", default="warning", show_default=True, type=LOG_LEVELS,
              help="Log level of the API and the workers.")
@click.option("--submit", "specs", multiple=True, metavar="SPEC.json",
              type=click.Path(exists=True, dir_okay=False),
              help="Once the service answers, submit this run spec and follow it to the end "
                   "(repeatable); the service then keeps running.")
def up(host, port, workers, threads, grace, loglevel, specs):
    """Run the whole service in the foreground: migrations, the API and the workers.

    Applies the database migrations, then starts the API (`descent api`, on waitress) and
    one Celery worker whose prefork pool has --workers training processes. The kernels are
    compiled (or loaded from numba's cache) once, before the pool forks. With no
    configuration everything is embedded: descent.db (SQLite) and descent-queue/ (the queue
    folder) in the working directory, no server to install.

    Ctrl-C or SIGTERM stops everything: the API at once, the workers after their running
    runs finish or --grace seconds pass (a second Ctrl-C does not wait). Exit code 0 when
    stopped that way, 1 when a part failed on its own.
    """
    out = console()
    settings = Settings.from_env()
    supervisor = Supervisor(out)
    supervisor.install_signal_handlers()
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    url_host = f"[{connect_host}]" if ":" in connect_host else connect_host
    base_url = f"http://{url_host}:{port}"
    client = Client(base_url, timeout=5)
    code = 0
    problem = port_problem(host, port)
    if problem:
        hint = " (another `descent up`? choose another --port)" if "in use" in problem else ""
        fail(f"cannot listen on {host}:{port}: {problem}{hint}")
    try:
        revision = apply_migrations(settings.database_url)
        from service.cli_token import ensure_local_token
        from service.credentials import token_file

        local_token, token_created = ensure_local_token(settings.database_url)
        client = Client(base_url, timeout=5, token=local_token)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        supervisor.spawn("API", [sys.executable, "-m", "service.cli", "api", "--host", host,
                                 "--port", str(port), "--threads", str(threads),
                                 "--loglevel", loglevel], env)
        worker_process = supervisor.spawn(
            "worker", celery_worker_argv(workers, loglevel, quiet=True), env)
        supervisor.interruptible = True
        if supervisor.signals:
            raise StopRequested()
        wait_until_ready(supervisor, client)
        shown_host = f"[{host}]" if ":" in host else host
        out.print(f"[bold green]Descent is up[/]: API on http://{shown_host}:{port}/api/v1 "
                  f"(OpenAPI page {base_url}/api/v1/docs)", soft_wrap=True)
        out.print(f"  database  {describe_database(settings.database_url)} "
                  f"(revision {revision})", soft_wrap=True)
        out.print(f"  broker    {describe_broker(settings.broker_url)}", soft_wrap=True)
        out.print(f"  workers   {workers} training process{'es' if workers > 1 else ''} "
                  f"(celery worker pid {worker_process.pid})")
        out.print(f"  token     {escape(str(token_file()))} (user local"
                  f"{', created now' if token_created else ''}; `descent` commands run here "
                  "use it)", soft_wrap=True)
        # The token itself is never printed: terminal output often ends up in a log.
        out.print(f"  dashboard {base_url}/ (log in with the token in "
                  f"{escape(str(token_file()))}: `cat {escape(str(token_file()))}`)",
                  soft_wrap=True)
        if base_url != "http://127.0.0.1:8000":
            out.print(f"  clients   DESCENT_API_URL={base_url} descent runs", soft_wrap=True)
        out.print("Press Ctrl-C to stop.")
        for spec_path in specs:
            demo_run(client, spec_path, out)
        if specs:
            out.print(f"\nThe service keeps running: `descent runs`, `descent show ID`, "
                      f"`curl {base_url}/api/v1/runs`. Press Ctrl-C to stop.", soft_wrap=True)
        while True:
            supervisor.sleep(0.25)
    except StopRequested:
        out.print("\nStopping Descent...")
    except UpFailed as exc:
        out.print(f"[bold red]error:[/] {exc}; stopping the rest.")
        code = 1
    except SystemExit as exc:  # fail() while migrating
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        supervisor.stop(grace, busy=lambda: runs_training_here(settings.database_url))
    if code == 0:
        out.print("Descent stopped.")
    sys.exit(code)


def port_problem(host: str, port: int):
    """Why ``host:port`` cannot be listened on now (an OSError's text), or None."""
    import socket

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as exc:
        return exc.strerror or str(exc)
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress does
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def runs_training_here(database_url: str) -> int:
    """How many runs workers on this host are training (0 if the database cannot say)."""
    try:
        import socket

        from sqlalchemy import func, select

        from service.store import Run, make_engine

        engine = make_engine(database_url)
        try:
            with engine.connect() as connection:
                return connection.execute(
                    select(func.count()).select_from(Run).where(
                        Run.status == "running",
                        Run.worker.like(f"{socket.gethostname()}:%"))).scalar_one()
        finally:
            engine.dispose()
    except Exception:
        return 0


def demo_run(client: Client, spec_path: str, out) -> None:
    """Submit a spec and follow it, as `descent submit --wait` would; never exits."""
    try:
        spec = load_spec(spec_path, ())
    except SystemExit:
        return
    out.print(f"\n$ descent submit {spec_path} --wait", soft_wrap=True)
    try:
        run = client.submit_run(spec)
    except ApiError as exc:
        out.print(f"[red]{escape(spec_path)} was refused: {escape(exc.message)} "
                  f"{escape(str(exc.fields))}[/]", soft_wrap=True)
        return
    run = follow_run(client, run, out)
    out.print(summary_line(run))
    if run.get("error_message"):
        out.print(f"[red]{escape(run['error_message'])}[/]", soft_wrap=True)
    out.print(f"\n$ descent show {run['id']}")
    print_run(out, run, client.history(run["id"]), with_spec=False)


# --------------------------------------------------------------------------------------
# Using the service


@cli.command(cls=ClientCommand, context_settings=CONTEXT,
             short_help="Submit a run; --wait follows it.")
@click.argument("spec_file", metavar="SPEC.json", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--wait", "-w", is_flag=True,
              help="Follow the run with a progress bar until it ends; exit 1 unless it succeeds.")
@click.option("--set", "-s", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="Override a spec field (VALUE read as JSON if it parses, e.g. "
                   "-s learning_rate=0.1 -s 'layers=[2,16,1]'); repeatable.")
@api_url_option
def submit(spec_file, wait, overrides, api_url):
    """Submit a training run described by SPEC.json (`-` reads standard input).

    \b
    A spec needs `dataset` and `layers`; everything else has a default, e.g.
      {"dataset": "xor", "layers": [2, 8, 1], "learning_rate": 0.5, "epochs": 2000}
    Prints the run id. With --wait, polls the run about five times a second and ends with
    its final status, errors and accuracy.

    \b
    Exit codes: 0 submitted (with --wait: succeeded); 1 the run failed, diverged or was
    cancelled, or the API is unreachable; 2 the API rejected the spec (each bad field is
    named) or the file is not a JSON object.
    """
    spec = load_spec(spec_file, overrides)
    client = Client(api_url)
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
    out.print(summary_line(run))
    if run.get("error_message"):
        out.print(f"[red]{escape(run['error_message'])}[/]", soft_wrap=True)
    if run["status"] not in ("succeeded", "stopped_early"):
        sys.exit(EXIT_FAILED)


@cli.command(cls=ClientCommand, context_settings=CONTEXT,
             short_help="Query the run history as a table.")
@click.option("--status", "statuses", multiple=True, metavar="STATE",
              help="queued, running, succeeded, failed, diverged, cancelled or stopped_early; "
                   "repeatable or comma-separated.")
@click.option("--dataset", metavar="NAME|ID", help="Runs on this dataset.")
@click.option("--sweep", "sweep_id", type=int, metavar="ID", help="Runs of this sweep.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="Runs with this tag; repeatable (all must match).")
@click.option("--filter", "filters", multiple=True, metavar="PARAM=VALUE",
              help="Any other GET /runs query parameter, e.g. final_error_max=0.01 or "
                   "learning_rate_min=0.1 (FIELD_min/FIELD_max for learning_rate, batch_size, "
                   "epochs, final_error, best_error); repeatable.")
@click.option("--where", metavar="EXPR",
              help="A filter expression, ANDed with the other filters: comparisons "
                   "(= != < <= > >=), in (...), not, and, or and parentheses over status, "
                   "dataset, sweep_id, name, batch_mode, tag.KEY and the numeric and time "
                   "fields, e.g. 'status in (succeeded, diverged) and (learning_rate >= 0.1 "
                   "or tag.team = \"vision\") and created_at >= \"2026-11-01\"'.")
@click.option("--order-by", default="-id", show_default=True, metavar="FIELD",
              help="id, created_at, started_at, finished_at, learning_rate, batch_size, "
                   "epochs, seed, epochs_done, final_error, best_error, best_epoch, "
                   "final_accuracy, final_val_error, sweep_id or batch_mode; '-' first for "
                   "descending; runs without a value come last.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1),
              help="Show at most this many runs.")
@click.option("--all", "everything", is_flag=True, help="Show every matching run (pages through).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON lines.")
@api_url_option
def runs(statuses, dataset, sweep_id, tags, filters, where, order_by, limit, everything,
         as_json, api_url):
    """Query the run history as a table, newest first.

    \b
    Examples:
      descent runs --status running,queued
      descent runs --dataset moons --order-by final_error --limit 5
      descent runs --tag experiment=lr-scan --filter final_error_max=0.05 --all
      descent runs --where 'final_error < 0.05 and (batch_mode = sgd or epochs >= 1000)'
    """
    params = {**parse_pairs(filters, "--filter"),
              **{f"tag.{k}": v for k, v in parse_pairs(tags, "--tag").items()}}
    if statuses:
        params["status"] = ",".join(s.strip() for group in statuses for s in group.split(",")
                                    if s.strip())
    if dataset:
        params["dataset"] = dataset
    if sweep_id is not None:
        params["sweep_id"] = sweep_id
    if where is not None:
        params["where"] = where
    params["order_by"] = order_by
    client = Client(api_url)
    found, cursor = [], None
    while True:
        size = 500 if everything else min(500, limit - len(found))
        page = client.list_runs(**params, limit=size, cursor=cursor)
        found += page["runs"]
        cursor = page.get("next_cursor")
        if not cursor or not page["runs"] or (not everything and len(found) >= limit):
            break
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


def runs_table(found: list[dict]):
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for name, justify in (("id", "right"), ("name", "left"), ("status", "left"),
                          ("dataset", "left"), ("layers", "left"), ("lr", "right"),
                          ("batch", "left"), ("epochs", "right"), ("final error", "right"),
                          ("best error", "right"), ("created", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "name")
    for run in found:
        spec = run.get("spec") or {}
        table.add_row(
            str(run["id"]), escape(run.get("name") or ""), styled_status(run["status"]),
            escape(str((run.get("dataset") or {}).get("name") or "")), layers_text(spec),
            fmt_number(spec.get("learning_rate"), "g"), batch_text(spec),
            f"{run.get('epochs_done', 0)}/{run.get('epochs', 0)}",
            fmt_number(run.get("final_error")), fmt_number(run.get("best_error")),
            fmt_time(run.get("created_at")),
        )
    return table


@cli.command(cls=ClientCommand, context_settings=CONTEXT,
             short_help="One run with its spec and history.")
@click.argument("run_id", type=int, metavar="ID")
@click.option("--history", "everything", is_flag=True, help="Every epoch, not a compact history.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run and its history as one JSON object.")
@api_url_option
def show(run_id, everything, as_json, api_url):
    """One run: its state, spec and a compact history (first, 1, 10, 100, ... epochs,
    the best and the last)."""
    client = Client(api_url)
    run = client.get_run(run_id)
    history = client.history(run_id)
    if as_json:
        click.echo(json.dumps({**run, "history": history}, indent=2))
        return
    print_run(console(), run, history, everything)


@cli.command(cls=ClientCommand, context_settings=CONTEXT,
             short_help="Cancel a queued or running run.")
@click.argument("run_id", type=int, metavar="ID")
@click.option("--sweep", "is_sweep", is_flag=True,
              help="ID is a sweep: cancel all of its queued and running runs.")
@api_url_option
def cancel(run_id, is_sweep, api_url):
    """Cancel a queued or running run (a running one stops at its next chunk and keeps its
    history), or with --sweep a whole sweep."""
    if is_sweep:
        sweep = Client(api_url).cancel_sweep(run_id)
        console().print(f"cancel requested for sweep {sweep['id']} ({sweep['status']})")
        return
    run = Client(api_url).cancel_run(run_id)
    console().print(f"cancel requested for run {run['id']} ({run['status']})")


@cli.command(cls=ClientCommand, context_settings=CONTEXT,
             short_help="Check the API, database, broker and workers.")
@api_url_option
def health(api_url):
    """Check that the API answers and reaches its database, broker and workers.
    Exit 0 when healthy enough to take runs (database and broker up), else 1."""
    body = Client(api_url, timeout=5).health()
    out = console()
    for key in ("api", "database", "broker"):
        ok = bool(body.get(key))
        out.print(f"{key:9} {'[green]ok[/]' if ok else '[red]unreachable[/]'}")
    workers = body.get("workers")
    if workers is None:
        out.print("workers   [dim]not visible on this broker (embedded queue folder)[/]")
    else:
        out.print(f"workers   {', '.join(workers) if workers else '[yellow]none answering[/]'}")
    out.print(f"status    {body.get('status')}")
    if not (body.get("database") and body.get("broker")):
        sys.exit(EXIT_FAILED)


from service import cli_sweep  # noqa: E402  (registers `descent sweep`)

cli_sweep.register(cli)

from service import cli_token  # noqa: E402  (registers `descent token`)

cli_token.register(cli)

from service import cli_plot  # noqa: E402  (registers `descent plot`)

cli_plot.register(cli)


if __name__ == "__main__":
    main()

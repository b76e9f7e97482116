"""``descent up``: migrations, the API and the workers in the foreground, on embedded
defaults, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import click
from rich.markup import escape

from service.cli.client import ApiError, ApiUnreachable, Client
from service.cli.context import CONTEXT, LOG_LEVELS, pass_settings
from service.cli.credentials import ensure_local_token
from service.cli.database import apply_migrations
from service.cli.follow import follow_run
from service.cli.output import console, describe_broker, describe_database, fail
from service.cli.runview import print_outcome, print_run
from service.cli.specfile import load_spec
from service.cli.supervisor import (StopRequested, Supervisor, UpFailed, api_argv,
                                    celery_worker_argv)
from service.settings import Settings


@click.command(context_settings=CONTEXT,
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
@pass_settings
def up(settings, host, port, workers, threads, grace, loglevel, specs):
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
    supervisor = Supervisor(out)
    supervisor.install_signal_handlers()
    base_url = local_url(host, port)
    code = 0
    problem = port_problem(host, port)
    if problem:
        hint = " (another `descent up`? choose another --port)" if "in use" in problem else ""
        fail(f"cannot listen on {host}:{port}: {problem}{hint}")
    try:
        # The children's start (imports, the kernels' warm-up: seconds) overlaps the
        # migrations where it safely can: the API touches the database only when asked,
        # which is after them; a worker takes runs, so it starts early only on a database
        # that does not exist yet (no runs, no old schema).
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        worker_argv = celery_worker_argv(workers, loglevel, quiet=True)
        worker_first = new_sqlite_file(settings.database_url)
        supervisor.spawn("API", api_argv(host, port, threads, loglevel), env)
        if worker_first:
            worker_process = supervisor.spawn("worker", worker_argv, env)
        revision = apply_migrations(settings.database_url)
        token_path = Path(settings.token_file)
        local_token, token_created = ensure_local_token(settings.database_url, token_path)
        client = Client(base_url, timeout=5, token=local_token)
        if not worker_first:
            worker_process = supervisor.spawn("worker", worker_argv, env)
        supervisor.interruptible = True
        if supervisor.signals:
            raise StopRequested()
        wait_until_ready(supervisor, client)
        shown_host = f"[{host}]" if ":" in host else host
        out.print(f"[bold green]Descent is up[/]: API on http://{shown_host}:{port}/api/v1 "
                  f"(OpenAPI page {base_url}/api/v1/docs)", soft_wrap=True)
        print_parts(out, settings, revision, workers, worker_process.pid, token_path,
                    token_created, base_url)
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


def new_sqlite_file(database_url: str) -> bool:
    """Whether the database is a SQLite file that does not exist yet."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    path = url.database or ""
    return (url.get_backend_name() == "sqlite" and path not in ("", ":memory:")
            and not path.startswith("file:") and not Path(path).exists())


def local_url(host: str, port: int) -> str:
    """The URL at which this machine reaches an API listening on ``host:port``."""
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    url_host = f"[{connect_host}]" if ":" in connect_host else connect_host
    return f"http://{url_host}:{port}"


def print_parts(out, settings: Settings, revision: str, workers: int, worker_pid: int,
                token_path: Path, token_created: bool, base_url: str) -> None:
    """What runs where once `descent up` is up: database, broker, workers, token,
    dashboard (and how clients elsewhere reach it)."""
    out.print(f"  database  {describe_database(settings.database_url)} "
              f"(revision {revision})", soft_wrap=True)
    out.print(f"  broker    {describe_broker(settings.broker_url)}", soft_wrap=True)
    out.print(f"  workers   {workers} training process{'es' if workers > 1 else ''} "
              f"(celery worker pid {worker_pid})")
    token_text = escape(str(token_path))
    out.print(f"  token     {token_text} (user local"
              f"{', created now' if token_created else ''}; `descent` commands run here "
              "use it)", soft_wrap=True)
    # The token itself is never printed: terminal output often ends up in a log.
    out.print(f"  dashboard {base_url}/ (log in with the token in "
              f"{token_text}: `cat {token_text}`)", soft_wrap=True)
    if base_url != "http://127.0.0.1:8000":
        out.print(f"  clients   DESCENT_API_URL={base_url} descent runs", soft_wrap=True)


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


def port_problem(host: str, port: int):
    """Why ``host:port`` cannot be listened on now (an OSError's text), or None."""
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
    print_outcome(out, run)
    out.print(f"\n$ descent show {run['id']}")
    print_run(out, run, client.history(run["id"]), with_spec=False)

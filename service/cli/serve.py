"""Running the service one part at a time, for compose files and scale-out: ``descent
api``, ``worker``, ``db upgrade`` and ``reap``. (``descent up`` runs them all: up.py.)"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading

import click

from service.cli.context import CONTEXT, LOG_LEVELS, pass_settings
from service.cli.database import apply_migrations, sessions_of, unreachable
from service.cli.output import EXIT_FAILED, describe_broker, describe_database, fail
from service.cli.supervisor import celery_worker_argv

log = logging.getLogger("descent")


def setup_logging(level: str) -> None:
    """Log to stderr at ``level``, with times and logger names."""
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group(context_settings=CONTEXT)
def db():
    """The database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True,
              help="Alembic revision to upgrade to.")
@pass_settings
def db_upgrade(settings, revision):
    """Apply the database migrations to DESCENT_DATABASE_URL.

    Creates the SQLite file (default: descent.db in the working directory) or the tables in
    PostgreSQL (postgresql+psycopg://USER:PASSWORD@HOST/DB) as needed; running it again is
    harmless. `descent up` does this itself before it starts.
    """
    current = apply_migrations(settings.database_url, revision)
    click.echo(f"database {describe_database(settings.database_url)} is at revision {current}")


@click.command(context_settings=CONTEXT,
               short_help="Take back runs of lost workers and send unsent runs, once.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@pass_settings
def reap(settings, as_json):
    """One pass of the reaper that every worker runs periodically (service.store.reaper):
    running runs whose worker stopped beating for DESCENT_STALE_SECONDS go back on the queue
    (or end `failed`, "worker lost", after DESCENT_MAX_ATTEMPTS claims), queued runs whose
    task never reached the broker, or was lost with a Redis that lost its data, are sent,
    and sweeps get the state their runs say.

    Safe to run while workers run. Exits 1 when some run could not be sent (the broker is
    down) or the database is unreachable.
    """
    from sqlalchemy.exc import OperationalError

    from service.queue import QueueClient
    from service.store import reaper

    queue = QueueClient(settings.broker_url)
    try:
        with sessions_of(settings.database_url) as sessions:
            done = reaper.reap(sessions, queue.enqueue_run, settings.reaper,
                               queue.marker.since)
    except OperationalError as exc:
        unreachable(settings.database_url, exc)
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


@click.command(context_settings=CONTEXT, short_help="Serve the REST API (one server).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface, as in a container).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Request-handling threads.")
@click.option("--loglevel", default="info", show_default=True, type=LOG_LEVELS)
@pass_settings
def api(settings, host, port, threads, loglevel):
    """Serve the REST API (waitress, a production WSGI server) in the foreground.

    Reads DESCENT_DATABASE_URL and DESCENT_BROKER_URL; the database must be migrated
    (`descent db upgrade`). Stops cleanly on Ctrl-C or SIGTERM. Run several behind a load
    balancer if one is not enough: they share nothing but the database and the broker.
    """
    from waitress import create_server

    from service.app import create_app

    setup_logging(loglevel)
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
    # /predict runs kernels in this process: load them soon rather than in the first request,
    # but not while the service is starting (the workers load theirs, the API answers its
    # first requests): that would slow both by a second on two cores.
    from service.web.warmup import warm_predict

    warmup = threading.Timer(PREDICT_WARMUP_DELAY, warm_predict)
    warmup.daemon = True  # a stop within the delay does not wait for it
    warmup.start()
    server.run()
    app.extensions["descent"]["engine"].dispose()
    log.info("Descent API stopped")


# Seconds after the API starts listening before it loads the kernels /predict runs.
PREDICT_WARMUP_DELAY = 5.0


def server_body_ceiling(limits) -> int:
    """The WSGI server's own body limit (waitress's max_request_body_size): the largest
    body any request may carry.

    waitress reads (and spools to disk) a whole body before the app sees the request, so
    before the token is checked: a stranger can make it read this much, and no more. A body
    up to the ceiling reaches the API, which answers one over its own limit with the JSON
    413; a larger one gets waitress's plain-text 413. (In production a reverse proxy in
    front refuses bodies over their route's limit, and big ones without a token, before
    they get here: README, "Behind a reverse proxy".)"""
    return max(limits.max_upload_bytes, limits.max_json_bytes)


@click.command(context_settings={**CONTEXT, "ignore_unknown_options": True},
               short_help="Run one Celery worker that trains queued runs.")
@click.option("--concurrency", "-c", default=1, show_default=True, type=click.IntRange(1, 1024),
              help="Training processes in this worker (each trains one run at a time).")
@click.option("--loglevel", "-l", default="info", show_default=True, type=LOG_LEVELS)
@click.option("--name", "-n", default=None, metavar="NAME@HOST",
              help="Celery node name (default celery@HOSTNAME); must differ per worker on "
                   "one host.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- CELERY OPTIONS]")
def worker(concurrency, loglevel, name, celery_args):
    """Run one Celery worker that trains queued runs (replaces this process with it:
    `python -m workers.start`, or `celery -A workers.celery_app worker` when Celery options
    follow `--`).

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


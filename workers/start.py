"""Start a Celery worker of the Descent app without Celery's command line.

    python -m workers.start --concurrency N [--loglevel info] [--hostname NAME@HOST] [--quiet]

The worker is the ``app.Worker`` that ``celery -A workers.celery_app worker --without-mingle
--without-gossip`` builds, started the same way; only Celery's command line is skipped: it
imports click's plugins, a REPL and prompt_toolkit, about 0.4 s of CPU at every start that
`descent up` waits for. Raw Celery options need the real command line (`descent worker -- ...`
uses it).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from celery.utils.log import mlevel


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers.start", description=__doc__)
    parser.add_argument("--concurrency", type=int, required=True,
                        help="training processes (the prefork pool's size)")
    parser.add_argument("--loglevel", default="info", help="debug, info, warning or error")
    parser.add_argument("--hostname", default=None,
                        help="the node name (default: celery@HOSTNAME)")
    parser.add_argument("--quiet", action="store_true", help="no banner")
    return parser.parse_args(argv)


def shorten_root_warning() -> None:
    """As root, Celery warns in nine lines (SecurityWarning) that a worker should not run as
    root; it refuses only with pickle, which Descent never accepts. Say it in one line."""
    if os.geteuid() != 0:
        return
    from celery.exceptions import SecurityWarning

    warnings.filterwarnings("ignore", category=SecurityWarning)
    print("note: the worker runs as root; Celery advises an unprivileged user for workers",
          file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the worker until it stops; its exit code."""
    args = parse(argv)
    shorten_root_warning()
    from workers.celery_app import app

    # No mingle (at start, a worker on Redis waits a second for others to send their revoked
    # task ids: Descent revokes nothing, runs are cancelled in the database) and no gossip
    # (events between workers that nothing here listens to).
    worker = app.Worker(hostname=args.hostname, concurrency=args.concurrency,
                        loglevel=mlevel(args.loglevel.upper()), pool_cls="prefork",
                        quiet=args.quiet, without_mingle=True, without_gossip=True)
    worker.start()
    return worker.exitcode or 0


if __name__ == "__main__":
    sys.exit(main())

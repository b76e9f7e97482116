"""The ``descent`` command line: the ``cli`` group, with one module per command group.

Running the service (serve.py, up.py, supervisor.py): ``up``, ``api``, ``worker``,
``db upgrade``, ``reap``. Using it over HTTP (client.py): ``submit``, ``runs``, ``show``,
``cancel``, ``rm``, ``health`` (runs.py), ``rerun``, ``verify`` (verify.py), ``sweep``
(sweeps.py), ``dataset rm`` (datasets.py), ``plot`` (plots.py), ``compare`` (compare.py).
API tokens straight in the database: ``token`` (tokens.py). Configuration comes from the
environment, read once per invocation into a ``Settings`` (context.py).
"""

import click

from service.cli import (compare, datasets, importance, plots, runs, serve, sweeps, tokens, up,
                         verify)
from service.cli.context import CONTEXT


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
      descent verify ID           rerun a run and check the two are bit-identical
      descent compare ID ID...    runs side by side, the spec fields that differ marked
      descent importance SWEEP    which varied fields of a sweep mattered
      descent rm ID...            delete finished runs (frees your stored-bytes quota)

    \b
    Environment: DESCENT_DATABASE_URL (default sqlite:///descent.db in the working
    directory), DESCENT_BROKER_URL (default filesystem://descent-queue, a queue folder that
    needs no server; redis://HOST:6379/0 in production), DESCENT_API_URL, DESCENT_MAX_*
    (size limits).
    """


for command in (up.up, serve.api, serve.worker, serve.db, serve.reap,
                runs.submit, runs.runs, runs.show, runs.cancel, runs.rm, runs.health,
                verify.rerun, verify.verify, compare.compare, importance.importance,
                sweeps.sweep, datasets.dataset, tokens.token, plots.plot):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point (``descent``)."""
    cli(prog_name="descent")

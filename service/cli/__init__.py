"""The ``descent`` command line: the ``cli`` group, with one module per command group.

Running the service (serve.py, up.py, supervisor.py): ``up``, ``api``, ``worker``,
``db upgrade``, ``reap``. Using it over HTTP (client.py): ``submit``, ``runs``, ``show``,
``cancel``, ``rm``, ``health`` (runs.py), ``rerun``, ``verify`` (verify.py), ``sweep``
(sweeps.py), ``dataset rm`` (datasets.py), ``plot`` (plots.py), ``compare`` (compare.py).
API tokens straight in the database: ``token`` (tokens.py). Configuration comes from the
environment, read once per invocation into a ``Settings`` (context.py).

Each command's module is imported only when that command runs (or help lists it): `descent
up` and the API server it starts should not pay for the plotting or search libraries other
commands use.
"""

import importlib

import click

from service.cli.context import CONTEXT

# Command name -> "module:attribute" under service.cli.
COMMANDS = {
    "up": "up:up", "api": "serve:api", "worker": "serve:worker", "db": "serve:db",
    "reap": "serve:reap", "submit": "runs:submit", "runs": "runs:runs", "show": "runs:show",
    "cancel": "runs:cancel", "rm": "runs:rm", "health": "runs:health",
    "rerun": "verify:rerun", "verify": "verify:verify", "compare": "compare:compare",
    "importance": "importance:importance", "sweep": "sweeps:sweep",
    "dataset": "datasets:dataset", "token": "tokens:token", "plot": "plots:plot",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module when the command is looked up (the
    lazy-loading pattern of click's documentation)."""

    def __init__(self, *args, lazy_commands: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx, cmd_name):
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            module_name, attribute = self.lazy_commands[cmd_name].split(":")
            module = importlib.import_module(f"service.cli.{module_name}")
            self.add_command(getattr(module, attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(name="descent", context_settings=CONTEXT, cls=LazyGroup, lazy_commands=COMMANDS)
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



def main() -> None:
    """Console-script entry point (``descent``)."""
    cli(prog_name="descent")

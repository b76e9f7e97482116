"""What the commands that talk to the API share: the ``--api-url`` option, the Client made
from the Settings, and API failures turned into messages and exit codes."""

from __future__ import annotations

import click

from service.cli.client import ApiError, ApiUnreachable, Client
from service.cli.context import settings_of
from service.cli.credentials import client_token
from service.cli.output import fail, report_api_error
from service.settings import Settings


class ClientCommand(click.Command):
    """A command that talks to the API: unreachable API and API errors become clear
    messages and exit codes instead of tracebacks."""

    def invoke(self, ctx):
        """Run the command, reporting ApiUnreachable and ApiError."""
        try:
            return super().invoke(ctx)
        except ApiUnreachable as exc:
            fail(f"{exc}\nStart the service with `descent up`, or point DESCENT_API_URL "
                 "(or --api-url) at it.")
        except ApiError as exc:
            report_api_error(exc, settings_of(ctx))


def api_url_option(function):
    """The ``--api-url`` option of a client command."""
    return click.option(
        "--api-url", metavar="URL", default=None,
        help="The API to talk to (default: $DESCENT_API_URL, else http://127.0.0.1:8000).",
    )(function)


def client_for(settings: Settings, api_url: str | None = None,
               timeout: float = 10.0) -> Client:
    """A Client of ``api_url`` (else the settings' API URL) sending the client's token."""
    return Client(api_url or settings.api_url, timeout=timeout,
                  token=client_token(settings.token_file))

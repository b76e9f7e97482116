"""``descent dataset rm REF``: datasets over HTTP."""

from __future__ import annotations

import click

from service.cli.clientcommand import ClientCommand, api_url_option, client_for
from service.cli.context import CONTEXT, pass_settings
from service.cli.output import console


@click.group(context_settings=CONTEXT)
def dataset():
    """Datasets stored in the service (upload them with POST /api/v1/datasets)."""


@dataset.command(cls=ClientCommand, context_settings=CONTEXT,
                 short_help="Delete one of your datasets.")
@click.argument("ref", metavar="ID|NAME")
@api_url_option
@pass_settings
def rm(settings, ref, api_url):
    """Delete one of your datasets (by id or name), freeing its bytes from your
    DESCENT_MAX_USER_BYTES quota. Refused while runs use it (delete them first with
    `descent rm ID...`) and for the built-in datasets.
    """
    client_for(settings, api_url).delete_dataset(ref)
    console().print(f"deleted dataset {ref}")

"""``descent token create | list | revoke``: API tokens, straight in the database
(DESCENT_DATABASE_URL, migrated first)."""

from __future__ import annotations

import json
import re
from datetime import timezone

import click
from rich.markup import escape

from service.cli.context import CONTEXT, pass_settings
from service.cli.database import sessions_of
from service.cli.output import EXIT_FAILED, EXIT_INVALID, console, fail, fmt_time

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,199}")


def _iso(value):
    """A stored time as ISO 8601 in UTC (SQLite hands them back without a zone), or None."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


def _when(value) -> str:
    return fmt_time(_iso(value)) if value is not None else ""


@click.group(context_settings=CONTEXT)
def token():
    """API tokens (stored as hashes in DESCENT_DATABASE_URL; migrations are applied
    first).

    \b
    Every API endpoint but /api/v1/health and the OpenAPI document needs
    `Authorization: Bearer TOKEN`. Client commands send $DESCENT_TOKEN, else the token
    in $DESCENT_TOKEN_FILE (default .descent/token in the working directory, which
    `descent up` writes on its first start for user "local"):
      export DESCENT_TOKEN=$(descent token create --user alice)
    """


@token.command("create", context_settings=CONTEXT)
@click.option("--user", "user", required=True, metavar="NAME",
              help="Who the token acts as: runs, sweeps and datasets it creates are "
                   "this user's, and only this user's are visible with it.")
@click.option("--label", default=None, metavar="TEXT", help="A note to tell tokens apart.")
@pass_settings
def create(settings, user, label):
    """Create a token for a user and print it: the only time it is shown (only its
    SHA-256 hash is stored). Nothing else goes to standard output, so
    `TOKEN=$(descent token create --user bob)` works."""
    from service.store.tokens import create_token

    if not USER_NAME.fullmatch(user):
        fail("--user: 1-200 letters, digits, '_', '.', '@', '+', '-', starting with a "
             "letter or digit", EXIT_INVALID)
    if label is not None and len(label) > 200:
        fail("--label: at most 200 characters", EXIT_INVALID)
    with sessions_of(settings.database_url, migrate=True) as sessions:
        with sessions() as session:
            plain = create_token(session, user, label=label)
            session.commit()
    click.echo(plain)


@token.command("list", context_settings=CONTEXT)
@click.option("--user", default=None, metavar="NAME", help="Only this user's tokens.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
@pass_settings
def list_(settings, user, as_json):
    """Tokens: id, user, label, prefix, created, last used (updated at most once a
    minute), revoked. Never the token itself."""
    from service.store.tokens import list_tokens

    with sessions_of(settings.database_url, migrate=True) as sessions:
        with sessions() as session:
            rows = list_tokens(session, user)
    if as_json:
        for row in rows:
            click.echo(json.dumps({
                "id": row.id, "user": row.user, "label": row.label, "prefix": row.prefix,
                **{name: _iso(getattr(row, name))
                   for name in ("created_at", "last_used_at", "revoked_at")}}))
        return
    if not rows:
        console().print("No tokens.")
        return
    console().print(tokens_table(rows))


def tokens_table(rows):
    """The table of ``descent token list``; never the tokens themselves."""
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for name in ("id", "user", "label", "prefix", "created", "last used", "revoked"):
        table.add_column(name, justify="right" if name == "id" else "left")
    for row in rows:
        table.add_row(str(row.id), escape(row.user), escape(row.label or ""),
                      escape(row.prefix) + "...", _when(row.created_at),
                      _when(row.last_used_at), _when(row.revoked_at))
    return table


@token.command("revoke", context_settings=CONTEXT)
@click.argument("token_id", type=int, metavar="ID")
@pass_settings
def revoke(settings, token_id):
    """Revoke a token by id (see `descent token list`): the API refuses it from now on.
    Exit 1 when there is no live token with that id."""
    from service.store.tokens import revoke_token

    with sessions_of(settings.database_url, migrate=True) as sessions:
        with sessions() as session:
            done = revoke_token(session, token_id)
            session.commit()
    if not done:
        fail(f"no live token with id {token_id}", EXIT_FAILED)
    console().print(f"revoked token {token_id}")

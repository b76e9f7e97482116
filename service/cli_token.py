"""`descent token create | list | revoke`: API tokens, straight in the database
(DESCENT_DATABASE_URL, migrated first), and the local token of `descent up`."""

from __future__ import annotations

import json
import re
from datetime import timezone
from pathlib import Path

import click
from rich.markup import escape

from service.settings import Settings
from service.credentials import read_token_file, token_file, write_token_file

USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,199}")
LOCAL_USER = "local"


def _sessions(database_url: str):
    """(engine, sessionmaker) of the migrated database; the caller disposes of the engine."""
    from service.cli import apply_migrations
    from service.store import make_engine, make_sessionmaker

    apply_migrations(database_url)
    engine = make_engine(database_url)
    return engine, make_sessionmaker(engine)


def ensure_local_token(database_url: str, path: Path | None = None) -> tuple[str, bool]:
    """(token, created): the live token in the token file, or a new token of user "local"
    written there (0600) when the file is missing or its token unknown or revoked. The
    database must be migrated."""
    from service.store import make_engine, make_sessionmaker
    from service.store.tokens import create_token, user_of_token

    path = path or token_file()
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            token = read_token_file(path)
            if token is not None and user_of_token(session, token) is not None:
                return token, False
            token = create_token(session, LOCAL_USER, label="descent up")
            session.commit()
    finally:
        engine.dispose()
    write_token_file(path, token)
    return token, True


def _iso(value):
    """A stored time as ISO 8601 in UTC (SQLite hands them back without a zone), or None."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


def _when(value) -> str:
    from service.cli import fmt_time

    return fmt_time(_iso(value)) if value is not None else ""


def register(cli) -> None:
    """Add the `token` group to the `descent` command."""
    from service.cli import CONTEXT, EXIT_FAILED, EXIT_INVALID, console, fail

    @cli.group(context_settings=CONTEXT)
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
    def create(user, label):
        """Create a token for a user and print it: the only time it is shown (only its
        SHA-256 hash is stored). Nothing else goes to standard output, so
        `TOKEN=$(descent token create --user bob)` works."""
        from service.store.tokens import create_token

        if not USER_NAME.fullmatch(user):
            fail("--user: 1-200 letters, digits, '_', '.', '@', '+', '-', starting with a "
                 "letter or digit", EXIT_INVALID)
        if label is not None and len(label) > 200:
            fail("--label: at most 200 characters", EXIT_INVALID)
        engine, sessions = _sessions(Settings.from_env().database_url)
        try:
            with sessions() as session:
                plain = create_token(session, user, label=label)
                session.commit()
        finally:
            engine.dispose()
        click.echo(plain)

    @token.command("list", context_settings=CONTEXT)
    @click.option("--user", default=None, metavar="NAME", help="Only this user's tokens.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
    def list_(user, as_json):
        """Tokens: id, user, label, prefix, created, last used (updated at most once a
        minute), revoked. Never the token itself."""
        from rich.table import Table

        from service.store.tokens import list_tokens

        engine, sessions = _sessions(Settings.from_env().database_url)
        try:
            with sessions() as session:
                rows = list_tokens(session, user)
        finally:
            engine.dispose()
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
        table = Table(show_edge=False, pad_edge=False)
        for name in ("id", "user", "label", "prefix", "created", "last used", "revoked"):
            table.add_column(name, justify="right" if name == "id" else "left")
        for row in rows:
            table.add_row(str(row.id), escape(row.user), escape(row.label or ""),
                          escape(row.prefix) + "...", _when(row.created_at),
                          _when(row.last_used_at), _when(row.revoked_at))
        console().print(table)

    @token.command("revoke", context_settings=CONTEXT)
    @click.argument("token_id", type=int, metavar="ID")
    def revoke(token_id):
        """Revoke a token by id (see `descent token list`): the API refuses it from now on.
        Exit 1 when there is no live token with that id."""
        from service.store.tokens import revoke_token

        engine, sessions = _sessions(Settings.from_env().database_url)
        try:
            with sessions() as session:
                done = revoke_token(session, token_id)
                session.commit()
        finally:
            engine.dispose()
        if not done:
            fail(f"no live token with id {token_id}", EXIT_FAILED)
        console().print(f"revoked token {token_id}")

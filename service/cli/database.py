"""The database as the admin commands use it: migrations, and sessions on an engine that is
disposed of afterwards."""

from __future__ import annotations

from contextlib import contextmanager

from service.cli.output import describe_database, fail


def unreachable(database_url: str, exc) -> None:
    """Exit 1 saying the database cannot be reached (an OperationalError ``exc``)."""
    fail(f"cannot reach the database {describe_database(database_url)}: "
         f"{str(exc.orig).strip() if exc.orig else exc}")


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
        unreachable(database_url, exc)


@contextmanager
def sessions_of(database_url: str, migrate: bool = False):
    """A sessionmaker on ``database_url`` (migrated first if ``migrate``), its engine
    disposed of on leaving."""
    from service.store import make_engine, make_sessionmaker

    if migrate:
        apply_migrations(database_url)
    engine = make_engine(database_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()

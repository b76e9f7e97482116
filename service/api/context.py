"""Per-request access to the session, settings and queue client."""

from flask import current_app, g
from sqlalchemy.orm import Session


def db() -> Session:
    """This request's database session (closed when the request ends)."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["descent"]["sessions"]()
    return g.db_session


def settings():
    """The app's Settings."""
    return current_app.extensions["descent"]["settings"]


def queue():
    """The app's queue client."""
    return current_app.extensions["descent"]["queue"]


def engine():
    """The app's database engine."""
    return current_app.extensions["descent"]["engine"]


def current_user():
    """The user of this request's API token (set by the auth hook), or None."""
    return g.get("user")

"""Per-request access to the app's session, settings and queue client (what
``service.app.create_app`` keeps in ``app.extensions["descent"]``), and the request's user."""

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


def current_user():
    """The user of this request (set by the API's token hook or the dashboard's session),
    or None."""
    return g.get("user")

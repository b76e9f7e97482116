"""The browser dashboard: server-rendered pages at ``/`` over the same store as the API.

It authenticates on its own (the API's bearer-token hook exempts the blueprint named
"dashboard"): a login page takes an API token, and the signed session cookie then carries
the user and the token's id, re-checked against the store on every request.
"""

from flask import Flask

from service.web import authfailures

from .secret import secret_key


def init_dashboard(app: Flask) -> None:
    """Register the dashboard blueprint and the session settings it needs."""
    from . import compare, runs, submit, sweeps, views  # noqa: F401  (they register their routes)
    from .blueprint import bp

    settings = app.extensions["descent"]["settings"]
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secret_key(settings)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_NAME="descent_session")
    # A CSRF token is good for the whole session, which logging out or in replaces.
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    authfailures.of_app(app)  # made now, not by two first requests at once
    app.register_blueprint(bp)

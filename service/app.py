"""The Flask app factory: the store, the queue client, the REST API and the dashboard hang
from here (``service.api`` and ``service.dashboard`` never import each other: both call the
domain modules, and share ``service.web``)."""

from flask import Flask, g

from service.queue import QueueClient
from service.settings import Settings
from service.store import make_engine, make_sessionmaker


def create_app(config: dict | None = None) -> Flask:
    """Build the service. ``config`` may hold ``SETTINGS`` (a Settings; default: from the
    environment), ``QUEUE`` (anything with ``enqueue_runs``), ``SESSIONS`` (a sessionmaker
    to use instead of one on a new engine, such as tests' savepoint-bound one) and any
    Flask settings."""
    from service.api import API_PREFIX, init_api
    from service.dashboard import init_dashboard

    app = Flask("service")
    app.config.update(
        API_TITLE="Descent",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        JSON_SORT_KEYS=False,
    )
    app.config.update(config or {})
    settings = app.config.get("SETTINGS") or Settings.from_env()
    app.config["MAX_CONTENT_LENGTH"] = settings.limits.max_upload_bytes
    sessions = app.config.get("SESSIONS")
    engine = sessions.kw["bind"] if sessions is not None else make_engine(settings.database_url)
    app.extensions["descent"] = {
        "settings": settings,
        "engine": engine,
        "sessions": sessions if sessions is not None else make_sessionmaker(engine),
        "queue": app.config.get("QUEUE") or QueueClient(settings.broker_url),
    }

    @app.teardown_appcontext
    def _close_session(_exc):
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    init_api(app, settings)
    init_dashboard(app)
    return app

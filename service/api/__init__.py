"""The Flask app factory: blueprints, OpenAPI document and JSON errors."""

from flask import Flask, g
from flask_smorest import Api as SmorestApi

from service.settings import Settings
from service.queue import QueueClient
from service.store import make_engine, make_sessionmaker

from . import auth, bodysize, ratelimit
from .errors import CommonResponses, ErrorSchema, register_error_handlers

API_PREFIX = "/api/v1"


class Api(SmorestApi):
    """flask-smorest's Api, documenting our error body instead of its own."""

    ERROR_SCHEMA = ErrorSchema
    # No catch-all "default" response: each operation lists every status it answers.
    DEFAULT_ERROR_RESPONSE_NAME = None


def create_app(config: dict | None = None) -> Flask:
    """Build the API. ``config`` may hold ``SETTINGS`` (a Settings; default: from the
    environment), ``QUEUE`` (anything with ``enqueue_run``) and any Flask settings."""
    app = Flask(__name__)
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
    engine = make_engine(settings.database_url)
    app.extensions["descent"] = {
        "settings": settings,
        "engine": engine,
        "sessions": make_sessionmaker(engine),
        "queue": app.config.get("QUEUE") or QueueClient(settings.broker_url),
    }

    @app.teardown_appcontext
    def _close_session(_exc):
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    from . import metrics  # times every request, those the later hooks reject included

    metrics.init_app(app)
    # Before authentication, so requests with wrong tokens are limited too.
    ratelimit.install(app, settings)
    # First of the before_request hooks: every later one (and every view) sees g.user.
    auth.install(app)
    bodysize.install(app)
    api = Api(app, spec_kwargs={"info": {"description": "Batch training of fully connected "
                                                       "networks by gradient descent."},
                                "extra_plugins": [CommonResponses(ratelimit.UNLIMITED_PATHS)]})
    auth.document(api)
    from . import datasets, health, runs, sweeps

    api.register_blueprint(runs.blp)
    api.register_blueprint(datasets.blp)
    api.register_blueprint(health.blp)
    api.register_blueprint(sweeps.blp)
    from . import plots, trace

    api.register_blueprint(plots.blp)
    api.register_blueprint(trace.blp)
    register_error_handlers(app)
    from service.dashboard import init_dashboard  # the browser pages at /

    init_dashboard(app)
    return app

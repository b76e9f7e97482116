"""The Flask app factory: the store, the queue client, the REST API and the dashboard hang
from here (``service.api`` and ``service.dashboard`` never import each other: both call the
domain modules, and share ``service.web``)."""

from flask import Flask, g
from werkzeug.middleware.proxy_fix import ProxyFix

from service.queue import QueueClient
from service.settings import Settings
from service.store import make_engine, make_sessionmaker
from service.web import headers
from service.web.jsonbody import BoundedJSONProvider

# Served by the dashboard's static route: the page needs no CDN (SOURCE.md there).
SWAGGER_UI_URL = "/ui/static/vendor/swagger-ui/"


def create_app(config: dict | None = None) -> Flask:
    """Build the service. ``config`` may hold ``SETTINGS`` (a Settings; default: from the
    environment), ``QUEUE`` (anything with ``enqueue_runs``), ``SESSIONS`` (a sessionmaker
    to use instead of one on a new engine, such as tests' savepoint-bound one) and any
    Flask settings."""
    from service.api import API_PREFIX, init_api
    from service.dashboard import init_dashboard

    # web/templates holds only swagger_ui.html, which replaces flask-smorest's page of that
    # name (an inline script, which the Content-Security-Policy forbids).
    app = Flask("service", template_folder="web/templates")
    app.json = BoundedJSONProvider(app)  # request.get_json() within bounds too
    app.config.update(
        API_TITLE="Descent",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=SWAGGER_UI_URL,
        OPENAPI_SWAGGER_UI_CONFIG={"validatorUrl": None},
        JSON_SORT_KEYS=False,
    )
    app.config.update(config or {})
    settings = app.config.get("SETTINGS") or Settings.from_env()
    app.config["MAX_CONTENT_LENGTH"] = settings.limits.max_upload_bytes
    app.config["SESSION_COOKIE_SECURE"] = settings.secure_cookies
    if settings.trusted_proxies:
        # The client's address and scheme from the X-Forwarded-* headers the last N proxies
        # added (the rate limits count per address); never from headers nobody vouches for.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies,
                                x_proto=settings.trusted_proxies)
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

    headers.install(app)
    init_api(app, settings)
    init_dashboard(app)
    return app

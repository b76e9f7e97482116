"""The REST API at /api/v1: blueprints, OpenAPI document and JSON errors (installed on the
app that ``service.app.create_app`` builds)."""

from flask import Flask
from flask_smorest import Api as SmorestApi

from service.web import authfailures

from . import auth, bodysize, ratelimit
from .errors import CommonResponses, ErrorSchema, register_error_handlers

API_PREFIX = "/api/v1"


class Api(SmorestApi):
    """flask-smorest's Api, documenting our error body instead of its own."""

    ERROR_SCHEMA = ErrorSchema
    # No catch-all "default" response: each operation lists every status it answers.
    DEFAULT_ERROR_RESPONSE_NAME = None


def init_api(app: Flask, settings) -> None:
    """Install the API's hooks (metrics, rate limits, authentication, body sizes), its
    blueprints with their OpenAPI document, and its JSON error handlers on ``app``."""
    from . import metrics  # times every request, those the later hooks reject included

    metrics.init_app(app)
    # Before authentication, so requests with wrong tokens are limited too.
    ratelimit.install(app, settings)
    # First of the before_request hooks: every later one (and every view) sees g.user.
    # Failed authentications: one budget per address with the dashboard's login form.
    auth.install(app, authfailures.of_app(app))
    bodysize.install(app)
    api = Api(app, spec_kwargs={"info": {"description": "Batch training of fully connected "
                                                       "networks by gradient descent."},
                                "extra_plugins": [CommonResponses(ratelimit.UNLIMITED_PATHS)]})
    auth.document(api)
    from . import compare, datasets, health, plots, runs, sweeps, trace

    for module in (runs, compare, datasets, health, sweeps, plots, trace):
        api.register_blueprint(module.blp)
    register_error_handlers(app)

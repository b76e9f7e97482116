"""Failed authentications per client address (DESCENT_AUTH_FAILURE_LIMIT), one budget for
both faces of the service: the API's bearer tokens (``service.api.auth``) and the dashboard's
login form (``service.dashboard.auth``) count into the same one, so an address cannot guess
tokens 30 times a minute on each.

The counts live in DESCENT_RATELIMIT_STORAGE_URL (by default the broker's Redis when the
broker is Redis, so every server behind a load balancer shares them; this process's memory
otherwise). An address over its budget is refused before its token is looked up, so made-up
tokens cannot buy database lookups.
"""

import logging
import math
import time
from urllib.parse import urlparse

from flask import Flask, request

# Keeps every instance's counts apart from other users of the same Redis database.
KEY_PREFIX = "descent-ratelimit"
# Where an app keeps its budget, in app.extensions["descent"].
EXTENSION_KEY = "auth_failures"

log = logging.getLogger(__name__)


def storage_url(settings) -> str:
    """Where the counts live: the configured URL, else the broker's Redis, else memory."""
    if settings.ratelimit_storage_url:
        return settings.ratelimit_storage_url
    if urlparse(settings.broker_url).scheme in ("redis", "rediss"):
        return settings.broker_url
    return "memory://"


def storage_options(uri: str) -> dict:
    """Connection options for the counts' storage: a Redis that hangs costs a request at
    most a second or two (then the limits let it through) instead of holding it forever."""
    if urlparse(uri).scheme in ("redis", "rediss"):
        return {"socket_connect_timeout": 1, "socket_timeout": 1}
    return {}


def client_address() -> str:
    """The request's client address (``unknown`` when the server gives none)."""
    return request.remote_addr or "unknown"


class FailedAuthentications:
    """Failed authentications per client address, limited by ``limit`` (Flask-Limiter's
    notation, such as ``30/minute``; several separated by ``;``) in the storage at
    ``storage_uri``. A storage outage lets requests through (as the rate limit does)."""

    def __init__(self, limit: str, storage_uri: str):
        from limits import parse_many
        from limits.storage import storage_from_string
        from limits.strategies import FixedWindowRateLimiter

        self.limits = parse_many(limit)
        self.strategy = FixedWindowRateLimiter(
            storage_from_string(storage_uri, **storage_options(storage_uri)))

    def retry_after(self, address: str):
        """Seconds until ``address`` may try to authenticate again; None while it is within
        its budget (checking does not consume it)."""
        try:
            for limit in self.limits:
                if not self.strategy.test(limit, KEY_PREFIX, "auth-failures", address):
                    stats = self.strategy.get_window_stats(limit, KEY_PREFIX,
                                                           "auth-failures", address)
                    return max(1, math.ceil(stats.reset_time - time.time()))
        except Exception as exc:  # storage down: never lock every client out
            log.warning("failed-authentication limit not checked: %s", exc)
        return None

    def record(self, address: str) -> None:
        """Count one failed authentication from ``address``."""
        try:
            for limit in self.limits:
                self.strategy.hit(limit, KEY_PREFIX, "auth-failures", address)
        except Exception as exc:
            log.warning("failed authentication not counted: %s", exc)


class Unlimited:
    """No failed-authentication limit (DESCENT_AUTH_FAILURE_LIMIT set empty)."""

    def retry_after(self, address: str):
        """Never over a budget."""
        return None

    def record(self, address: str) -> None:
        """Nothing to count."""


def failed_authentications(settings):
    """A new failed-authentication budget for ``settings`` (Unlimited when none is set)."""
    if not settings.auth_failure_limit:
        return Unlimited()
    return FailedAuthentications(settings.auth_failure_limit, storage_url(settings))


def of_app(app: Flask):
    """``app``'s one failed-authentication budget, made from its settings on first use (at
    start-up, by the API and the dashboard): one object, so that even counts kept in this
    process's memory are shared by both faces."""
    extension = app.extensions["descent"]
    if EXTENSION_KEY not in extension:
        extension[EXTENSION_KEY] = failed_authentications(extension["settings"])
    return extension[EXTENSION_KEY]

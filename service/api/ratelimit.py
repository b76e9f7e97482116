"""Request budgets (Flask-Limiter and its ``limits`` library), counted in shared storage.

Two budgets, both in DESCENT_RATELIMIT_STORAGE_URL (by default the broker's Redis when the
broker is Redis, so every API server behind a load balancer shares them, and this process's
memory otherwise):

- DESCENT_RATE_LIMIT: one budget per API token across every route (an application-wide
  limit, not one per route), keyed by the SHA-256 of the bearer token (so the token itself
  is never stored), or by the client's address when there is none.
- DESCENT_AUTH_FAILURE_LIMIT: failed authentications (no token, an unknown or a revoked one)
  per client address. A client rotating made-up tokens gets a fresh rate-limit key each
  time; this budget stops it, answered before the token's database lookup
  (``service.api.auth``).

Over either: 429 with ``Retry-After`` and the usual JSON error body. Health checks are never
limited.
"""

import hashlib
import logging
import math
import time
from urllib.parse import urlparse

from flask import Flask, request
from flask_limiter import Limiter

# Paths (prefixes) never rate-limited: load balancers and `descent up` poll health.
UNLIMITED_PATHS = ("/api/v1/health",)
# Keeps every instance's counts apart from other users of the same Redis database.
KEY_PREFIX = "descent-ratelimit"

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


def rate_key() -> str:
    """The SHA-256 of the request's bearer token, or the client's address without one."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token:" + hashlib.sha256(token.strip().encode()).hexdigest()
    return "address:" + client_address()


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
    """The failed-authentication budget of ``settings`` (Unlimited when none is set)."""
    if not settings.auth_failure_limit:
        return Unlimited()
    return FailedAuthentications(settings.auth_failure_limit, storage_url(settings))


def install(app: Flask, settings) -> Limiter | None:
    """Limit every request but health checks to ``settings.rate_limit`` per key, one budget
    across all routes; nothing when no limit is configured."""
    if not settings.rate_limit:
        return None
    limiter = Limiter(
        rate_key,
        app=app,
        # Application limits: one count per key whatever the route (default limits would
        # keep one per route, multiplying the budget by the number of routes).
        application_limits=[settings.rate_limit],
        application_limits_exempt_when=lambda: request.path.startswith(UNLIMITED_PATHS),
        storage_uri=storage_url(settings),
        storage_options=storage_options(storage_url(settings)),
        key_prefix=KEY_PREFIX,
        headers_enabled=True,
        # A storage outage (Redis down) lets requests through rather than failing them all.
        swallow_errors=True,
    )
    return limiter

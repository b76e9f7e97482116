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
  (``service.api.auth``). It lives in ``service.web.authfailures``: the dashboard's login
  form counts into the same budget.

Over either: 429 with ``Retry-After`` and the usual JSON error body. Health checks are never
limited.
"""

import hashlib

from flask import Flask, request
from flask_limiter import Limiter

from service.web.authfailures import KEY_PREFIX, client_address, storage_options, storage_url

# Paths (prefixes) never rate-limited: load balancers and `descent up` poll health.
UNLIMITED_PATHS = ("/api/v1/health",)


def rate_key() -> str:
    """The SHA-256 of the request's bearer token, or the client's address without one."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token:" + hashlib.sha256(token.strip().encode()).hexdigest()
    return "address:" + client_address()


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

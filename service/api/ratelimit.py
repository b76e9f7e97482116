"""Requests per API token (Flask-Limiter): DESCENT_RATE_LIMIT, counted in shared storage.

The key is the SHA-256 of the request's bearer token (so the token itself is never stored),
or the client's address when there is none. Counts live in DESCENT_RATELIMIT_STORAGE_URL;
by default in the broker's Redis when the broker is Redis, so every API server behind a load
balancer shares them, and in this process's memory otherwise. Over the limit: 429 with
``Retry-After`` and the usual JSON error body. Health checks are never limited.
"""

import hashlib
from urllib.parse import urlparse

from flask import Flask, request
from flask_limiter import Limiter

# Paths (prefixes) never rate-limited: load balancers and `descent up` poll health.
UNLIMITED_PATHS = ("/api/v1/health",)


def storage_url(settings) -> str:
    """Where the counts live: the configured URL, else the broker's Redis, else memory."""
    if settings.ratelimit_storage_url:
        return settings.ratelimit_storage_url
    if urlparse(settings.broker_url).scheme in ("redis", "rediss"):
        return settings.broker_url
    return "memory://"


def rate_key() -> str:
    """The SHA-256 of the request's bearer token, or the client's address without one."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token:" + hashlib.sha256(token.strip().encode()).hexdigest()
    return "address:" + (request.remote_addr or "unknown")


def install(app: Flask, settings) -> Limiter | None:
    """Limit every request but health checks to ``settings.rate_limit`` per key; nothing when
    no limit is configured."""
    if not settings.rate_limit:
        return None
    limiter = Limiter(
        rate_key,
        app=app,
        default_limits=[settings.rate_limit],
        storage_uri=storage_url(settings),
        # Keep every instance's counts apart from other users of the same Redis database.
        key_prefix="descent-ratelimit",
        headers_enabled=True,
        # A storage outage (Redis down) lets requests through rather than failing them all.
        swallow_errors=True,
        default_limits_exempt_when=lambda: request.path.startswith(UNLIMITED_PATHS),
    )
    return limiter

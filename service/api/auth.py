"""Bearer-token authentication of every request, deny by default.

An app-wide ``before_request`` hook: any route, including ones added later, needs
``Authorization: Bearer <token>`` unless its blueprint (or, outside blueprints, its
endpoint) is in PUBLIC. The hook sets ``g.user`` (``service.web.context.current_user``).
Routes in OPTIONAL are open too, but check a token when one is sent (the view shows more to
a known caller) and never refuse the request.

Failed authentications (no token, an unknown or a revoked one) are counted per client
address (``service.web.authfailures``, one budget with the dashboard's login form); an
address over its budget is answered 429 before its token is looked up, so made-up tokens
cannot buy database lookups.
"""

import threading
import time
from typing import Optional

from flask import Flask, g, request
from flask.typing import ResponseReturnValue

from service.store import tokens as store_tokens
from service.web.authfailures import client_address
from service.web.context import current_user, db

from .errors import ApiError, error_response

# Open without a token: blueprint names, or endpoint names of routes outside a blueprint.
#   health     liveness for load balancers and `descent up`
#   api-docs   flask-smorest's /api/v1/openapi.json and the Swagger page /api/v1/docs
#   dashboard  the browser pages, which enforce their own cookie-session login
#   static     static files
PUBLIC = frozenset({"health", "api-docs", "dashboard", "static"})
# Public blueprints that still check a token when one is sent (and count its failures).
OPTIONAL = frozenset({"health"})

SCHEME = "bearerAuth"
# last_used_at is written at most this often per token and process.
TOUCH_INTERVAL = 60.0


def clock() -> float:
    """Seconds on this process's monotonic clock."""
    return time.monotonic()


class _TouchLimiter:
    """Remembers when each token's last_used_at was last written by this process."""

    def __init__(self, interval: float):
        self.interval = interval
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()

    def due(self, token_id: int) -> bool:
        """Whether to write ``token_id``'s last_used_at now (and note that it is written)."""
        now = clock()
        with self._lock:
            if now - self._last.get(token_id, -self.interval) < self.interval:
                return False
            self._last[token_id] = now
            return True


def is_public() -> bool:
    """Whether this request's route is open without a token."""
    endpoint = request.endpoint
    if endpoint is None:  # no route matched: 404/405 only for those who may ask
        return False
    return (request.blueprint in PUBLIC) if request.blueprint else endpoint in PUBLIC


def bearer_token():
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def unauthorized(message: str, error: Optional[str] = None) -> ResponseReturnValue:
    """A 401 in our error format with a ``WWW-Authenticate: Bearer`` challenge."""
    body, status = error_response(401, "unauthorized", message)
    challenge = 'Bearer realm="descent"' + (f', error="{error}"' if error else "")
    body.headers["WWW-Authenticate"] = challenge
    return body, status


def too_many_failures(retry_after: int) -> ResponseReturnValue:
    """A 429 for an address over its failed-authentication budget, with Retry-After."""
    body, status = error_response(
        429, "too_many_requests", f"too many failed authentications from this address; "
                                  f"try again in {retry_after} s")
    body.headers["Retry-After"] = str(retry_after)
    return body, status


def install(app: Flask, failures) -> None:
    """Require a live API token on every non-public route of ``app``, counting failures in
    ``failures`` (``service.web.authfailures.of_app``)."""
    touches = _TouchLimiter(TOUCH_INTERVAL)

    @app.before_request
    def _authenticate():
        optional = request.blueprint in OPTIONAL
        if is_public() and not optional:
            return None
        token = bearer_token()
        if optional and token is None:
            return None
        address = client_address()
        wait = failures.retry_after(address)
        if wait is not None:  # before the lookup: an attacker's tries cost no query
            return None if optional else too_many_failures(wait)
        if token is None:
            failures.record(address)
            return unauthorized("this endpoint needs an API token: send 'Authorization: "
                                "Bearer TOKEN' (create one with `descent token create "
                                "--user NAME`)")
        session = db()
        try:
            found = store_tokens.live_token(session, token)
        except Exception:
            if not optional:
                raise
            # Health reports the database down itself; a token it cannot check is no error.
            session.rollback()
            return None
        if found is None:
            session.rollback()
            failures.record(address)
            return None if optional else unauthorized("unknown or revoked API token",
                                                      "invalid_token")
        if touches.due(found.id):
            store_tokens.touch_token(session, found.id, TOUCH_INTERVAL)
        session.commit()  # end the lookup's transaction before the view's own work
        g.user = found.user
        return None


def document(api) -> None:
    """Declare the bearer scheme in the OpenAPI document, required by every operation
    (the public ones opt out with ``security: []``)."""
    api.spec.components.security_scheme(SCHEME, {"type": "http", "scheme": "bearer",
                                                 "description": "an API token from "
                                                                "`descent token create`"})
    api.spec.options["security"] = [{SCHEME: []}]


def require_user() -> str:
    """This request's user; a 401 ApiError when there is none (a route the hook left open
    must never reach owner-scoped data)."""
    user = current_user()
    if user is None:
        raise ApiError(401, "unauthorized", "this endpoint needs an API token")
    return user

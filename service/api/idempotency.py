"""``Idempotency-Key`` on the POSTs that create work (runs, sweeps).

A request carrying the header first reserves (owner, endpoint, key) in the idempotency_keys
table; the unique constraint lets exactly one request of a kind through. That one creates
the resource and records its id; a retry (same user, endpoint, key and body) gets that
resource back, as it is now, with the original status, and queues nothing. A retry while
the first is still running waits for it. The same key with another body is a 422 naming
``Idempotency-Key``. A request that fails (4xx, 503) releases its key, so it can be retried.
"""

import functools
import hashlib
import json
import time
from datetime import datetime, timedelta, timezone

from flask import request
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from service.store.models import IdempotencyKey
from service.web.context import current_user, db

from .errors import ApiError

HEADER = "Idempotency-Key"
# Visible ASCII only: the key is stored and compared as it is, on SQLite and PostgreSQL.
KEY_PATTERN = "^[!-~]{1,255}$"
MAX_KEY = 255
# How long a retry waits for the first request with its key to finish, before a 409.
WAIT_SECONDS = 30.0
POLL_SECONDS = 0.05
# A reservation this old without a resource is from a request that died half-way.
STALE_AFTER = timedelta(minutes=10)

PARAMETER = {
    "name": HEADER, "in": "header", "required": False,
    "schema": {"type": "string", "pattern": KEY_PATTERN},
    "description": ("1-255 visible ASCII characters (a UUID, say), chosen by the client. A "
                    "retry with the same key and body returns the resource the first request "
                    "created, as it is now, and queues nothing new; the same key with another "
                    "body is a 422 naming Idempotency-Key. Keys are per user and endpoint; a "
                    "request that failed does not use its key up."),
}


def _invalid(message: str) -> ApiError:
    return ApiError(422, "validation_error", f"invalid {HEADER}", {HEADER: message})


def checked_key(value: str) -> str:
    """The header's value, or a 422 naming it when it is empty, too long or not ASCII."""
    if not value:
        raise _invalid("must not be empty")
    if len(value) > MAX_KEY:
        raise _invalid(f"at most {MAX_KEY} characters, got {len(value)}")
    if not all("!" <= c <= "~" for c in value):
        raise _invalid("visible ASCII characters only (no spaces)")
    return value


def request_hash() -> str:
    """SHA-256 of the request body; of its canonical form when it is JSON (key order and
    spacing do not make a different request)."""
    body = request.get_json(silent=True)
    data = (json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            if body is not None else request.get_data())
    return hashlib.sha256(data).hexdigest()


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def claim(owner: str, endpoint: str, key: str, digest: str) -> tuple[int | None, int | None]:
    """(reservation id, None) when this request is the first with its key, or (None,
    resource id) when an earlier one created the resource; waits for one still running.
    ApiError 422 when the key was used with another body, 409 when the wait times out.

    Uses the request's session, and leaves no transaction open (a SQLite transaction holds
    the database's write lock)."""
    session = db()
    session.commit()
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        row = IdempotencyKey(owner=owner, endpoint=endpoint, key=key, request_hash=digest)
        session.add(row)
        try:
            session.commit()
            return row.id, None
        except IntegrityError:
            session.rollback()
        found = session.scalars(select(IdempotencyKey).filter_by(
            owner=owner, endpoint=endpoint, key=key)).one_or_none()
        session.commit()
        if found is not None:
            if found.request_hash != digest:
                raise _invalid("already used with a different request body")
            if found.resource_id is not None:
                return None, found.resource_id
            if datetime.now(timezone.utc) - _utc(found.created_at) > STALE_AFTER:
                session.execute(delete(IdempotencyKey).where(
                    IdempotencyKey.id == found.id, IdempotencyKey.resource_id.is_(None)))
                session.commit()
                continue
        # (found is None: the first request failed and released the key just now.)
        if time.monotonic() > deadline:
            raise ApiError(409, "in_progress",
                           f"a request with this {HEADER} is still being processed; retry later",
                           {HEADER: "in use by a request in progress"})
        time.sleep(POLL_SECONDS)


def complete(reservation: int, resource_id: int, status: int) -> None:
    """Record the resource a reserved key created (in the request's session, which the view
    may have left in a read transaction)."""
    session = db()
    session.execute(update(IdempotencyKey).where(IdempotencyKey.id == reservation)
                    .values(resource_id=resource_id, status_code=status))
    session.commit()


def release(reservation: int) -> None:
    """Forget a reservation whose request created nothing (it failed, or was a preview)."""
    session = db()
    session.rollback()  # whatever the failed view left half-done
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == reservation))
    session.commit()


def idempotent(blp, endpoint: str, load, status: int = 202):
    """Decorate a POST view (innermost, right above ``def``) that returns the created
    resource as a dict with an ``id``: honour ``Idempotency-Key``. ``load(id)`` is the
    resource's current representation, answered to a retry. Documents the header."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            value = request.headers.get(HEADER)
            if value is None:
                return view(*args, **kwargs)
            key = checked_key(value)
            owner = current_user() or ""
            reservation, resource_id = claim(owner, endpoint, key, request_hash())
            if reservation is None:
                return load(resource_id), status
            try:
                result = view(*args, **kwargs)
            except BaseException:
                release(reservation)
                raise
            if isinstance(result, dict) and isinstance(result.get("id"), int):
                complete(reservation, result["id"], status)
            else:  # nothing was created (a preview)
                release(reservation)
            return result

        documented = blp.doc(parameters=[PARAMETER])(wrapper)
        return blp.alt_response(409, response="CONFLICT")(documented)

    return decorator

"""API tokens: created once in plain text, stored only as a SHA-256 hash."""

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Optional

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from .models import ApiToken, utcnow

TOKEN_PREFIX = "dsc_"


def hash_token(token: str) -> str:
    """The stored form of a token (hex SHA-256)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, user: str, label: Optional[str] = None) -> str:
    """Store a new token of ``user`` and return it in plain text: the only time it is seen
    (the caller commits)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user=user, token_hash=hash_token(token), prefix=token[:12],
                         label=label))
    session.flush()
    return token


def live_token(session: Session, token: str) -> Optional[ApiToken]:
    """The live (unrevoked) token row of a plain-text token, or None. The lookup is by
    hash, and the hashes are compared in constant time."""
    if not token or len(token) > 200:
        return None
    digest = hash_token(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest,
                                                ApiToken.revoked_at.is_(None)))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return row


def user_of_token(session: Session, token: str) -> Optional[str]:
    """The user a live (unrevoked) token belongs to, or None (see ``live_token``)."""
    row = live_token(session, token)
    return None if row is None else row.user


def touch_token(session: Session, token_id: int, interval: float = 60.0) -> None:
    """Set a token's last_used_at to now unless it was set less than ``interval`` seconds
    ago (so many API processes write it rarely; the caller commits)."""
    now = utcnow()
    session.execute(update(ApiToken).where(
        ApiToken.id == token_id,
        or_(ApiToken.last_used_at.is_(None),
            ApiToken.last_used_at < now - timedelta(seconds=interval)))
        .values(last_used_at=now)
        # (not evaluated against loaded rows: SQLite hands times back without a zone)
        .execution_options(synchronize_session=False))


def revoke_token(session: Session, token_id: int) -> bool:
    """Revoke a token by id; whether one was revoked (the caller commits)."""
    return bool(session.execute(
        update(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())).rowcount)


def list_tokens(session: Session, user: Optional[str] = None) -> list[ApiToken]:
    """Tokens (hashes, never plain text), of one user or of all."""
    stmt = select(ApiToken).order_by(ApiToken.id)
    if user is not None:
        stmt = stmt.where(ApiToken.user == user)
    return list(session.scalars(stmt))

"""API tokens: created once in plain text, stored only as a SHA-256 hash."""

import hashlib
import hmac
import secrets
from typing import Optional

from sqlalchemy import select, update
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


def user_of_token(session: Session, token: str) -> Optional[str]:
    """The user a live (unrevoked) token belongs to, or None. The lookup is by hash, and
    the hashes are compared in constant time."""
    if not token or len(token) > 200:
        return None
    digest = hash_token(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest,
                                                ApiToken.revoked_at.is_(None)))
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return row.user


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

"""Dashboard sessions: log in with an API token, CSRF tokens on every POST.

Failed logins count against the client address's failed-authentication budget, the one the
API's bearer tokens count into (``service.web.authfailures``): over it, the login form is
refused before the pasted token is looked up."""

from functools import wraps
from typing import Optional
from urllib.parse import quote, urlsplit

from flask import abort, current_app, g, redirect, request, session, url_for
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms.validators import ValidationError

from service.web import authfailures
from service.web.context import db
from service.store import tokens as store_tokens
from service.store.models import ApiToken

# What a redirect target keeps as it is (the rest is percent-encoded).
_PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


def token_row(token: str) -> Optional[ApiToken]:
    """The live (unrevoked) stored token matching ``token``, or None (a failed login,
    counted against the client's address)."""
    row = store_tokens.live_token(db(), (token or "").strip())
    if row is None:
        authfailures.of_app(current_app).record(authfailures.client_address())
    return row


def login_wait() -> Optional[int]:
    """Seconds until this client's address may try to log in again, after too many failed
    authentications (on the API or here); None while it is within its budget."""
    return authfailures.of_app(current_app).retry_after(authfailures.client_address())


def log_in(row: ApiToken) -> None:
    """Start a fresh session for the token's user (the token itself is not kept)."""
    session.clear()
    session["user"] = row.user
    session["token_id"] = row.id


def log_out() -> None:
    """End the session."""
    session.clear()


def session_user() -> Optional[str]:
    """The user of this request's session, if its token is still live; a revoked
    token's session is cleared."""
    user, token_id = session.get("user"), session.get("token_id")
    if not user or not isinstance(token_id, int):
        return None
    row = db().get(ApiToken, token_id)
    if row is None or row.revoked_at is not None or row.user != user:
        session.clear()
        return None
    return user


def load_user() -> None:
    """Before each dashboard request: ``g.user`` from the session (the owner the pages
    pass to the use cases). Static files need no user."""
    g.user = None if request.endpoint == "dashboard.static" else session_user()


def check_csrf() -> None:
    """Before each dashboard POST: the form's csrf_token must be this session's."""
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError as exc:
            raise CSRFError(exc.args[0] if exc.args else "bad CSRF token") from None


def login_required(view):
    """Redirect to the login page without a session; the view sees ``g.user``."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        if g.get("user") is None:
            if request.path.endswith(".json") or request.method != "GET":
                abort(401)
            return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)
    return wrapper


def safe_next(target: Optional[str]) -> str:
    """A redirect target after login: a path on this site only, else the runs page."""
    if target and is_local_path(target):
        # Non-ASCII characters percent-encoded: a Location header is ASCII.
        return quote(target, safe=_PRINTABLE_ASCII)
    return url_for("dashboard.runs")


def is_local_path(target: str) -> bool:
    """Whether ``target`` is a path on this site that a browser cannot read as another's.

    Browsers drop tabs and newlines from a URL and read a backslash as a slash, so
    ``/<TAB>/evil.example`` and ``/\\evil.example`` are ``//evil.example``, another host: any
    control character or whitespace is refused (a newline, moreover, cannot go in the
    Location header at all)."""
    if not target.startswith("/") or "\\" in target:
        return False
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return False
    parts = urlsplit(target)
    return not target.startswith("//") and not parts.scheme and not parts.netloc

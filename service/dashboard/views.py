"""What every dashboard page shares (filters, CSRF field, error page) and the login."""

import json
import re

from flask import g, redirect, render_template, request, url_for
from flask_wtf.csrf import generate_csrf
from werkzeug.exceptions import HTTPException

from .auth import check_csrf, load_user, log_in, log_out, login_wait, safe_next, token_row
from .blueprint import bp

bp.before_request(load_user)
bp.before_request(check_csrf)


@bp.app_template_filter("num")
def num(value, spec: str = ".4g") -> str:
    """A number for a table cell; an empty cell for none."""
    if value is None:
        return ""
    return format(value, spec) if isinstance(value, float) else str(value)


@bp.app_template_filter("when")
def when(value) -> str:
    """A timestamp to the second, in UTC."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def pretty_json(value) -> str:
    """JSON with one key a line and short lists of numbers kept on one line."""
    text = json.dumps(value, indent=2)
    return re.sub(r"\[\s*([-\d.eE+,\s]*?)\s*\]",
                  lambda m: "[" + ", ".join(p.strip() for p in m.group(1).split(",")) + "]",
                  text)


@bp.app_context_processor
def _csrf_token():
    # The hidden field every dashboard POST form carries (checked by auth.check_csrf).
    return {"csrf_token": generate_csrf}


@bp.errorhandler(HTTPException)
def _error_page(error: HTTPException):
    return render_template("error.html", error=error), error.code


# --------------------------------------------------------------------------- login


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Paste an API token to start a session."""
    target = request.values.get("next")
    if request.method == "POST":
        wait = login_wait()
        if wait is not None:  # before the lookup: guessed tokens cost no query
            message = (f"too many failed logins from this address; "
                       f"try again in {wait} s")
            return (render_template("login.html", next=target, error=message), 429,
                    {"Retry-After": str(wait)})
        row = token_row(request.form.get("token", ""))
        if row is not None:
            log_in(row)
            return redirect(safe_next(target))
        return render_template("login.html", next=target,
                               error="unknown or revoked token"), 401
    if g.user is not None:
        return redirect(safe_next(target))
    return render_template("login.html", next=target, error=None)


@bp.route("/logout", methods=["POST"])
def logout():
    """End the session."""
    log_out()
    return redirect(url_for(".login"))

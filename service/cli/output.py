"""How the command line prints: the rich console, status styles, numbers and times, URLs
without passwords, and errors with their exit codes."""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from rich.markup import escape

from service.cli.client import ApiError
from service.cli.credentials import client_token
from service.settings import Settings

# Exit codes: 0 done, 1 failed (run not succeeded, API unreachable, other errors),
# 2 invalid input (a spec the API rejects, over a quota, bad options), 130 interrupted
# while following.
EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 1, 2, 130
STATUS_STYLES = {"queued": "cyan", "running": "yellow", "succeeded": "green", "failed": "red",
                 "diverged": "magenta", "cancelled": "bright_black", "stopped_early": "blue"}


def console(stderr: bool = False):
    """A rich Console on the current stdout/stderr (so click's test runner captures it).
    Output to a pipe or file is not cut to 80 columns: tables keep every column whole."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, highlight=False, width=250)
    return out


def fail(message: str, code: int = EXIT_FAILED):
    """Print ``error: message`` on stderr and exit with ``code``."""
    console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)


def report_api_error(exc: ApiError, settings: Settings) -> None:
    """An API error on stderr, with each field it names; exits 2 when the API rejects the
    input (422, or 429 over a per-user quota), else 1."""
    err = console(stderr=True)
    if exc.status == 401:
        if client_token(settings.token_file) is None:
            fail("no token: run `descent token create --user NAME` and set DESCENT_TOKEN "
                 f"(or start `descent up` here, which writes {Path(settings.token_file)})")
        fail("the API refused the token (unknown or revoked, or made for another "
             "database): run `descent token create --user NAME` and set DESCENT_TOKEN")
    if exc.status == 422:
        err.print(f"[bold red]rejected (HTTP 422):[/] {escape(exc.message)}", soft_wrap=True)
        print_fields(err, exc.fields)
        sys.exit(EXIT_INVALID)
    if exc.code == "quota_exceeded":  # the same input would be refused again: a rejection
        err.print(f"[bold red]rejected (HTTP {exc.status}, quota_exceeded):[/] "
                  f"{escape(exc.message)}", soft_wrap=True)
        print_fields(err, exc.fields)
        sys.exit(EXIT_INVALID)
    err.print(f"[bold red]error:[/] {escape(exc.message)} (HTTP {exc.status}, {exc.code})",
              soft_wrap=True)
    print_fields(err, exc.fields)
    sys.exit(EXIT_FAILED)


def print_fields(err, fields: dict) -> None:
    """An error's fields (or quotas), one ``  name: message`` line each, by name."""
    if not isinstance(fields, dict):  # a server not ours: nothing to name
        return
    for field, message in sorted(fields.items(), key=lambda item: str(item[0])):
        err.print(f"  [bold]{escape(str(field))}[/]: {escape(str(message))}", soft_wrap=True)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (everything up to the last ``@`` of
    its authority, so a password holding an unescaped ``@`` is hidden whole)."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":***"
    return urlunparse(parsed._replace(netloc=f"{userinfo}@{netloc[1]}"))


def describe_database(url: str) -> str:
    """The database URL for people: a SQLite file as an absolute path, passwords hidden."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            return f"sqlite:///{Path(path).resolve()}"
    return redact(url)


def describe_broker(url: str) -> str:
    """The broker URL for people: the embedded queue folder as an absolute path."""
    parsed = urlparse(url)
    if parsed.scheme == "filesystem":
        folder = Path((parsed.netloc + parsed.path) or "descent-queue").resolve()
        return f"filesystem://{folder} (embedded queue folder, no server)"
    return redact(url)


def styled_status(status: str) -> str:
    """A run or sweep state in its colour (rich markup)."""
    return f"[{STATUS_STYLES.get(status, 'white')}]{status}[/]"


def fmt_number(value, spec: str = ".4g") -> str:
    """``value`` formatted with ``spec``; "" for None, inf and nan as they are."""
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def fmt_time(value) -> str:
    """An ISO timestamp from the API as local time, to the second."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def duration(run: dict):
    """Seconds from start to finish (or to now while running), or None."""
    try:
        start = datetime.fromisoformat(str(run.get("started_at")).replace("Z", "+00:00"))
    except ValueError:
        return None
    end_text = run.get("finished_at")
    if end_text:
        end = datetime.fromisoformat(str(end_text).replace("Z", "+00:00"))
    else:
        end = datetime.now(start.tzinfo)
    return max(0.0, (end - start).total_seconds())


def batch_text(spec: dict) -> str:
    """A spec's batch mode in a few characters ("mini 32", "full", "sgd")."""
    mode = spec.get("batch_mode", "")
    if mode == "minibatch":
        return f"mini {spec.get('batch_size')}"
    return mode


def layers_text(spec: dict) -> str:
    """A spec's layer widths as "2-8-1"."""
    return "-".join(str(n) for n in spec.get("layers", []))


def compact_json(value: dict) -> str:
    """A JSON object with one field a line, each value on one line."""
    lines = [f"  {json.dumps(key)}: {json.dumps(item)}" for key, item in value.items()]
    return "{\n" + ",\n".join(lines) + "\n}"

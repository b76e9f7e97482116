"""A small HTTP client of the Descent API (used by the ``descent`` command line).

Every call returns the decoded JSON body, or raises ApiError (the API answered with an
error: its status, code, message and per-field messages) or ApiUnreachable (no answer).
"""

from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import quote

import requests

API_PREFIX = "/api/v1"
FINAL_STATES = frozenset({"succeeded", "failed", "diverged", "cancelled", "stopped_early"})


class ApiUnreachable(Exception):
    """Nothing answered at the API's address (refused, timed out, name not resolved)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach the Descent API at {url}: {reason}")
        self.url, self.reason = url, reason


class ApiError(Exception):
    """The API answered with an error: ``{"error": {"code", "message", "fields"}}``."""

    def __init__(self, status: int, code: str, message: str, fields: dict | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.fields = fields or {}


class Client:
    """The Descent API at ``base_url``; ``/api/v1`` is added unless the URL already ends
    with it. Every request carries ``token`` (when given; see
    service.cli.credentials.client_token) as ``Authorization: Bearer``."""

    def __init__(self, base_url: str, timeout: float = 10.0,
                 session: requests.Session | None = None, token: str | None = None):
        base = base_url.rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[: -len(API_PREFIX)]
        self.base_url = base
        self.api_url = base + API_PREFIX
        self.timeout = timeout
        self.http = session or requests.Session()
        self.token = token
        if self.token:
            self.http.headers["Authorization"] = f"Bearer {self.token}"

    def request(self, method: str, path: str, **kwargs) -> Any:
        """``method`` on ``/api/v1{path}``; the JSON body of a 2xx answer."""
        url = self.api_url + path
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.http.request(method, url, **kwargs)
        except requests.Timeout as exc:
            raise ApiUnreachable(self.base_url, f"no answer within {self.timeout:g} s") from exc
        except requests.ConnectionError as exc:
            raise ApiUnreachable(self.base_url, _connection_reason(exc)) from exc
        if response.status_code >= 400:
            raise _error_from(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(response.status_code, "bad_response",
                           f"expected JSON from {url}, got {response.text[:200]!r}") from exc

    # Endpoints ---------------------------------------------------------------------------

    def health(self) -> dict:
        """GET /health. A 503 (a dependency down) still returns the body, with its status."""
        try:
            return self.request("GET", "/health")
        except ApiError as exc:
            if exc.status == 503 and isinstance(getattr(exc, "body", None), dict):
                return exc.body
            raise

    def submit_run(self, spec: dict) -> dict:
        """POST /runs: the queued run (``id``, ``status``)."""
        return self.request("POST", "/runs", json=spec)

    def get_run(self, run_id: int) -> dict:
        """GET /runs/{id}."""
        return self.request("GET", f"/runs/{int(run_id)}")

    def list_runs(self, **params) -> dict:
        """GET /runs with query parameters (None values are left out): one page,
        ``{"runs": [...], "next_cursor": ...}``."""
        return self.request("GET", "/runs",
                            params={k: v for k, v in params.items() if v is not None})

    def iter_runs(self, limit: int | None = None, page_size: int = 100,
                  **params) -> Iterator[dict]:
        """Runs matching ``params``, following the cursor; at most ``limit`` (None: all)."""
        cursor, seen = None, 0
        while True:
            size = page_size if limit is None else max(1, min(page_size, limit - seen))
            page = self.list_runs(**params, limit=size, cursor=cursor)
            for run in page["runs"]:
                yield run
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next_cursor")
            if not cursor or not page["runs"]:
                return

    def history(self, run_id: int) -> list[dict]:
        """GET /runs/{id}/history: the per-epoch rows."""
        return self.request("GET", f"/runs/{int(run_id)}/history")["history"]

    def params(self, run_id: int, which: str = "final") -> dict:
        """GET /runs/{id}/params (JSON)."""
        return self.request("GET", f"/runs/{int(run_id)}/params", params={"which": which})

    def cancel_run(self, run_id: int) -> dict:
        """POST /runs/{id}/cancel."""
        return self.request("POST", f"/runs/{int(run_id)}/cancel")

    def rerun_run(self, run_id: int) -> dict:
        """POST /runs/{id}/rerun: the queued rerun."""
        return self.request("POST", f"/runs/{int(run_id)}/rerun")

    def verification(self, run_id: int) -> dict:
        """GET /runs/{id}/verification: the verdict on a run and its rerun."""
        return self.request("GET", f"/runs/{int(run_id)}/verification")

    def compare_runs(self, run_id: int, other_id: int) -> dict:
        """GET /runs/{id}/compare/{other}: the verdict on two runs."""
        return self.request("GET", f"/runs/{int(run_id)}/compare/{int(other_id)}")

    def delete_run(self, run_id: int) -> None:
        """DELETE /runs/{id} (a finished run, with its history and parameters)."""
        self.request("DELETE", f"/runs/{int(run_id)}")

    def delete_dataset(self, ref: str) -> None:
        """DELETE /datasets/{ref} (id or name; one no run refers to)."""
        self.request("DELETE", f"/datasets/{quote(str(ref), safe='')}")

    def submit_sweep(self, body: dict) -> dict:
        """POST /sweeps (with ``"preview": true``, the configurations only)."""
        return self.request("POST", "/sweeps", json=body)

    def get_sweep(self, sweep_id: int, **params) -> dict:
        """GET /sweeps/{id} (``metric``, ``order`` choose the leaderboard's ranking)."""
        return self.request("GET", f"/sweeps/{int(sweep_id)}", params=params or None)

    def cancel_sweep(self, sweep_id: int) -> dict:
        """POST /sweeps/{id}/cancel."""
        return self.request("POST", f"/sweeps/{int(sweep_id)}/cancel")


def _error_from(response: requests.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        exc = ApiError(response.status_code, str(error.get("code") or "error"),
                       str(error.get("message") or response.reason), error.get("fields") or {})
    else:
        text = response.text.strip()[:200] or response.reason
        exc = ApiError(response.status_code, "http_error", text)
    exc.body = body
    return exc


def _connection_reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused (is `descent up` or `descent api` running there?)"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host name not found"
    return text

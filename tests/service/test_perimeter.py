"""The perimeter (issue 12): security headers on every page and answer, the Swagger page
served without a CDN and without inline scripts, redirects after login that stay on the
site, the Secure cookie flag, X-Forwarded-For only from trusted proxies, private SQLite and
queue files, and waitress's own body ceiling at the largest configured limit.
(tests/browser/test_docs_offline.py renders the Swagger page in Chromium with no network.)"""

import dataclasses
import hashlib
import json
import os
import re
import socket
import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import text

from service.cli.serve import server_body_ceiling
from service.queue import celery_config
from service.settings import Limits, Settings
from service.store import make_engine
from service.web.headers import DOCUMENT_POLICY, PAGE_POLICY
from tests.waitress_thread import serving

from ..conftest import build_app, close_app
from .conftest import API, error_of, submit

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "service" / "dashboard" / "static" / "vendor" / "swagger-ui"
SWEEP = {"base": {"dataset": "xor", "layers": [2, 2, 1], "epochs": 3},
         "grid": {"learning_rate": [0.1, 0.5]}}


@pytest.fixture
def database_backend():
    """SQLite only: nothing here depends on the database."""
    return "sqlite"


def csrf_of(page_text: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page_text).group(1)


def log_in(browser, token: str, target=None):
    """POST the login form (with ``next`` when given); the response."""
    data = {"token": token, "csrf_token": csrf_of(browser.get("/login").text)}
    if target is not None:
        data["next"] = target
    return browser.post("/login", data=data)


class ScriptsAndStyles(HTMLParser):
    """What a Content-Security-Policy without 'unsafe-inline' would refuse in a page."""

    def __init__(self):
        super().__init__()
        self.sources, self.inline = [], []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}=...>")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            if "src" in attrs:
                self.sources.append(attrs["src"])
            else:
                self._in_script = True

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append("<script>" + data.strip()[:40])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False


def scripts_of(page_text: str) -> ScriptsAndStyles:
    parser = ScriptsAndStyles()
    parser.feed(page_text)
    return parser


def assert_headers(response, policy: str):
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Security-Policy"] == policy


# ------------------------------------------------------------------------------ headers


def test_api_answers_carry_the_security_headers(app, client):
    stranger = app.test_client()
    assert_headers(stranger.get(f"{API}/health"), DOCUMENT_POLICY)
    assert_headers(stranger.get(f"{API}/openapi.json"), DOCUMENT_POLICY)
    # errors too: a 401, a 404, a 422
    assert_headers(stranger.get(f"{API}/runs"), DOCUMENT_POLICY)
    assert_headers(client.get(f"{API}/runs/999999"), DOCUMENT_POLICY)
    response = client.post(f"{API}/runs", json={"dataset": "xor"})
    error_of(response, 422)
    assert_headers(response, DOCUMENT_POLICY)
    assert_headers(client.get(f"{API}/runs/999999/plot.png"), DOCUMENT_POLICY)


def test_the_page_policy_runs_nothing_inline_and_nothing_from_elsewhere():
    directives = dict(part.strip().split(" ", 1) for part in PAGE_POLICY.split(";"))
    for name in ("default-src", "script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe" not in PAGE_POLICY and "http" not in PAGE_POLICY


def test_every_dashboard_page_has_the_headers_and_no_inline_script(app, client, token):
    run_id = submit(client)["id"]
    sweep_id = client.post(f"{API}/sweeps", json=SWEEP).get_json()["id"]
    browser = app.test_client()
    login = browser.get("/login")
    assert_headers(login, PAGE_POLICY)
    pages = {"/login": login.text}
    assert log_in(browser, token).status_code == 302
    for path in ("/", "/sweeps", "/submit", f"/runs/{run_id}", f"/sweeps/{sweep_id}",
                 "/runs/999999"):
        response = browser.get(path)
        assert response.status_code == (404 if path == "/runs/999999" else 200), path
        assert_headers(response, PAGE_POLICY)
        pages[path] = response.text
    for path, page in pages.items():
        found = scripts_of(page)
        assert found.inline == [], path
        assert all(src.startswith("/ui/static/") for src in found.sources), (path, found.sources)
    # The run and sweep pages start their charts from dashboard.js.
    assert "/ui/static/dashboard.js" in scripts_of(pages[f"/runs/{run_id}"]).sources
    assert "data-autosubmit" in pages[f"/sweeps/{sweep_id}"]
    for path in ("/ui/static/dashboard.js", "/ui/static/vendor/chartjs/chart.umd.min.js",
                 f"/ui/runs/{run_id}/history.json"):
        assert_headers(browser.get(path), DOCUMENT_POLICY)


# ------------------------------------------------------------------------ Swagger page


def test_the_swagger_page_loads_swagger_ui_from_this_site_only(app):
    browser = app.test_client()
    response = browser.get(f"{API}/docs")
    assert response.status_code == 200
    assert_headers(response, PAGE_POLICY)
    found = scripts_of(response.text)
    assert found.inline == []
    assert found.sources == ["/ui/static/vendor/swagger-ui/swagger-ui-bundle.js",
                             "/ui/static/api-docs.js"]
    assert "cdn" not in response.text and "https://" not in response.text
    container = re.search(r"<div id=\"swagger-ui-container\" data-spec-url=\"([^\"]+)\" "
                          r"data-config='([^']*)'>", response.text)
    assert container.group(1) == f"{API}/openapi.json"
    assert json.loads(container.group(2)) == {"validatorUrl": None}
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        asset = browser.get(f"/ui/static/vendor/swagger-ui/{name}")
        assert asset.status_code == 200, name
        assert_headers(asset, DOCUMENT_POLICY)


def test_the_vendored_swagger_ui_is_the_pinned_one_with_its_license():
    source = (VENDOR / "SOURCE.md").read_text()
    assert "swagger-ui-dist@5.35.0" in source
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
        assert f"sha256 of {name}: `{digest}`" in source, name
    assert "Apache License" in (VENDOR / "LICENSE").read_text()
    assert (VENDOR / "NOTICE").exists()


# ------------------------------------------------------------------ redirects after login


HOSTILE_TARGETS = [
    "%2F%09%2Fevil.example",  # /<TAB>/evil.example: browsers drop the tab
    "/%09/evil.example",
    "/%0A/x",  # a newline: was a 500 (no header may carry one)
    "/%0D%0ASet-Cookie:%20x=1",
    "//evil.example/x",
    "/%5Cevil.example",  # /\evil.example
    "https://evil.example/",
    "https:/evil.example",
    "%20//evil.example",
    "/%00/x",
    "javascript:alert(1)",
    "evil.example",
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_login_never_redirects_off_the_site_nor_fails(app, token, target):
    browser = app.test_client()
    # Not logged in: the login page, carrying the target along (escaped) in its form.
    page = browser.get(f"/login?next={target}")
    assert page.status_code == 200
    assert_headers(page, PAGE_POLICY)
    data = {"token": token, "csrf_token": csrf_of(page.text)}
    response = browser.post(f"/login?next={target}", data=data)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    # Logged in: the login page sends them on, to the same place.
    response = browser.get(f"/login?next={target}")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("target, location", [
    ("/sweeps", "/sweeps"),
    ("/runs/3?x=1", "/runs/3?x=1"),
    ("/r%C3%A9sum%C3%A9", "/r%C3%A9sum%C3%A9"),  # sent as /résumé, back percent-encoded
])
def test_login_goes_back_to_a_page_of_the_site(app, token, target, location):
    browser = app.test_client()
    response = browser.post(f"/login?next={target}", data={
        "token": token, "csrf_token": csrf_of(browser.get("/login").text)})
    assert response.status_code == 302
    assert response.headers["Location"] == location


def test_login_goes_back_to_the_page_that_asked_for_it(app, token):
    browser = app.test_client()
    page = '/?where=name%20%3D%20%22a%20b%22&order_by=-id'
    response = browser.get(page)
    assert response.status_code == 302
    response = browser.post(response.headers["Location"], data={
        "token": token, "csrf_token": csrf_of(browser.get("/login").text)})
    assert response.status_code == 302
    assert response.headers["Location"] == page


# ------------------------------------------------------------------------------ cookies


@pytest.mark.parametrize("secure", [False, True])
def test_the_session_cookie_is_secure_when_set(settings, app_sessions, token, secure):
    app = build_app(dataclasses.replace(settings, secure_cookies=secure), app_sessions,
                    TESTING=True)
    try:
        response = log_in(app.test_client(), token)
        assert response.status_code == 302
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("descent_session=") and "HttpOnly" in cookie
        assert ("; Secure" in cookie) is secure
    finally:
        close_app(app)


def test_secure_cookies_and_trusted_proxies_come_from_the_environment():
    assert Settings.from_env({}).secure_cookies is False
    assert Settings.from_env({}).trusted_proxies == 0
    settings = Settings.from_env({"DESCENT_SECURE_COOKIES": "true",
                                  "DESCENT_TRUSTED_PROXIES": "1"})
    assert settings.secure_cookies is True and settings.trusted_proxies == 1


# --------------------------------------------------------- client addresses behind a proxy


@pytest.mark.parametrize("proxies", [0, 1])
def test_forwarded_addresses_count_only_from_trusted_proxies(settings, app_sessions, proxies):
    """Strangers are rate-limited per address: behind a trusted proxy by X-Forwarded-For,
    otherwise by the connection's address, whatever the header claims."""
    app = build_app(dataclasses.replace(settings, rate_limit="2/minute",
                                        trusted_proxies=proxies), app_sessions, TESTING=True)
    try:
        stranger = app.test_client()

        def status_from(address: str) -> int:
            # A client forging its own X-Forwarded-For before the proxy adds the real one.
            return stranger.get(f"{API}/runs", headers={
                "X-Forwarded-For": f"10.9.9.9, {address}"}).status_code

        assert [status_from("198.51.100.1") for _ in range(3)] == [401, 401, 429]
        # Another address: its own budget behind a trusted proxy; without one, the header
        # is ignored and it is the same client (127.0.0.1).
        assert status_from("198.51.100.2") == (401 if proxies else 429)
    finally:
        close_app(app)


# -------------------------------------------------------------------------- file modes


@pytest.fixture
def umask_022():
    """The usual umask, whatever the test runner's is."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_database_and_its_wal_are_private(tmp_path, umask_022):
    path = tmp_path / "descent.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (1)"))
        wal, shm = path.with_name("descent.db-wal"), path.with_name("descent.db-shm")
        assert wal.exists() and shm.exists()
        assert {p.name: mode_of(p) for p in (path, wal, shm)} == {
            "descent.db": 0o600, "descent.db-wal": 0o600, "descent.db-shm": 0o600}
    finally:
        engine.dispose()


def test_the_migrations_create_a_private_database(tmp_path, umask_022):
    import migrations

    path = tmp_path / "descent.db"
    migrations.upgrade(f"sqlite:///{path}")
    assert mode_of(path) == 0o600


def test_an_existing_database_keeps_its_mode(tmp_path, umask_022):
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    make_engine(f"sqlite:///{path}").dispose()
    assert mode_of(path) == 0o640
    # memory databases and a missing folder: nothing created
    make_engine("sqlite://").dispose()
    make_engine(f"sqlite:///{tmp_path}/missing/descent.db").dispose()
    assert not (tmp_path / "missing").exists()


def test_the_queue_folder_is_private(tmp_path, umask_022):
    folder = tmp_path / "descent-queue"
    celery_config(f"filesystem://{folder}")
    assert mode_of(folder) == 0o700
    for sub in ("queue", "processed", "control"):
        assert mode_of(folder / sub) == 0o700, sub


# ------------------------------------------------------------------- waitress's ceiling


def test_the_servers_ceiling_is_the_largest_limit():
    assert server_body_ceiling(Limits()) == Limits().max_upload_bytes == 256 * 2**20
    assert server_body_ceiling(Limits(max_upload_bytes=1000, max_json_bytes=5000)) == 5000
    assert server_body_ceiling(Limits(max_upload_bytes=2**31)) == 2**31


@pytest.fixture
def small_waitress(settings):
    """The app on waitress as `descent api` serves it, with limits of 1000 (JSON) and
    100,000 bytes (uploads): its port."""

    limits = Limits(max_json_bytes=1000, max_upload_bytes=100_000)
    app = build_app(dataclasses.replace(settings, limits=limits))
    with serving(app, host="127.0.0.1", port=0, threads=2,
                 max_request_body_size=server_body_ceiling(limits)) as server:
        yield server.effective_port
    close_app(app)


def exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` (and ``body``) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as connection:
        connection.sendall(head + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer


@pytest.mark.real_database
def test_a_strangers_body_over_the_largest_limit_is_refused_unread(small_waitress):
    # Content-Length 100,001 and no body at all: waitress answers from the headers alone,
    # without waiting for (or storing) a byte of it. With a ceiling above the limit it
    # waited for the body, and this read timed out.
    head = (b"POST /api/v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100001\r\nConnection: close\r\n\r\n")
    assert exchange(small_waitress, head).startswith(b"HTTP/1.1 413")
    # Up to the ceiling the API answers, here with its 401 for a stranger.
    body = b"x" * 5000
    head = (b"POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 5000\r\nConnection: close\r\n\r\n")
    answer = exchange(small_waitress, head, body)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]

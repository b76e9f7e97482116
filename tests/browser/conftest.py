"""Fixtures of the browser tests: Debian's Chromium driven headless by Playwright, against a
live API server (waitress, in a thread of the test process) and a real ``celery worker``
process, on the embedded defaults (a SQLite file and the queue folder) in a temporary
folder.

Chromium is /usr/bin/chromium (or DESCENT_TEST_CHROMIUM); ``make test`` installs it as root.
Without it these tests skip, or fail under DESCENT_REQUIRE_SERVICES=1 (as CI runs them).
Screenshots go to test-artifacts/screenshots/.
"""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES, make_token
from tests.integration.conftest import (ROOT, TEARDOWN_GRACE, Backend, WorkerPool,
                                       embedded_database)
from tests.waitress_thread import serving

CHROMIUM = os.environ.get("DESCENT_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium executable, or a skip (a failure under DESCENT_REQUIRE_SERVICES=1)."""
    path = shutil.which(CHROMIUM)
    if path is None:
        message = (f"Chromium is not installed ({CHROMIUM} not found): `apt-get install -y "
                   "chromium` (make test does it when run as root)")
        if REQUIRE_SERVICES:
            pytest.fail(message + " (DESCENT_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser(chromium_path):
    """A headless Chromium (no sandbox: CI runs as root)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                             args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies) and page; its console errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # What the Content-Security-Policy refuses (an inline script, a foreign source) is only
    # a console message.
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text else None)
    # A page answering 4xx is expected (the form's 422); a failing script, style, image or
    # poll is not.
    page.on("response", lambda response: errors.append(f"{response.status} {response.url}")
            if response.status >= 400 and response.request.resource_type != "document"
            else None)
    yield page
    context.close()
    assert not errors, f"errors in the browser console: {errors}"


@pytest.fixture
def shot(page):
    """shot("01-login") saves a full-page screenshot to test-artifacts/screenshots/;
    shot(name, locator) one of that element only."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str, locator=None) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        if locator is None:
            page.screenshot(path=str(path), full_page=True)
        else:
            locator.screenshot(path=str(path))
        return path
    return take


@dataclass
class Service:
    url: str
    token: str
    backend: Backend


@pytest.fixture
def service(tmp_path, monkeypatch, sqlite_template):
    """Descent on its embedded defaults in ``tmp_path``: the migrated SQLite database, the
    API on a free port and one worker process; ``token`` is an API token of user alice."""
    from service.app import create_app
    from service.settings import Settings

    monkeypatch.chdir(tmp_path)  # descent.db and descent-queue/ land here
    for name in [k for k in os.environ if k.startswith("DESCENT_")]:
        monkeypatch.delenv(name)
    settings = Settings()
    embedded_database(sqlite_template, settings)
    backend = Backend("embedded", settings, {}, tmp_path)
    workers = WorkerPool(backend).start(1)
    app = create_app({"SETTINGS": settings})
    try:
        with serving(app, host="127.0.0.1", port=0, threads=4) as server:
            yield Service(f"http://127.0.0.1:{server.effective_port}",
                          make_token(settings.database_url, "alice"), backend)
        workers.assert_alive()
    finally:
        workers.stop(timeout=TEARDOWN_GRACE)
        app.extensions["descent"]["engine"].dispose()

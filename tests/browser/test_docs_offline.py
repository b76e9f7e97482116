"""The Swagger page /api/v1/docs renders in Chromium on a machine without internet: Swagger
UI is served by Descent itself (static/vendor/swagger-ui), under the Content-Security-Policy
(no inline script, nothing from another origin). Chromium resolves no host name but the
server's address, and every request to anywhere else is refused and recorded."""

import re
from urllib.parse import urlparse

import pytest
import requests
from playwright.sync_api import expect

from tests.conftest import make_token
from tests.waitress_thread import serving

pytestmark = pytest.mark.slow

# Chromium's resolver: every name unknown, so nothing but 127.0.0.1 can be reached.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


@pytest.fixture(scope="module")
def browser(chromium_path):
    """A headless Chromium with no network beyond this machine (replaces conftest's for
    this module, so ``page`` and ``shot`` use it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                             args=["--no-sandbox", OFFLINE])
        yield browser
        browser.close()


@pytest.fixture
def api_url(tmp_path, monkeypatch):
    """The app on waitress on a free port over a migrated SQLite file (no worker: these
    pages need none): (its base URL, a token of user alice)."""
    import migrations

    from service.app import create_app
    from service.settings import Settings

    monkeypatch.chdir(tmp_path)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'descent.db'}",
                        broker_url=f"filesystem://{tmp_path / 'queue'}")
    migrations.upgrade(settings.database_url)
    app = create_app({"SETTINGS": settings})
    try:
        with serving(app, host="127.0.0.1", port=0, threads=4) as server:
            yield (f"http://127.0.0.1:{server.effective_port}",
                   make_token(settings.database_url, "alice"))
    finally:
        app.extensions["descent"]["engine"].dispose()


def test_the_api_docs_render_without_internet(api_url, page, shot):
    url, _token = api_url
    own = urlparse(url).netloc
    elsewhere = []

    def only_this_server(route):
        if urlparse(route.request.url).netloc == own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", only_this_server)
    operations = sum(
        len([m for m in item if m in ("get", "post", "put", "patch", "delete")])
        for item in requests.get(url + "/api/v1/openapi.json", timeout=10).json()["paths"]
        .values())

    response = page.goto(url + "/api/v1/docs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Descent")
    expect(page.locator(".opblock")).to_have_count(operations)
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/runs").first).to_be_visible()
    shot("docs-offline")

    # An operation opens, and "Try it out" calls the API from the page (connect-src 'self').
    page.locator(".opblock-get .opblock-summary-path", has_text="/api/v1/health").first.click()
    page.locator("button.try-out__btn").first.click()
    page.locator("button.execute").first.click()
    expect(page.locator(".live-responses-table .response .response-col_status")).to_contain_text("200")
    shot("docs-offline-try-health")
    assert elsewhere == [], f"the page reached for other hosts: {elsewhere}"



def test_the_leaderboards_metric_choice_works_without_inline_script(api_url, page, shot):
    """The sweep page's metric menu reloads the page on a change: an inline onchange before,
    which the Content-Security-Policy would refuse; now dashboard.js."""
    url, token = api_url
    sweep = requests.post(url + "/api/v1/sweeps", timeout=30, json={
        "base": {"dataset": "xor", "layers": [2, 2, 1], "epochs": 3},
        "grid": {"learning_rate": [0.1, 0.5]}}, headers={"Authorization": f"Bearer {token}"})
    assert sweep.status_code == 202, sweep.text
    page.goto(f"{url}/sweeps/{sweep.json()['id']}")
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page.locator("select[name=metric]")).to_have_value("final_error")
    page.wait_for_load_state()  # dashboard.js (deferred) listens from here on
    page.select_option("select[name=metric]", "best_error")
    expect(page).to_have_url(re.compile(r"\?metric=best_error$"))
    expect(page.locator("select[name=metric]")).to_have_value("best_error")
    shot("sweep-metric-choice")

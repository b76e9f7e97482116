"""A sweep's "What mattered" card in a real browser: the importance table and the
parallel-coordinates and scatter charts (PNG images) load and are drawn."""

import re

import pytest
import requests
from playwright.sync_api import expect

pytestmark = pytest.mark.slow

FINISH_TIMEOUT = 120_000
LOADED = "img => img.complete && img.naturalWidth > 300"


def test_a_finished_sweep_shows_what_mattered(service, page, shot):
    response = requests.post(f"{service.url}/api/v1/sweeps", timeout=30,
                             headers={"Authorization": f"Bearer {service.token}"},
                             json={"name": "what mattered", "base": {
                                 "dataset": "xor", "layers": [2, 8, 1], "batch_mode": "full",
                                 "epochs": 200, "seed": 1},
                                 "grid": {"learning_rate": [0.05, 0.5, 5.0],
                                          "activation": ["tanh", "relu"]}})
    assert response.status_code == 202, response.text
    sweep_id = response.json()["id"]
    page.goto(service.url + "/login")
    page.fill("#token", service.token)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Runs")
    page.goto(f"{service.url}/sweeps/{sweep_id}")
    expect(page.locator("#curves[data-final=true]")).to_be_attached(timeout=FINISH_TIMEOUT)
    page.wait_for_load_state()
    expect(page.locator("#importance tbody tr")).to_have_count(2)
    expect(page.locator("#importance")).to_contain_text("learning_rate")
    expect(page.locator("#importance")).to_contain_text("activation")
    parallel = page.locator("#parallel")
    parallel.scroll_into_view_if_needed()
    page.wait_for_function(f"() => ({LOADED})(document.getElementById('parallel'))")
    scatters = page.locator("img.scatter")
    expect(scatters).to_have_count(2)
    for i in range(2):
        scatters.nth(i).scroll_into_view_if_needed()
        assert re.search(r"field=", scatters.nth(i).get_attribute("src"))
        page.wait_for_function(f"i => ({LOADED})(document.querySelectorAll('img.scatter')[i])",
                               arg=i)
    path = shot("14-sweep-insights", page.locator("#insights"))
    print("screenshot:", path)
    shot("14-sweep-page")

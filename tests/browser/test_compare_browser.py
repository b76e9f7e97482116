"""Runs compared in a real browser against a real service: two runs trained by a worker,
ticked in the runs table, then Compare: their two curves on one chart and their specs side
by side with the differing field highlighted. Screenshots: compare-00-ticked.png and
compare-01-runs.png."""

import re

import pytest
import requests
from playwright.sync_api import expect

from tests.eventually import eventually

pytestmark = pytest.mark.slow

# The first worker start may compile the kernels (numba caches them afterwards).
FINISH_TIMEOUT = 120
BASE = {"dataset": "xor", "layers": [2, 8, 1], "batch_mode": "full", "epochs": 1500,
        "seed": 1}


def test_tick_two_runs_and_compare_them(service, page, shot):
    headers = {"Authorization": f"Bearer {service.token}"}
    ids = []
    for learning_rate in (0.5, 5.0):
        response = requests.post(f"{service.url}/api/v1/runs", headers=headers, timeout=30,
                                 json={**BASE, "learning_rate": learning_rate})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])

    def finished():
        runs = [requests.get(f"{service.url}/api/v1/runs/{run_id}", headers=headers,
                             timeout=30).json() for run_id in ids]
        return all(run["status"] == "succeeded" for run in runs)
    eventually(finished, timeout=FINISH_TIMEOUT, interval=0.5)

    page.goto(service.url + "/login")
    page.fill("#token", service.token)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Runs")
    for run_id in ids:
        page.check(f"#run-{run_id} input[name=runs]")
    expect(page.locator("#compare-hint")).to_have_text("2 runs ticked")
    shot("compare-00-ticked")
    page.click("#compare-runs")
    newest_first = ",".join(str(run_id) for run_id in sorted(ids, reverse=True))
    expect(page).to_have_url(re.compile(rf"/compare\?runs={newest_first}$"))

    page.wait_for_function(
        "() => (window.Chart?.getChart('compare-curves')?.data.datasets ?? [])"
        ".filter(d => d.data.length > 100).length === 2")
    labels = page.evaluate("Chart.getChart('compare-curves').data.datasets.map(d => d.label)")
    assert labels == [f"#{max(ids)} learning_rate=5.0", f"#{min(ids)} learning_rate=0.5"]
    differing = page.locator("#compare-spec tr.differs")
    expect(differing).to_have_count(1)
    expect(differing.locator("th")).to_have_text("learning_rate")
    # The highlight is the stylesheet's (the CSP allows no inline style).
    assert differing.evaluate("tr => getComputedStyle(tr).backgroundColor") \
        == "rgb(255, 246, 220)"
    expect(page.locator("#field-layers")).not_to_have_class("differs")
    expect(page.locator("#compare-differing")).to_contain_text("1 field differs: learning_rate")
    path = shot("compare-01-runs")
    assert path.stat().st_size > 10_000

    # Ticking one run is refused with the reason, on the page.
    page.click("nav >> text=Runs")
    page.check(f"#run-{ids[0]} input[name=runs]")
    page.click("#compare-runs")
    expect(page.locator("#compare-error")).to_contain_text("give 2 to 10 run ids")

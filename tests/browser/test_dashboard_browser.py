"""A new user's path through the dashboard in a real browser, against a real service: log
in, submit a run through the form, watch it finish with its curve drawn, look at its
network, then a sweep's leaderboard and overlaid curves. Screenshots at every step."""

import re

import pytest
import requests
from playwright.sync_api import expect

pytestmark = pytest.mark.slow

# The first worker start may compile the kernels (numba caches them afterwards).
FINISH_TIMEOUT = 120_000

DRAWN_PIXELS = """canvas => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) drawn++;
  return drawn;
}"""


def chart_points(page, canvas_id: str) -> list[int]:
    """How many points each dataset of a Chart.js chart holds."""
    return page.evaluate("id => (Chart.getChart(id)?.data.datasets ?? [])"
                         ".map(d => d.data.length)", canvas_id)


def test_new_user_trains_xor_then_a_sweep(service, page, shot):
    # Every page asks for a login first.
    page.goto(service.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    shot("01-login")
    page.fill("#token", "dsc_not-a-token")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("unknown or revoked token")
    page.fill("#token", service.token)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Runs")
    expect(page.locator(".top .who span")).to_have_text("alice")
    expect(page.locator(".empty")).to_contain_text("No runs yet")
    shot("02-runs-empty")

    # The form: a wrong field comes back with the API's own message beside it.
    page.click("nav >> text=Submit a run")
    expect(page.locator("h1")).to_have_text("Submit a run")
    shot("03-submit-form")
    page.fill("#layers", "3, 8, 1")
    page.click("#submit-run")
    expect(page.locator("#error-layers")).to_contain_text("dataset 'xor' has 2 features")
    shot("04-submit-422")
    page.fill("#layers", "2, 8, 1")
    page.fill("#epochs", "1500")
    page.fill("#name", "xor from the browser")
    page.click("#submit-run")
    expect(page).to_have_url(re.compile(r"/runs/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    # (No screenshot here: the page reloads itself the moment the run ends, which may be
    # now, and a capture during a reload fails.)

    # The page follows the run live and reloads itself once it is final.
    expect(page.locator("#curve[data-final=true]")).to_be_attached(timeout=FINISH_TIMEOUT)
    page.wait_for_load_state()
    expect(page.locator("#run-status .status")).to_have_text("succeeded")
    page.wait_for_function("() => (window.Chart?.getChart('curve')?.data.datasets[0]?.data"
                           ".length ?? 0) > 100")
    assert chart_points(page, "curve")[0] > 100
    assert page.locator("#curve").evaluate(DRAWN_PIXELS) > 1000
    expect(page.locator("#epochs-done")).to_have_text("1500")
    network = page.locator("#network")
    # The API process draws its first network in a few seconds (matplotlib starting up);
    # until then the image has no size, and is not visible.
    page.wait_for_function("() => document.getElementById('network').complete && "
                           "document.getElementById('network').naturalWidth > 0",
                           timeout=60_000)
    expect(network).to_be_visible()
    shot("05-run-succeeded")
    shot("06-network", network)
    with page.expect_download() as download:
        page.click("#download-final-npz")
    assert download.value.suggested_filename == f"run-{run_id}-final-params.npz"

    # The runs table, filtered and sorted.
    page.click("nav >> text=Runs")
    page.check("input[name=status][value=succeeded]")
    page.select_option("select[name=order]", "final_error")
    page.click("text=Apply")
    expect(page.locator(f"#run-{run_id}")).to_contain_text("xor from the browser")
    expect(page.locator(f"#run-{run_id} .status")).to_have_text("succeeded")
    shot("07-runs-table")
    page.fill("input[name=where]", "learning_rate >>")
    page.click("text=Apply")
    expect(page.locator("#error-where")).to_contain_text("at character")
    page.fill("input[name=where]", "")

    # A sweep submitted through the API with the same token.
    response = requests.post(f"{service.url}/api/v1/sweeps", timeout=30,
                             headers={"Authorization": f"Bearer {service.token}"},
                             json={"name": "learning rates", "base": {
                                 "dataset": "xor", "layers": [2, 8, 1], "batch_mode": "full",
                                 "epochs": 800, "seed": 1},
                                 "grid": {"learning_rate": [0.5, 2.0, 5.0]}})
    assert response.status_code == 202, response.text
    sweep_id = response.json()["id"]
    page.click("nav >> text=Sweeps")
    expect(page.locator(f"#sweep-{sweep_id}")).to_contain_text("learning_rate")
    shot("08-sweeps")
    page.click(f"#sweep-{sweep_id} a")
    expect(page.locator("#curves[data-final=true]")).to_be_attached(timeout=FINISH_TIMEOUT)
    page.wait_for_load_state()
    expect(page.locator("#sweep-status .status")).to_have_text("succeeded")
    rows = page.locator("#leaderboard tbody tr")
    expect(rows).to_have_count(3)
    page.wait_for_function("() => window.Chart?.getChart('curves')?.data.datasets.length === 3")
    assert all(n > 50 for n in chart_points(page, "curves"))
    assert page.locator("#curves").evaluate(DRAWN_PIXELS) > 1000
    shot("09-sweep")

    page.click("text=Log out")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(f"{service.url}/sweeps/{sweep_id}")
    expect(page).to_have_url(re.compile(rf"/login\?next=/sweeps/{sweep_id}$"))

"""The submit form's optimizer fields in a real browser, against a real service: the fields
of the chosen optimizer, schedule and plateau rule appear (by static/dashboard.js, under the
strict Content-Security-Policy), a bad value comes back under its field, and the run page
says what the run trained with and why it stopped."""

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.slow

# The first worker start may compile the kernels (numba caches them afterwards).
FINISH_TIMEOUT = 120_000


def log_in(page, service) -> None:
    page.goto(service.url + "/submit")
    page.fill("#token", service.token)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Submit a run")


def test_adam_fields_appear_and_the_run_page_shows_the_optimizer(service, page, shot):
    log_in(page, service)
    momentum, betas = page.locator("#field-momentum"), page.locator("#field-beta1, "
                                                                    "#field-beta2, #field-eps")
    # Plain gradient descent: no optimizer parameters, no schedule or plateau fields.
    expect(page.locator("#optimizer")).to_have_value("sgd")
    for hidden in ("momentum", "beta1", "beta2", "eps", "step_size", "gamma", "lr_min",
                   "patience", "min_delta", "restore_best"):
        expect(page.locator(f"#field-{hidden}")).to_be_hidden()
    for shown in ("weight_decay", "clip_norm", "lr_schedule", "stop_on_plateau"):
        expect(page.locator(f"#field-{shown}")).to_be_visible()

    page.select_option("#optimizer", "momentum")
    expect(momentum).to_be_visible()
    expect(betas).to_have_count(3)
    for i in range(3):
        expect(betas.nth(i)).to_be_hidden()
    page.select_option("#optimizer", "adam")
    expect(momentum).to_be_hidden()
    for i in range(3):
        expect(betas.nth(i)).to_be_visible()
    expect(page.locator("#beta2")).to_have_value("0.999")

    page.select_option("#lr_schedule", "step")
    expect(page.locator("#field-step_size")).to_be_visible()
    expect(page.locator("#field-gamma")).to_be_visible()
    expect(page.locator("#field-lr_min")).to_be_hidden()
    page.select_option("#lr_schedule", "cosine")
    expect(page.locator("#field-lr_min")).to_be_visible()
    expect(page.locator("#field-step_size")).to_be_hidden()
    page.select_option("#stop_on_plateau", "error")
    expect(page.locator("#field-patience")).to_be_visible()
    expect(page.locator("#field-restore_best")).to_be_visible()
    shot("10-submit-adam-fields")

    # A bad value: the page comes back with the message under the field, the choices kept
    # and the same fields shown.
    page.fill("#learning_rate", "0.01")
    page.fill("#lr_min", "0.5")
    page.fill("#epochs", "400")
    page.fill("#patience", "25")
    page.fill("#name", "adam from the browser")
    page.click("#submit-run")
    expect(page.locator("#error-lr_min")).to_contain_text("must be below learning_rate")
    expect(page.locator("#optimizer")).to_have_value("adam")
    expect(page.locator("#field-beta1")).to_be_visible()
    expect(page.locator("#field-momentum")).to_be_hidden()
    expect(page.locator("#field-lr_min")).to_be_visible()
    shot("11-submit-adam-422")
    page.fill("#lr_min", "0.001")
    page.click("#submit-run")
    expect(page).to_have_url(re.compile(r"/runs/\d+$"))

    # The run page: what trained, and once it is final, why it stopped.
    expect(page.locator("#training-optimizer")).to_have_text(
        "adam (beta1 0.9, beta2 0.999, eps 1e-08)")
    expect(page.locator("#training-lr-schedule")).to_have_text("cosine (lr_min 0.001)")
    expect(page.locator("#training-plateau")).to_contain_text("stop after 25 epochs without "
                                                              "error improving")
    expect(page.locator("#curve[data-final=true]")).to_be_attached(timeout=FINISH_TIMEOUT)
    page.wait_for_load_state()
    expect(page.locator("#run-status .status")).to_have_text("succeeded")
    expect(page.locator("#training-optimizer")).to_contain_text("adam")
    expect(page.locator("#outcome-stop-reason")).to_be_visible()
    expect(page.locator("#outcome-best-epoch")).to_contain_text("lowest error")
    shot("12-run-adam")

    page.click("nav >> text=Runs")
    page.fill("input[name=where]", 'optimizer = "adam"')
    page.click("text=Apply")
    row = page.locator("table.runs tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td.optimizer")).to_have_text("adam")


def test_without_script_every_field_shows_and_the_form_still_submits(service, browser):
    """JavaScript off: nothing hides the fields, and those of choices not made are ignored."""
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        log_in(page, service)
        for name in ("momentum", "beta1", "eps", "step_size", "lr_min", "patience"):
            expect(page.locator(f"#field-{name}")).to_be_visible()
        page.select_option("#optimizer", "adamw")
        page.fill("#beta1", "0.8")
        page.fill("#momentum", "not a number, and not adamw's")
        page.fill("#epochs", "50")
        page.click("#submit-run")
        expect(page).to_have_url(re.compile(r"/runs/\d+$"))
        expect(page.locator("#training-optimizer")).to_have_text(
            "adamw (beta1 0.8, beta2 0.999, eps 1e-08)")
    finally:
        context.close()

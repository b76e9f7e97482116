"""A queued run that waits for the workers' first compile of the kernels says so: the compile
status a warming worker publishes (kernels.compilestate), GET /health's ``kernels``, the
dashboard's run page and its live JSON, and the sentence the CLI shows."""

import os
import subprocess
import sys

import pytest

from kernels import compilestate
from service.compiling import compiling_note

API = "/api/v1"
XOR = {"dataset": "xor", "layers": [2, 4, 1], "epochs": 5, "batch_mode": "full"}


@pytest.fixture
def compiling_here():
    """This process says it compiles the kernels (expected 30 s); ready again afterwards."""
    compilestate.publish("compiling", 30.0)
    yield
    compilestate.publish("ready")


def test_a_compiling_process_is_seen_until_it_is_ready():
    assert compilestate.compiling() is None
    compilestate.publish("compiling", 42.0)
    state = compilestate.compiling()
    assert state["expected_seconds"] == 42.0 and 0 <= state["elapsed_seconds"] < 42
    compilestate.publish("loading")
    assert compilestate.compiling() is None
    compilestate.publish("ready")
    assert compilestate.compiling() is None


def test_the_status_of_a_process_that_died_compiling_is_dropped():
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
        text=True, check=True)
    dead = int(child.stdout)
    folder = compilestate._status_dir()
    compilestate.publish("compiling", 30.0)
    mine = next(folder.glob(f"*-{os.getpid()}.json"))
    ghost = mine.with_name(mine.name.replace(f"-{os.getpid()}.", f"-{dead}."))
    ghost.write_text(mine.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {dead}'))
    compilestate.publish("ready")
    assert compilestate.compiling() is None
    assert not ghost.exists()


def test_the_last_compile_time_is_the_next_expectation(tmp_path, monkeypatch):
    monkeypatch.setattr(compilestate, "_last_compile_file", lambda: tmp_path / "seconds.json")
    assert compilestate.expected_compile_seconds() == compilestate.DEFAULT_COMPILE_SECONDS
    compilestate.record_compile_seconds(27.34)
    assert compilestate.expected_compile_seconds() == 27.3


def test_the_sentence():
    assert compiling_note(None) is None
    assert compiling_note({"compiling": True, "elapsed_seconds": 10.2,
                           "expected_seconds": 30.0}) == (
        "compiling the training kernels, first start only, ~20 s")
    assert compiling_note({"compiling": True, "elapsed_seconds": 31.0,
                           "expected_seconds": 30.0}) == (
        "compiling the training kernels, first start only (longer than the ~30 s it took "
        "last time)")
    assert compiling_note({"compiling": True, "elapsed_seconds": 1.0,
                           "expected_seconds": None}) == (
        "compiling the training kernels, first start only")


def test_health_says_while_the_kernels_compile(client, compiling_here):
    kernels_state = client.get(f"{API}/health").get_json()["kernels"]
    assert kernels_state["compiling"] is True and kernels_state["expected_seconds"] == 30.0
    compilestate.publish("ready")
    assert client.get(f"{API}/health").get_json()["kernels"] is None


def test_the_run_page_of_a_queued_run_says_the_kernels_compile(client, app, token,
                                                               compiling_here):
    from .test_dashboard import log_in

    browser = app.test_client()
    log_in(browser, token)
    run_id = client.post(f"{API}/runs", json=XOR).get_json()["id"]
    page = browser.get(f"/runs/{run_id}").text
    assert "(the run is queued: compiling the training kernels, first start only, ~" in page
    live = browser.get(f"/ui/runs/{run_id}/history.json").get_json()
    assert live["waiting"].startswith("compiling the training kernels, first start only, ~")
    compilestate.publish("ready")
    assert browser.get(f"/ui/runs/{run_id}/history.json").get_json()["waiting"] is None


def test_a_run_taken_but_not_started_is_said_to_wait_too(app, compiling_here):
    from service.dashboard.runs import waiting_note

    with app.app_context():
        assert waiting_note("running", 0).startswith("compiling the training kernels")
        assert waiting_note("running", 3) is None  # training: it waits for nothing
        assert waiting_note("succeeded", 0) is None

"""A model-based sweep as people see it: `descent sweep` (a real `descent api` subprocess,
the runs trained in this process by the workers' execute_run) and the dashboard's sweep
page, both showing the search kind and the runs so far against the budget."""

import json
import re
import threading

import pytest

from .test_cli import invoke
from .test_cli_sweep import live, train_dispatched  # noqa: F401 (live: a fixture)
from .test_dashboard import alice, browser, store  # noqa: F401 (fixtures)
from .test_sweeps import finish

BODY = {"base": {"dataset": "xor", "layers": [2, 4, 1], "batch_mode": "full", "epochs": 20},
        "search": "tpe", "trials": 4, "seed": 1, "max_concurrency": 1,
        "space": {"learning_rate": {"loguniform": [0.01, 3.0]},
                  "init": {"choice": ["uniform", "xavier"]}}}


@pytest.mark.slow
def test_descent_sweep_runs_a_tpe_file_and_shows_its_kind(live, tmp_path):  # noqa: F811
    base_url, sessions = live
    env = {"DESCENT_API_URL": base_url}
    path = tmp_path / "tpe.json"
    path.write_text(json.dumps(BODY))
    stop_event = threading.Event()
    trainer = threading.Thread(target=train_dispatched, args=(sessions, stop_event))
    trainer.start()
    try:
        result = invoke(["sweep", str(path), "--wait"], env=env)
    finally:
        stop_event.set()
        trainer.join()
    assert result.exit_code == 0, result.output
    # as submitted: 1 to 4 runs asked by then (the trainer thread may already have ended some)
    assert re.search(r"submitted sweep \d+ \(tpe, [1-4] of 4 runs\)", result.output), result.output
    assert "(tpe, 4 of 4 runs) leaderboard by final_error" in result.output, result.output
    rows = [line for line in result.output.splitlines() if "│" in line and "succeeded" in line]
    assert len(rows) == 4

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**BODY, "search": "bayesian"}))
    result = invoke(["sweep", str(bad)], env=env)
    assert result.exit_code == 2 and "search" in result.output, result.output


def test_the_sweep_page_shows_the_search_kind_and_the_budget(alice, client, sessions):  # noqa: F811
    sweep = client.post("/api/v1/sweeps", json={**BODY, "name": "tpe rates"}).json
    page = alice.get(f"/sweeps/{sweep['id']}").text
    assert '<span id="sweep-kind">tpe</span>' in page
    assert '<span id="sweep-trials">1 of 4 runs</span>' in page
    assert "minimising the final error" in page
    finish(sessions, sweep["runs"][0]["id"])
    page = alice.get(f"/sweeps/{sweep['id']}").text
    assert '<span id="sweep-trials">2 of 4 runs</span>' in page
    listing = alice.get("/sweeps").text
    assert f'id="sweep-{sweep["id"]}"' in listing and "init, learning_rate" in listing


def test_the_example_tpe_sweep_is_valid(client):
    from pathlib import Path

    body = json.loads((Path(__file__).resolve().parents[2] / "examples" /
                       "sweep-tpe.json").read_text())
    response = client.post("/api/v1/sweeps", json=body)
    assert response.status_code == 202, response.get_json()
    sweep = response.get_json()
    assert sweep["kind"] == "tpe" and sweep["total"] == 2 and sweep["trials"] == 40

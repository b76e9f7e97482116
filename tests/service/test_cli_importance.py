"""`descent importance SWEEP_ID` through a real `descent api`: the ranked fields of a sweep
whose runs ended, and a clear message (exit 1) while too few runs have succeeded."""

import json
import threading

from .test_cli import invoke
from .test_cli_sweep import live, train_dispatched  # noqa: F401 (live: a fixture)


def test_importance_ranks_the_varied_fields(live, tmp_path):  # noqa: F811
    base_url, sessions = live
    env = {"DESCENT_API_URL": base_url}
    body = {"base": {"dataset": "xor", "layers": [2, 4, 1], "batch_mode": "full",
                     "epochs": 30},
            "grid": {"learning_rate": [0.01, 0.3, 3.0], "init": ["uniform", "xavier"]},
            "max_concurrency": 3}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(body))
    stop_event = threading.Event()
    trainer = threading.Thread(target=train_dispatched, args=(sessions, stop_event))
    trainer.start()
    try:
        submitted = invoke(["sweep", str(path), "--wait"], env=env)
    finally:
        stop_event.set()
        trainer.join()
    assert submitted.exit_code == 0, submitted.output

    result = invoke(["importance", "1"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("importance for final_error over 6 succeeded runs"), result.output
    fields = [line.split()[0] for line in lines[1:]]
    assert sorted(fields) == ["init", "learning_rate"], result.output
    shares = [float(line.split()[1]) for line in lines[1:]]
    assert shares == sorted(shares, reverse=True), result.output
    assert abs(sum(shares) - 1) < 0.01, result.output  # shares as printed, 3 decimals
    assert fields[0] == "learning_rate", result.output  # 0.01 to 3.0 decides xor in 30 epochs

    as_json = invoke(["importance", "1", "--json"], env=env)
    assert as_json.exit_code == 0
    answer = json.loads(as_json.output)
    assert answer["runs"] == 6 and set(answer["importance"]) == {"init", "learning_rate"}


def test_importance_before_runs_succeed_and_of_a_missing_sweep(live, tmp_path):  # noqa: F811
    base_url, _ = live
    env = {"DESCENT_API_URL": base_url}
    body = {"base": {"dataset": "xor", "layers": [2, 4, 1], "epochs": 5},
            "grid": {"learning_rate": [0.1, 1.0]}}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(body))
    assert invoke(["sweep", str(path)], env=env).exit_code == 0  # nothing trains them

    waiting = invoke(["importance", "1"], env=env)
    assert waiting.exit_code != 0
    assert "409" in waiting.output or "succeeded" in waiting.output, waiting.output
    missing = invoke(["importance", "99"], env=env)
    assert missing.exit_code != 0, missing.output

"""`descent sweep` against a real `descent api` subprocess; the runs are trained in this
process by the workers' own execute_run (no Celery), so --wait sees the sweep end."""

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from service.store import make_engine, make_sessionmaker
from service.store.models import Run, SweepCell

from .test_cli import invoke, service_env, start_api, stop

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sweep-learning-rate.json"

pytestmark = pytest.mark.slow


def test_the_example_sweep_is_valid_and_varies_the_learning_rate(client):
    body = json.loads(EXAMPLE.read_text())
    response = client.post("/api/v1/sweeps/preview", json=body)
    assert response.status_code == 200, response.get_json()
    rates = [c["config"]["learning_rate"] for c in response.get_json()["configurations"]]
    assert min(rates) <= 0.001 and max(rates) >= 50 and len(rates) >= 5


@pytest.fixture
def live(tmp_path):
    env = service_env(tmp_path)
    process, base_url, log = start_api(tmp_path, **env)
    engine = make_engine(env["DESCENT_DATABASE_URL"])
    try:
        yield base_url, make_sessionmaker(engine)
    finally:
        engine.dispose()
        stop(process, log, within=15)


def train_dispatched(sessions, stop_event):
    """A stand-in worker: trains every dispatched, queued sweep run until told to stop."""
    from workers.execute import execute_run

    while True:
        with sessions() as session:
            ids = list(session.scalars(
                select(Run.id).join(SweepCell, SweepCell.run_id == Run.id)
                .where(SweepCell.dispatched.is_(True), Run.status == "queued")
                .order_by(Run.id)))
        for run_id in ids:
            execute_run(sessions, run_id, enqueue=lambda _id: None)
        if stop_event.wait(0.05):  # look again soon; leave at once when told to stop
            return


def test_sweep_preview_wait_and_leaderboard(live, tmp_path):
    base_url, sessions = live
    env = {"DESCENT_API_URL": base_url}
    body = {"base": {"dataset": "xor", "layers": [2, 4, 1], "batch_mode": "full",
                     "epochs": 50},
            "grid": {"learning_rate": [0.01, 2.0, 0.5]}, "max_concurrency": 2}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(body))

    preview = invoke(["sweep", str(path), "--preview"], env=env)
    assert preview.exit_code == 0, preview.output
    assert "3 configurations" in preview.output and "learning_rate" in preview.output
    with sessions() as session:
        assert session.scalars(select(Run)).first() is None

    stop_event = threading.Event()
    trainer = threading.Thread(target=train_dispatched, args=(sessions, stop_event))
    trainer.start()
    try:
        result = invoke(["sweep", str(path), "--wait"], env=env)
    finally:
        stop_event.set()
        trainer.join()
    assert result.exit_code == 0, result.output
    assert "leaderboard by final_error" in result.output
    rows = [[cell.strip() for cell in line.split("│")]
            for line in result.output.splitlines() if "│" in line]
    # Ranked by final error: the largest learning rate first on this short run.
    assert [(row[0], row[2], row[3]) for row in rows] == [
        ("1", "2", "succeeded"), ("2", "0.5", "succeeded"), ("3", "0.01", "succeeded")], \
        result.output

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**body, "grid": {"learning_rate": [0.1, -1]}}))
    result = invoke(["sweep", str(bad)], env=env)
    assert result.exit_code == 2 and "grid.learning_rate[1]" in result.output, result.output


def test_cancel_sweep_ends_its_queued_runs(live, tmp_path):
    base_url, sessions = live
    env = {"DESCENT_API_URL": base_url}
    body = {"base": {"dataset": "xor", "layers": [2, 4, 1], "epochs": 5},
            "grid": {"learning_rate": [0.1, 0.2, 0.3]}, "max_concurrency": 1}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(body))
    submitted = invoke(["sweep", str(path)], env=env)
    assert submitted.exit_code == 0, submitted.output
    with sessions() as session:
        sweep_id = session.scalars(select(SweepCell.sweep_id)).first()
    result = invoke(["cancel", "--sweep", str(sweep_id)], env=env)
    assert result.exit_code == 0 and f"sweep {sweep_id}" in result.output, result.output
    with sessions() as session:
        states = {run.status for run in session.scalars(select(Run))}
    assert states == {"cancelled"}, states

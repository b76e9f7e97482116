"""The reaper (service.store.reaper), the heartbeat thread and the attempts cap, on SQLite
and PostgreSQL, without a broker: sends go to a list (or fail, as a broker that is down)."""

import threading
from datetime import timedelta

from sqlalchemy import select, update

from service.settings import ReaperSettings
from service.store import Run
from service.store import reaper
from service.store import runs as store_runs
from service.store.models import Sweep, SweepCell, utcnow
from tests.eventually import eventually
from workers.dispatch import send_runs
from workers.execute import execute_run
from workers.liveness import Heartbeat

from .conftest import store_run
from .test_execute_sweeps import make_sweep


def set_run(sessions, run_id, **values):
    with sessions() as session:
        session.execute(update(Run).where(Run.id == run_id).values(**values))
        session.commit()


def epochs(sessions, run_id) -> list[tuple]:
    with sessions() as session:
        return [(r.epoch, r.error) for r in store_runs.history(session, run_id)]


def load(sessions, run_id) -> Run:
    with sessions() as session:
        return session.get(Run, run_id)


def lost(sessions, run_id, attempts=1, age=120.0, **values):
    """Mark a run as claimed ``attempts`` times by a worker (on another host) whose last
    heartbeat is ``age`` seconds old."""
    set_run(sessions, run_id, status="running", attempts=attempts, worker="gone-host:7",
            enqueued_at=utcnow() - timedelta(seconds=age + 1),
            heartbeat_at=utcnow() - timedelta(seconds=age), **values)


def reap(sessions, sent=None, **timings):
    """One reap with the default timings (stale after 60 s, 3 attempts, unsent after 30 s)
    but for ``timings``; sends go to ``sent``."""
    return reaper.reap(sessions, (sent if sent is not None else []).append,
                       ReaperSettings(**timings))


def test_a_run_whose_worker_stopped_beating_is_requeued_sent_and_trained(db_sessions):
    sessions = db_sessions
    stale, fresh = store_run(sessions, epochs=20), store_run(sessions, epochs=20)
    lost(sessions, stale, age=61)
    lost(sessions, fresh, age=5)
    sent = []
    done = reap(sessions, sent)
    assert done.requeued == [stale] and sent == [stale] and done.sent == [stale]
    run = load(sessions, stale)
    assert run.status == "queued" and run.attempts == 1 and run.enqueued_at is not None
    assert load(sessions, fresh).status == "running"  # its worker still beats
    assert reap(sessions, sent).requeued == [] and sent == [stale]  # nothing twice

    assert execute_run(sessions, stale) == "succeeded"
    run = load(sessions, stale)
    assert run.attempts == 2 and run.epochs_done == 20
    assert [epoch for epoch, _ in epochs(sessions, stale)] == list(range(21))


def test_past_max_attempts_a_lost_run_fails_worker_lost(db_sessions):
    run_id = store_run(db_sessions, epochs=5)
    lost(db_sessions, run_id, attempts=3)
    sent = []
    done = reap(db_sessions, sent)
    assert done.failed == [run_id] and sent == []
    run = load(db_sessions, run_id)
    assert run.status == "failed" and run.error_message == "worker lost (3 attempts)"
    assert run.finished_at is not None


def test_a_lost_run_whose_cancel_was_requested_ends_cancelled(db_sessions):
    run_id = store_run(db_sessions, epochs=5)
    lost(db_sessions, run_id, cancel_requested=True)
    assert reap(db_sessions).cancelled == [run_id]
    assert load(db_sessions, run_id).status == "cancelled"


def test_a_redelivery_past_max_attempts_fails_instead_of_training(db_sessions):
    """Fault 1's cap: a pool process SIGKILLed at every attempt; the delivery after the
    last allowed attempt ends the run "worker lost" without training it."""
    run_id = store_run(db_sessions, epochs=5)
    lost(db_sessions, run_id, attempts=2, age=0.0)
    take_over = ReaperSettings(stale_seconds=0, max_attempts=2)  # whatever the heartbeat
    assert execute_run(db_sessions, run_id, timings=take_over) == "failed"
    run = load(db_sessions, run_id)
    assert run.status == "failed" and run.error_message == "worker lost (2 attempts)"
    assert run.attempts == 2
    # under the cap the same redelivery trains it
    other = store_run(db_sessions, epochs=5)
    lost(db_sessions, other, attempts=1)
    assert execute_run(db_sessions, other, timings=take_over) == "succeeded"


def test_duplicate_delivery_of_a_final_or_live_run_does_nothing(db_sessions):
    """Fault 6: the same task delivered again while a live worker trains the run, and
    after it ended: nothing is written, no attempt counted."""
    run_id = store_run(db_sessions, epochs=5)
    lost(db_sessions, run_id, age=1.0)  # another host, beating
    assert execute_run(db_sessions, run_id) == "busy"
    run = load(db_sessions, run_id)
    assert run.status == "running" and run.attempts == 1 and run.worker == "gone-host:7"
    set_run(db_sessions, run_id, status="queued", attempts=0, worker=None)
    assert execute_run(db_sessions, run_id) == "succeeded"
    before = load(db_sessions, run_id)
    rows = epochs(db_sessions, run_id)
    assert execute_run(db_sessions, run_id) == "succeeded"
    after = load(db_sessions, run_id)
    assert (after.attempts, after.finished_at, after.worker) == \
        (before.attempts, before.finished_at, before.worker)
    assert epochs(db_sessions, run_id) == rows


def test_unsent_queued_runs_are_sent_after_the_grace(db_sessions):
    sessions = db_sessions
    old, recent, sent_before = (store_run(sessions, epochs=5) for _ in range(3))
    set_run(sessions, old, created_at=utcnow() - timedelta(seconds=31))
    set_run(sessions, sent_before, created_at=utcnow() - timedelta(seconds=31),
            enqueued_at=utcnow() - timedelta(seconds=31))
    sent = []
    assert reap(sessions, sent).sent == [old] and sent == [old]
    assert load(sessions, old).enqueued_at is not None
    assert load(sessions, recent).enqueued_at is None  # within its grace
    assert reap(sessions, sent).sent == []


def test_a_broker_down_leaves_runs_unsent_until_the_next_reap(db_sessions):
    run_id = store_run(db_sessions, epochs=5)
    lost(db_sessions, run_id)

    def down(_run_id):
        raise ConnectionError("broker down")

    done = reaper.reap(db_sessions, down,
                       ReaperSettings(stale_seconds=60, max_attempts=3, unsent_seconds=0))
    assert done.requeued == [run_id] and done.unsent == [run_id] and done.sent == []
    assert load(db_sessions, run_id).enqueued_at is None
    sent = []
    assert reap(db_sessions, sent, unsent_seconds=0).sent == [run_id] and sent == [run_id]


def test_sweep_cells_waiting_for_a_slot_are_not_sent(db_sessions):
    sweep_id, ids, first = make_sweep(db_sessions, [0.5, 1.0, 2.0], max_concurrency=1)
    with db_sessions() as session:  # long ago, the first cell's send failed
        session.execute(update(Run).where(Run.sweep_id == sweep_id)
                        .values(created_at=utcnow() - timedelta(seconds=60)))
        session.commit()
    sent = []
    assert reap(db_sessions, sent).sent == first == [ids[0]]


def test_a_sweep_whose_runs_all_ended_gets_its_final_state(db_sessions):
    sweep_id, ids, _ = make_sweep(db_sessions, [0.5, 1.0])
    with db_sessions() as session:  # its runs ended, the sweep row was never updated
        session.execute(update(Run).where(Run.id.in_(ids))
                        .values(status="succeeded", finished_at=utcnow()))
        session.execute(update(Sweep).where(Sweep.id == sweep_id).values(status="running"))
        session.commit()
    assert reap(db_sessions).sweeps == [sweep_id]
    with db_sessions() as session:
        assert session.get(Sweep, sweep_id).status == "succeeded"


def test_a_lost_sweep_run_that_fails_frees_its_slot(db_sessions):
    sweep_id, ids, first = make_sweep(db_sessions, [0.5, 1.0], max_concurrency=1)
    lost(db_sessions, ids[0], attempts=3)
    sent = []
    done = reap(db_sessions, sent)
    assert done.failed == [ids[0]] and sent == [ids[1]]
    with db_sessions() as session:
        cell = session.scalar(select(SweepCell).where(SweepCell.run_id == ids[1]))
        assert cell.dispatched


def test_concurrent_reapers_take_back_each_run_exactly_once(db_sessions):
    sessions = db_sessions
    ids = [store_run(sessions, epochs=5) for _ in range(12)]
    for run_id in ids:
        lost(sessions, run_id)
    sent, results, start = [], [], threading.Barrier(4)

    def one():
        start.wait()
        results.append(reap(sessions, sent))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    requeued = [i for done in results for i in done.requeued]
    assert sorted(requeued) == ids  # each by exactly one reaper
    assert sorted(set(sent)) == ids


def test_the_heartbeat_beats_while_the_run_is_this_attempts_only(db_sessions):
    run_id = store_run(db_sessions, epochs=5)
    with db_sessions() as session:
        attempt = store_runs.claim_run(session, run_id, "here:1").attempts
    set_run(db_sessions, run_id, heartbeat_at=utcnow() - timedelta(seconds=100))
    with Heartbeat(db_sessions, run_id, attempt, seconds=0.05) as beat:
        eventually(lambda: (utcnow() - reaper_aware(load(db_sessions, run_id).heartbeat_at))
                   .total_seconds() < 1, timeout=10, message="a fresh heartbeat")
        with db_sessions() as session:  # another claim takes the run over
            store_runs.claim_run(session, run_id, "there:2", attempts=attempt)
        beat.thread.join(2)
        assert not beat.thread.is_alive()  # it stopped by itself
    with db_sessions() as session:
        assert store_runs.beat(session, run_id, attempt) is False
        assert store_runs.beat(session, run_id, attempt + 1) is True


def reaper_aware(moment):
    from datetime import timezone

    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def test_send_runs_marks_the_sent_runs_only(db_sessions):
    a, b = store_run(db_sessions, epochs=5), store_run(db_sessions, epochs=5)

    def enqueue(run_id):
        if run_id == b:
            raise ConnectionError("down")

    send_runs([a, b], enqueue, db_sessions)
    assert load(db_sessions, a).enqueued_at is not None
    assert load(db_sessions, b).enqueued_at is None


def test_the_api_marks_a_submitted_run_as_sent(client, app):
    response = client.post("/api/v1/runs", json={"dataset": "xor", "layers": [2, 2, 1]})
    assert response.status_code == 202, response.get_json()
    sessions = app.extensions["descent"]["sessions"]
    assert load(sessions, response.get_json()["id"]).enqueued_at is not None


def test_descent_reap_requeues_and_sends_once(sessions, sqlite_url, tmp_path):
    """`descent reap` on the embedded broker: the stale run goes back on the queue (a
    message in the queue folder) and a second pass finds nothing."""
    from click.testing import CliRunner

    from service.cli import cli

    run_id = store_run(sessions, epochs=5)
    lost(sessions, run_id)
    env = {"DESCENT_DATABASE_URL": sqlite_url,
           "DESCENT_BROKER_URL": f"filesystem://{tmp_path / 'queue'}"}
    result = CliRunner().invoke(cli, ["reap", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert '"requeued": [%d]' % run_id in result.output
    assert len(list((tmp_path / "queue" / "queue").glob("*.msg"))) == 1
    assert load(sessions, run_id).status == "queued"
    again = CliRunner().invoke(cli, ["reap"], env=env)
    assert again.exit_code == 0 and "nothing to reap" in again.output


def test_descent_reap_exits_1_when_the_broker_is_down(sessions, sqlite_url):
    from click.testing import CliRunner

    from service.cli import cli

    run_id = store_run(sessions, epochs=5)
    lost(sessions, run_id)
    env = {"DESCENT_DATABASE_URL": sqlite_url, "DESCENT_BROKER_URL": "redis://127.0.0.1:1/0"}
    result = CliRunner().invoke(cli, ["reap"], env=env)
    assert result.exit_code == 1, result.output
    assert f"unsent: {run_id}" in result.output
    assert load(sessions, run_id).enqueued_at is None

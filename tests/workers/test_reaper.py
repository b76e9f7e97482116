"""The reaper (service.store.reaper), the heartbeat thread and the attempts cap, on SQLite
and PostgreSQL, without a broker: sends go to a list (or fail, as a broker that is down)."""

import threading
from datetime import datetime, timedelta

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


def reap(sessions, sent=None, broker_since=None, **timings):
    """One reap with the default timings (stale after 60 s, 3 attempts, unsent after 30 s)
    but for ``timings``; sends go to ``sent``; ``broker_since`` as in reaper.reap."""
    return reaper.reap(sessions, (sent if sent is not None else []).append,
                       ReaperSettings(**timings), broker_since)


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


# ------------------------------------------------- a broker that lost its data (issue 12)


def sent_at(sessions, run_id, when):
    """Mark a queued run's message as sent to the broker at ``when``."""
    set_run(sessions, run_id, created_at=when, enqueued_at=when)


def test_queued_runs_sent_before_the_broker_lost_its_data_are_sent_again(db_sessions):
    """The broker's data began at ``since`` (its marker was missing and was set again): the
    queued runs sent before it are sent again, once; runs sent after it, runs never sent
    (the unsent scan's), running, final and cancel-requested runs are not."""
    sessions = db_sessions
    since = utcnow() - timedelta(seconds=5)
    lost_a, lost_b, after, unsent, running, done, cancelling = (
        store_run(sessions, epochs=5) for _ in range(7))
    for run_id in (lost_a, lost_b, running, done, cancelling):
        sent_at(sessions, run_id, since - timedelta(seconds=60))
    sent_at(sessions, after, since + timedelta(seconds=1))
    set_run(sessions, running, status="running", attempts=1, heartbeat_at=utcnow())
    set_run(sessions, done, status="succeeded", attempts=1, finished_at=utcnow())
    set_run(sessions, cancelling, cancel_requested=True)

    sent = []
    done_pass = reap(sessions, sent, broker_since=lambda: since)
    assert done_pass.resent == [lost_a, lost_b]
    assert sent == [lost_a, lost_b] and done_pass.sent == [lost_a, lost_b]
    for run_id in (lost_a, lost_b):
        run = load(sessions, run_id)
        assert run.status == "queued" and run.attempts == 0
        assert reaper_aware(run.enqueued_at) > since
    assert reaper_aware(load(sessions, after).enqueued_at) == since + timedelta(seconds=1)
    assert load(sessions, unsent).enqueued_at is None  # within its unsent grace
    # the next pass, and another reaper's, find nothing more to resend
    assert reap(sessions, sent, broker_since=lambda: since).resent == []
    assert sent == [lost_a, lost_b]


def test_nothing_is_resent_while_the_broker_kept_its_data_or_cannot_be_asked(db_sessions):
    """No resend when the marker is older than every message (the broker kept its data),
    when the broker cannot lose its data (the filesystem broker: None), when there is no
    probe, and when the broker is unreachable."""
    sessions = db_sessions
    run_id = store_run(sessions, epochs=5)
    sent_at(sessions, run_id, utcnow() - timedelta(seconds=60))

    def unreachable():
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    for probe in (lambda: utcnow() - timedelta(hours=1), lambda: None, None, unreachable):
        sent = []
        assert reap(sessions, sent, broker_since=probe).resent == [] and sent == []
    assert reaper_aware(load(sessions, run_id).enqueued_at) < utcnow() - timedelta(seconds=59)


def test_a_resend_that_fails_is_left_to_the_unsent_scan(db_sessions):
    """The broker answered the probe, then refused the send: the run is left unsent
    (enqueued_at NULL), not resent again by the next pass's lost-message scan, and sent by
    the unsent scan once its grace is over."""
    run_id = store_run(db_sessions, epochs=5)
    since = utcnow()
    sent_at(db_sessions, run_id, since - timedelta(seconds=60))

    def down(_run_id):
        raise ConnectionError("broker down")

    timings = ReaperSettings(unsent_seconds=0)
    done = reaper.reap(db_sessions, down, timings, lambda: since)
    assert done.resent == [run_id] and done.unsent == [run_id] and done.sent == []
    assert load(db_sessions, run_id).enqueued_at is None
    sent = []
    done = reap(db_sessions, sent, unsent_seconds=0, broker_since=lambda: since)
    assert done.resent == [] and done.sent == [run_id] and sent == [run_id]


def test_concurrent_reapers_resend_each_lost_message_exactly_once(db_sessions):
    sessions = db_sessions
    since = utcnow()
    ids = [store_run(sessions, epochs=5) for _ in range(12)]
    for run_id in ids:
        sent_at(sessions, run_id, since - timedelta(seconds=60))
    sent, results, start = [], [], threading.Barrier(4)

    def one():
        start.wait()
        results.append(reap(sessions, sent, broker_since=lambda: since))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    resent = [i for done in results for i in done.resent]
    assert sorted(resent) == ids and sorted(sent) == ids  # each by exactly one reaper


# ---------------------------------------------- the broker marker (service.queue)


def test_the_broker_marker_is_set_once_and_set_again_when_redis_loses_its_data(redis_url):
    """BrokerMarker on a real Redis: the first call sets the key, later calls (from any
    client, as the workers of a fleet) read the same time; once the database is emptied
    (a Redis restarted without persistence), the next call sets a later time."""
    import redis

    from service.queue import BROKER_MARKER, QueueClient

    def marker():
        return QueueClient(redis_url).marker

    before = utcnow()
    first = marker().since()
    assert before <= first <= utcnow()
    assert marker().since() == first == marker().since()
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    assert client.get(BROKER_MARKER) is None
    again = marker().since()
    assert again > first
    assert client.get(BROKER_MARKER).decode() == again.isoformat()
    client.close()


def test_the_broker_marker_is_none_on_the_filesystem_broker_and_raises_when_down(tmp_path):
    from kombu.exceptions import OperationalError

    from service.queue import QueueClient

    assert QueueClient(f"filesystem://{tmp_path / 'queue'}").marker.since() is None
    try:
        QueueClient("redis://127.0.0.1:1/0").marker.since()
    except OperationalError:
        pass
    else:
        raise AssertionError("an unreachable broker answered")


def test_a_send_sets_the_marker(redis_url):
    """QueueClient sets the marker before it sends (so a reaper never takes a run sent into
    this Redis for one sent before it lost its data): after a send the key exists, older
    than the message's sending."""
    import redis

    from service.queue import BROKER_MARKER, QueueClient

    client = redis.Redis.from_url(redis_url)
    assert client.get(BROKER_MARKER) is None
    QueueClient(redis_url).enqueue_run(1)
    assert client.llen("celery") == 1
    marker = client.get(BROKER_MARKER)
    assert marker is not None
    assert datetime.fromisoformat(marker.decode()) <= utcnow()
    client.close()

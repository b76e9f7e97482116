"""The reaper sends again a queued run whose message went out ``resend_seconds`` ago and
that no worker has claimed since (its message may have been lost as Redis handed it to a
worker whose connection dropped: tests/multihost/test_latency.py shows that loss), on
SQLite and PostgreSQL, without a broker."""

from sqlalchemy import update

from service.settings import ReaperSettings
from service.store import Run
from service.store import reaper
from service.store.clock import db_ago

from .conftest import store_run


def sent_ago(sessions, run_id, seconds, **values):
    with sessions() as session:
        session.execute(update(Run).where(Run.id == run_id)
                        .values(enqueued_at=db_ago(seconds), **values))
        session.commit()


def enqueued_at(sessions, run_id):
    with sessions() as session:
        return session.get(Run, run_id).enqueued_at


def test_a_queued_run_never_claimed_is_sent_again_once_per_interval(db_sessions):
    forgotten, recent, running, cancelled = (store_run(db_sessions, epochs=5)
                                             for _ in range(4))
    sent_ago(db_sessions, forgotten, 61)
    sent_ago(db_sessions, recent, 30)
    sent_ago(db_sessions, running, 61, status="running", attempts=1, worker="w:1",
             heartbeat_at=db_ago(0))
    sent_ago(db_sessions, cancelled, 61, cancel_requested=True)
    before = enqueued_at(db_sessions, forgotten)
    sent = []
    done = reaper.reap(db_sessions, sent.append, ReaperSettings(resend_seconds=60))
    assert done.resent == [forgotten] and sent == [forgotten]
    assert enqueued_at(db_sessions, forgotten) > before  # sent now: the interval restarts
    assert not reaper.reap(db_sessions, sent.append, ReaperSettings(resend_seconds=60))
    assert sent == [forgotten]


def test_with_the_default_hour_nothing_recent_is_resent(db_sessions):
    run_id = store_run(db_sessions, epochs=5)
    sent_ago(db_sessions, run_id, 3000)
    sent = []
    assert not reaper.reap(db_sessions, sent.append, ReaperSettings()) and sent == []
    sent_ago(db_sessions, run_id, 3601)
    assert reaper.reap(db_sessions, sent.append, ReaperSettings()).resent == [run_id]


def test_a_failed_resend_is_left_to_the_unsent_scan(db_sessions):
    run_id = store_run(db_sessions, epochs=5)
    sent_ago(db_sessions, run_id, 61)

    def broker_down(_run_id):
        raise ConnectionError("broker down")

    done = reaper.reap(db_sessions, broker_down, ReaperSettings(resend_seconds=60))
    assert done.resent == [run_id] and done.unsent == [run_id]
    assert enqueued_at(db_sessions, run_id) is None  # the unsent scan sends it later

"""Fault 5, clock skew, in one process on SQLite and PostgreSQL: a worker or reaper whose
host clock is ten minutes ahead or behind (DESCENT_TEST_CLOCK_OFFSET_SECONDS, which shifts
``service.store.models.utcnow``; set here as the module attribute it initialises) neither
loses its live runs nor takes back others', because heartbeats are written and judged on
the database's clock (service.store.clock). tests/multihost/test_clock_skew.py shows the
same with real workers on hosts of their own."""

import time
from datetime import timedelta, timezone

import pytest
from sqlalchemy import select, update

from service.settings import ReaperSettings
from service.store import Run, models
from service.store import reaper
from service.store import runs as store_runs
from service.store.clock import db_ago, db_now
from workers.execute import execute_run
from workers.liveness import Heartbeat, owner_alive

from .conftest import store_run

SKEWS = [pytest.param(600, id="ahead"), pytest.param(-600, id="behind")]


def skew(monkeypatch, seconds: float) -> None:
    """This process's wall clock ``seconds`` off, as the test knob sets it in a worker."""
    monkeypatch.setattr(models, "CLOCK_OFFSET", timedelta(seconds=seconds))


def claimed(sessions, run_id, worker="there:1") -> int:
    """Claim a run as a worker of another host does; its attempt."""
    with sessions() as session:
        return store_runs.claim_run(session, run_id, worker).attempts


def reap(sessions, sent):
    return reaper.reap(sessions, sent.append, ReaperSettings())


def status(sessions, run_id) -> tuple:
    with sessions() as session:
        run = session.get(Run, run_id)
        return run.status, run.attempts


def test_the_knob_shifts_this_processs_clock_only(db_sessions, monkeypatch):
    skew(monkeypatch, 600)
    with db_sessions() as session:
        database_now = session.scalar(select(db_now()))
    database_now = database_now.replace(tzinfo=database_now.tzinfo or timezone.utc)
    assert timedelta(seconds=590) < models.utcnow() - database_now < timedelta(seconds=610)


@pytest.mark.parametrize("offset", SKEWS)
def test_a_skewed_worker_keeps_its_live_runs(db_sessions, monkeypatch, offset):
    """Claimed and beaten by a worker whose clock is off; reaped by one whose clock is
    right: the run is live, and stays the worker's."""
    run_id = store_run(db_sessions, epochs=5)
    skew(monkeypatch, offset)
    attempt = claimed(db_sessions, run_id)
    with Heartbeat(db_sessions, run_id, attempt, seconds=0.01) as beat:
        beat.stopped.wait(0.05)
    skew(monkeypatch, 0)
    sent = []
    assert not reap(db_sessions, sent) and sent == []
    assert status(db_sessions, run_id) == ("running", 1)
    with db_sessions() as session:
        assert owner_alive(session, session.get(Run, run_id), ReaperSettings().stale_seconds)
    assert execute_run(db_sessions, run_id) == "busy"  # a duplicate delivery leaves it be


@pytest.mark.parametrize("offset", SKEWS)
def test_a_skewed_reaper_takes_back_lost_runs_only(db_sessions, monkeypatch, offset):
    """A reaper (and a redelivery) on a host whose clock is off leaves a live run of
    another host alone and still takes back a run whose worker stopped beating."""
    live, lost = store_run(db_sessions, epochs=5), store_run(db_sessions, epochs=5)
    claimed(db_sessions, live)
    claimed(db_sessions, lost, worker="gone:2")
    stale = ReaperSettings().stale_seconds
    with db_sessions() as session:  # silent for longer than the stale interval
        session.execute(update(Run).where(Run.id == lost)
                        .values(heartbeat_at=db_ago(stale + 1)))
        session.commit()
    skew(monkeypatch, offset)
    sent = []
    done = reap(db_sessions, sent)
    assert done.requeued == [lost] and sent == [lost]
    assert status(db_sessions, live) == ("running", 1)
    assert execute_run(db_sessions, live) == "busy"
    assert status(db_sessions, live) == ("running", 1)
    assert execute_run(db_sessions, lost) == "succeeded"
    assert status(db_sessions, lost) == ("succeeded", 2)


@pytest.mark.parametrize("offset", SKEWS)
def test_a_skewed_worker_that_stops_beating_is_taken_back_after_the_stale_interval(
        db_sessions, monkeypatch, offset):
    """Its last heartbeat ages on the database's clock, so the run is taken back once it is
    older than the stale interval: not ten minutes early, not ten minutes late."""
    run_id = store_run(db_sessions, epochs=5)
    skew(monkeypatch, offset)
    attempt = claimed(db_sessions, run_id)
    with db_sessions() as session:
        assert store_runs.beat(session, run_id, attempt)  # its last beat
    skew(monkeypatch, 0)
    timings = ReaperSettings(stale_seconds=0.5)
    sent = []
    assert reaper.reap(db_sessions, sent.append, ReaperSettings(stale_seconds=600)) \
        .requeued == []
    time.sleep(0.6)  # older than 0.5 s, by any clock
    assert reaper.reap(db_sessions, sent.append, timings).requeued == [run_id]
    assert sent == [run_id] and status(db_sessions, run_id) == ("queued", 1)


def test_the_database_clock_ages_heartbeats(db_sessions):
    """heartbeat_fresh: fresh right after a beat, stale once older than the interval by
    the database's clock; a run that never beat is not fresh."""
    run_id = store_run(db_sessions, epochs=5)
    with db_sessions() as session:
        assert store_runs.heartbeat_fresh(session, run_id, 60) is False  # queued: no beat
    attempt = claimed(db_sessions, run_id)
    with db_sessions() as session:
        assert store_runs.beat(session, run_id, attempt)
        assert store_runs.heartbeat_fresh(session, run_id, 60) is True
        session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=db_ago(61)))
        session.commit()
        assert store_runs.heartbeat_fresh(session, run_id, 60) is False
        assert store_runs.heartbeat_fresh(session, run_id, 120) is True

"""The Celery task around execute_run: a database error after the claim comes back as a
retry that names the claim it gave up, so any worker can take the run over at once.
(Celery's eager ``apply`` runs a task's retries at once, in this process.)"""

import dataclasses

import pytest
from sqlalchemy.exc import OperationalError

from service.store import runs as store_runs
from workers import execute, tasks

from .conftest import store_run


@pytest.fixture
def task_settings(sqlite_url, monkeypatch):
    """The task's settings on this test's database, with claims that stay fresh an hour."""
    monkeypatch.setattr(tasks, "settings", dataclasses.replace(
        tasks.settings, database_url=sqlite_url,
        reaper=dataclasses.replace(tasks.settings.reaper, stale_seconds=3600.0)))


def failing_once(real, what: str):
    """``real``, which fails its first call with a lost connection."""
    calls = []

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise OperationalError(what, {}, Exception("server closed the connection"))
        return real(*args, **kwargs)
    return call


def test_a_database_error_after_the_claim_retries_naming_the_claim(sessions, task_settings,
                                                                  monkeypatch):
    """The run's final transaction fails on a worker of another host whose heartbeat is
    fresh: the retry takes the run over at once rather than finding it busy."""
    run_id = store_run(sessions, epochs=5)
    monkeypatch.setattr(execute, "worker_name", lambda: "another-host:4242")
    monkeypatch.setattr(store_runs, "complete_run",
                        failing_once(store_runs.complete_run, "COMMIT"))
    retried = []
    real_retry = tasks.train_run.retry

    def retry(*args, **kwargs):
        retried.append(kwargs)
        return real_retry(*args, **kwargs)

    monkeypatch.setattr(tasks.train_run, "retry", retry)
    assert tasks.train_run.apply(args=[run_id]).get() == "succeeded"
    assert [(r["kwargs"], r["countdown"]) for r in retried] == \
        [({"resume_attempt": 1}, tasks.DATABASE_RETRY_SECONDS)]
    with sessions() as session:
        run = store_runs.get_run(session, run_id)
        assert (run.status, run.attempts) == ("succeeded", 2)


def test_a_delivery_naming_no_claim_finds_a_live_owner_busy(sessions, task_settings,
                                                             monkeypatch):
    run_id = store_run(sessions, epochs=5)
    with sessions() as session:
        store_runs.claim_run(session, run_id, "another-host:4242")
    assert tasks.train_run.apply(args=[run_id]).get() == "busy"
    assert tasks.train_run.apply(args=[run_id], kwargs={"resume_attempt": 0}).get() == "busy"
    assert tasks.train_run.apply(args=[run_id],
                                 kwargs={"resume_attempt": 1}).get() == "succeeded"


def test_a_database_error_before_any_claim_retries_as_it_was(sessions, task_settings,
                                                             monkeypatch):
    run_id = store_run(sessions, epochs=5)
    monkeypatch.setattr(store_runs, "claim_run",
                        failing_once(store_runs.claim_run, "UPDATE runs"))
    retried = []
    real_retry = tasks.train_run.retry
    monkeypatch.setattr(tasks.train_run, "retry",
                        lambda *a, **kw: retried.append(kw) or real_retry(*a, **kw))
    assert tasks.train_run.apply(args=[run_id]).get() == "succeeded"
    assert len(retried) == 1 and "kwargs" not in retried[0]

"""Celery tasks: thin wrappers that pass ids, never objects."""

from typing import Optional

from sqlalchemy.exc import InterfaceError, OperationalError

from service.queue import TRAIN_RUN
from workers import database
from workers.celery_app import app, send_run, settings
from workers.execute import ClaimInterrupted, Threads, execute_run

# Seconds before a delivery that could not reach the database tries again.
DATABASE_RETRY_SECONDS = 5.0


@app.task(name=TRAIN_RUN, bind=True, acks_late=True,
          reject_on_worker_lost=True, max_retries=None)
def train_run(self, run_id: int, resume_attempt: Optional[int] = None) -> str:
    """Train the stored run ``run_id``; its state and results go to the database.

    A delivery of a run that is final, or still being trained by a live worker (a
    duplicate, e.g. after a broker's visibility timeout), does nothing: should that worker
    die, the reaper requeues the run. One that cannot reach the database (down, locked for
    longer than the busy timeout) comes back after DATABASE_RETRY_SECONDS; the run, if this
    delivery had claimed it, is then taken over by the retry's delivery, whichever worker
    gets it (``resume_attempt``: the claim this task's earlier delivery gave up)."""
    try:
        sessions = database.sessions(settings.database_url, settings.reaper.stale_seconds)
        return execute_run(sessions, int(run_id), enqueue=send_run, timings=settings.reaper,
                           threads=Threads(settings.worker_threads, settings.limits.max_threads),
                           resume_attempt=resume_attempt)
    except ClaimInterrupted as interrupted:
        raise self.retry(exc=interrupted.__cause__, countdown=DATABASE_RETRY_SECONDS,
                         kwargs={"resume_attempt": interrupted.attempt})
    except (OperationalError, InterfaceError) as exc:
        raise self.retry(exc=exc, countdown=DATABASE_RETRY_SECONDS)

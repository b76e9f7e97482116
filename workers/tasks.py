"""Celery tasks: thin wrappers that pass ids, never objects."""

from workers import recorder
from workers.celery_app import app
from workers.runner import execute_run


@app.task(name="workers.tasks.train_run", acks_late=True, reject_on_worker_lost=True)
def train_run(run_id: int) -> str:
    """Train the stored run ``run_id``; its state and results go to the database."""
    return execute_run(recorder.sessions(), int(run_id))

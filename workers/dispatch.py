"""Sending the runs a sweep dispatches when one of its runs ends. The send itself is
injected: ``enqueue(run_id)``, built by workers.celery_app from its app (tests pass a list's
``append``), so nothing here imports the Celery app."""

import logging
from typing import Callable, Optional

from service.store import runs as store_runs
from service.store import sweeps as store_sweeps

log = logging.getLogger(__name__)

Enqueue = Callable[[int], None]


def send_runs(run_ids, enqueue: Optional[Enqueue], sessions=None) -> None:
    """Enqueue train_run for each of ``run_ids`` (a sweep's next cells) with ``enqueue``
    and, given ``sessions``, record them as sent. A send that fails leaves its run unsent,
    which the reaper sends later; so does ``enqueue=None`` (nothing is sent)."""
    if not run_ids:
        return
    if enqueue is None:
        log.info("runs %s left for the reaper to send (no enqueue function)", run_ids)
        return
    sent = []
    for run_id in run_ids:
        try:
            enqueue(run_id)
        except Exception:
            log.exception("sweep run %s could not be enqueued (the reaper sends it later)",
                          run_id)
        else:
            sent.append(run_id)
    if sessions is not None and sent:
        with sessions() as session:
            store_runs.mark_enqueued(session, sent)


def sweep_run_ended(sessions, sweep_id: Optional[int], enqueue: Optional[Enqueue]) -> None:
    """A sweep's run ended without this delivery training it (cancelled before its claim):
    free its slot and send the runs that dispatched."""
    if sweep_id is None:
        return
    with sessions() as session:
        to_send = store_sweeps.run_ended(session, sweep_id)
        session.commit()
    send_runs(to_send, enqueue, sessions)

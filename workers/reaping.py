"""The reaper thread of a worker's main process (see service.store.reaper)."""

import logging
import random
import threading

from service.store import reaper
from workers import recorder
from workers.runner import send_task

log = logging.getLogger(__name__)


def reap_forever(stop: threading.Event, seconds: float) -> None:
    """Reap every ``seconds`` (with some jitter, so the workers of a fleet spread their
    scans) until ``stop`` is set; a failed pass (database away) is tried again later."""
    while not stop.wait(seconds * random.uniform(0.5, 1.0)):
        try:
            reaper.reap(recorder.sessions(), send_task)
        except Exception as exc:
            log.warning("reaper pass failed: %s", exc)


def start_reaper(seconds: float = reaper.REAP_SECONDS) -> threading.Event:
    """Start the reaper thread (a daemon); set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=reap_forever, args=(stop, seconds), daemon=True,
                     name="descent-reaper").start()
    return stop

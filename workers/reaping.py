"""The reaper thread of a worker's main process (see service.store.reaper). The send
function is injected, so nothing here imports the Celery app."""

import logging
import random
import threading
from datetime import datetime
from typing import Callable, Optional

from sqlalchemy.orm import sessionmaker

from service.settings import ReaperSettings
from service.store import reaper
from workers import database
from workers.dispatch import Enqueue

log = logging.getLogger(__name__)

BrokerSince = Optional[Callable[[], Optional[datetime]]]


def reap_forever(stop: threading.Event, sessions: sessionmaker, enqueue: Enqueue,
                 timings: ReaperSettings, broker_since: BrokerSince = None) -> None:
    """Reap every ``timings.reap_seconds`` (with some jitter, so the workers of a fleet
    spread their scans) until ``stop`` is set; a failed pass (database away) is tried again
    later. ``broker_since`` tells when the broker's data began (see reaper.reap)."""
    while not stop.wait(timings.reap_seconds * random.uniform(0.5, 1.0)):
        try:
            reaper.reap(database.forks_held_off(sessions), enqueue, timings, broker_since)
        except Exception as exc:
            log.warning("reaper pass failed: %s", exc)


def start_reaper(sessions: sessionmaker, enqueue: Enqueue, timings: ReaperSettings,
                 broker_since: BrokerSince = None) -> threading.Event:
    """Start the reaper thread (a daemon); set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=reap_forever,
                     args=(stop, sessions, enqueue, timings, broker_since),
                     daemon=True, name="descent-reaper").start()
    return stop

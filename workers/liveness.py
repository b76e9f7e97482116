"""Whether a run's worker is alive: this process's name, the heartbeat thread that proves a
training run's worker alive, and the check a redelivery makes of the run's last owner."""

import logging
import os
import socket
import threading

from service.settings import ReaperSettings
from service.store import runs as store_runs

log = logging.getLogger(__name__)


def worker_name() -> str:
    """host:pid of this worker process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """A thread that refreshes a running run's heartbeat every ``seconds`` while this
    process trains it (kernels release the GIL), however long an epoch takes; it stops by
    itself once the run is no longer this attempt's."""

    def __init__(self, sessions, run_id: int, attempt: int,
                 seconds: float = ReaperSettings().heartbeat_seconds):
        self.sessions, self.run_id, self.attempt, self.seconds = (
            sessions, run_id, attempt, seconds)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True,
                                       name=f"heartbeat-{run_id}")

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)  # a beat after the run ended changes nothing

    def _beat(self) -> None:
        while not self.stopped.wait(self.seconds):
            try:
                with self.sessions() as session:
                    if not store_runs.beat(session, self.run_id, self.attempt):
                        return
            except Exception as exc:  # the database is away: beat again later
                log.warning("run %s: heartbeat failed: %s", self.run_id, exc)


def owner_alive(session, run, stale_seconds: float) -> bool:
    """Whether the worker that claimed a running run may still be training it: a process of
    this host that no longer exists (or this very process, which trains one run at a time)
    is not; elsewhere, one whose last heartbeat is older than ``stale_seconds`` is not, by
    the database's clock (the one that wrote it), never this host's."""
    host, _, pid = (run.worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return store_runs.heartbeat_fresh(session, run.id, stale_seconds)

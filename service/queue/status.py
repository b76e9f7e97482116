"""The broker's reachability and the workers answering a ping, cached for health checks.

A broadcast ping waits its whole timeout (1 s) for replies, so a health check that pinged
on every call held an API thread for a second each time and let anyone tie up threads.
``BrokerStatus`` answers from its last probe instead: the first call of a process waits
for a probe (callers arriving meanwhile wait for that same probe), and once the probe is
older than ``max_age`` the next call starts one refresh in a background thread and answers
the previous result at once. At most one probe runs at a time.
"""

import threading
import time
from dataclasses import dataclass
from typing import Optional

# How old a probe may be before a call starts a new one.
MAX_AGE_SECONDS = 5.0
# How long callers arriving during a process's first probe wait for it: longer than a probe
# can take (a 2 s connection attempt and a 1 s ping).
FIRST_PROBE_WAIT = 10.0


@dataclass(frozen=True)
class Probe:
    """What one probe found: whether the broker took a connection, the names of the workers
    that answered a ping (None where the broker cannot broadcast), and when (``clock``)."""

    reachable: bool
    workers: Optional[list]
    at: float


def probe(queue, clock) -> Probe:
    """Ask the broker now (``queue``: a QueueClient), blocking for up to a few seconds."""
    reachable = queue.broker_reachable()
    workers = queue.worker_names() if reachable else []
    return Probe(reachable, workers, clock())


class BrokerStatus:
    """The cached probe of one queue client (see the module's docstring)."""

    def __init__(self, queue, max_age: float = MAX_AGE_SECONDS, clock=time.monotonic):
        self.queue, self.max_age, self.clock = queue, max_age, clock
        self._probe: Optional[Probe] = None
        self._probing = False
        self._lock = threading.Lock()
        self._first = threading.Event()

    def current(self) -> Probe:
        """The latest probe, refreshed in the background when older than ``max_age``."""
        with self._lock:
            last = self._probe
            due = last is None or self.clock() - last.at >= self.max_age
            start = due and not self._probing
            if start:
                self._probing = True
        if last is not None:
            if start:
                threading.Thread(target=self._refresh, name="descent-broker-probe",
                                 daemon=True).start()
            return last
        if start:  # nothing to answer yet: this caller probes, the others wait for it
            return self._refresh()
        self._first.wait(FIRST_PROBE_WAIT)
        return self._probe or Probe(False, [], self.clock())

    def _refresh(self) -> Probe:
        """Probe, keep the result and let the next probe start."""
        try:
            result = probe(self.queue, self.clock)
        except Exception:  # the probes catch their own errors; anything else is "down"
            result = Probe(False, [], self.clock())
        with self._lock:
            self._probe, self._probing = result, False
        self._first.set()
        return result

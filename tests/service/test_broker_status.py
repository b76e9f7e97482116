"""service.queue.status.BrokerStatus: health checks answer from a cached probe; a stale one
is refreshed in the background, one probe at a time, and only a process's first calls wait.

A unit test of the cache: the queue here is a stand-in whose probes block until the test
releases them (the real broker is probed in test_api_health_openapi.py and
tests/integration/test_health.py)."""

import threading

import pytest

from service.queue.status import BrokerStatus
from tests.eventually import eventually


class GatedQueue:
    """A queue client stand-in: each ``worker_names`` call is counted and blocks until
    ``release()``."""

    def __init__(self):
        self.pings = 0
        self.gate = threading.Event()
        self.names = ["celery@a"]

    def broker_reachable(self) -> bool:
        return True

    def worker_names(self):
        self.pings += 1
        self.gate.wait(30)
        return list(self.names)

    def release(self):
        self.gate.set()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def queue():
    queue = GatedQueue()
    yield queue
    queue.release()  # never leave a probe thread waiting


def test_callers_during_the_first_probe_share_it(queue):
    status = BrokerStatus(queue, max_age=5.0, clock=Clock())
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(status.current()))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    eventually(lambda: queue.pings == 1)
    queue.release()
    for thread in threads:
        thread.join(30)
    assert queue.pings == 1
    assert [a.workers for a in answers] == [["celery@a"]] * 8


def test_a_stale_probe_is_answered_at_once_and_refreshed_once_in_the_background(queue):
    clock = Clock()
    status = BrokerStatus(queue, max_age=5.0, clock=clock)
    queue.release()
    first = status.current()
    assert (first.reachable, first.workers, queue.pings) == (True, ["celery@a"], 1)
    for _ in range(20):  # fresh: no probe at all
        assert status.current() is first
    assert queue.pings == 1

    queue.gate.clear()  # the next probe hangs, as a ping to a slow broker does
    queue.names = ["celery@a", "celery@b"]
    clock.now = 6.0
    for _ in range(20):  # stale: answered from the old probe, without waiting
        assert status.current() is first
    eventually(lambda: queue.pings == 2)
    assert queue.pings == 2  # one refresh at a time, however many calls
    queue.release()
    eventually(lambda: status.current().workers == ["celery@a", "celery@b"])
    assert queue.pings == 2


def test_a_failing_probe_reports_the_broker_down():
    class Broken:
        def broker_reachable(self):
            raise RuntimeError("no broker")

    probe = BrokerStatus(Broken(), clock=Clock()).current()
    assert (probe.reachable, probe.workers) == (False, [])

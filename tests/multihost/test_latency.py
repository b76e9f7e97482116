"""Fault 4, a slow and flaky link: between each worker host and PostgreSQL and Redis, a
proxy (tests/multihost/proxy.py) delays every chunk 50 ms each way and resets an open
connection now and then (seeded). A sweep of 50 tiny runs with max_concurrency 3 still
runs every cell exactly once: each run ends once, succeeded, with its whole history, and
never more than three are in flight at once (by sampling while it runs, and by the runs'
own start and end times, which are all the database's clock). And the worst-timed reset,
a run's message dropped as Redis hands it to a worker, delays the run but never loses it."""

import socket
import sys
import threading
import time
import uuid
from datetime import datetime

import pytest
from sqlalchemy import func, select

from service.store import Epoch, Run, make_engine
from tests.integration.test_service import history, submit, wait_for
from tests.integration.test_sweeps import post_sweep, wait_sweep

from .conftest import SERVICES
from .proxy import LossyProxy, proxied_url

pytestmark = pytest.mark.slow

DELAY = 0.05  # seconds, each way
MAX_CONCURRENCY = 3
CELLS = 50
SWEEP = {"base": {"dataset": "xor", "layers": [2, 4, 1], "learning_rate": 0.5,
                  "epochs": 20},
         "grid": {"seed": list(range(CELLS))}, "max_concurrency": MAX_CONCURRENCY}


# ------------------------------------------------------------------------ the proxy itself


def echo_server():
    """A loopback echo server in a thread; its address."""
    server = socket.create_server(("127.0.0.1", 0))

    def echo(conn):
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:  # reset by the proxy
                pass

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_the_proxy_delays_both_ways_and_resets_connections():
    server = echo_server()
    proxy = LossyProxy(("127.0.0.1", 0), server.getsockname(), delay=DELAY, reset_every=None)
    try:
        with socket.create_connection(proxy.address) as conn:
            for _ in range(3):
                sent = time.monotonic()
                conn.sendall(b"ping")
                assert conn.recv(16) == b"ping"
                assert time.monotonic() - sent >= 2 * DELAY  # a lower bound: never flaky
            assert proxy.reset_all() == 1
            with pytest.raises(ConnectionResetError):
                conn.sendall(b"ping")
                conn.recv(16) or conn.sendall(b"ping")
    finally:
        proxy.close()
    flaky = LossyProxy(("127.0.0.1", 0), server.getsockname(), delay=0, reset_every=0.05)
    try:
        with socket.create_connection(flaky.address) as conn:
            with pytest.raises(ConnectionError):
                while True:  # reset before long, by the proxy's own draws
                    conn.sendall(b"ping")
                    if conn.recv(16) == b"":
                        raise ConnectionResetError("closed")
        assert flaky.resets >= 1
    finally:
        flaky.close()
        server.close()


# ---------------------------------------------------------------------- the sweep across it


def peak_overlap(runs) -> int:
    """The most runs between their started_at and finished_at at one moment."""
    events = sorted([(datetime.fromisoformat(r["started_at"]), 1) for r in runs]
                    + [(datetime.fromisoformat(r["finished_at"]), -1) for r in runs])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


class RunningSampler:
    """Counts the sweep's running runs in the database every 20 ms (the main host's own
    connection, not through the proxies); ``peak`` is the most it saw."""

    def __init__(self, database_url: str, sweep_id: int):
        self.engine = make_engine(database_url)
        self.sweep_id, self.peak, self.samples = sweep_id, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        query = select(func.count()).select_from(Run).where(Run.sweep_id == self.sweep_id,
                                                           Run.status == "running")
        with self.engine.connect() as connection:
            while not self.stop.wait(0.02):
                self.peak = max(self.peak, connection.execute(query).scalar())
                connection.rollback()
                self.samples += 1

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.engine.dispose()


def start_worker(cluster, host, concurrency: int, **knobs):
    """`descent worker --concurrency N` on ``host`` (not waited for), one of the fleet."""
    name = f"w-{uuid.uuid4().hex[:6]}@{host.name}"
    process = host.start([sys.executable, "-m", "service.cli", "worker", "--concurrency",
                          str(concurrency), "--name", name, "--", "--without-mingle",
                          "--without-gossip"],
                         name=name, env=cluster.env(host, **knobs), cwd=cluster.folder)
    cluster.fleet.workers.append(process)
    return process


def test_a_sweep_over_a_slow_flaky_link_runs_every_cell_once_within_max_concurrency(cluster):
    proxies = []
    try:
        for name in ("w1", "w2"):
            host = cluster.network.add_host(name)
            pg = LossyProxy((host.gateway, 0), SERVICES["postgres"], delay=DELAY,
                            reset_every=4.0, seed=len(proxies) + 1)
            redis = LossyProxy((host.gateway, 0), SERVICES["redis"], delay=DELAY,
                               reset_every=4.0, seed=len(proxies) + 2)
            proxies += [pg, redis]
            start_worker(cluster, host, 2,
                         DESCENT_DATABASE_URL=proxied_url(cluster.postgres_url, pg),
                         DESCENT_BROKER_URL=proxied_url(cluster.redis_url, redis),
                         DESCENT_MAX_ATTEMPTS=10,
                         # a message lost in flight is sent again soon (see the next test)
                         DESCENT_RESEND_SECONDS=10)
        for worker in cluster.fleet.workers:  # 4 training processes for 3 slots
            worker.wait_for(" ready.", 180)

        sweep = post_sweep(cluster.client, SWEEP)
        assert sweep["total"] == CELLS
        sampler = RunningSampler(cluster.postgres_url, sweep["id"])
        try:
            # A hang guard, not a target: about two minutes alone, more beside other tests.
            done = wait_sweep(cluster.client, cluster.fleet, sweep["id"], timeout=300)
        finally:
            sampler.close()
    finally:
        for proxy in proxies:
            proxy.close()

    assert done["status"] == "succeeded" and done["counts"] == {"succeeded": CELLS}, done
    runs = done["runs"]
    assert len({run["id"] for run in runs}) == CELLS
    assert all(run["epochs_done"] == SWEEP["base"]["epochs"] for run in runs)
    assert sampler.samples > 0 and sampler.peak <= MAX_CONCURRENCY, sampler.peak
    assert peak_overlap(runs) <= MAX_CONCURRENCY
    engine = make_engine(cluster.postgres_url)
    try:
        with engine.connect() as connection:  # every run's history: each epoch once
            rows = connection.execute(
                select(Epoch.run_id, func.count(), func.count(func.distinct(Epoch.epoch)),
                       func.min(Epoch.epoch), func.max(Epoch.epoch))
                .where(Epoch.run_id.in_([run["id"] for run in runs]))
                .group_by(Epoch.run_id)).all()
    finally:
        engine.dispose()
    epochs = SWEEP["base"]["epochs"]
    assert len(rows) == CELLS
    assert all(row[1:] == (epochs + 1, epochs + 1, 0, epochs) for row in rows), rows
    resets = sum(proxy.resets for proxy in proxies)
    print(f"proxies: {sum(p.accepted for p in proxies)} connections, {resets} reset; "
          f"attempts: {sorted(run['attempts'] for run in runs)[-5:]} (highest five)")
    assert resets > 0  # the link did drop connections while the sweep ran


# ------------------------------------------------------- a task message lost in flight


TINY = {"dataset": "xor", "layers": [2, 4, 1], "learning_rate": 0.5, "epochs": 20}


def test_a_task_message_lost_in_flight_is_sent_again(cluster):
    """Fault 4 at its worst moment: Redis has handed a run's message to a worker (BRPOP
    took it off the queue) and the connection drops before the reply arrives. kombu records
    a message as unacknowledged only once it has arrived, so that message is gone and the
    run sits queued with nothing in Redis. The reapers send again a run queued that long
    without a claim (DESCENT_RESEND_SECONDS: 3 s here, an hour by default), and it is
    trained once. (With the default, this test times out: the run stays queued.)"""
    host = cluster.network.add_host("w1")

    def first_task_message(data: bytes) -> bool:
        return b"train_run" in data and redis.dropped == 0

    redis = LossyProxy((host.gateway, 0), SERVICES["redis"], delay=0, reset_every=None,
                       drop_reply=first_task_message)
    try:
        worker = start_worker(cluster, host, 1,
                              DESCENT_BROKER_URL=proxied_url(cluster.redis_url, redis),
                              DESCENT_RESEND_SECONDS=3)
        worker.wait_for(" ready.", 180)
        run_id = submit(cluster.client, TINY)
        run = wait_for(cluster.client, cluster.fleet, [run_id], timeout=60)[run_id]
    finally:
        redis.close()
    assert redis.dropped == 1  # the message was lost in flight, once
    assert run["status"] == "succeeded" and run["attempts"] == 1, run
    assert [r["epoch"] for r in history(cluster.client, run_id)] == list(range(21))
    assert any(f"'resent': [{run_id}]" in line for line in worker.lines), worker.log()

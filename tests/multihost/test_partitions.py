"""Faults across the network (docs/reliability.md): workers on test hosts of their own
(tests/multihost/netns.py) reach PostgreSQL and Redis on the main host over links the tests
cut. Each run ends exactly once, its history without gaps or duplicates, as the single-host
fault tests (tests/integration/test_faults.py) check.

The workers beat every 0.2 s, and their reapers run every 0.5 s and take back runs silent
for 2 s (FAST_REAPER in conftest.py)."""

import time
from contextlib import contextmanager

import pytest

from tests.eventually import eventually
from tests.integration.test_faults import MEDIUM, assert_complete_history
from tests.integration.test_service import get_run, history, submit, wait_for, wait_running

# A run trained in a blink: the proof that a worker serves.
TINY = {"dataset": "xor", "layers": [2, 2, 1], "epochs": 5, "batch_mode": "full"}

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


def host_of(run) -> str:
    """The name of the host whose worker holds ``run`` (worker names are HOST:PID)."""
    return run["worker"].rsplit(":", 1)[0]


def settled(cluster, run_id) -> tuple:
    """What a finished run shows: the run and its history."""
    return get_run(cluster.client, run_id), history(cluster.client, run_id)


# ----------------------------------------------------------------------------- fault 1


@contextmanager
def run_lock_awaited(cluster, run_id, statement: str = "UPDATE runs %",
                     then_held: bool = False):
    """Hold run ``run_id``'s row lock until a worker's statement (``LIKE statement``)
    waits for it on the server; the body runs then, the lock still held; on exit the lock
    is released and the worker's statement runs (``then_held``: and takes the lock, its
    session left idle in its transaction)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(cluster.postgres_url)
    activity = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND query LIKE :statement AND ")
    waiting = text(activity + "wait_event_type = 'Lock'")
    idle = text(activity + "state = 'idle in transaction'")
    try:
        # (autocommit: each look at pg_stat_activity a snapshot of its own)
        with engine.connect() as lock, \
                engine.connect().execution_options(isolation_level="AUTOCOMMIT") as look:
            with lock.begin():
                lock.execute(text("SELECT id FROM runs WHERE id = :id FOR UPDATE"),
                             {"id": run_id})
                eventually(lambda: look.execute(waiting, {"statement": statement}).scalar(),
                           10, interval=0.01,
                           message=f"no worker waited for the run's lock ({statement})")
                yield
            if then_held:
                eventually(lambda: look.execute(idle, {"statement": statement}).scalar(),
                           10, interval=0.01, message="the worker's UPDATE never took the lock")
    finally:
        engine.dispose()


def cut_holding_the_run_lock(cluster, host, run_id) -> None:
    """Cut ``host``'s link at the moment its worker's UPDATE of the run has reached
    PostgreSQL but its COMMIT has not: the worker's next heartbeat (or history write)
    waits for the test's lock on the run; the link is cut; the lock is released, the
    worker's UPDATE runs and takes the lock, and its answer is lost. The worker's
    transaction stays open, holding the lock, for as long as the host is away."""
    with run_lock_awaited(cluster, run_id, then_held=True):
        host.cut()


@pytest.mark.parametrize("when", ["link-down", "holding-the-run-lock"])
def test_worker_host_cut_off_mid_run(cluster, network, when):
    """Fault 1: the link of the host training a run goes down (``holding-the-run-lock``:
    just as its worker's UPDATE of the run has taken the run's row lock, before it could
    commit). The other host's reaper takes the run back after the stale interval and that
    host trains it to the end. When the link comes back the cut-off worker's writes of its
    attempt are refused (the run and its history stay as the other host left them) and it
    goes on serving: it trains the next run."""
    hosts = {name: network.add_host(name) for name in ("w1", "w2")}
    cluster.start_workers(hosts.values())
    client, fleet = cluster.client, cluster.fleet
    run_id = submit(client, MEDIUM)
    victim = hosts[host_of(wait_running(client, run_id, fleet))]
    other = next(h for h in hosts.values() if h is not victim)
    if when == "link-down":
        victim.cut()
    else:
        cut_holding_the_run_lock(cluster, victim, run_id)

    taken = wait_taken_back(cluster, run_id)
    assert host_of(taken) == other.name
    victim.restore()  # while the other host still trains it, or just after
    run = wait_for(client, fleet, [run_id], timeout=60)[run_id]
    assert run["status"] == "succeeded" and run["attempts"] == 2, run
    assert host_of(run) == other.name
    assert_complete_history(client, run)
    before = settled(cluster, run_id)

    # The cut-off worker gives its attempt up without writing, and serves again: with the
    # other worker gone, it trains the next run.
    fleet.on(victim).wait_for("was superseded by a later claim", 60)
    stop_worker(cluster, other)
    assert_serves(cluster, victim)
    assert settled(cluster, run_id) == before  # nothing of the cut-off attempt landed


def wait_taken_back(cluster, run_id) -> dict:
    """The run once a reaper has taken it back and another delivery claimed it."""
    client = cluster.client
    return eventually(lambda: (now := get_run(client, run_id))["attempts"] == 2 and now,
                      30, interval=0.05,
                      message=lambda: f"the run was never taken back: "
                                      f"{get_run(client, run_id)}\n"
                                      + "\n".join(w.log() for w in cluster.fleet.workers))


def stop_worker(cluster, host) -> None:
    worker = cluster.fleet.on(host)
    worker.stop()
    cluster.fleet.workers.remove(worker)


def assert_serves(cluster, host) -> None:
    """A tiny run submitted now is trained by ``host``'s worker (the only one left)."""
    run_id = submit(cluster.client, TINY)
    run = wait_for(cluster.client, cluster.fleet, [run_id], timeout=60)[run_id]
    assert run["status"] == "succeeded" and run["attempts"] == 1, run
    assert host_of(run) == host.name
    assert_complete_history(cluster.client, run)


# ----------------------------------------------------------------------------- fault 2


@pytest.mark.parametrize("how", ["packets-lost", "reset-mid-write"])
def test_postgres_lost_briefly_on_a_worker_host(cluster, network, how):
    """Fault 2, shorter than the stale interval: PostgreSQL unreachable from the host
    training a run for 1.5 s (its packets lost; Redis still reachable) with runs taken back
    after 8 s of silence. ``reset-mid-write``: besides, its connections are closed while
    a history write waits on the server (the test holds the run's lock meanwhile), so that
    write fails. The worker's writes wait (TCP sends them again) or, failed, are kept and
    written with the next batch: the run is not taken back, it succeeds at its first
    attempt with every epoch of its history once."""
    cluster.knobs["DESCENT_STALE_SECONDS"] = "8"
    hosts = {name: network.add_host(name) for name in ("w1", "w2")}
    cluster.start_workers(hosts.values())
    client, fleet = cluster.client, cluster.fleet
    run_id = submit(client, MEDIUM)
    victim = hosts[host_of(wait_running(client, run_id, fleet))]
    if how == "packets-lost":
        victim.block("postgres")
    else:
        with run_lock_awaited(cluster, run_id, "UPDATE runs SET %epochs_done%"):
            victim.block("postgres")
            assert victim.reset("postgres") > 0
    time.sleep(1.5)  # the outage (not a measurement)
    victim.unblock("postgres")
    run = wait_for(client, fleet, [run_id], timeout=60)[run_id]
    assert run["status"] == "succeeded" and run["attempts"] == 1, run
    assert host_of(run) == victim.name
    assert_complete_history(client, run)
    if how == "reset-mid-write":
        assert any("history write failed" in line for line in fleet.on(victim).lines)


def test_postgres_lost_longer_than_the_stale_interval(cluster, network):
    """Fault 2, longer than the stale interval: PostgreSQL unreachable from the host
    training a run until the other host's reaper has taken the run back (2 s of silence)
    and the other host claimed it. When PostgreSQL is reachable again, the first host's
    late writes are refused: the run ends once, trained by the other host, its history
    whole, nothing of the first attempt in it; the first host serves again."""
    hosts = {name: network.add_host(name) for name in ("w1", "w2")}
    cluster.start_workers(hosts.values())
    client, fleet = cluster.client, cluster.fleet
    run_id = submit(client, MEDIUM)
    victim = hosts[host_of(wait_running(client, run_id, fleet))]
    other = next(h for h in hosts.values() if h is not victim)
    victim.block("postgres")
    assert host_of(wait_taken_back(cluster, run_id)) == other.name
    victim.unblock("postgres")
    run = wait_for(client, fleet, [run_id], timeout=60)[run_id]
    assert run["status"] == "succeeded" and run["attempts"] == 2, run
    assert host_of(run) == other.name
    assert_complete_history(client, run)
    before = settled(cluster, run_id)
    fleet.on(victim).wait_for("was superseded by a later claim", 60)
    stop_worker(cluster, other)
    assert_serves(cluster, victim)
    assert settled(cluster, run_id) == before


# ----------------------------------------------------------------------------- fault 3


def run_count(cluster) -> int:
    from sqlalchemy import func, select

    from service.store import Run

    with cluster.app.extensions["descent"]["sessions"]() as session:
        return session.scalar(select(func.count()).select_from(Run))


def test_redis_lost_on_the_api_host(cluster, network):
    """Fault 3, the API's side: `descent api` on a host of its own loses its link to Redis
    (packets lost; PostgreSQL still reachable). A submission answers 503 queue_unavailable
    and keeps nothing; once the link is back, submissions are accepted and trained."""
    api_host, worker_host = network.add_host("api"), network.add_host("w1")
    worker = cluster.start_worker(worker_host, wait=False)
    api = cluster.start_api(api_host)
    worker.wait_for(" ready.")
    first = submit(api, TINY)
    wait_for(api, cluster.fleet, [first], timeout=60)

    api_host.block("redis")
    started = time.monotonic()
    response = api.post("/api/v1/runs", json=TINY)
    print(f"\n503 after {time.monotonic() - started:.1f} s")
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"]["code"] == "queue_unavailable"
    assert run_count(cluster) == 1  # nothing kept

    api_host.unblock("redis")
    second = submit(api, TINY)
    run = wait_for(api, cluster.fleet, [second], timeout=60)[second]
    assert run["status"] == "succeeded" and run["attempts"] == 1, run
    assert run_count(cluster) == 2


def test_redis_lost_on_a_worker_host(cluster, network):
    """Fault 3, a worker's side: the only worker's host loses its link to Redis (its
    connections closed, as by the Redis end or a middlebox; new ones lost) while runs are
    submitted on the main host. Once the worker has lost every connection to Redis and is
    trying new ones, the link comes back: the worker reconnects and consumes again, each
    run trained once."""
    host = network.add_host("w1")
    cluster.start_worker(host)
    assert "ESTAB" in host.tcp_states("redis")
    host.block("redis")
    host.reset("redis")
    ids = [submit(cluster.client, {**TINY, "seed": k}) for k in range(3)]
    eventually(lambda: "SYN-SENT" in (states := host.tcp_states("redis"))
               and "ESTAB" not in states, 30, interval=0.1,
               message=lambda: f"the worker kept its connections: {host.tcp_states('redis')}")
    host.unblock("redis")
    back = time.monotonic()
    runs = wait_for(cluster.client, cluster.fleet, ids, timeout=120)
    print(f"\nruns trained {time.monotonic() - back:.1f} s after the link came back")
    for run_id in ids:
        assert runs[run_id]["status"] == "succeeded" and runs[run_id]["attempts"] == 1
        assert host_of(runs[run_id]) == host.name
        assert_complete_history(cluster.client, runs[run_id])

"""Fault injection with real ``celery worker`` processes, brokers and databases (see
docs/reliability.md): a SIGKILLed pool process, a whole worker killed, SIGTERM and SIGQUIT
(a deploy), duplicate deliveries and divergence, on the embedded defaults and on Redis +
PostgreSQL; a Redis server of the test's own restarted mid-test (keeping its data, and
without persistence, empty) and stopped at submit.

The workers beat every 0.2 s, and their reapers run every 0.5 s and take back runs silent
for 2 s, so a lost worker is noticed in seconds, not the production defaults' minutes."""

import ast
import os
import signal
import socket
import subprocess
import time
from datetime import datetime

import numpy as np
import pytest
from sqlalchemy import func, select

from service.settings import Settings
from service.store import Epoch, Run, make_engine, make_sessionmaker
from tests.conftest import make_token
from tests.eventually import eventually

from .conftest import Backend, WorkerPool
from .test_service import FINAL, LONG, get_run, history, submit, wait_for, wait_running

pytestmark = pytest.mark.slow

FAST_REAPER = {"DESCENT_HEARTBEAT_SECONDS": "0.2", "DESCENT_STALE_SECONDS": "2",
               "DESCENT_REAP_SECONDS": "0.5", "DESCENT_UNSENT_SECONDS": "2"}
# A few seconds of training (digits, 1.5 ms to 5 ms per epoch): long enough that a poll
# every 20 ms sees it running with progress before it ends (300 epochs once finished
# before the first history flush was seen, on a quiet machine).
MEDIUM = {"dataset": "digits", "layers": [64, 16, 10], "loss": "cross_entropy",
          "learning_rate": 0.05, "epochs": 2000}


@pytest.fixture
def client(api, backend):
    """The backend's API test client, authenticated as alice."""
    api.environ_base["HTTP_AUTHORIZATION"] = \
        f"Bearer {make_token(backend.settings.database_url, 'alice')}"
    return api


@pytest.fixture
def fast(backend):
    backend.env.update(FAST_REAPER)
    return backend


def pid_of(run) -> int:
    return int(run["worker"].rsplit(":", 1)[1])


def assert_complete_history(api, run, control=None):
    """Epochs 0..epochs exactly once and, given ``control`` (a run of the same spec that no
    fault touched), its very errors: no epoch of a lost attempt is left."""
    rows = history(api, run["id"])
    assert [r["epoch"] for r in rows] == list(range(run["spec"]["epochs"] + 1))
    assert all(r["error"] is not None for r in rows)
    if control is not None:
        assert [r["error"] for r in rows] == [r["error"] for r in history(api, control)]


def assert_clean_logs(workers):
    for worker in workers.workers:
        text = "\n".join(worker.lines)
        for bad in ("ERROR", "Traceback", "database is locked"):
            assert bad not in text, f"{bad} in the log of {worker.name}:\n{worker.log()}"


def owner_of(workers, pid: int):
    """The worker whose pool process ``pid`` is."""
    with open(f"/proc/{pid}/stat") as f:
        parent = int(f.read().rsplit(")", 1)[1].split()[1])
    return next(w for w in workers.workers if w.process.pid == parent)


# ----------------------------------------------------------------------------- fault 1


def test_sigkilled_pool_process_redelivers_then_the_cap_fails_the_run(fast, workers, client):
    """Fault 1: a pool process SIGKILLed mid-run: the run is delivered again and completes
    once (attempt 2, every epoch once). With DESCENT_MAX_ATTEMPTS=2, a run whose process is
    killed at both attempts ends failed "worker lost (2 attempts)"."""
    fast.env["DESCENT_MAX_ATTEMPTS"] = "2"
    workers.start(1)
    run_id, control = submit(client, MEDIUM), submit(client, MEDIUM)
    os.kill(pid_of(wait_running(client, run_id)), signal.SIGKILL)
    runs = wait_for(client, workers, [run_id, control], timeout=60)
    assert runs[run_id]["status"] == "succeeded" and runs[run_id]["attempts"] == 2, runs
    assert runs[control]["status"] == "succeeded" and runs[control]["attempts"] == 1
    assert_complete_history(client, runs[run_id], control)

    doomed = submit(client, LONG)
    for attempt in (1, 2):
        run = wait_running(client, doomed)
        assert run["attempts"] == attempt
        os.kill(pid_of(run), signal.SIGKILL)
        eventually(lambda: (now := get_run(client, doomed))["attempts"] != attempt
                   or now["status"] != "running", 30, interval=0.05,
                   message="the killed run was never delivered again")
    run = wait_for(client, workers, [doomed], timeout=30)[doomed]
    assert run["status"] == "failed" and run["error_message"] == "worker lost (2 attempts)"
    assert run["attempts"] == 2


# ----------------------------------------------------------------------------- fault 2


def test_a_whole_worker_killed_has_its_run_requeued_by_the_reaper(fast, workers, client):
    """Fault 2: every process of the worker training a run SIGKILLed (on Redis its message
    stays unacknowledged for the visibility timeout, an hour; the embedded broker had
    already removed it): another worker's reaper sees the heartbeat stop and requeues the
    run, which completes once."""
    workers.start(2)
    run_id = submit(client, MEDIUM)
    run = wait_running(client, run_id)
    victim = owner_of(workers, pid_of(run))
    os.killpg(victim.process.pid, signal.SIGKILL)
    victim.process.wait()
    workers.workers.remove(victim)
    killed = time.monotonic()

    run = wait_for(client, workers, [run_id], timeout=60)[run_id]
    assert run["status"] == "succeeded" and run["attempts"] == 2, run
    assert time.monotonic() - killed < 30
    control = submit(client, MEDIUM)
    assert wait_for(client, workers, [control])[control]["attempts"] == 1
    assert_complete_history(client, run, control)


# ----------------------------------------------------------------------------- fault 4


def test_sigterm_finishes_the_run_and_sigquit_hands_it_back(fast, workers, client):
    """Fault 4, a deploy. SIGTERM to a worker training a run (warm shutdown): the run
    finishes, the worker exits 0, and the run queued behind it is trained once, by it or by
    the next worker. Then as `descent up` stops a worker after its grace: SIGQUIT (cold
    shutdown) mid-run, and SIGKILL to its process group if it is still there 5 s later
    (billiard can hang in a cold shutdown, see docs/reliability.md): the run is handed back
    (the broker's redelivery or the next worker's reaper) and completes once."""
    workers.start(1)
    first, second = submit(client, MEDIUM), submit(client, MEDIUM)
    wait_running(client, first)
    worker = workers.workers[0]
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(60) == 0, worker.log()
    workers.workers.remove(worker)
    run = get_run(client, first)
    assert run["status"] == "succeeded" and run["attempts"] == 1, run
    assert_complete_history(client, run)
    # the run queued behind it was trained too (a message the worker had prefetched) or
    # waits in the queue
    behind = get_run(client, second)
    assert behind["status"] in ("queued", "succeeded"), behind
    if behind["status"] == "succeeded":
        assert behind["attempts"] == 1
        second = submit(client, MEDIUM)

    workers.start(1)
    wait_running(client, second)
    worker = workers.workers[-1]
    worker.process.send_signal(signal.SIGQUIT)
    try:
        worker.process.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
    workers.workers.remove(worker)
    assert get_run(client, second)["status"] in ("running", "queued")  # not final

    workers.start(1)
    run = wait_for(client, workers, [second], timeout=60)[second]
    assert run["status"] == "succeeded" and run["attempts"] == 2, run
    assert_complete_history(client, run, first)


# ------------------------------------------------------------------------- faults 6, 7


def test_divergence_and_duplicate_deliveries(backend, workers, client):
    """Fault 7: a run whose error becomes infinite ends ``diverged``, its history (the
    non-finite epoch as null) and parameters kept. Fault 6: the task of that finished run
    (twice), and of a run another worker is training, sent again through the broker:
    neither is trained again nor touched."""
    from service.queue import QueueClient

    workers.start(2)
    done_id = submit(client, {"dataset": "circles", "layers": [2, 8, 1],
                              "activation": "relu", "output_activation": "linear",
                              "learning_rate": 1e6, "epochs": 50})
    done = wait_for(client, workers, [done_id])[done_id]
    assert done["status"] == "diverged" and "diverged" in done["error_message"]
    assert 0 < done["epochs_done"] < 50 and done["final_error"] is None
    rows = history(client, done_id)
    assert [r["epoch"] for r in rows] == list(range(done["epochs_done"] + 1))
    assert rows[-1]["error"] is None  # the non-finite epoch, stored as null
    assert all(np.isfinite(r["error"]) for r in rows[:-1])
    assert client.get(f"/api/v1/runs/{done_id}/params").status_code == 200

    running_id = submit(client, LONG)
    running = wait_running(client, running_id)
    queue = QueueClient(backend.settings.broker_url)
    for run_id in (done_id, done_id, running_id):
        queue.enqueue_run(run_id)
    # the first run's delivery and the three duplicates returned
    eventually(lambda: sum(" succeeded in " in line for w in workers.workers
                           for line in w.lines) >= 4, 30, interval=0.05,
               message=lambda: "\n".join(w.log() for w in workers.workers))

    assert get_run(client, done_id) == done
    assert history(client, done_id) == rows
    now = get_run(client, running_id)
    assert now["status"] == "running" and now["attempts"] == 1
    assert now["worker"] == running["worker"]
    returns = [line for w in workers.workers for line in w.lines if " succeeded in " in line]
    assert sum("'diverged'" in line for line in returns) == 3, returns
    assert sum("'busy'" in line for line in returns) == 1, returns
    client.post(f"/api/v1/runs/{running_id}/cancel")
    run = wait_for(client, workers, [running_id], timeout=30)[running_id]
    assert run["status"] == "cancelled" and run["attempts"] == 1
    assert [r["epoch"] for r in history(client, running_id)] == \
        list(range(run["epochs_done"] + 1))
    assert_clean_logs(workers)


# ----------------------------------------------------------------------------- fault 5


def test_500_concurrent_submissions_two_workers(backend, workers):
    """Fault 5, load: 500 tiny runs submitted from 16 threads (a test client each) while two
    workers train them: every answer 202, every run succeeded once, exactly 6 history rows
    each, no error of any kind in the workers' logs."""
    from concurrent.futures import ThreadPoolExecutor

    from service.app import create_app

    app = create_app({"SETTINGS": backend.settings, "TESTING": True})
    token = make_token(backend.settings.database_url, "alice")
    workers.start(2)
    spec = {"dataset": "xor", "layers": [2, 2, 1], "epochs": 5, "batch_mode": "full"}

    def post(k):
        client = app.test_client()
        response = client.post("/api/v1/runs", json={**spec, "seed": k},
                               headers={"Authorization": f"Bearer {token}"})
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(500)))
    assert [code for code, _ in answers] == [202] * 500, \
        [body for code, body in answers if code != 202][:3]
    ids = sorted(body["id"] for _, body in answers)
    assert len(set(ids)) == 500

    engine = make_engine(backend.settings.database_url)

    def counts() -> dict:
        with engine.connect() as connection:
            return dict(connection.execute(
                select(Run.status, func.count()).group_by(Run.status)).all())

    def all_ended():
        by_state = counts()
        if sum(by_state.get(state, 0) for state in FINAL) == 500:
            return by_state
        workers.assert_alive()
        return None

    def not_ended() -> str:
        with engine.connect() as connection:
            stuck = connection.execute(
                select(Run.id, Run.status, Run.attempts, Run.worker, Run.enqueued_at)
                .where(Run.status.not_in(FINAL)).limit(10)).all()
        return (f"not all runs ended: {counts()}; e.g. {stuck}\n"
                + "\n".join(w.log() for w in workers.workers))

    try:
        by_state = eventually(all_ended, 240, interval=0.5, message=not_ended)
        with engine.connect() as connection:
            assert by_state == {"succeeded": 500}
            assert connection.scalar(select(func.count()).select_from(Epoch)) == 500 * 6
            assert connection.scalar(select(func.count()).select_from(Run)
                                     .where(Run.attempts != 1)) == 0
            per_run = connection.execute(
                select(Epoch.run_id, func.count()).group_by(Epoch.run_id)).all()
            assert sorted(per_run) == [(i, 6) for i in ids]
            # both workers trained
            assert connection.scalar(select(func.count(func.distinct(Run.worker)))) == 2
    finally:
        engine.dispose()
        app.extensions["descent"]["engine"].dispose()
    assert_clean_logs(workers)


# ----------------------------------------------------------------------------- fault 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server process of the test's own, persisting every write (AOF, fsync
    always) in ``folder``, so a restart keeps the queue; with ``persist=False`` it keeps
    nothing on disk (no AOF, no RDB snapshot), so a restart starts empty."""

    def __init__(self, folder, port, persist=True):
        self.folder, self.port, self.persist, self.process = folder, port, persist, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
             "--save", "", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        def answers() -> bool:
            try:
                return redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
            except redis.exceptions.ConnectionError:
                return False

        eventually(answers, 10, interval=0.05, message="redis-server did not start")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SHUTDOWN: the append-only file is complete
            self.process.wait(10)


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path, free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def volatile_redis(tmp_path):
    """A Redis of the test's own that keeps nothing on disk."""
    folder = tmp_path / "volatile-redis"
    folder.mkdir()
    server = RedisServer(folder, free_port(), persist=False).start()
    yield server
    server.stop()


def backend_on(redis_server, postgres_url, tmp_path) -> Backend:
    settings = Settings(database_url=postgres_url, broker_url=redis_server.url)
    return Backend("own-redis-postgres", settings,
                   {"DESCENT_DATABASE_URL": postgres_url,
                    "DESCENT_BROKER_URL": redis_server.url, **FAST_REAPER}, tmp_path)


@pytest.fixture
def redis_backend(own_redis, postgres_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return backend_on(own_redis, postgres_url, tmp_path)


@pytest.fixture
def volatile_backend(volatile_redis, postgres_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return backend_on(volatile_redis, postgres_url, tmp_path)


@pytest.mark.redis
@pytest.mark.postgres
def test_redis_restarted_while_runs_are_queued_and_running(redis_backend, own_redis):
    """Fault 3: Redis stopped and started again while one run trains and five wait in its
    queue: the workers reconnect and every run succeeds exactly once. While Redis is down
    a submission answers 503 within seconds and leaves no run behind."""
    from service.app import create_app

    app = create_app({"SETTINGS": redis_backend.settings, "TESTING": True})
    api = app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = \
        f"Bearer {make_token(redis_backend.settings.database_url, 'alice')}"
    pool = WorkerPool(redis_backend)
    try:
        pool.start(1)
        ids = [submit(api, MEDIUM)]
        ids += [submit(api, {**MEDIUM, "epochs": 100, "seed": k}) for k in range(5)]
        wait_running(api, ids[0])
        own_redis.stop()

        started = time.monotonic()
        response = api.post("/api/v1/runs", json=MEDIUM)
        assert response.status_code == 503, response.get_json()
        assert response.get_json()["error"]["code"] == "queue_unavailable"
        assert time.monotonic() - started < 5
        sessions = make_sessionmaker(make_engine(redis_backend.settings.database_url))
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(Run)) == 6  # no orphan
        # Redis comes back only once the worker has seen it go: a reconnection, not a blip.
        worker = pool.workers[0]
        eventually(lambda: any("Connection to broker lost" in line for line in worker.lines),
                   30, message=lambda: f"the worker never saw Redis stop:\n{worker.log()}")
        own_redis.start()

        runs = wait_for(api, pool, ids, timeout=120)
        for run_id in ids:
            assert runs[run_id]["status"] == "succeeded", runs[run_id]
            assert_complete_history(api, runs[run_id])
        assert [runs[i]["attempts"] for i in ids] == [1] * 6
        assert pool.dead() == []
    finally:
        pool.stop()
        app.extensions["descent"]["engine"].dispose()


def reaper_passes(workers) -> list[dict]:
    """What each reaper pass of ``workers`` that did something logged ("reaper: {...}")."""
    return [ast.literal_eval(line.split("reaper: ", 1)[1]) for w in workers.workers
            for line in w.lines if "reaper: {" in line]


@pytest.mark.redis
@pytest.mark.postgres
def test_redis_restarted_empty_while_runs_are_queued(volatile_backend, volatile_redis):
    """Fault 3b: a Redis that keeps nothing on disk, stopped and started again while the
    only worker trains one run and four wait in the queue: the restarted Redis is empty,
    their messages are gone. The worker's reaper finds the broker's marker missing and
    sends those four again, once; a run submitted after the restart is not resent. Every
    run ends once: succeeded, attempts 1, its history complete."""
    import redis

    from service.app import create_app
    from service.queue import BROKER_MARKER

    app = create_app({"SETTINGS": volatile_backend.settings, "TESTING": True})
    api = app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = \
        f"Bearer {make_token(volatile_backend.settings.database_url, 'alice')}"
    broker = redis.Redis(port=volatile_redis.port)
    pool = WorkerPool(volatile_backend)
    try:
        pool.start(1)
        ids = [submit(api, MEDIUM)]
        ids += [submit(api, {**MEDIUM, "epochs": 100, "seed": k}) for k in range(4)]
        wait_running(api, ids[0])
        assert broker.llen("celery") == 4  # the worker is busy: four messages wait
        marker = broker.get(BROKER_MARKER)
        assert marker is not None
        volatile_redis.stop()
        worker = pool.workers[0]
        # A hang guard: the worker's main process notices between two of its own steps,
        # which a loaded machine can hold up for a while.
        eventually(lambda: any("Connection to broker lost" in line for line in worker.lines),
                   90, message=lambda: f"the worker never saw Redis stop:\n{worker.log()}")
        assert list(volatile_redis.folder.iterdir()) == []  # nothing was kept on disk
        volatile_redis.start()
        restarted = time.monotonic()

        after = submit(api, {**MEDIUM, "epochs": 100, "seed": 99})

        def resent():
            return [i for p in reaper_passes(pool) for i in p.get("resent", [])]

        eventually(resent, 60, interval=0.02,
                   message=lambda: f"nothing was resent:\n{worker.log()}")
        resent_after = time.monotonic() - restarted
        runs = wait_for(api, pool, ids + [after], timeout=120)
        ended_after = time.monotonic() - restarted
        print(f"\nresent {resent()} {resent_after:.2f} s after the restart; "
              f"all {len(runs)} runs ended {ended_after:.2f} s after it")

        assert sorted(resent()) == ids[1:], reaper_passes(pool)  # each once, only those
        # the marker was set again after the restart (by the first submit or reaper pass)
        assert datetime.fromisoformat(broker.get(BROKER_MARKER).decode()) > \
            datetime.fromisoformat(marker.decode())
        for run_id in ids + [after]:
            run = runs[run_id]
            assert run["status"] == "succeeded" and run["attempts"] == 1, run
            assert_complete_history(api, run)
        assert pool.dead() == []
        # (Celery logs an ERROR of its own while Redis is down: not assert_clean_logs)
        assert not any("reaper pass failed" in line for line in worker.lines), worker.log()
    finally:
        pool.stop()
        broker.close()
        app.extensions["descent"]["engine"].dispose()

"""Fixtures for integration tests: real ``celery worker`` processes on a real broker and
database, and the API (Flask test client) in front of them.

``backend`` runs each test twice: on the embedded defaults (no DESCENT_* variables at all:
a SQLite file and the filesystem broker in the working directory, which is the test's
temporary folder) and on Redis + PostgreSQL (marked ``redis`` and ``postgres``).
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.settings import Settings
from tests.eventually import eventually

# A cold numba cache compiles every kernel when the first worker starts (~20 s).
READY_TIMEOUT = float(os.environ.get("DESCENT_TEST_WORKER_READY_TIMEOUT", "90"))
ROOT = Path(__file__).resolve().parents[2]
# Seconds a worker gets to exit on SIGTERM after its test, before SIGKILL.
TEARDOWN_GRACE = 1.0


@dataclass
class Backend:
    """Where the workers and the API of one test store and queue runs."""

    name: str
    settings: Settings
    env: dict  # DESCENT_* variables for the worker processes
    cwd: Path


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    env["PYTHONUNBUFFERED"] = "1"
    # The project root first, so workers import this checkout even from another directory.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(params=["embedded",
                        pytest.param("redis-postgres",
                                     marks=[pytest.mark.redis, pytest.mark.postgres])])
def backend(request, tmp_path, monkeypatch):
    """The embedded defaults, then Redis + PostgreSQL."""
    monkeypatch.chdir(tmp_path)  # relative default paths (descent.db, descent-queue) land here
    if request.param == "embedded":
        settings = Settings()  # the defaults, resolved in the working directory
        embedded_database(request.getfixturevalue("sqlite_template"), settings)
        env = {}
    else:
        postgres_url = request.getfixturevalue("postgres_url")
        redis_url = request.getfixturevalue("redis_url")
        settings = Settings(database_url=postgres_url, broker_url=redis_url)
        env = {"DESCENT_DATABASE_URL": postgres_url, "DESCENT_BROKER_URL": redis_url}
    return Backend(request.param, settings, env, tmp_path)


def embedded_database(template: Path, settings: Settings) -> None:
    """The embedded default database (descent.db in the working directory), migrated: a copy
    of the session's migrated ``template``, readable by its owner only as Descent makes it."""
    from sqlalchemy import make_url

    path = Path(make_url(settings.database_url).database)
    shutil.copyfile(template, path)
    path.chmod(0o600)


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    lines: list = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def log(self) -> str:
        return "\n".join(self.lines[-200:])

    def pump(self) -> None:
        """Collect the worker's output (stdout and stderr) and notice "ready."."""
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if " ready." in line:
                self.ready.set()


class WorkerPool:
    """N ``celery -A workers.celery_app worker`` processes (one pool process each)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.workers: list[Worker] = []

    def start(self, n: int = 2, timeout: float = READY_TIMEOUT) -> "WorkerPool":
        env = {**_clean_env(), **self.backend.env}
        tag = uuid.uuid4().hex[:6]
        started = []
        for i in range(n):
            name = f"w{i + 1}-{tag}@%h"
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
                 "--concurrency", "1", "--loglevel", "INFO", "-n", name,
                 "--without-mingle", "--without-gossip"],
                cwd=self.backend.cwd, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, start_new_session=True)
            worker = Worker(name, process)
            threading.Thread(target=worker.pump, daemon=True).start()
            self.workers.append(worker)
            started.append(worker)
        eventually(lambda: all(w.ready.is_set() or w.process.poll() is not None
                               for w in started), timeout,
                   message=lambda: "; ".join(f"worker {w.name} not ready after {timeout:.0f} s:"
                                             f"\n{w.log()}" for w in started
                                             if not w.ready.is_set()))
        for worker in started:
            if not worker.ready.is_set():
                pytest.fail(f"worker {worker.name} exited with {worker.process.returncode} "
                            f"before it was ready:\n{worker.log()}", pytrace=False)
        return self

    def dead(self) -> list[Worker]:
        return [w for w in self.workers if w.process.poll() is not None]

    def assert_alive(self) -> None:
        dead = self.dead()
        if dead:
            pytest.fail("; ".join(f"worker {w.name} died (exit {w.process.returncode}):\n"
                                  f"{w.log()}" for w in dead), pytrace=False)

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL for any worker still running."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # its own session: the worker and its pool
                os.killpg(worker.process.pid, signal.SIGKILL)
                worker.process.wait()


@pytest.fixture
def workers(backend):
    """workers.start(n) starts n real worker processes and waits until they are ready; they
    are stopped after the test, which fails if one of them died during it."""
    pool = WorkerPool(backend)
    yield pool
    dead = pool.dead()
    # The test is over: no need to wait out billiard's warm shutdown (its pool threads
    # sleep up to a second per loop, about 6 s in all); what is still running is killed.
    pool.stop(timeout=TEARDOWN_GRACE)
    if dead:
        pytest.fail("; ".join(f"worker {w.name} died during the test (exit "
                              f"{w.process.returncode}):\n{w.log()}" for w in dead),
                    pytrace=False)


@pytest.fixture
def api(backend):
    """A Flask test client of the API on the backend's settings (its real queue client),
    sending a token of user alice."""
    from service.app import create_app

    from ..conftest import make_token

    app = create_app({"SETTINGS": backend.settings, "TESTING": True})
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = \
        f"Bearer {make_token(backend.settings.database_url, 'alice')}"
    yield client
    app.extensions["descent"]["engine"].dispose()

"""Queue and store overhead of tiny runs: submit-to-succeeded latency and runs per second.

Run by hand (not part of the test suite):

    .venv/bin/python bench/service.py                       # both backends, 200 runs each
    .venv/bin/python bench/service.py --backends embedded --runs 100

For each backend this creates its own temporary store and queue, starts its own worker
processes (real ``celery -A workers.celery_app worker`` subprocesses, ``--workers`` of them
with ``--concurrency`` pool processes each) and submits through the API in this process (the
Flask test client of ``service.app.create_app``: the real validation, store and queue code,
without an HTTP server). Backends:

* ``embedded``: a SQLite file and the filesystem broker in a temporary folder (the embedded
  defaults' transports);
* ``redis-postgres``: a new PostgreSQL database on DESCENT_TEST_POSTGRES_URL's server
  (dropped afterwards) and an empty Redis database index on DESCENT_TEST_REDIS_URL's server
  (emptied afterwards), claimed in database 0 as the tests claim theirs (tests/conftest.py).

Measured, after a warm-up:

* latency: runs submitted one at a time, each after the previous one succeeded, so nothing
  waits behind another run: submit (client clock, before the POST) to ``finished_at`` (the
  worker's clock, same machine), with p50/p95 and a breakdown;
* throughput with a backlog: all runs submitted before the workers start, then runs per
  second from the first ``started_at`` to the last ``finished_at`` (queue, store and
  training only: no submitting client competes for the CPUs);
* end to end: all runs submitted at once while the workers run; runs per second from the
  first submit to the last ``finished_at`` (bounded by this one submitting client, which
  shares the machine's CPUs with the workers);
* direct: the same training through ``kernels.train`` in this process.

Overhead per run = latency p50 - direct p50. Targets (Redis + PostgreSQL): overhead <= 25 ms
p50 and >= 100 tiny runs per second.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import timezone
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kernels  # noqa: E402
import migrations  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Epoch, Run  # noqa: E402
from bench_auth import authorized_client  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "DESCENT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("DESCENT_TEST_REDIS_URL", "redis://127.0.0.1:6379")
TARGET_OVERHEAD_MS = 25.0
TARGET_RUNS_PER_S = 100.0
FINAL = ("succeeded", "failed", "diverged", "cancelled")


def pct(values, q):
    return float(np.percentile(np.asarray(values), q))


def ms(seconds):
    return f"{seconds * 1e3:7.1f} ms"


# ------------------------------------------------------------------------------ backends


class Embedded:
    name = "embedded (SQLite file + filesystem broker)"

    def __enter__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="descent-bench-"))
        self.settings = Settings(database_url=f"sqlite:///{self.folder / 'descent.db'}",
                                 broker_url=f"filesystem://{self.folder / 'queue'}")
        migrations.upgrade(self.settings.database_url)
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisPostgres:
    name = "Redis + PostgreSQL"

    def __enter__(self):
        import redis

        self.folder = Path(tempfile.mkdtemp(prefix="descent-bench-"))
        self.admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.database = f"descent_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.database}"'))
        database_url = self.admin.url.set(database=self.database).render_as_string(
            hide_password=False)
        migrations.upgrade(database_url)
        # An empty database index of its own, claimed in database 0 the way the tests'
        # redis_url fixture claims theirs (tests/conftest.py), so a test session running
        # meanwhile never takes (and empties) it; never flush anybody else's.
        self.redis, self.claims = None, redis.Redis.from_url(f"{REDIS_URL}/0")
        self.owner = f"bench-service-{uuid.uuid4().hex}"
        for index in range(15, 0, -1):
            if not self.claims.set(f"descent-test-lock:{index}", self.owner, nx=True,
                                   ex=3600):
                continue
            client = redis.Redis.from_url(f"{REDIS_URL}/{index}")
            if client.dbsize() == 0:
                self.redis, self.index, redis_url = client, index, f"{REDIS_URL}/{index}"
                break
            client.close()
            self.claims.delete(f"descent-test-lock:{index}")
        if self.redis is None:
            raise RuntimeError("no empty, unclaimed Redis database index (1-15) to use")
        self.settings = Settings(database_url=database_url, broker_url=redis_url)
        return self

    def __exit__(self, *exc):
        self.redis.flushdb()
        self.redis.close()
        if self.claims.get(f"descent-test-lock:{self.index}") == self.owner.encode():
            self.claims.delete(f"descent-test-lock:{self.index}")
        self.claims.close()
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
        self.admin.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)


BACKENDS = {"embedded": Embedded, "redis-postgres": RedisPostgres}


# ------------------------------------------------------------------------------- workers


class Workers:
    """N celery worker processes on the backend's settings; stopped on exit."""

    def __init__(self, settings, cwd, n, concurrency, timeout=120.0):
        self.settings, self.cwd, self.n = settings, cwd, n
        self.concurrency, self.timeout = concurrency, timeout
        self.processes, self.logs = [], []

    def __enter__(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
        env.update(PYTHONUNBUFFERED="1", DESCENT_DATABASE_URL=self.settings.database_url,
                   DESCENT_BROKER_URL=self.settings.broker_url,
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                            env.get("PYTHONPATH")])))
        tag = uuid.uuid4().hex[:6]
        for i in range(self.n):
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
                 "--concurrency", str(self.concurrency), "--loglevel", "INFO",
                 "-n", f"bench{i + 1}-{tag}@%h", "--without-mingle", "--without-gossip"],
                cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, start_new_session=True)
            lines, ready = [], threading.Event()

            def pump(process=process, lines=lines, ready=ready):
                for line in process.stdout:
                    lines.append(line.rstrip())
                    if " ready." in line:
                        ready.set()

            threading.Thread(target=pump, daemon=True).start()
            self.processes.append((process, ready))
            self.logs.append(lines)
        deadline = time.monotonic() + self.timeout
        for (process, ready), lines in zip(self.processes, self.logs):
            while not ready.wait(0.1):
                if process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("a worker did not start:\n" + "\n".join(lines[-40:]))
        return self

    def __exit__(self, *exc):
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# ---------------------------------------------------------------------------- measuring


class Bench:
    def __init__(self, settings, spec):
        from service.app import create_app

        self.spec = spec
        self.app = create_app({"SETTINGS": settings})
        self.api = authorized_client(self.app, settings.database_url)
        # A plain engine for polling: on SQLite its reads take no write lock.
        self.reader = create_engine(settings.database_url)

    def close(self):
        self.app.extensions["descent"]["engine"].dispose()
        self.reader.dispose()

    def submit(self):
        """(client time before the POST, seconds the POST took, run id)."""
        t0 = time.time()
        started = time.perf_counter()
        response = self.api.post("/api/v1/runs", json=self.spec)
        took = time.perf_counter() - started
        assert response.status_code == 202, response.get_json()
        return t0, took, response.get_json()["id"]

    def unfinished(self, ids, connection):
        return connection.scalar(select(func.count()).select_from(Run).where(
            Run.id.in_(ids), Run.status.not_in(FINAL)))

    def wait(self, ids, timeout=60.0, interval=0.05):
        deadline = time.monotonic() + timeout
        with self.reader.connect() as connection:
            while True:
                left = self.unfinished(ids, connection)
                connection.rollback()
                if not left:
                    return
                if time.monotonic() > deadline:
                    stuck = connection.execute(select(Run.id, Run.status, Run.attempts,
                                                      Run.worker, Run.created_at)
                                               .where(Run.id.in_(ids),
                                                      Run.status.not_in(FINAL))).all()
                    raise RuntimeError(f"{left} runs unfinished after {timeout:.0f} s: {stuck}")
                time.sleep(interval)

    def rows(self, ids):
        with self.reader.connect() as connection:
            runs = {r.id: r for r in connection.execute(
                select(Run.id, Run.status, Run.created_at, Run.started_at, Run.finished_at,
                       Run.worker).where(Run.id.in_(ids)))}
            epochs = connection.scalar(select(func.count()).select_from(Epoch)
                                       .where(Epoch.run_id.in_(ids)))
        return runs, epochs

    def check(self, ids):
        runs, epochs = self.rows(ids)
        statuses = {r.status for r in runs.values()}
        assert statuses == {"succeeded"}, statuses
        expected = len(ids) * (self.spec["epochs"] + 1)
        assert epochs == expected, f"{epochs} history rows, expected {expected}"
        return runs

    def closed_loop(self, n):
        """One run at a time: per-run latency with nothing queued ahead."""
        submits, ids = [], []
        for _ in range(n):
            t0, took, run_id = self.submit()
            self.wait([run_id], interval=0.005)
            submits.append((t0, took))
            ids.append(run_id)
        runs = self.check(ids)
        return [(t0, took, runs[i]) for (t0, took), i in zip(submits, ids)]

    def submit_all(self, n):
        return [self.submit() for _ in range(n)]

    def collect(self, submitted):
        ids = [run_id for _, _, run_id in submitted]
        self.wait(ids)
        runs = self.check(ids)
        return [(t0, took, runs[i]) for t0, took, i in submitted]

    def burst(self, n):
        """All runs at once, while the workers run: end-to-end throughput."""
        return self.collect(self.submit_all(n))


def stamp(value):
    """A stored timestamp as epoch seconds (SQLite returns naive UTC datetimes)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def direct_times(spec, n):
    X, y = kernels.load_dataset(spec["dataset"])
    args = {k: v for k, v in spec.items() if k not in ("dataset",)}
    kernels.train(X, y, **args)  # loaded / compiled
    times = []
    for _ in range(n):
        started = time.perf_counter()
        kernels.train(X, y, **args)
        times.append(time.perf_counter() - started)
    return times


def report(name, backlog, closed, burst, direct, n_workers, concurrency, targets):
    latency = [stamp(r.finished_at) - t0 for t0, _, r in closed]
    submit = [took for _, took, _ in closed]
    to_created = [stamp(r.created_at) - t0 for t0, _, r in closed]
    queued = [stamp(r.started_at) - stamp(r.created_at) for _, _, r in closed]
    running = [stamp(r.finished_at) - stamp(r.started_at) for _, _, r in closed]
    first = min(t0 for t0, _, _ in burst)
    last = max(stamp(r.finished_at) for _, _, r in burst)
    submitted = max(t0 + took for t0, took, _ in burst) - first
    per_second = len(burst) / (last - first)
    burst_latency = [stamp(r.finished_at) - t0 for t0, _, r in burst]
    workers_used = len({r.worker for _, _, r in burst})
    drain = len(backlog) / (max(stamp(r.finished_at) for _, _, r in backlog)
                            - min(stamp(r.started_at) for _, _, r in backlog))
    overhead = pct(latency, 50) - pct(direct, 50)
    overhead95 = pct(latency, 95) - pct(direct, 50)

    print(f"\n== {name}: {n_workers} worker process(es) x concurrency {concurrency}")
    print(f"  latency, one run at a time ({len(closed)} runs), submit -> succeeded:")
    print(f"    p50 {ms(pct(latency, 50))}   p95 {ms(pct(latency, 95))}   "
          f"max {ms(max(latency))}")
    print(f"    of which (p50): POST call {ms(pct(submit, 50))} | submit -> stored "
          f"{ms(pct(to_created, 50))} | stored -> started {ms(pct(queued, 50))} | "
          f"started -> succeeded {ms(pct(running, 50))}")
    print(f"  direct kernels.train ({len(direct)} calls): p50 {ms(pct(direct, 50))}   "
          f"p95 {ms(pct(direct, 95))}")
    print(f"  queue + store overhead per run: p50 {ms(overhead)}   p95 {ms(overhead95)}")
    by_worker = {}
    for _, _, r in backlog:
        by_worker.setdefault(r.worker, []).append((stamp(r.started_at), stamp(r.finished_at)))
    busy, gaps = [], []
    for spans in by_worker.values():
        spans.sort()
        busy += [end - start for start, end in spans]
        gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    print(f"  throughput, {len(backlog)} queued runs: {drain:6.1f} runs/s "
          f"(first start to last finish; per pool process p50: claim -> succeeded "
          f"{ms(pct(busy, 50))}, succeeded -> next claim {ms(pct(gaps, 50))})")
    print(f"  end to end, {len(burst)} runs submitted at once: {per_second:6.1f} runs/s "
          f"(submitting took {submitted:.2f} s; {workers_used} pool processes trained; "
          f"latency p50 {ms(pct(burst_latency, 50))}, p95 {ms(pct(burst_latency, 95))})")
    if targets:
        ok_overhead = overhead <= TARGET_OVERHEAD_MS / 1e3
        ok_rate = drain >= TARGET_RUNS_PER_S
        print(f"  targets: overhead p50 <= {TARGET_OVERHEAD_MS:.0f} ms: "
              f"{'MET' if ok_overhead else 'MISSED'} ({overhead * 1e3:.1f} ms); "
              f">= {TARGET_RUNS_PER_S:.0f} runs/s: {'MET' if ok_rate else 'MISSED'} "
              f"({drain:.1f} with a backlog, {per_second:.1f} end to end)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS),
                        default=list(BACKENDS))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="pool processes per worker")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    spec = {"dataset": "xor", "layers": [2, 4, 1], "learning_rate": 0.5, "batch_size": 2,
            "epochs": args.epochs, "seed": 0}
    print(f"Descent service bench: {args.runs} tiny runs per phase ({spec}), "
          f"submitted in-process through the Flask test client; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    direct_spec = {**spec}
    direct = direct_times(direct_spec, args.runs)
    for key in args.backends:
        with BACKENDS[key]() as backend:
            bench = Bench(backend.settings, spec)
            try:
                bench.submit_all(3)  # the API's first requests (stores the dataset)
                queued = bench.submit_all(args.runs)
                with Workers(backend.settings, backend.folder, args.workers,
                             args.concurrency) as workers:
                    try:
                        backlog = bench.collect(queued)
                        bench.closed_loop(args.warmup)
                        closed = bench.closed_loop(args.runs)
                        burst = bench.burst(args.runs)
                    except Exception:
                        for lines in workers.logs:
                            print("\n".join(lines[-30:]), file=sys.stderr)
                        raise
            finally:
                bench.close()
            report(backend.name, backlog, closed, burst, direct, args.workers,
                   args.concurrency, targets=key == "redis-postgres")


if __name__ == "__main__":
    main()

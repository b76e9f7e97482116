"""Runs per second of tiny runs with 1, 2 and 3 worker hosts (network namespaces).

Run by hand, as root (not part of the test suite):

    .venv/bin/python bench/multihost.py                        # 200 runs; 1, 2, 3 hosts
    .venv/bin/python bench/multihost.py --hosts 1 3 --runs 100 --concurrency 2
    .venv/bin/python bench/multihost.py --loopback             # also: workers on this host

For each number of hosts it makes a fresh PostgreSQL database (on DESCENT_TEST_POSTGRES_URL's
server, dropped afterwards) and an empty Redis database index (emptied afterwards), creates
the test hosts of tests/multihost/netns.py (each its own network namespace and hostname,
reaching PostgreSQL and Redis over its veth link through the forwarders of this process,
since both servers listen on loopback only) and starts one `descent worker --concurrency C`
on each. Once every worker is ready, it stores the runs (xor, a few epochs) and sends their
tasks in one burst (the API's queue client, one producer), so no submitting client competes
with the workers, and measures runs per second from the first run's start to the last one's
end (``started_at``/``finished_at``, both the database's clock). Every run must succeed with
its whole history. ``--loopback`` adds the same measure with the workers on this host
(no namespace, no forwarder), to show what the links cost.
"""

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import func, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kernels  # noqa: E402
from service.queue import QueueClient  # noqa: E402
from service.runspec import complete_spec  # noqa: E402
from service.store import Epoch, Run, make_engine, make_sessionmaker  # noqa: E402
from service.store import datasets as store_datasets  # noqa: E402
from service.store import runs as store_runs  # noqa: E402
from tests.multihost.netns import Network, Process, unavailable  # noqa: E402


def _load_bench_service():
    """bench/service.py (its module name would shadow the ``service`` package)."""
    spec = importlib.util.spec_from_file_location("bench_service", ROOT / "bench/service.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "bench"))
    spec.loader.exec_module(module)
    return module


bench_service = _load_bench_service()
FINAL = ("succeeded", "failed", "diverged", "cancelled", "stopped_early")


def services(settings) -> dict:
    """{name: (address, port)} of the backend's PostgreSQL and Redis, for the forwarders."""
    from urllib.parse import urlsplit

    db, broker = urlsplit(settings.database_url), urlsplit(settings.broker_url)
    return {"postgres": (db.hostname, db.port or 5432),
            "redis": (broker.hostname, broker.port or 6379)}


def worker_env(database_url: str, broker_url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    env.update(PYTHONUNBUFFERED="1", DESCENT_DATABASE_URL=database_url,
               DESCENT_BROKER_URL=broker_url,
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return env


def worker_argv(concurrency: int, name: str) -> list[str]:
    return [sys.executable, "-m", "service.cli", "worker", "--concurrency", str(concurrency),
            "--name", name, "--", "--without-mingle", "--without-gossip"]


class _ThisHost:
    name = "main"


def local_worker(argv, env, cwd, name: str) -> Process:
    """A worker on this host (no namespace), as a netns.Process."""
    popen = subprocess.Popen(argv, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
    return Process(_ThisHost(), name, popen)


TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pids) -> dict[int, float]:
    """{pid: user + system CPU seconds} of ``pids`` and all their descendants."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat(int(entry))[1])
            except (OSError, IndexError, ValueError):
                pass
    wanted, frontier = set(), set(pids)
    while frontier:
        wanted |= frontier
        frontier = {p for p, parent in parents.items() if parent in frontier} - wanted
    times = {}
    for pid in wanted:
        try:
            fields = _stat(pid)
            times[pid] = (int(fields[11]) + int(fields[12])) / TICKS
        except (OSError, IndexError, ValueError):
            pass
    return times


def postgres_backends(connection, database: str) -> list[int]:
    return list(connection.execute(text(
        "SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database}).scalars())


def used(before: dict, after: dict) -> float:
    """CPU seconds between two cpu_seconds samples (processes new since count whole)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def store_runs_unsent(sessions, spec: dict, n: int) -> list[int]:
    """``n`` queued runs of ``spec``, stored but not sent."""
    spec = complete_spec(spec)
    with sessions() as session:
        dataset = store_datasets.find_dataset(session, spec["dataset"])
        if dataset is None:
            X, y = kernels.load_dataset(spec["dataset"])
            dataset = store_datasets.add_dataset(session, spec["dataset"], X, y, builtin=True)
        ids = [store_runs.create_run(session, spec, dataset.id, owner="bench").id
               for _ in range(n)]
        session.commit()
    return ids


def measure(settings, folder, spec, runs: int, hosts: int, concurrency: int,
            loopback: bool) -> dict:
    """Start the workers, send ``runs`` runs at once, wait; what happened."""
    network = None if loopback else Network(services(settings))
    workers = []
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    try:
        for i in range(hosts):
            name = f"bench{i + 1}-{uuid.uuid4().hex[:4]}"
            if loopback:
                workers.append(local_worker(worker_argv(concurrency, f"{name}@main"),
                                            worker_env(settings.database_url,
                                                       settings.broker_url), folder, name))
            else:
                host = network.add_host(f"h{i + 1}")
                workers.append(host.start(
                    worker_argv(concurrency, f"{name}@{host.name}"), name=name,
                    env=worker_env(host.url(settings.database_url),
                                   host.url(settings.broker_url)), cwd=folder))
        for worker in workers:
            worker.wait_for(" ready.", 180)
        ids = store_runs_unsent(sessions, spec, runs)
        queue = QueueClient(settings.broker_url)
        database = engine.url.database
        worker_pids = [w.pid for w in workers]
        with engine.connect() as connection:
            cpu_before = (cpu_seconds(worker_pids),
                          cpu_seconds(postgres_backends(connection, database)))
            connection.rollback()
        own_before = time.process_time()
        sent = time.time()
        queue.enqueue_runs(ids)
        with sessions() as session:
            store_runs.mark_enqueued(session, ids)
        deadline = time.monotonic() + 600
        with engine.connect() as connection:
            while True:
                left = connection.scalar(select(func.count()).select_from(Run).where(
                    Run.id.in_(ids), Run.status.not_in(FINAL)))
                connection.rollback()
                if not left:
                    break
                if time.monotonic() > deadline or not all(w.alive() for w in workers):
                    raise RuntimeError(f"{left} runs unfinished:\n"
                                       + "\n".join(w.log(30) for w in workers))
                time.sleep(0.05)
            cpu = {"workers": used(cpu_before[0], cpu_seconds(worker_pids)),
                   "postgres": used(cpu_before[1], cpu_seconds(
                       postgres_backends(connection, database))),
                   "bench": time.process_time() - own_before}
            rows = connection.execute(select(Run.status, Run.started_at, Run.finished_at,
                                             Run.worker, Run.attempts)
                                      .where(Run.id.in_(ids))).all()
            history = connection.scalar(select(func.count()).select_from(Epoch)
                                        .where(Epoch.run_id.in_(ids)))
    finally:
        for worker in workers:
            worker.stop(grace=10)
        if network is not None:
            network.close()
        engine.dispose()
    statuses = {row.status for row in rows}
    assert statuses == {"succeeded"}, statuses
    assert history == runs * (spec["epochs"] + 1), (history, runs)
    stamp = bench_service.stamp
    first = min(stamp(r.started_at) for r in rows)
    last = max(stamp(r.finished_at) for r in rows)
    by_process = {}
    for r in rows:
        by_process.setdefault(r.worker, []).append(r)
    busy = [stamp(r.finished_at) - stamp(r.started_at) for r in rows]
    return {"hosts": hosts, "processes": hosts * concurrency, "rate": runs / (last - first),
            "span": last - first, "send_to_first": first - sent,
            "per_process": sorted(len(v) for v in by_process.values()),
            "cpu_ms": {k: v / runs * 1e3 for k, v in cpu.items()},
            "busy_p50": float(np.percentile(busy, 50)),
            "attempts": max(r.attempts for r in rows)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--concurrency", type=int, default=1,
                        help="pool processes of each host's worker")
    parser.add_argument("--loopback", action="store_true",
                        help="also run the workers on this host (no namespaces)")
    args = parser.parse_args(argv)
    logging.getLogger("service.queue").setLevel(logging.ERROR)  # each new Redis index warns
    reason = unavailable()
    if reason:
        sys.exit(f"test hosts cannot be made here: {reason}")
    spec = {"dataset": "xor", "layers": [2, 4, 1], "learning_rate": 0.5, "batch_size": 2,
            "epochs": args.epochs, "seed": 0}
    print(f"Descent across hosts: {args.runs} tiny runs ({spec}) sent at once to "
          f"1 worker (--concurrency {args.concurrency}) per host; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for loopback in ([False, True] if args.loopback else [False]):
        for hosts in args.hosts:
            with bench_service.RedisPostgres() as backend:
                result = measure(backend.settings, backend.folder, spec, args.runs, hosts,
                                 args.concurrency, loopback)
            result["where"] = "this host (loopback)" if loopback else "namespaces"
            results.append(result)
            print(f"  {result['where']}, {hosts} worker(s): {result['rate']:.1f} runs/s",
                  flush=True)
    print(f"\n| workers on | hosts | pool processes | runs/s | span (s) | runs per pool "
          f"process | claim -> succeeded p50 (ms) | CPU ms per run: workers / PostgreSQL / "
          f"forwarders+polling | max attempts |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        cpu = r["cpu_ms"]
        print(f"| {r['where']} | {r['hosts']} | {r['processes']} | {r['rate']:.1f} | "
              f"{r['span']:.2f} | {'/'.join(map(str, r['per_process']))} | "
              f"{r['busy_p50'] * 1e3:.1f} | {cpu['workers']:.1f} / {cpu['postgres']:.1f} / "
              f"{cpu['bench']:.1f} | {r['attempts']} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""GET /runs at scale: 100,000 runs and 10 million history rows, then a filter, a sort and a
page through the API, timed. Target: p50 <= 50 ms per request on PostgreSQL and SQLite.

Run by hand (not part of the test suite):

    .venv/bin/python bench/queries.py                         # both backends, full size
    .venv/bin/python bench/queries.py --backends sqlite --runs 20000 --epochs 20

For each backend this creates its own store: a new PostgreSQL database on
DESCENT_TEST_POSTGRES_URL's server (dropped afterwards) or a SQLite file in a temporary folder
(deleted afterwards), migrated with the project's migrations (so with its indexes). It fills
it with synthetic runs (statuses, datasets, sweeps, tags, learning rates, errors, times) and
``--epochs`` history rows per run, in bulk: COPY through psycopg on PostgreSQL, executemany in
large transactions on SQLite; then ANALYZE. Requests go through the Flask test client of
``service.app.create_app`` (the real parsing, query and JSON code, without an HTTP server),
``--requests`` of each kind after a warm-up, and p50 / p95 are printed per kind:

* filter: a ``where=`` expression (status, learning rate, final error, tag), newest first;
* sort: ``order_by=final_error`` and ``order_by=-best_error`` over every run;
* filter + sort: both at once, first page;
* page walk: the following pages of filter + sort through ``next_cursor``;
* simple params: ``status=succeeded&dataset=...&learning_rate_min=...`` by ``-created_at``;
* history: ``GET /runs/{id}/history?max_points=20`` of random runs.
"""

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

import migrations  # noqa: E402
from service.settings import Settings  # noqa: E402
from bench_auth import authorized_client  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "DESCENT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET_MS = 50.0
STATES = ["succeeded"] * 70 + ["failed"] * 8 + ["diverged"] * 10 + ["cancelled"] * 5 + \
    ["stopped_early"] * 4 + ["queued"] * 2 + ["running"]
DATASETS = ["xor", "circles", "moons", "spirals", "iris", "digits"]
TEAMS = ["vision", "nlp", "audio", "rl", "infra"]
RUN_COLUMNS = ["id", "name", "spec", "tags", "dataset_id", "sweep_id", "status",
               "learning_rate", "batch_mode", "batch_size", "epochs", "seed", "created_at",
               "started_at", "finished_at", "heartbeat_at", "worker", "attempts",
               "cancel_requested", "error_message", "epochs_done", "final_error", "best_error",
               "best_epoch", "final_accuracy", "final_val_error", "owner"]
SWEEP_COLUMNS = ["id", "owner", "base", "space", "kind", "metric", "status",
                 "cancel_requested", "created_at"]
N_SWEEPS = 999
# Every synthetic run and sweep belongs to this user, whose token the requests carry.
USER = "bench"
EPOCH_COLUMNS = ["run_id", "epoch", "error", "accuracy", "val_error", "val_accuracy", "seconds"]


def synthetic_runs(n: int, epochs: int, seed: int = 0):
    """Rows of RUN_COLUMNS, oldest first, over 90 days."""
    rng = random.Random(seed)
    start = datetime(2026, 8, 1, tzinfo=timezone.utc)
    for i in range(1, n + 1):
        status = rng.choice(STATES)
        dataset = rng.randrange(len(DATASETS))
        lr = round(10 ** rng.uniform(-3, 0.5), 6)
        batch_mode = rng.choice(["sgd", "minibatch", "minibatch", "full"])
        batch_size = {"sgd": 1, "full": 1000}.get(batch_mode) or rng.choice([8, 16, 32, 64])
        created = start + timedelta(seconds=i * 90 * 86400 / n)
        done = status not in ("queued",)
        finished = status not in ("queued", "running")
        final = round(math.exp(rng.gauss(-3, 1.5)), 6) if done and status != "diverged" else None
        best = None if final is None else round(final * rng.uniform(0.5, 1.0), 6)
        spec = {"dataset": DATASETS[dataset], "layers": [2, 8, 1], "learning_rate": lr,
                "batch_mode": batch_mode, "batch_size": batch_size, "epochs": epochs,
                "seed": i}
        tags = {"team": rng.choice(TEAMS), "exp": f"e{i % 100}"}
        yield (i, None if i % 3 else f"run-{i}", json.dumps(spec), json.dumps(tags),
               dataset + 1, rng.randrange(1, 1000) if i % 2 else None, status, lr,
               batch_mode, batch_size, epochs, i, created,
               created + timedelta(seconds=5) if done else None,
               created + timedelta(minutes=rng.randrange(1, 60)) if finished else None,
               created + timedelta(minutes=1) if done else None, "bench" if done else None,
               1 if done else 0, status == "cancelled",
               "boom" if status == "failed" else None, epochs if finished else epochs // 2,
               final, best, None if best is None else rng.randrange(epochs), None, None, USER)


def sweeps_rows():
    """The sweeps the synthetic runs point at (runs.sweep_id is a foreign key)."""
    now = datetime(2026, 8, 1, tzinfo=timezone.utc)
    return [(i, USER, "{}", "{}", "grid", "error", "succeeded", False, now)
            for i in range(1, N_SWEEPS + 1)]


def synthetic_epochs(first_run: int, last_run: int, epochs: int, rng: random.Random):
    for run_id in range(first_run, last_run + 1):
        error = rng.uniform(0.2, 1.0)
        for epoch in range(epochs):
            error *= 0.97
            yield (run_id, epoch, error, None, None, None, epoch * 0.001)


def datasets_rows():
    now = datetime(2026, 8, 1, tzinfo=timezone.utc)
    return [(i + 1, name, 4, 2, "labels", 1, 2, "0" * 64, True, b"", now)
            for i, name in enumerate(DATASETS)]


DATASET_COLUMNS = ["id", "name", "n_samples", "n_features", "target_kind", "n_targets",
                   "n_classes", "content_hash", "builtin", "data", "created_at"]


def load_postgres(url: str, n_runs: int, epochs: int) -> None:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY datasets ({', '.join(DATASET_COLUMNS)}) FROM STDIN") as copy:
                for row in datasets_rows():
                    copy.write_row(row)
            with cur.copy(f"COPY sweeps ({', '.join(SWEEP_COLUMNS)}) FROM STDIN") as copy:
                for row in sweeps_rows():
                    copy.write_row(row)
            with cur.copy(f"COPY runs ({', '.join(RUN_COLUMNS)}) FROM STDIN") as copy:
                for row in synthetic_runs(n_runs, epochs):
                    copy.write_row(row)
            cur.execute("SELECT setval(pg_get_serial_sequence('runs', 'id'), %s)", (n_runs,))
            cur.execute("SELECT setval(pg_get_serial_sequence('datasets', 'id'), %s)",
                        (len(DATASETS),))
            cur.execute("SELECT setval(pg_get_serial_sequence('sweeps', 'id'), %s)",
                        (N_SWEEPS,))
        conn.commit()
        rng = random.Random(1)
        step = 10_000
        for first in range(1, n_runs + 1, step):
            with conn.cursor() as cur:
                with cur.copy(f"COPY epochs ({', '.join(EPOCH_COLUMNS)}) FROM STDIN") as copy:
                    for row in synthetic_epochs(first, min(n_runs, first + step - 1), epochs,
                                                rng):
                        copy.write_row(row)
            conn.commit()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def load_sqlite(path: Path, n_runs: int, epochs: int) -> None:
    import sqlite3

    def sqlite_time(value):
        return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        conn.executemany(
            f"INSERT INTO datasets ({', '.join(DATASET_COLUMNS)}) VALUES "
            f"({', '.join('?' * len(DATASET_COLUMNS))})",
            [(*row[:-1], sqlite_time(row[-1])) for row in datasets_rows()])
        conn.executemany(
            f"INSERT INTO sweeps ({', '.join(SWEEP_COLUMNS)}) VALUES "
            f"({', '.join('?' * len(SWEEP_COLUMNS))})",
            [(*row[:-1], sqlite_time(row[-1])) for row in sweeps_rows()])
        time_columns = [RUN_COLUMNS.index(c) for c in
                        ("created_at", "started_at", "finished_at", "heartbeat_at")]

        def runs():
            for row in synthetic_runs(n_runs, epochs):
                row = list(row)
                for index in time_columns:
                    row[index] = sqlite_time(row[index])
                yield row

        conn.executemany(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(RUN_COLUMNS))})", runs())
    rng = random.Random(1)
    step = 20_000
    for first in range(1, n_runs + 1, step):
        with conn:
            conn.executemany(
                f"INSERT INTO epochs ({', '.join(EPOCH_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(EPOCH_COLUMNS))})",
                synthetic_epochs(first, min(n_runs, first + step - 1), epochs, rng))
    conn.execute("ANALYZE")
    conn.close()


def timed(client, path: str, params: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    response = client.get(path, query_string=params)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (params, response.get_data(as_text=True)[:500])
    return elapsed, response.get_json()


def measure(database_url: str, n_requests: int, n_runs: int, queue_dir: Path) -> list:
    from service.app import create_app

    app = create_app({"SETTINGS": Settings(database_url=database_url,
                                           broker_url=f"filesystem://{queue_dir}"),
                      "TESTING": True})
    client = authorized_client(app, database_url, USER)
    api = "/api/v1/runs"
    rng = random.Random(2)
    where = ("status in (succeeded, diverged) and learning_rate >= 0.1 and "
             "final_error < 0.05 and tag.team = \"vision\"")
    kinds = {
        "filter (where=..., -id)": lambda i: {"where": where, "limit": 50},
        "sort (order_by=final_error)": lambda i: {"order_by": "final_error", "limit": 50},
        "sort (order_by=-best_error)": lambda i: {"order_by": "-best_error", "limit": 50},
        "filter + sort, first page": lambda i: {"where": where, "order_by": "-final_error",
                                                "limit": 50},
        "simple params, -created_at": lambda i: {
            "status": "succeeded", "dataset": "moons", "learning_rate_min": 0.05,
            "order_by": "-created_at", "limit": 50},
        "time range + or, sort by lr": lambda i: {
            "where": 'created_at >= "2026-09-01" and created_at < "2026-09-15" and '
                     '(batch_mode = sgd or epochs_done < 50)', "order_by": "learning_rate",
            "limit": 50},
    }
    results = []
    for label, params in kinds.items():
        for i in range(3):  # warm-up
            timed(client, api, params(i))
        times = [timed(client, api, params(i))[0] for i in range(n_requests)]
        results.append((label, times))
    # page walk: next pages of filter + sort through the cursor
    for i in range(3):
        timed(client, api, {"where": where, "order_by": "-final_error", "limit": 50})
    times, cursor = [], None
    while len(times) < n_requests:
        params = {"where": where, "order_by": "-final_error", "limit": 50}
        if cursor:
            params["cursor"] = cursor
        elapsed, body = timed(client, api, params)
        if cursor:
            times.append(elapsed)
        cursor = body["next_cursor"]  # after the last page, start over
    results.append(("page walk (cursor), filter + sort", times))
    # an unfiltered walk deep into the sort
    times, cursor = [], None
    while len(times) < n_requests:
        params = {"order_by": "best_error", "limit": 200}
        if cursor:
            params["cursor"] = cursor
        elapsed, body = timed(client, api, params)
        if cursor:
            times.append(elapsed)
        cursor = body["next_cursor"]
    results.append(("page walk (cursor), sort, limit 200", times))
    times = [timed(client, f"{api}/{rng.randrange(1, n_runs + 1)}/history",
                   {"max_points": 20})[0] for _ in range(n_requests)]
    results.append(("history?max_points=20", times))
    app.extensions["descent"]["engine"].dispose()
    return results


def report(backend: str, results: list) -> bool:
    ok = True
    print(f"\n{backend}: {'request':<40} {'p50 ms':>8} {'p95 ms':>8}  target p50 <= "
          f"{TARGET_MS:g} ms")
    for label, times in results:
        times = sorted(times)
        p50 = statistics.median(times)
        p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
        met = p50 <= TARGET_MS
        ok &= met
        print(f"{'':>{len(backend) + 1}} {label:<40} {p50:8.1f} {p95:8.1f}  "
              f"{'ok' if met else 'MISSED'}")
    return ok


def run_backend(backend: str, args) -> bool:
    folder = Path(tempfile.mkdtemp(prefix=f"descent-bench-{backend}-"))
    admin = None
    name = None
    try:
        if backend == "postgres":
            admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
            name = f"descent_bench_{uuid.uuid4().hex[:12]}"
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            url = admin.url.set(database=name).render_as_string(hide_password=False)
        else:
            url = f"sqlite:///{folder / 'bench.db'}"
        migrations.upgrade(url)
        started = time.perf_counter()
        if backend == "postgres":
            load_postgres(url, args.runs, args.epochs)
        else:
            load_sqlite(folder / "bench.db", args.runs, args.epochs)
        print(f"{backend}: loaded {args.runs:,} runs and {args.runs * args.epochs:,} history "
              f"rows in {time.perf_counter() - started:.1f} s", flush=True)
        return report(backend, measure(url, args.requests, args.runs, folder / "queue"))
    finally:
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", nargs="+", default=["postgres", "sqlite"],
                        choices=["postgres", "sqlite"])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=100, help="history rows per run")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per kind")
    args = parser.parse_args()
    print(f"bench/queries.py: {args.runs:,} runs x {args.epochs} epochs, {args.requests} "
          f"requests per kind; python {sys.version.split()[0]}")
    ok = True
    for backend in args.backends:
        ok &= run_backend(backend, args)
    print("\nall targets met" if ok else "\nsome targets missed")


if __name__ == "__main__":
    main()

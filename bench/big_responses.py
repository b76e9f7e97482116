"""Time and peak memory of the API's big responses: a run's parameters (JSON and NPZ), its
history (JSON and CSV) and predict, for one big run stored directly (no training).

Run by hand (not part of the test suite):

    .venv/bin/python bench/big_responses.py                      # 4M parameters, 100k epochs
    .venv/bin/python bench/big_responses.py --layers 1000,2000,1000 --epochs 100000 \\
        --predict-rows 400 --backend postgres

Each response goes through the Flask test client of ``service.app.create_app`` (the real
views, store and encoders, without an HTTP server), its body read chunk by chunk and thrown
away as a server writing it to a socket would. Measured per response: the wall time (without
tracemalloc), and in a second request the peak of Python's traced allocations (tracemalloc,
which NumPy's buffers report to) above what was allocated before the request.
"""

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import migrations  # noqa: E402
from service.app import create_app  # noqa: E402
from service.datasets import resolve_dataset  # noqa: E402
from service.runspec import complete_spec  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Epoch, make_engine, make_sessionmaker  # noqa: E402
from service.store import runs as store_runs  # noqa: E402
from service.store.arrays import params_to_npz  # noqa: E402
from bench_auth import authorized_client  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "DESCENT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
USER = "bench"


def store_big_run(database_url: str, layers: list[int], epochs: int) -> int:
    """A succeeded run of ``USER`` with random parameters of ``layers`` and ``epochs`` rows of
    history, stored straight through the store; its id."""
    rng = np.random.default_rng(0)
    params = {"weights": [rng.standard_normal((n_out, n_in))
                          for n_in, n_out in zip(layers, layers[1:])],
              "biases": [rng.standard_normal(n_out) for n_out in layers[1:]]}
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            dataset = resolve_dataset(session, "xor", USER)
            spec = complete_spec({"dataset": "xor", "layers": layers, "epochs": epochs})
            run = store_runs.create_run(session, spec, dataset.id, owner=USER)
            for which in ("initial", "final"):
                store_runs.store_params(session, run.id, which, "float64",
                                        params_to_npz(params))
            errors = np.exp(-np.arange(epochs + 1) / epochs)
            session.execute(Epoch.__table__.insert(), [
                {"run_id": run.id, "epoch": e, "error": float(errors[e]),
                 "accuracy": 0.5, "seconds": 0.001 * e} for e in range(epochs + 1)])
            store_runs.finish_run(session, run.id, "succeeded")
            session.commit()
            return run.id
    finally:
        engine.dispose()


def consume(response) -> int:
    """Read a response's body chunk by chunk, as a server would; its size in bytes."""
    size = 0
    for chunk in response.iter_encoded():
        size += len(chunk)
    response.close()
    return size


def measure(client, method: str, url: str, **kwargs):
    """(status, body bytes, seconds, peak traced bytes) of one request, read chunk by chunk,
    after a first one that warms up (numba's kernels, SQLAlchemy's statement cache)."""
    consume(client.open(url, method=method, buffered=False, **kwargs))
    started = time.perf_counter()
    response = client.open(url, method=method, buffered=False, **kwargs)
    status, size = response.status_code, consume(response)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    consume(client.open(url, method=method, buffered=False, **kwargs))
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return status, size, seconds, peak


def database(backend: str, folder: str) -> tuple[str, callable]:
    """A migrated database URL of ``backend`` and a function that drops it."""
    if backend == "sqlite":
        url = f"sqlite:///{folder}/descent.db"
        migrations.upgrade(url)
        return url, lambda: None
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"descent_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    migrations.upgrade(url)

    def drop():
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return url, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default="1000,2000,1000")
    parser.add_argument("--epochs", type=int, default=100_000)
    parser.add_argument("--predict-rows", type=int, default=400)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    layers = [int(n) for n in args.layers.split(",")]
    n_params = sum(a * b + b for a, b in zip(layers, layers[1:]))
    with tempfile.TemporaryDirectory() as folder:
        url, drop = database(args.backend, folder)
        try:
            settings = Settings(database_url=url, broker_url=f"filesystem://{folder}/queue")
            app = create_app({"SETTINGS": settings})
            run_id = store_big_run(url, layers, args.epochs)
            client = authorized_client(app, url, USER)
            inputs = np.random.default_rng(1).standard_normal(
                (args.predict_rows, layers[0])).round(3).tolist()
            print(f"{args.backend}: {n_params:,} parameters, {args.epochs + 1:,} epochs")
            for label, method, path, kwargs in [
                ("params json", "GET", "params", {}),
                ("params npz", "GET", "params?format=npz", {}),
                ("history json", "GET", "history", {}),
                ("history csv", "GET", "history?format=csv", {}),
                (f"predict {args.predict_rows} rows", "POST", "predict",
                 {"json": {"inputs": inputs}}),
            ]:
                status, size, seconds, peak = measure(
                    client, method, f"/api/v1/runs/{run_id}/{path}", **kwargs)
                print(f"{label:20} {status}  body {size / 1e6:8.1f} MB  {seconds:6.2f} s  "
                      f"peak {peak / 1e6:8.1f} MB")
        finally:
            drop()


if __name__ == "__main__":
    main()

"""Where a sweep run's time goes inside a worker: bench/sweep.py's 48 runs, one after another
in this process through ``workers.execute.execute_run`` (no broker consumer), timed per
phase (the claim, the training, the final transaction, ...), against the same 48 trainings
through ``kernels.train`` alone. The difference is the store's cost per run, which the
sweep bench's ratio pays on top of the training.

    .venv/bin/python bench/run_overhead.py                    # a temporary SQLite file
    .venv/bin/python bench/run_overhead.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/<new db>
"""

import argparse
import collections
import functools
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))

import kernels  # noqa: E402
import migrations  # noqa: E402
import workers.execute as execute  # noqa: E402
import workers.history as history  # noqa: E402
from bench_auth import authorized_client  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import runs as store_runs  # noqa: E402
from sweep import BATCH_SIZES, LEARNING_RATES, VALIDATION, WIDTHS  # noqa: E402
from workers import database  # noqa: E402

PHASES = [(execute, "_claim", "claim (one transaction)"),
          (execute, "load_dataset", "dataset (cached after the first)"),
          (execute, "split_validation", "validation split"),
          (execute.kernels, "train", "kernels.train (with the history callback)"),
          (history.HistoryWriter, "finish", "final transaction"),
          (execute, "params_to_npz", "parameter archives")]


def timed_phases(totals: dict) -> None:
    """Wrap each phase so that its seconds add up in ``totals``."""
    for owner, name, label in PHASES:
        original = getattr(owner, name)

        def wrapper(*args, _original=original, _label=label, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                totals[_label] += time.perf_counter() - started

        functools.update_wrapper(wrapper, original)
        setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="descent-bench-overhead-"))
    database_url = args.database_url or f"sqlite:///{folder / 'descent.db'}"
    migrations.upgrade(database_url)
    app = create_app({"SETTINGS": Settings(database_url=database_url,
                                           broker_url=f"filesystem://{folder / 'queue'}")})
    client = authorized_client(app, database_url)
    sessions = database.sessions(database_url, 60)
    base = {"dataset": "digits", "layers": [64, 32, 10], "activation": "tanh",
            "loss": "cross_entropy", "batch_mode": "minibatch", "epochs": args.epochs,
            "validation_split": VALIDATION, "shuffle": True, "seed": 0,
            "eval_every": args.epochs, "threads": 1}
    grid = {"learning_rate": LEARNING_RATES, "batch_size": BATCH_SIZES,
            "layers": [[64, w, 10] for w in WIDTHS]}

    def post(body) -> tuple[list[int], float]:
        started = time.perf_counter()
        response = client.post("/api/v1/sweeps", json=body)
        seconds = time.perf_counter() - started
        assert response.status_code == 202, response.get_json()
        sweep = client.get(f"/api/v1/sweeps/{response.get_json()['id']}").get_json()
        return [run["id"] for run in sweep["runs"]], seconds

    threads = execute.Threads(1)
    warm, _ = post({"base": {**base, "epochs": 1, "eval_every": 1},
                    "grid": {"layers": grid["layers"]}})
    for run_id in warm:  # compiles or loads the kernels, caches the dataset
        execute.execute_run(sessions, run_id, threads=threads)
    train_alone, split_alone = kernels.train, execute.split_validation
    totals: dict = collections.defaultdict(float)
    timed_phases(totals)
    print(f"{database_url.split(':')[0]}: 48 runs of bench/sweep.py's grid, {args.epochs} "
          f"epochs, eval_every {args.epochs}, one BLAS thread, one after another")
    for repetition in range(args.repeat):
        ids, post_seconds = post({"base": base, "grid": grid})
        totals.clear()
        started = time.perf_counter()
        for run_id in ids:
            assert execute.execute_run(sessions, run_id, threads=threads) == "succeeded"
        wall = time.perf_counter() - started
        with sessions() as session:
            specs = [dict(store_runs.get_run(session, run_id).spec) for run_id in ids]
        X, y = next(iter(execute._DATASETS.values()))  # digits, decompressed by the runs
        with execute.blas_threads(1):
            started = time.perf_counter()
            for spec in specs:
                X_train, y_train, validation = split_alone(
                    X, y, spec["validation_split"], spec["seed"])
                train_alone(X_train, y_train, validation=validation,
                            **execute.train_arguments(spec))
            alone = time.perf_counter() - started
        outside = wall - totals[PHASES[3][2]]
        print(f"repetition {repetition + 1}: POST {post_seconds * 1000:.0f} ms; 48 runs "
              f"through execute_run {wall:.3f} s, of which outside kernels.train "
              f"{outside / 48 * 1000:.2f} ms per run; kernels.train alone {alone:.3f} s")
        for label, seconds in sorted(totals.items(), key=lambda item: -item[1]):
            print(f"  {label:42s} {seconds * 1000:8.1f} ms  {seconds / 48 * 1000:6.2f} ms/run")
        print(f"  {'rest of execute_run':42s} {(wall - sum(totals.values())) * 1000:8.1f} ms")
    app.extensions["descent"]["engine"].dispose()


if __name__ == "__main__":
    main()

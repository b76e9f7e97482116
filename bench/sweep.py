"""A 48-configuration grid on digits through Descent's queue against scikit-learn.

Run by hand (not part of the test suite):

    .venv/bin/python bench/sweep.py                    # 2 workers, 50 epochs, sklearn's work
    .venv/bin/python bench/sweep.py --epochs 100 --workers 2
    .venv/bin/python bench/sweep.py --eval-every 1     # Descent's default history instead
    .venv/bin/python bench/sweep.py --wait-quiet 60    # shared machine: wait for quiet first
    .venv/bin/python bench/sweep.py --repeat 3         # 3 sweeps and 3 fits: ratio of medians
    .venv/bin/python bench/sweep.py --database-url postgresql+psycopg://... --broker-url redis://...

The grid is learning rate (4) x batch size (4) x hidden width (3) of a 64-W-10 network
(tanh hidden, softmax output, cross-entropy, plain minibatch SGD), each run on the same 80%
of digits with the other 20% as its validation split, for the same number of epochs.

* Descent: every run with ``eval_every`` = epochs by default (``--eval-every epochs``): it
  evaluates the training set and the validation split before training and after the last
  epoch only, which is at least sklearn's work (MLPClassifier evaluates nothing between
  epochs; GridSearchCV scores the validation fold once at the end). ``--eval-every 1`` runs
  Descent's default instead (both sets evaluated after every epoch: more work than sklearn).
  Every run trains with ``threads`` = 1 (one BLAS thread per worker process).
* Descent's store and queue: temporary ones (by default a SQLite file and the filesystem
  broker, the embedded defaults' transports), ``--workers`` real ``celery -A workers.celery_app
  worker`` processes with one pool process each, started and warmed before the clock starts;
  after a warm-up sweep (the same grid at one epoch), the bench waits until the workers'
  background kernel warm-up (workers.warmup) is over, so the timed sweep meets workers,
  API and database in their steady state; the
  sweep is POSTed through the API (Flask test client) and timed from the POST to the
  sweep's last ``finished_at``.
* scikit-learn: ``GridSearchCV(MLPClassifier(solver="sgd", momentum=0, alpha=0,
  activation="tanh", learning_rate="constant", max_iter=epochs, tol=0,
  n_iter_no_change=epochs + 1), grid, cv=<the same single 80/20 split>, n_jobs=2,
  refit=False)``; BLAS at one thread per process for both.

Each side's line also gives ``bg``: the cores other processes took while it ran (the
machine's busy CPU time minus that of this process and its descendants, over the wall
time), and the load averages at the start and the end. On a shared 2-core machine a ``bg``
well above 0.1 slows both sides, not necessarily equally; ``--wait-quiet S`` waits up to S
seconds before each side until other processes take less than 0.15 cores.

Target: Descent >= 8x faster wall time (issue 15; 5x before), on both backends.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kernels  # noqa: E402
import migrations  # noqa: E402
from bench_auth import authorized_client  # noqa: E402

LEARNING_RATES = [0.01, 0.03, 0.1, 0.3]
BATCH_SIZES = [16, 32, 64, 128]
WIDTHS = [16, 32, 64]
VALIDATION = 0.2
TARGET = 8.0


def _proc_stats() -> dict:
    """pid -> (parent pid, CPU seconds) of every process now."""
    tick, stats = os.sysconf("SC_CLK_TCK"), {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return stats


def _machine_busy():
    """Busy CPU seconds of the whole machine so far (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


class Load:
    """Cores other processes took during a phase: the machine's busy CPU time minus this
    process's and its descendants' (the worker processes, joblib's), over the wall time. A
    descendant that started and ended inside the phase is missed (counted as other)."""

    def __enter__(self):
        self.wall, self.busy, self.ours = time.perf_counter(), _machine_busy(), self._ours()
        return self

    @staticmethod
    def _ours() -> dict:
        stats, tree = _proc_stats(), {os.getpid()}
        grew = True
        while grew:
            grew = False
            for pid, (parent, _) in stats.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return {pid: stats[pid][1] for pid in tree if pid in stats}

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        ours = self._ours()
        mine = sum(cpu - self.ours.get(pid, 0.0) for pid, cpu in ours.items())
        self.ours_cores = mine / wall
        self.bg = max(0.0, (_machine_busy() - self.busy - mine) / wall)

    def __str__(self):
        return f"bg {self.bg:.2f} cores (ours {self.ours_cores:.2f})"


def wait_quiet(seconds: float, label: str) -> None:
    """Up to ``seconds`` for other processes to take less than 0.15 cores (over 1 s
    windows); says how long it waited and what it saw last. 0: no wait."""
    if seconds <= 0:
        return
    started = time.monotonic()
    while True:
        with Load() as load:
            time.sleep(1.0)
        if load.bg < 0.15 or time.monotonic() - started >= seconds:
            break
    print(f"  ({label}: waited {time.monotonic() - started:.0f} s for quiet, last "
          f"{load})")


def settle_workers(limit: float = 120.0) -> None:
    """Wait (up to ``limit`` seconds) until this process's descendants are idle: each new
    worker compiles or loads its remaining kernels in a background process
    (workers.warmup.start_warm_rest) for a few seconds after it starts, which would
    otherwise share the cores with the timed sweep (a worker that has been up for a while
    has none)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        with Load() as load:
            time.sleep(0.5)
        if load.ours_cores < 0.1:
            break
    print(f"  (workers' background warm-up: waited {time.monotonic() - started:.1f} s "
          f"until they were idle)")


def start_workers(n: int, env: dict, cwd: Path) -> list[subprocess.Popen]:
    processes = []
    for i in range(n):
        log = open(cwd / f"worker{i}.log", "w")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
             "--concurrency", "1", "--loglevel", "INFO", "-n", f"bench{i}@%h",
             "--without-mingle", "--without-gossip"],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.monotonic() + 120
    for i in range(n):
        while " ready." not in (cwd / f"worker{i}.log").read_text():
            if time.monotonic() > deadline or processes[i].poll() is not None:
                raise SystemExit(f"worker {i} not ready:\n{(cwd / f'worker{i}.log').read_text()}")
            time.sleep(0.1)
    return processes


def stop_workers(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_sweep(client, sweep_id: int, timeout: float = 3600, every: float = 0.1) -> dict:
    """The sweep once it is final. The wall time is taken from the runs' finished_at, so
    polling often only steals CPU from the workers (the leaderboard is built per poll)."""
    deadline = time.monotonic() + timeout
    while True:
        sweep = client.get(f"/api/v1/sweeps/{sweep_id}?metric=final_accuracy").get_json()
        if sweep["status"] in ("succeeded", "failed", "cancelled"):
            return sweep
        if time.monotonic() > deadline:
            raise SystemExit(f"sweep not done: {sweep['counts']}")
        time.sleep(every)


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def print_gaps(runs: list, posted: datetime) -> None:
    """Where the wall time went besides training: per worker process, the time before its
    first run started and the idle gaps between one run's end and its next run's start."""
    by_worker: dict = {}
    for run in runs:
        if run.get("worker") and run.get("started_at") and run.get("finished_at"):
            by_worker.setdefault(run["worker"], []).append(
                (_utc(run["started_at"]), _utc(run["finished_at"])))
    for worker, spans in sorted(by_worker.items()):
        spans.sort()
        gaps = [(b[0] - a[1]).total_seconds() for a, b in zip(spans, spans[1:])]
        busy = sum((end - start).total_seconds() for start, end in spans)
        first = (spans[0][0] - posted).total_seconds()
        print(f"  {worker}: {len(spans)} runs, training {busy:.2f} s, first start after "
              f"{first * 1000:.0f} ms, gaps between runs: total {sum(gaps) * 1000:.0f} ms, "
              f"mean {1000 * sum(gaps) / max(len(gaps), 1):.1f} ms")


def run_descent(args, folder: Path) -> tuple[float, dict]:
    from service.app import create_app
    from service.settings import Settings

    database_url = args.database_url or f"sqlite:///{folder / 'descent.db'}"
    broker_url = args.broker_url or f"filesystem://{folder / 'queue'}"
    migrations.upgrade(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    env.update(DESCENT_DATABASE_URL=database_url, DESCENT_BROKER_URL=broker_url,
               PYTHONPATH=str(ROOT), DESCENT_WORKER_THREADS="1")
    workers = start_workers(args.workers, env, folder)
    app = create_app({"SETTINGS": Settings(database_url=database_url, broker_url=broker_url)})
    client = authorized_client(app, database_url)
    try:
        base = {"dataset": "digits", "layers": [64, 32, 10], "activation": "tanh",
                "loss": "cross_entropy", "batch_mode": "minibatch", "epochs": args.epochs,
                "validation_split": VALIDATION, "shuffle": True, "seed": 0,
                "eval_every": eval_every(args), "threads": 1}
        body = {"base": base, "grid": {"learning_rate": LEARNING_RATES,
                                       "batch_size": BATCH_SIZES,
                                       "layers": [[64, w, 10] for w in WIDTHS]}}
        # Warm-up: the same grid at one epoch, so the workers have loaded the kernels and
        # the dataset, and the API and the database have stored a sweep of this size once
        # (on a new PostgreSQL database the first 48-row INSERT took ~90 ms more than the
        # next: its tables' first pages; a service's database is past that).
        warm = client.post("/api/v1/sweeps", json={
            **body, "base": {**base, "epochs": 1, "eval_every": 1}}).get_json()
        wait_sweep(client, warm["id"])
        settle_workers()
        walls = []
        for _ in range(args.repeat):
            wait_quiet(args.wait_quiet, "descent")
            with Load() as load:
                started = datetime.now(timezone.utc)
                clock = time.perf_counter()
                response = client.post("/api/v1/sweeps", json=body)
                posted = time.perf_counter() - clock
                assert response.status_code == 202, response.get_json()
                sweep = wait_sweep(client, response.get_json()["id"], every=1.0)
                polled = time.perf_counter() - clock
            specs = {(run["spec"]["eval_every"], run["spec"]["threads"])
                     for run in sweep["runs"]}
            if specs != {(eval_every(args), 1)}:
                raise SystemExit(f"runs trained with (eval_every, threads) {specs}")
            last = max(_utc(run["finished_at"]) for run in sweep["runs"])
            walls.append((last - started).total_seconds())
            print(f"descent: {len(sweep['runs'])} runs {sweep['counts']}, wall {walls[-1]:.2f} s"
                  f" (POST {posted * 1000:.0f} ms, poll loop saw {polled:.2f} s), {load}")
            print_gaps(sweep["runs"], started)
        return walls, sweep
    finally:
        stop_workers(workers)
        app.extensions["descent"]["engine"].dispose()


def eval_every(args) -> int:
    return args.epochs if args.eval_every == "epochs" else int(args.eval_every)


def run_sklearn(args) -> float:
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, PredefinedSplit
    from sklearn.neural_network import MLPClassifier

    X, y = kernels.load_dataset("digits")
    n = X.shape[0]
    n_val = int(np.floor(n * VALIDATION))
    order = np.random.default_rng(0).permutation(n)
    fold = np.full(n, -1)
    fold[order[n - n_val:]] = 0  # the rows Descent's validation_split holds out
    model = MLPClassifier(solver="sgd", momentum=0.0, nesterovs_momentum=False, alpha=0.0,
                          activation="tanh", learning_rate="constant", max_iter=args.epochs,
                          tol=0.0, n_iter_no_change=args.epochs + 1, shuffle=True,
                          random_state=0)
    grid = {"learning_rate_init": LEARNING_RATES, "batch_size": BATCH_SIZES,
            "hidden_layer_sizes": [(w,) for w in WIDTHS]}
    search = GridSearchCV(model, grid, cv=PredefinedSplit(fold), n_jobs=2, refit=False)
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    os.environ.update(env)  # for the joblib worker processes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Warm-up, as Descent's side has its warm-up sweep: joblib's worker processes are
        # started (and import sklearn) here, and the timed fit reuses them.
        GridSearchCV(clone(model).set_params(max_iter=1),
                     {"hidden_layer_sizes": [(w,) for w in WIDTHS]},
                     cv=PredefinedSplit(fold), n_jobs=2, refit=False).fit(X, y)
        walls = []
        for _ in range(args.repeat):
            wait_quiet(args.wait_quiet, "sklearn")
            with Load() as load:
                clock = time.perf_counter()
                search.fit(X, y)
                walls.append(time.perf_counter() - clock)
            print(f"sklearn: GridSearchCV {len(search.cv_results_['params'])} fits, wall "
                  f"{walls[-1]:.2f} s, best validation accuracy {search.best_score_:.3f}, {load}")
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--eval-every", default="epochs",
                        help="Descent's eval_every: 'epochs' (default: evaluate before "
                             "training and after the last epoch, sklearn's work or more) or "
                             "an integer (1: Descent's default, every epoch)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="on a shared machine: wait up to S seconds before each side "
                             "until other processes take < 0.15 cores")
    parser.add_argument("--database-url")
    parser.add_argument("--broker-url")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="time N sweeps (new ones, same workers) and N fits; the ratio "
                             "is of the medians")
    args = parser.parse_args()
    if args.eval_every != "epochs" and not args.eval_every.isdigit():
        parser.error("--eval-every takes 'epochs' or an integer")
    every = eval_every(args)
    mode = ("matched work: evaluated before training and after the last epoch only"
            if every >= args.epochs else
            f"evaluated every {every} epoch(s): more work than sklearn")
    print(f"descent runs: eval_every {every} ({mode}), threads 1 per run, "
          f"{args.workers} worker processes; sklearn: GridSearchCV n_jobs=2, BLAS 1 thread")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    folder = Path(tempfile.mkdtemp(prefix="descent-bench-sweep-"))
    try:
        descent, sweep = run_descent(args, folder)
        board = sweep["leaderboard"][:3]
        for entry in board:
            print(f"  rank {entry['rank']}: {entry['config']} accuracy "
                  f"{entry['final_accuracy']:.3f}")
        sklearn = run_sklearn(args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ratio = statistics.median(sklearn) / statistics.median(descent)
    median = " (medians)" if args.repeat > 1 else ""
    print(f"\n48 configurations x {args.epochs} epochs on digits (eval_every {every}): "
          f"descent {statistics.median(descent):.2f} s{median} "
          f"[{', '.join(f'{w:.2f}' for w in descent)}], "
          f"sklearn GridSearchCV(n_jobs=2) {statistics.median(sklearn):.2f} s "
          f"[{', '.join(f'{w:.2f}' for w in sklearn)}], ratio {ratio:.1f}x "
          f"(target >= {TARGET:g}x: {'met' if ratio >= TARGET else 'NOT met'}); "
          f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

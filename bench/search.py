"""How many runs a TPE sweep needs to reach a target validation error, against random search,
through Descent's queue (the API's POST /sweeps, real worker processes).

Run by hand (not part of the test suite):

    .venv/bin/python bench/search.py                       # 20 seeds, spirals circles moons digits
    .venv/bin/python bench/search.py --quick               # 5 seeds, spirals and digits, smaller pools
    .venv/bin/python bench/search.py --seeds 20 --problems spirals digits --workers 2

Per problem (a shipped dataset, 80/20 validation split, softmax + cross-entropy, minibatch
SGD for a few epochs), the space is: learning rate loguniform [1e-3, 3], hidden layers of
width {4, 8, 16, 32, 64} and depth {1, 2, 3} (one ``layers`` choice), batch size
{8, 16, 32, 64, 128}, activation {tanh, relu, sigmoid}; the metric is the final validation
error (``metric: val_error``, ``objective: final``).

* Random: one ``random`` sweep of ``--random-trials`` draws. The target is the 1 % best
  value of these draws (``--quantile``); random trials are independent, so random search's
  runs-to-target is geometric with the pooled hit rate p (the share of draws at or below
  the target): median ceil(ln 0.5 / ln(1 - p)), mean 1 / p.
* TPE: one ``search: tpe`` sweep per seed (``seed`` 0..N-1, Optuna's
  TPESampler(multivariate=True, constant_liar=True, seed)), ``max_concurrency: 1`` (each
  run asked after the previous one ended), at most ``--budget`` runs; a sweep is cancelled
  once a run reached the target. Its runs-to-target is the position (1-based) of its first
  run at or below the target; a seed that does not reach it within the budget counts as
  ``> budget`` (the median is then a lower bound, marked ``>``).

Target: TPE's median runs-to-target at most half random's median on at least two problems.
"""

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import migrations  # noqa: E402
from bench_auth import authorized_client  # noqa: E402
from sweep import start_workers, stop_workers  # noqa: E402

# problem: (dataset, n_features, n_classes, epochs)
PROBLEMS = {"spirals": ("spirals", 2, 3, 60), "circles": ("circles", 2, 2, 40),
            "moons": ("moons", 2, 2, 40), "digits": ("digits", 64, 10, 10)}
WIDTHS = [4, 8, 16, 32, 64]
DEPTHS = [1, 2, 3]


def space(n_in: int, n_out: int) -> dict:
    return {"learning_rate": {"loguniform": [1e-3, 3.0]},
            "layers": {"choice": [[n_in, *[w] * d, n_out] for d in DEPTHS for w in WIDTHS]},
            "batch_size": {"choice": [8, 16, 32, 64, 128]},
            "activation": {"choice": ["tanh", "relu", "sigmoid"]}}


def base(dataset: str, n_in: int, n_out: int, epochs: int) -> dict:
    return {"dataset": dataset, "layers": [n_in, 8, n_out], "loss": "cross_entropy",
            "batch_mode": "minibatch", "epochs": epochs, "validation_split": 0.2,
            "shuffle": True, "seed": 0}


def post(client, body) -> dict:
    response = client.post("/api/v1/sweeps", json=body)
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def get(client, sweep_id: int) -> dict:
    return client.get(f"/api/v1/sweeps/{sweep_id}").get_json()


def done(sweep: dict) -> bool:
    return sweep["status"] in ("succeeded", "failed", "cancelled") and all(
        run["status"] not in ("queued", "running") for run in sweep["runs"])


def values(sweep: dict) -> list:
    """Each run's final validation error in position order (inf: none, e.g. diverged)."""
    out = []
    for run in sweep["runs"]:
        value = run.get("final_val_error")
        out.append(value if value is not None and math.isfinite(value) else math.inf)
    return out


def random_baseline(client, problem: str, trials: int, quantile: float) -> tuple:
    dataset, n_in, n_out, epochs = PROBLEMS[problem]
    sweep = post(client, {"base": base(dataset, n_in, n_out, epochs), "metric": "val_error",
                          "random": space(n_in, n_out), "trials": trials, "seed": 12345,
                          "name": f"random {problem}"})
    while not done(sweep := get(client, sweep["id"])):
        time.sleep(1.0)
    found = sorted(values(sweep))
    target = found[max(0, math.ceil(quantile * len(found)) - 1)]
    p = sum(v <= target for v in found) / len(found)
    median = math.ceil(math.log(0.5) / math.log(1 - p)) if p < 1 else 1
    return target, p, median, 1 / p, len(found)


def tpe_runs_to_target(client, problem: str, seeds: int, budget: int, target: float) -> list:
    """Runs each seed's TPE sweep needed (None: not within the budget)."""
    dataset, n_in, n_out, epochs = PROBLEMS[problem]
    ids = [post(client, {"base": base(dataset, n_in, n_out, epochs), "metric": "val_error",
                         "search": "tpe", "space": space(n_in, n_out), "trials": budget,
                         "seed": seed, "max_concurrency": 1,
                         "name": f"tpe {problem} seed {seed}"})["id"]
           for seed in range(seeds)]
    result = {}
    while len(result) < len(ids):
        for sweep_id in ids:
            if sweep_id in result:
                continue
            sweep = get(client, sweep_id)
            hit = next((i + 1 for i, v in enumerate(values(sweep))
                        if v <= target and sweep["runs"][i]["status"] not in
                        ("queued", "running")), None)
            if hit is not None:
                client.post(f"/api/v1/sweeps/{sweep_id}/cancel")
                result[sweep_id] = hit
            elif done(sweep):
                result[sweep_id] = None
        time.sleep(1.0)
    return [result[i] for i in ids]


def ask_cost(sizes=(10, 100, 300, 1000)) -> None:
    """Milliseconds to rebuild a TPE study of n trials (two of them running) in memory and
    ask once: what each freed slot of a model-based sweep costs besides reading its rows."""
    import random

    import optuna

    from service.store import search

    problem_space = space(2, 3)
    dists = search.distributions(problem_space)
    n_layers = len(problem_space["layers"]["choice"])
    for n in sizes:
        rng, times = random.Random(0), []
        for _ in range(3):
            clock = time.perf_counter()
            study = optuna.create_study(sampler=search.sampler("tpe", 0))
            trials = []
            for i in range(n - 1):
                running = i >= n - 3
                params = {"learning_rate": 10 ** rng.uniform(-3, 0.47),
                          "layers": rng.randrange(n_layers), "batch_size": rng.randrange(5),
                          "activation": rng.randrange(3)}
                trials.append(optuna.trial.create_trial(
                    params=params, distributions=dists,
                    state=optuna.trial.TrialState.RUNNING if running
                    else optuna.trial.TrialState.COMPLETE,
                    value=None if running else rng.random()))
            study.add_trials(trials)
            study.ask(dists)
            times.append(time.perf_counter() - clock)
        print(f"{n} trials: rebuild + ask {min(times) * 1000:.0f} ms (best of 3)")


def median_text(found: list, budget: int) -> str:
    counted = [budget + 1 if n is None else n for n in found]
    median = statistics.median(counted)
    censored = sorted(counted)[len(counted) // 2] > budget
    return (">" if censored else "") + f"{median:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--random-trials", type=int, default=500)
    parser.add_argument("--budget", type=int, default=150, help="TPE runs per seed at most")
    parser.add_argument("--quantile", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="5 seeds, spirals and digits, 300 random draws, budget 100")
    parser.add_argument("--ask-cost", action="store_true",
                        help="only time a rebuilt study's ask at 10 to 1000 trials")
    args = parser.parse_args()
    if args.ask_cost:
        ask_cost()
        return
    if args.quick:
        args.seeds, args.problems, args.random_trials, args.budget = \
            5, ["spirals", "digits"], 300, 100
    from service.app import create_app
    from service.settings import Settings

    with tempfile.TemporaryDirectory(prefix="descent-bench-search-") as tmp:
        folder = Path(tmp)
        database_url = f"sqlite:///{folder / 'descent.db'}"
        broker_url = f"filesystem://{folder / 'queue'}"
        migrations.upgrade(database_url)
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
        env.update(DESCENT_DATABASE_URL=database_url, DESCENT_BROKER_URL=broker_url,
                   PYTHONPATH=str(ROOT), DESCENT_WORKER_THREADS="1")
        workers = start_workers(args.workers, env, folder)
        app = create_app({"SETTINGS": Settings(database_url=database_url,
                                               broker_url=broker_url)})
        client = authorized_client(app, database_url)
        rows = []
        try:
            for problem in args.problems:
                clock = time.perf_counter()
                target, p, random_median, random_mean, n = random_baseline(
                    client, problem, args.random_trials, args.quantile)
                found = tpe_runs_to_target(client, problem, args.seeds, args.budget, target)
                tpe = median_text(found, args.budget)
                counted = [args.budget + 1 if f is None else f for f in found]
                ratio = statistics.median(counted) / random_median
                rows.append((problem, n, target, p, random_median, random_mean, tpe,
                             sum(f is not None for f in found), ratio))
                print(f"{problem}: target {target:.4f}, random p={p:.4f} median "
                      f"{random_median}; TPE per seed {found}; "
                      f"{time.perf_counter() - clock:.0f} s", flush=True)
        finally:
            stop_workers(workers)
            app.extensions["descent"]["engine"].dispose()
    print(f"\nseeds {args.seeds}, random draws {args.random_trials}, TPE budget {args.budget}, "
          f"target = the {args.quantile:.1%} best random value (final validation error)\n")
    print("| problem | random draws | target | random hit rate | random median (mean) | "
          "TPE median | TPE seeds reaching | TPE / random |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for problem, n, target, p, rmed, rmean, tpe, reached, ratio in rows:
        print(f"| {problem} | {n} | {target:.4f} | {p:.3f} | {rmed} ({rmean:.0f}) | {tpe} | "
              f"{reached}/{args.seeds} | {ratio:.2f} |")


if __name__ == "__main__":
    main()

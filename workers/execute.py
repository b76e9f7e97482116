"""Run one stored run: claim it, load its data, train chunk by chunk with a heartbeat, and
record its history, parameters and final state."""

import logging
import math
import os
from collections import OrderedDict
from typing import NamedTuple, Optional, Union

import numpy as np
from sqlalchemy.exc import InterfaceError, OperationalError
from threadpoolctl import ThreadpoolController

import kernels
from service.settings import ReaperSettings
from service.store import runs as store_runs
from service.store import sweeps as store_sweeps
from service.store.arrays import content_hash, params_to_npz
from service.store.datasets import dataset_arrays_from
from workers.dispatch import Enqueue, send_runs, sweep_run_ended
from workers.engines import choose_engine
from workers.environment import run_environment
from workers.history import HistoryWriter
from workers.liveness import Heartbeat, owner_alive, worker_name

log = logging.getLogger(__name__)

# The numeric fields of a run spec, which kernels.train takes as they are.
KERNEL_FIELDS = ("layers", "activation", "output_activation", "loss", "learning_rate",
                 "batch_mode", "batch_size", "epochs", "seed", "shuffle", "init", "dtype")
# Those of optimizers, schedules, clipping and plateaus (service.runspec.OPTIMIZER_FIELDS):
# passed when the spec has them; a spec stored before they existed has none and trains
# with kernels.train's defaults, plain gradient descent as it did then.
OPTIMIZER_FIELDS = ("optimizer", "momentum", "beta1", "beta2", "eps", "weight_decay",
                    "clip_norm", "lr_schedule", "stop_on_plateau")
# Later kernels.train arguments, passed when the spec has them (eval_every: every epoch).
LATER_FIELDS = ("eval_every",)


class Threads(NamedTuple):
    """A worker's BLAS thread settings: ``default`` for a spec stored before the spec had
    ``threads`` (settings.worker_threads, what it trained with), ``cap`` on what one run
    may use (settings.limits.max_threads; None: no cap)."""

    default: int = 1
    cap: Optional[int] = None


def run_threads(spec: dict, threads: Threads) -> int:
    """The threads a run trains with (kernels.train's ``threads``: BLAS's, or parts of each
    large batch on as many cores): its spec's ``threads`` within the cap."""
    wanted = spec.get("threads", threads.default)
    return max(1, min(wanted, threads.cap) if threads.cap else wanted)


_controllers: dict = {}  # pid -> this process's ThreadpoolController


def blas_threads(n: int):
    """A context that limits the BLAS libraries of this process (the one numba's kernels
    call included) to ``n`` threads. The libraries are looked up once per process (about
    3 ms each time otherwise), after ``import kernels`` has loaded SciPy's."""
    pid = os.getpid()
    if pid not in _controllers:
        _controllers.clear()
        _controllers[pid] = ThreadpoolController()
    return _controllers[pid].limit(limits=n, user_api="blas")


def run_blas_threads(arguments: dict, rows: int) -> int:
    """The BLAS threads ``kernels.train(**arguments)`` on ``rows`` rows runs with: one when
    its batches are split in parts, else its ``threads`` (kernels.blas_threads_for)."""
    return kernels.blas_threads_for(
        arguments["threads"], layers=arguments["layers"], batch_mode=arguments["batch_mode"],
        batch_size=arguments["batch_size"], rows=rows)


def training_blas_threads(arguments: dict, rows: int):
    """blas_threads around ``kernels.train(**arguments)`` on ``rows`` rows (run_blas_threads)."""
    return blas_threads(run_blas_threads(arguments, rows))


def train_arguments(spec: dict) -> dict:
    """The keyword arguments of kernels.train for a stored spec."""
    return {**{name: spec[name] for name in KERNEL_FIELDS},
            **{name: spec[name] for name in OPTIMIZER_FIELDS + LATER_FIELDS if name in spec}}


# Datasets recently trained on by this process, by (id, content hash): a stored dataset
# never changes, so a worker decompresses each one once, not once per run.
_DATASETS: "OrderedDict[tuple, tuple]" = OrderedDict()
CACHED_DATASETS = 8
CACHED_BYTES = 64 * 1024 * 1024  # larger datasets are not kept


def dataset_source(session, context) -> tuple:
    """What ``load_dataset`` needs of a run's dataset (``context``: its
    store_runs.ClaimContext), read in the claim's transaction: its cache key, and its data
    unless this process has it already."""
    key = (context.dataset_id, context.content_hash)
    return key, None if key in _DATASETS else store_runs.dataset_data(session, key[0])


def load_dataset(key, data) -> tuple:
    """(X, y) of a stored dataset from this process's cache or its ``data``; callers must
    not modify them. Data whose arrays do not have the dataset's content hash (the one
    each run records in its environment) is refused with ValueError."""
    if data is None and key in _DATASETS:
        _DATASETS.move_to_end(key)
        return _DATASETS[key]
    X, y = dataset_arrays_from(data)
    if content_hash(X, y) != key[1]:  # once per decompression: about 1 s per GB
        raise ValueError("its arrays do not match its content hash")
    if X.nbytes + y.nbytes <= CACHED_BYTES:
        _DATASETS[key] = (X, y)
        while len(_DATASETS) > CACHED_DATASETS:
            _DATASETS.popitem(last=False)
    return X, y


def training_rows(n: int, fraction: float) -> int:
    """How many of a dataset's ``n`` rows a run with ``validation_split`` = ``fraction``
    trains on (split_validation keeps the other floor(n * fraction) for validation)."""
    return n - int(math.floor(n * fraction))


def split_validation(X, y, fraction: float, seed: int):
    """(X_train, y_train, validation or None): the validation rows are the last
    floor(n * fraction) of numpy's default_rng(seed).permutation(n); both parts keep the
    dataset's order."""
    n = X.shape[0]
    n_val = n - training_rows(n, fraction)
    if n_val == 0:
        return X, y, None
    order = np.random.default_rng(seed).permutation(n)
    train_rows, val_rows = np.sort(order[:n - n_val]), np.sort(order[n - n_val:])
    return X[train_rows], y[train_rows], (X[val_rows], y[val_rows])


# Splits of cached datasets by (dataset key, fraction, seed): a sweep's runs usually share
# one, and a worker then splits its dataset once, not once per run.
_SPLITS: "OrderedDict[tuple, tuple]" = OrderedDict()
CACHED_SPLITS = 4


def split_for_run(key: tuple, X, y, fraction: float, seed: int):
    """split_validation of the dataset ``key`` loaded by ``load_dataset``, from this
    process's cache when it is small enough to be cached itself; callers must not modify
    the arrays."""
    if key not in _DATASETS:
        return split_validation(X, y, fraction, seed)
    split_key = (key, fraction, seed)
    if split_key in _SPLITS:
        _SPLITS.move_to_end(split_key)
    else:
        _SPLITS[split_key] = split_validation(X, y, fraction, seed)
        while len(_SPLITS) > CACHED_SPLITS:
            _SPLITS.popitem(last=False)
    return _SPLITS[split_key]


def _fail(sessions, run_id: int, attempt: int, message: str, sweep_id: Optional[int],
          enqueue: Optional[Enqueue]) -> str:
    to_send = []
    with sessions() as session:
        store_runs.finish_run(session, run_id, "failed", message[:4000], attempt=attempt)
        if sweep_id is not None:
            to_send = store_sweeps.run_ended(session, sweep_id)
        session.commit()
    send_runs(to_send, enqueue, sessions)
    return "failed"


class ClaimInterrupted(Exception):
    """The database failed while a delivery held claim ``attempt`` of a run (raised from
    that error). The delivery has stopped training and its heartbeat; its retry passes
    ``attempt`` back to execute_run as ``resume_attempt`` so that whichever worker gets it
    takes the run over at once instead of waiting for the claim to go stale."""

    def __init__(self, attempt: int):
        super().__init__(f"database error during attempt {attempt}")
        self.attempt = attempt


class Claim(NamedTuple):
    """What training a claimed run needs, read in its claim's transaction."""

    attempt: int
    spec: dict
    source: tuple  # see dataset_source
    stopping: Optional[tuple]  # (early stopping, metric) of the run's sweep
    sweep_id: Optional[int]


def _planned_blas_threads(context, run_threads_n: int) -> Optional[int]:
    """The BLAS threads the claimed run will train with (run_blas_threads on its training
    rows), or None when its spec cannot say (the run then fails in training, as it would)."""
    try:
        arguments = {**train_arguments(context.spec), "threads": run_threads_n}
        rows = training_rows(context.dataset_rows,
                             context.spec.get("validation_split", 0.0))
        return run_blas_threads(arguments, rows)
    except (KeyError, TypeError, ValueError):
        return None


def _claim(sessions, run_id: int, enqueue: Optional[Enqueue], timings: ReaperSettings,
           threads: Threads, resume_attempt: Optional[int]) -> Union[Claim, str]:
    """Claim the run for this delivery, or the string execute_run returns when it is not
    this delivery's to train."""
    with sessions() as session:
        # What the run trains on and where, read first in the claim's transaction: the
        # claim records its environment itself (fenced like every other write of the worker).
        context = store_runs.claim_context(session, run_id)
        if context is None:
            return "missing"
        run_threads_n = run_threads(context.spec, threads)
        environment = run_environment(
            context.spec.get("dtype"), context.dataset_id, context.dataset_name,
            context.content_hash, threads=run_threads_n,
            blas_threads=_planned_blas_threads(context, run_threads_n))
        needs = {}

        def read_needs(session, run):  # once claimed, still in the claim's transaction
            needs["source"] = dataset_source(session, context)

        # The usual case, a queued run, in one statement; then redeliveries.
        run = store_runs.claim_run(session, run_id, worker_name(), states=("queued",),
                                   max_attempts=timings.max_attempts,
                                   before_commit=read_needs, environment=environment,
                                   exhausted=context.attempts >= timings.max_attempts,
                                   entity=False)
        if run is None:
            current = store_runs.get_run(session, run_id)
            if current is None:
                return "missing"
            session.refresh(current)
            if (current.status == "running" and not current.cancel_requested
                    and current.attempts != resume_attempt  # its owner gave it up
                    and owner_alive(session, current, timings.stale_seconds)):
                return "busy"
            # Claim the run as seen: a competing claim since then makes this one fail.
            run = store_runs.claim_run(session, run_id, worker_name(),
                                       attempts=current.attempts,
                                       max_attempts=timings.max_attempts,
                                       before_commit=read_needs, environment=environment,
                                       entity=False)
            if run is None:
                session.refresh(current)
                if current.status in store_runs.FINAL_STATES:
                    session.close()
                    sweep_run_ended(sessions, current.sweep_id, enqueue)
                return current.status
        stopping = ((context.early_stopping, context.metric)
                    if context.early_stopping else None)
        return Claim(run.attempts, dict(context.spec), needs["source"], stopping, run.sweep_id)


def execute_run(sessions, run_id: int, enqueue: Optional[Enqueue] = None,
                timings: ReaperSettings = ReaperSettings(), threads: Threads = Threads(),
                resume_attempt: Optional[int] = None) -> str:
    """Train run ``run_id`` if it is queued (or was being trained by a lost worker) and
    record its history, parameters and final state. Never raises for a bad run: that run
    ends ``failed``. ``enqueue(run_id)`` sends the runs a sweep dispatches when this one
    ends (None: they are left for the reaper to send).

    Returns the final state, or what made it skip: the run's state when it is not this
    delivery's to train, "missing", "busy" when another worker is still training it (see
    ``owner_alive``, with ``timings.stale_seconds``; 0 takes over any running run; a
    duplicate delivery, e.g. after a Redis visibility timeout, does nothing, and should
    that worker die the reaper requeues the run), or "superseded" when another claim of the
    run took over while this one trained (this one then wrote nothing more). A run already
    claimed ``timings.max_attempts`` times (its earlier deliveries died with their process)
    ends ``failed`` "worker lost (N attempts)" instead of training again. The heartbeat
    beats every ``timings.heartbeat_seconds``. The run trains with ``run_threads`` threads
    (its spec's ``threads`` within ``threads.cap``), recorded in its environment.

    A database error raises: before the claim, as it is; after it, as ClaimInterrupted
    with the claim's attempt, which the retry passes back as ``resume_attempt`` (a run
    still running under that attempt is then taken over, its owner alive or not).
    """
    claimed = _claim(sessions, run_id, enqueue, timings, threads, resume_attempt)
    if isinstance(claimed, str):
        return claimed
    try:
        return _train_claimed(sessions, run_id, claimed, enqueue, timings, threads)
    except (OperationalError, InterfaceError) as exc:
        raise ClaimInterrupted(claimed.attempt) from exc


def _train_claimed(sessions, run_id: int, claimed: Claim, enqueue: Optional[Enqueue],
                   timings: ReaperSettings, threads: Threads) -> str:
    """execute_run's work once the run is claimed."""
    attempt, spec, source, stopping, sweep_id = claimed
    try:  # decompressed with no transaction open (on SQLite one holds the write lock)
        X, y = load_dataset(*source)
    except Exception as exc:
        log.exception("run %s: dataset %s unreadable", run_id, source[0][0])
        return _fail(sessions, run_id, attempt,
                     f"dataset unreadable: {type(exc).__name__}: {exc}", sweep_id, enqueue)
    writer = HistoryWriter(sessions, run_id, attempt, sweep_id,
                           stopping[0] if stopping else None,
                           stopping[1] if stopping else "error", spec["epochs"],
                           retry_seconds=timings.stale_seconds,
                           plateau=spec.get("stop_on_plateau"))
    try:
        X_train, y_train, validation = split_for_run(
            source[0], X, y, spec.get("validation_split", 0.0), spec["seed"])
        arguments = {**train_arguments(spec), "threads": run_threads(spec, threads)}
        with Heartbeat(sessions, run_id, attempt, timings.heartbeat_seconds), \
                training_blas_threads(arguments, len(X_train)):
            engine = choose_engine(spec, len(X_train),
                                   0 if validation is None else len(validation[0]), run_id)
            result = kernels.train(X_train, y_train, callback=writer, validation=validation,
                                   checkpoints=writer.rungs or None, engine=engine,
                                   **arguments)
    except store_runs.LostRun:
        log.warning("run %s: attempt %s was superseded by a later claim", run_id, attempt)
        return "superseded"
    except (OperationalError, InterfaceError):
        raise  # the database, not the run: execute_run raises ClaimInterrupted
    except Exception as exc:  # a bad spec or data that slipped through: the run fails
        log.exception("run %s failed", run_id)
        return _fail(sessions, run_id, attempt, f"{type(exc).__name__}: {exc}", sweep_id,
                     enqueue)
    writer.catch_up(result)
    stop_reason = result.stop_reason
    if result.diverged:
        status = "diverged"
    elif stop_reason == "plateau":  # it ended by its own rule (whatever else asked it to)
        status = "succeeded"
    elif result.stopped:
        status = "stopped_early" if writer.stopped_early else "cancelled"
    else:
        status = "succeeded"
    writer.ended(stop_reason if status == "succeeded" else None, result.best_epoch)
    # Compressed before the transaction: on SQLite it holds the database's write lock.
    # (With restore_best, kernels.train's final parameters are those of the best epoch.)
    params = {"initial": (spec["dtype"], params_to_npz(result.initial_params)),
              "final": (spec["dtype"], params_to_npz(result.params))}
    try:
        to_send = writer.finish(status, "training diverged (non-finite error)"
                                if result.diverged else None, params)
    except store_runs.LostRun:
        log.warning("run %s: attempt %s was superseded by a later claim", run_id, attempt)
        return "superseded"
    send_runs(to_send, enqueue, sessions)
    return status

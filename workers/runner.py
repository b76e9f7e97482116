"""Run one stored run: load its spec and data, train chunk by chunk, record everything."""

import logging
import math
import os
import socket
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Optional

import numpy as np
from sqlalchemy.exc import InterfaceError, OperationalError

import kernels
from service.store import runs as store_runs
from service.store.arrays import params_to_npz
from service.store.datasets import dataset_arrays_from

log = logging.getLogger(__name__)

# The numeric fields of a run spec, which kernels.train takes as they are.
KERNEL_FIELDS = ("layers", "activation", "output_activation", "loss", "learning_rate",
                 "batch_mode", "batch_size", "epochs", "seed", "shuffle", "init", "dtype")
# History is written at most this often (and once at the end), not once per epoch.
FLUSH_SECONDS = 0.5
# A running run whose worker has written nothing for this long is taken over by another
# delivery of its task; a worker writes at every flush, so at least every FLUSH_SECONDS or
# every epoch, whichever is longer.
STALE_SECONDS = float(os.environ.get("DESCENT_STALE_SECONDS", "60"))


def worker_name() -> str:
    """host:pid of this worker process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def split_validation(X, y, fraction: float, seed: int):
    """(X_train, y_train, validation or None): the validation rows are the last
    floor(n * fraction) of numpy's default_rng(seed).permutation(n); both parts keep the
    dataset's order."""
    n = X.shape[0]
    n_val = int(math.floor(n * fraction))
    if n_val == 0:
        return X, y, None
    order = np.random.default_rng(seed).permutation(n)
    train_rows, val_rows = np.sort(order[:n - n_val]), np.sort(order[n - n_val:])
    return X[train_rows], y[train_rows], (X[val_rows], y[val_rows])


class HistoryWriter:
    """Collects each chunk's new epochs and writes them in batches with the run's summary.

    Rows are written at most every FLUSH_SECONDS (and whatever is left, in the same
    transaction as the final state), so a short run costs two transactions in all: its
    claim and its end. Each write also tells whether a cancel was requested."""

    def __init__(self, sessions, run_id: int, attempt: Optional[int] = None):
        self.sessions = sessions
        self.run_id = run_id
        self.attempt = attempt
        self.pending: list[dict] = []
        self.started = time.perf_counter()
        self.last_flush = self.started
        self.best = (math.inf, None)
        self.last = {}
        self.next_epoch = 0  # the first epoch not yet collected
        self.epochs_done = 0
        self.cancel_requested = False

    def add(self, epoch: int, error, accuracy=None, val_error=None, val_accuracy=None,
            seconds: Optional[float] = None) -> None:
        """Collect one epoch's row."""
        row = {"run_id": self.run_id, "epoch": epoch, "error": float(error),
               "seconds": time.perf_counter() - self.started if seconds is None else seconds}
        if accuracy is not None:
            row["accuracy"] = float(accuracy)
        if val_error is not None:
            row["val_error"] = float(val_error)
        if val_accuracy is not None:
            row["val_accuracy"] = float(val_accuracy)
        if math.isfinite(row["error"]) and row["error"] < self.best[0]:
            self.best = (row["error"], epoch)
        self.last = row
        self.pending.append(row)
        self.next_epoch = epoch + 1

    def __call__(self, progress) -> bool:
        """The kernels.train callback: returns True to stop (a cancel was requested).
        Raises store_runs.LostRun when another claim of the run has taken over."""
        seconds = time.perf_counter() - self.started
        for k, error in enumerate(progress.errors):
            self.add(progress.first_epoch + k, error,
                     None if progress.accuracy is None else progress.accuracy[k],
                     None if progress.val_errors is None else progress.val_errors[k],
                     None if progress.val_accuracy is None else progress.val_accuracy[k],
                     seconds)
        self.epochs_done = progress.epochs_done
        if time.perf_counter() - self.last_flush >= FLUSH_SECONDS:
            self.flush()
        return self.cancel_requested

    def catch_up(self, result) -> None:
        """Collect the epochs of a finished ``train`` the callback has not seen (when a
        cancel stops a full-batch run in dataset order, its last epoch is evaluated after
        the last callback)."""
        for epoch in range(self.next_epoch, len(result.errors)):
            self.add(epoch, result.errors[epoch],
                     None if result.accuracy is None else result.accuracy[epoch],
                     None if result.val_errors is None else result.val_errors[epoch],
                     None if result.val_accuracy is None else result.val_accuracy[epoch])
        self.epochs_done = result.epochs_done

    def summary(self) -> dict:
        summary = {"epochs_done": self.epochs_done}
        if self.last:
            summary.update(final_error=self.last["error"],
                           final_accuracy=self.last.get("accuracy"),
                           final_val_error=self.last.get("val_error"),
                           best_error=self.best[0] if self.best[1] is not None else None,
                           best_epoch=self.best[1])
        return summary

    def flush(self) -> None:
        """Write the collected rows and the summary (one transaction) and learn whether a
        cancel was requested."""
        with self.sessions() as session:
            self.cancel_requested = store_runs.record_progress(
                session, self.run_id, self.pending, self.summary(), self.attempt)
        self.pending = []
        self.last_flush = time.perf_counter()

    def finish(self, status: str, error_message=None, params=None) -> None:
        """Write the last rows, the summary, the final state and ``params`` in one
        transaction."""
        with self.sessions() as session:
            store_runs.complete_run(session, self.run_id, self.attempt, self.pending,
                                    self.summary(), status, error_message, params)
        self.pending = []


# Datasets recently trained on by this process, by (id, content hash): a stored dataset
# never changes, so a worker decompresses each one once, not once per run.
_DATASETS: "OrderedDict[tuple, tuple]" = OrderedDict()
CACHED_DATASETS = 8
CACHED_BYTES = 64 * 1024 * 1024  # larger datasets are not kept


def dataset_source(dataset):
    """What ``load_dataset`` needs of a stored dataset, read while its session is open: its
    cache key, and its data unless this process has it already."""
    key = (dataset.id, dataset.content_hash)
    return key, None if key in _DATASETS else dataset.data


def load_dataset(key, data) -> tuple:
    """(X, y) of a stored dataset from this process's cache or its ``data``; callers must
    not modify them."""
    if data is None and key in _DATASETS:
        _DATASETS.move_to_end(key)
        return _DATASETS[key]
    X, y = dataset_arrays_from(data)
    if X.nbytes + y.nbytes <= CACHED_BYTES:
        _DATASETS[key] = (X, y)
        while len(_DATASETS) > CACHED_DATASETS:
            _DATASETS.popitem(last=False)
    return X, y


def _fail(sessions, run_id: int, attempt: int, message: str) -> str:
    with sessions() as session:
        store_runs.finish_run(session, run_id, "failed", message[:4000], attempt=attempt)
        session.commit()
    return "failed"


def owner_alive(run, stale_seconds: float = STALE_SECONDS) -> bool:
    """Whether the worker that claimed a running run may still be training it: a process of
    this host that no longer exists (or this very process, which trains one run at a time)
    is not; elsewhere, one whose last write is older than ``stale_seconds`` is not."""
    host, _, pid = (run.worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    heartbeat = run.heartbeat_at
    if heartbeat is None:
        return False
    if heartbeat.tzinfo is None:  # SQLite keeps no zone; the store writes UTC
        heartbeat = heartbeat.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - heartbeat).total_seconds() < stale_seconds


def execute_run(sessions, run_id: int, stale_seconds: Optional[float] = STALE_SECONDS) -> str:
    """Train run ``run_id`` if it is queued (or was being trained by a lost worker) and
    record its history, parameters and final state. Never raises for a bad run: that run
    ends ``failed``.

    Returns the final state, or what made it skip: the run's state when it is not this
    delivery's to train, "missing", "busy" when another worker is still training it (see
    ``owner_alive``; a duplicate delivery, e.g. after a Redis visibility timeout: try again
    later), or "superseded" when another claim of the run took over while this one trained
    (this one then wrote nothing more). ``stale_seconds=None`` takes over any running run.
    """
    with sessions() as session:
        # The usual case, a queued run, in one statement; then redeliveries.
        run = store_runs.claim_run(session, run_id, worker_name(), states=("queued",))
        if run is None:
            current = store_runs.get_run(session, run_id)
            if current is None:
                return "missing"
            session.refresh(current)
            if (stale_seconds is not None and current.status == "running"
                    and not current.cancel_requested and owner_alive(current, stale_seconds)):
                return "busy"
            # Claim the run as seen: a competing claim since then makes this one fail.
            run = store_runs.claim_run(session, run_id, worker_name(),
                                       attempts=current.attempts)
            if run is None:
                session.refresh(current)
                return current.status
        attempt = run.attempts
        spec = dict(run.spec)
        source = dataset_source(run.dataset)
    try:  # decompressed with no transaction open (on SQLite one holds the write lock)
        X, y = load_dataset(*source)
    except Exception as exc:
        log.exception("run %s: dataset %s unreadable", run_id, source[0][0])
        return _fail(sessions, run_id, attempt,
                     f"dataset unreadable: {type(exc).__name__}: {exc}")
    writer = HistoryWriter(sessions, run_id, attempt)
    try:
        X_train, y_train, validation = split_validation(
            X, y, spec.get("validation_split", 0.0), spec["seed"])
        result = kernels.train(X_train, y_train, callback=writer, validation=validation,
                               **{name: spec[name] for name in KERNEL_FIELDS})
    except store_runs.LostRun:
        log.warning("run %s: attempt %s was superseded by a later claim", run_id, attempt)
        return "superseded"
    except (OperationalError, InterfaceError):
        raise  # the database, not the run: workers.tasks tries again later
    except Exception as exc:  # a bad spec or data that slipped through: the run fails
        log.exception("run %s failed", run_id)
        return _fail(sessions, run_id, attempt, f"{type(exc).__name__}: {exc}")
    writer.catch_up(result)
    if result.diverged:
        status = "diverged"
    elif result.stopped:
        status = "cancelled"
    else:
        status = "succeeded"
    # Compressed before the transaction: on SQLite it holds the database's write lock.
    params = {"initial": (spec["dtype"], params_to_npz(result.initial_params)),
              "final": (spec["dtype"], params_to_npz(result.params))}
    try:
        writer.finish(status, "training diverged (non-finite error)" if result.diverged
                      else None, params)
    except store_runs.LostRun:
        log.warning("run %s: attempt %s was superseded by a later claim", run_id, attempt)
        return "superseded"
    return status

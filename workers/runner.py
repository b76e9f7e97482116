"""Run one stored run: load its spec and data, train chunk by chunk, record everything."""

import logging
import math
import os
import socket
import time

import numpy as np

import kernels
from service.store import runs as store_runs
from service.store.arrays import params_to_npz
from service.store.datasets import dataset_arrays

log = logging.getLogger(__name__)

# The numeric fields of a run spec, which kernels.train takes as they are.
KERNEL_FIELDS = ("layers", "activation", "output_activation", "loss", "learning_rate",
                 "batch_mode", "batch_size", "epochs", "seed", "shuffle", "init", "dtype")
# History is written at most this often (and once at the end), not once per epoch.
FLUSH_SECONDS = 0.5


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
    """Collects each chunk's new epochs and writes them in batches with the run's summary."""

    def __init__(self, sessions, run_id: int):
        self.sessions = sessions
        self.run_id = run_id
        self.pending: list[dict] = []
        self.started = time.perf_counter()
        self.last_flush = 0.0
        self.best = (math.inf, None)
        self.last = {}
        self.epochs_done = 0
        self.cancel_requested = False

    def __call__(self, progress) -> bool:
        """The kernels.train callback: returns True to stop (a cancel was requested)."""
        elapsed = time.perf_counter() - self.started
        for k, error in enumerate(progress.errors):
            row = {"run_id": self.run_id, "epoch": progress.first_epoch + k,
                   "error": float(error), "seconds": elapsed}
            if progress.accuracy is not None:
                row["accuracy"] = float(progress.accuracy[k])
            if progress.val_errors is not None:
                row["val_error"] = float(progress.val_errors[k])
            if progress.val_accuracy is not None:
                row["val_accuracy"] = float(progress.val_accuracy[k])
            if math.isfinite(error) and error < self.best[0]:
                self.best = (float(error), row["epoch"])
            self.last = row
            self.pending.append(row)
        self.epochs_done = progress.epochs_done
        if time.perf_counter() - self.last_flush >= FLUSH_SECONDS:
            self.flush()
        return self.cancel_requested

    def flush(self) -> None:
        """Write the collected rows and the summary; learn whether a cancel was requested."""
        summary = {"epochs_done": self.epochs_done}
        if self.last:
            summary.update(final_error=self.last["error"],
                           final_accuracy=self.last.get("accuracy"),
                           final_val_error=self.last.get("val_error"),
                           best_error=self.best[0] if self.best[1] is not None else None,
                           best_epoch=self.best[1])
        with self.sessions() as session:
            self.cancel_requested = store_runs.record_progress(
                session, self.run_id, self.pending, summary)
        self.pending = []
        self.last_flush = time.perf_counter()


def execute_run(sessions, run_id: int) -> str:
    """Train run ``run_id`` if it is queued (or was being trained by a lost worker) and
    record its history, parameters and final state. Returns the final state (or the state
    that made it skip). Never raises for a bad run: that run ends ``failed``."""
    with sessions() as session:
        run = store_runs.claim_run(session, run_id, worker_name())
        if run is None:
            current = store_runs.get_run(session, run_id)
            return current.status if current is not None else "missing"
        spec = dict(run.spec)
        X, y = dataset_arrays(run.dataset)
    writer = HistoryWriter(sessions, run_id)
    try:
        X_train, y_train, validation = split_validation(
            X, y, spec.get("validation_split", 0.0), spec["seed"])
        result = kernels.train(X_train, y_train, callback=writer, validation=validation,
                               **{name: spec[name] for name in KERNEL_FIELDS})
    except Exception as exc:  # a bad spec or data that slipped through: the run fails
        log.exception("run %s failed", run_id)
        with sessions() as session:
            store_runs.finish_run(session, run_id, "failed", f"{type(exc).__name__}: {exc}")
            session.commit()
        return "failed"
    writer.flush()
    if result.diverged:
        status = "diverged"
    elif result.stopped:
        status = "cancelled"
    else:
        status = "succeeded"
    with sessions() as session:
        store_runs.store_params(session, run_id, "initial", spec["dtype"],
                                params_to_npz(result.initial_params))
        store_runs.store_params(session, run_id, "final", spec["dtype"],
                                params_to_npz(result.params))
        store_runs.finish_run(session, run_id, status,
                              "training diverged (non-finite error)" if result.diverged else None)
        session.commit()
    return status

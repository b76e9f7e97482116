"""Run one stored run: load its spec and data, train chunk by chunk, record everything."""

import logging
import math
import os
import socket
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Optional

import numpy as np
from sqlalchemy.exc import InterfaceError, OperationalError

import kernels
from service.queue import TRAIN_RUN
from service.store import reaper
from service.store import runs as store_runs
from service.store import sweeps as store_sweeps
from service.store.arrays import params_to_npz
from service.store.datasets import dataset_arrays_from

log = logging.getLogger(__name__)

# The numeric fields of a run spec, which kernels.train takes as they are.
KERNEL_FIELDS = ("layers", "activation", "output_activation", "loss", "learning_rate",
                 "batch_mode", "batch_size", "epochs", "seed", "shuffle", "init", "dtype")
# History is written at most this often (and once at the end), not once per epoch.
FLUSH_SECONDS = 0.5
# A running run whose worker has not beaten for this long is taken over by another delivery
# of its task or by the reaper (service.store.reaper); a Heartbeat thread beats every
# HEARTBEAT_SECONDS while a run trains.
STALE_SECONDS = reaper.STALE_SECONDS
HEARTBEAT_SECONDS = reaper.HEARTBEAT_SECONDS
MAX_ATTEMPTS = reaper.MAX_ATTEMPTS


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

    def __init__(self, sessions, run_id: int, attempt: Optional[int] = None,
                 sweep_id: Optional[int] = None, early_stopping: Optional[dict] = None,
                 metric: str = "error", epochs: int = 0):
        self.sessions = sessions
        self.run_id = run_id
        self.attempt = attempt
        # Successive halving: the rung epochs still ahead, and whether a rung cut this run.
        self.sweep_id = sweep_id
        self.early_stopping = early_stopping
        self.metric = metric
        self.rungs = store_sweeps.rungs(early_stopping, epochs) if early_stopping else []
        self.stopped_early = False
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
        last = progress.first_epoch + len(progress.errors) - 1
        if self.rungs and self.rungs[0] <= last and not progress.diverged:
            return self.rung_reached(progress, last)
        if time.perf_counter() - self.last_flush >= FLUSH_SECONDS:
            self.flush()
        return self.cancel_requested

    def rung_reached(self, progress, last: int) -> bool:
        """At a rung (kernels.train ends a chunk exactly there, see ``checkpoints``): write
        the history so far, record the run's metric at the rung and stop the run unless it
        is in the top 1/reduction_factor of the runs recorded there so far."""
        rung = self.rungs.pop(0)
        while self.rungs and self.rungs[0] <= last:
            self.rungs.pop(0)
        k = rung - progress.first_epoch
        values = progress.errors
        if self.metric == "val_error" and progress.val_errors is not None:
            values = progress.val_errors
        value = float(values[k]) if 0 <= k < len(values) else float(self.last["error"])
        self.flush()
        if self.cancel_requested:
            return True
        with self.sessions() as session:
            promoted = store_sweeps.record_rung(
                session, self.sweep_id, rung, self.run_id,
                value if math.isfinite(value) else None,
                self.early_stopping["reduction_factor"])
            session.commit()
        if not promoted:
            self.stopped_early = True
            return True
        return False

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

    def finish(self, status: str, error_message=None, params=None) -> list[int]:
        """Write the last rows, the summary, the final state and ``params`` in one
        transaction; for a sweep's run, that transaction also dispatches the sweep's next
        waiting cells, whose run ids are returned (to enqueue after the commit)."""
        to_send: list[int] = []
        hook = None
        if self.sweep_id is not None:
            def hook(session):
                to_send.extend(store_sweeps.run_ended(session, self.sweep_id))
        with self.sessions() as session:
            store_runs.complete_run(session, self.run_id, self.attempt, self.pending,
                                    self.summary(), status, error_message, params,
                                    before_commit=hook)
        self.pending = []
        return to_send


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


def send_task(run_id: int) -> None:
    """Send train_run(run_id) by name through the workers' Celery app."""
    from workers.celery_app import app

    app.send_task(TRAIN_RUN, args=[run_id])


def send_runs(run_ids, enqueue=None, sessions=None) -> None:
    """Enqueue train_run for each of ``run_ids`` (a sweep's next cells) with ``enqueue``
    (default: ``send_task``) and, given ``sessions``, record them as sent. A send that
    fails leaves its run unsent, which the reaper sends later."""
    if not run_ids:
        return
    sent = []
    for run_id in run_ids:
        try:
            (enqueue or send_task)(run_id)
        except Exception:
            log.exception("sweep run %s could not be enqueued (the reaper sends it later)",
                          run_id)
        else:
            sent.append(run_id)
    if sessions is not None and sent:
        with sessions() as session:
            store_runs.mark_enqueued(session, sent)


class Heartbeat:
    """A thread that refreshes a running run's heartbeat every ``seconds`` while this
    process trains it (kernels release the GIL), however long an epoch takes; it stops by
    itself once the run is no longer this attempt's."""

    def __init__(self, sessions, run_id: int, attempt: int,
                 seconds: float = HEARTBEAT_SECONDS):
        self.sessions, self.run_id, self.attempt, self.seconds = (
            sessions, run_id, attempt, seconds)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True,
                                       name=f"heartbeat-{run_id}")

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)  # a beat after the run ended changes nothing

    def _beat(self) -> None:
        while not self.stopped.wait(self.seconds):
            try:
                with self.sessions() as session:
                    if not store_runs.beat(session, self.run_id, self.attempt):
                        return
            except Exception as exc:  # the database is away: beat again later
                log.warning("run %s: heartbeat failed: %s", self.run_id, exc)


def _fail(sessions, run_id: int, attempt: int, message: str, sweep_id=None,
          enqueue=None) -> str:
    to_send = []
    with sessions() as session:
        store_runs.finish_run(session, run_id, "failed", message[:4000], attempt=attempt)
        if sweep_id is not None:
            to_send = store_sweeps.run_ended(session, sweep_id)
        session.commit()
    send_runs(to_send, enqueue, sessions)
    return "failed"


def _sweep_run_ended(sessions, sweep_id, enqueue=None) -> None:
    """A sweep's run ended without this delivery training it (cancelled before its claim):
    free its slot."""
    if sweep_id is None:
        return
    with sessions() as session:
        to_send = store_sweeps.run_ended(session, sweep_id)
        session.commit()
    send_runs(to_send, enqueue, sessions)


def owner_alive(run, stale_seconds: float = STALE_SECONDS) -> bool:
    """Whether the worker that claimed a running run may still be training it: a process of
    this host that no longer exists (or this very process, which trains one run at a time)
    is not; elsewhere, one whose last heartbeat is older than ``stale_seconds`` is not."""
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


def execute_run(sessions, run_id: int, stale_seconds: Optional[float] = STALE_SECONDS,
                enqueue=None, max_attempts: Optional[int] = None,
                heartbeat_seconds: Optional[float] = None) -> str:
    """Train run ``run_id`` if it is queued (or was being trained by a lost worker) and
    record its history, parameters and final state. Never raises for a bad run: that run
    ends ``failed``.

    Returns the final state, or what made it skip: the run's state when it is not this
    delivery's to train, "missing", "busy" when another worker is still training it (see
    ``owner_alive``; a duplicate delivery, e.g. after a Redis visibility timeout: it does
    nothing, and should that worker die the reaper requeues the run), or "superseded" when
    another claim of the run took over while this one trained (this one then wrote nothing
    more). ``stale_seconds=None`` takes over any running run. A run already claimed
    ``max_attempts`` times (default MAX_ATTEMPTS: its earlier deliveries died with their
    process) ends ``failed`` "worker lost (N attempts)" instead of training again.
    """
    max_attempts = MAX_ATTEMPTS if max_attempts is None else max_attempts
    needs = {}

    def read_needs(session, run):  # in the claim's transaction
        needs["source"] = dataset_source(run.dataset)
        needs["stopping"] = (store_sweeps.early_stopping_of(session, run.sweep_id)
                             if run.sweep_id else None)

    with sessions() as session:
        # The usual case, a queued run, in one statement; then redeliveries.
        run = store_runs.claim_run(session, run_id, worker_name(), states=("queued",),
                                   max_attempts=max_attempts, before_commit=read_needs)
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
                                       attempts=current.attempts, max_attempts=max_attempts,
                                       before_commit=read_needs)
            if run is None:
                session.refresh(current)
                if current.status in store_runs.FINAL_STATES:
                    session.close()
                    _sweep_run_ended(sessions, current.sweep_id, enqueue)
                return current.status
        attempt = run.attempts
        spec = dict(run.spec)
        source, stopping = needs["source"], needs["stopping"]
        sweep_id = run.sweep_id
    try:  # decompressed with no transaction open (on SQLite one holds the write lock)
        X, y = load_dataset(*source)
    except Exception as exc:
        log.exception("run %s: dataset %s unreadable", run_id, source[0][0])
        return _fail(sessions, run_id, attempt,
                     f"dataset unreadable: {type(exc).__name__}: {exc}", sweep_id, enqueue)
    writer = HistoryWriter(sessions, run_id, attempt, sweep_id,
                           stopping[0] if stopping else None,
                           stopping[1] if stopping else "error", spec["epochs"])
    try:
        X_train, y_train, validation = split_validation(
            X, y, spec.get("validation_split", 0.0), spec["seed"])
        with Heartbeat(sessions, run_id, attempt, heartbeat_seconds or HEARTBEAT_SECONDS):
            result = kernels.train(X_train, y_train, callback=writer, validation=validation,
                                   checkpoints=writer.rungs or None,
                                   **{name: spec[name] for name in KERNEL_FIELDS})
    except store_runs.LostRun:
        log.warning("run %s: attempt %s was superseded by a later claim", run_id, attempt)
        return "superseded"
    except (OperationalError, InterfaceError):
        raise  # the database, not the run: workers.tasks tries again later
    except Exception as exc:  # a bad spec or data that slipped through: the run fails
        log.exception("run %s failed", run_id)
        return _fail(sessions, run_id, attempt, f"{type(exc).__name__}: {exc}", sweep_id,
                     enqueue)
    writer.catch_up(result)
    if result.diverged:
        status = "diverged"
    elif result.stopped:
        status = "stopped_early" if writer.stopped_early else "cancelled"
    else:
        status = "succeeded"
    # Compressed before the transaction: on SQLite it holds the database's write lock.
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

"""A run's history as it trains: each chunk's epochs collected and written in batches with
the run's summary, the rungs of successive halving, and the final write."""

import logging
import math
import time
from typing import Optional

import numpy as np
from sqlalchemy.exc import InterfaceError, OperationalError

from service.store import runs as store_runs
from service.store import sweeps as store_sweeps

# History is written at most this often (and once at the end), not once per epoch.
FLUSH_SECONDS = 0.5

log = logging.getLogger(__name__)


def evaluated_epochs(history) -> np.ndarray:
    """The epoch of each row of a kernels Progress or TrainResult (``epochs_evaluated``;
    consecutive from ``first_epoch`` or 0 when it has none)."""
    epochs = getattr(history, "epochs_evaluated", None)
    if epochs is not None:
        return np.asarray(epochs)
    return np.arange(getattr(history, "first_epoch", 0),
                     getattr(history, "first_epoch", 0) + len(history.errors))


class HistoryWriter:
    """Collects each chunk's new epochs and writes them in batches with the run's summary.

    Rows are written at most every FLUSH_SECONDS (and whatever is left, in the same
    transaction as the final state), so a short run costs two transactions in all: its
    claim and its end. Each write also tells whether a cancel was requested.

    A write the database did not take (its connection lost) keeps its rows for the next
    one, for up to ``retry_seconds`` after the last write it took; past that (the run has
    been taken back by then: give ``retry_seconds`` the stale interval) it raises. Since a
    lost connection may have lost only the answer to a COMMIT that took effect, the next
    write replaces whatever of its rows is stored."""

    def __init__(self, sessions, run_id: int, attempt: Optional[int] = None,
                 sweep_id: Optional[int] = None, early_stopping: Optional[dict] = None,
                 metric: str = "error", epochs: int = 0, retry_seconds: float = 0.0,
                 plateau: Optional[dict] = None):
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
        self.retry_seconds = retry_seconds
        self.last_written = self.started  # the last write the database took
        self.unsure = False  # whether the last write failed (some of it may have landed)
        self.best = (math.inf, None)
        # stop_on_plateau's best epoch as its rule finds it (kernels.train's own, once known)
        self.plateau = plateau
        self.plateau_best = (math.nan, None)
        self.stop_reason = None
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
        if self.plateau is not None:
            self.track_plateau(epoch, row.get(self.plateau.get("metric", "val_error")))
        self.last = row
        self.pending.append(row)
        self.next_epoch = epoch + 1

    def track_plateau(self, epoch: int, value) -> None:
        """Follow stop_on_plateau's best epoch (API.md 1b): epoch 0's value starts it; a
        later one is better if below the best by more than min_delta; NaN never is."""
        best, best_epoch = self.plateau_best
        if best_epoch is None:
            self.plateau_best = (math.nan if value is None else value, epoch)
        elif value is not None and value < best - self.plateau.get("min_delta", 0.0):
            self.plateau_best = (value, epoch)

    def __call__(self, progress) -> bool:
        """The kernels.train callback: returns True to stop (a cancel was requested).
        Raises store_runs.LostRun when another claim of the run has taken over."""
        seconds = time.perf_counter() - self.started
        epochs = evaluated_epochs(progress)
        for k, error in enumerate(progress.errors):
            self.add(int(epochs[k]), error,
                     None if progress.accuracy is None else progress.accuracy[k],
                     None if progress.val_errors is None else progress.val_errors[k],
                     None if progress.val_accuracy is None else progress.val_accuracy[k],
                     seconds)
        self.epochs_done = progress.epochs_done
        last = int(epochs[-1]) if len(epochs) else progress.first_epoch - 1
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
        at = np.flatnonzero(evaluated_epochs(progress) == rung)
        values = progress.errors
        if self.metric == "val_error" and progress.val_errors is not None:
            values = progress.val_errors
        value = float(values[at[0]]) if len(at) else float(self.last["error"])
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
        the last callback; with eval_every, the last epoch run when a cancel stops it off
        the schedule)."""
        for k, epoch in enumerate(evaluated_epochs(result)):
            if epoch < self.next_epoch:
                continue
            self.add(int(epoch), result.errors[k],
                     None if result.accuracy is None else result.accuracy[k],
                     None if result.val_errors is None else result.val_errors[k],
                     None if result.val_accuracy is None else result.val_accuracy[k])
        self.epochs_done = result.epochs_done

    def ended(self, stop_reason: Optional[str], best_epoch: Optional[int]) -> None:
        """What kernels.train said when it returned: why it stopped, and stop_on_plateau's
        best epoch (None without one)."""
        self.stop_reason = stop_reason
        if self.plateau is not None and best_epoch is not None:
            self.plateau_best = (math.nan, int(best_epoch))

    def summary(self) -> dict:
        """The run's columns that follow its history: epochs done, final and best error,
        and with stop_on_plateau its best epoch and why it stopped."""
        summary = {"epochs_done": self.epochs_done, "stop_reason": self.stop_reason}
        if self.last:
            summary.update(final_error=self.last["error"],
                           final_accuracy=self.last.get("accuracy"),
                           final_val_error=self.last.get("val_error"),
                           best_error=self.best[0] if self.best[1] is not None else None,
                           best_epoch=(self.plateau_best[1] if self.plateau is not None
                                       else self.best[1]))
        return summary

    def flush(self) -> None:
        """Write the collected rows and the summary (one transaction) and learn whether a
        cancel was requested; a write the database did not take is tried again at the next
        flush, within ``retry_seconds`` (see the class)."""
        try:
            with self.sessions() as session:
                self.cancel_requested = store_runs.record_progress(
                    session, self.run_id, self.pending, self.summary(), self.attempt,
                    rewrite=self.unsure)
        except (OperationalError, InterfaceError) as exc:
            now = time.perf_counter()
            if now - self.last_written >= self.retry_seconds:
                raise
            log.warning("run %s: history write failed, its %d rows kept for the next: %s",
                        self.run_id, len(self.pending), exc)
            self.unsure = True
            self.last_flush = now
            return
        self.pending = []
        self.unsure = False
        self.last_flush = self.last_written = time.perf_counter()

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
                                    before_commit=hook, rewrite=self.unsure)
        self.pending = []
        return to_send

"""``train``: the validated public entry point over the jitted epoch loops."""

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import _engine as E
from . import knobs
from .init import init_params
from .names import DEFAULTS
from .network import Network, pack, unpack
from .validation import (
    check_callback,
    check_checkpoints,
    check_inputs,
    check_network,
    check_params,
    check_targets,
    check_training,
    check_validation_set,
)


@dataclass
class Progress:
    """What a callback sees after each chunk of epochs: the epochs whose errors became known
    since the last call, starting at ``first_epoch`` (0 on the first call). In full-batch
    mode without shuffling an epoch's error is known one step later, so these may trail
    ``epochs_done`` by one."""

    first_epoch: int
    epochs_done: int
    errors: np.ndarray
    accuracy: Optional[np.ndarray]
    diverged: bool
    seconds: float
    val_errors: Optional[np.ndarray] = None
    val_accuracy: Optional[np.ndarray] = None


@dataclass
class TrainResult:
    """Outcome of ``train``: per-epoch history (epoch 0 included) and parameters."""

    errors: np.ndarray
    accuracy: Optional[np.ndarray]
    initial_params: dict
    params: dict
    diverged: bool
    stopped: bool
    epochs_done: int
    val_errors: Optional[np.ndarray] = None
    val_accuracy: Optional[np.ndarray] = None


def batch_rows(batch_mode: str, batch_size: int, n: int) -> int:
    """Rows per training batch for a batch mode."""
    if batch_mode == "sgd":
        return 1
    if batch_mode == "full":
        return n
    return min(batch_size, n)


def train(
    X,
    y,
    *,
    layers,
    activation=DEFAULTS["activation"],
    output_activation=DEFAULTS["output_activation"],
    loss=DEFAULTS["loss"],
    learning_rate=DEFAULTS["learning_rate"],
    batch_mode=DEFAULTS["batch_mode"],
    batch_size=DEFAULTS["batch_size"],
    epochs=DEFAULTS["epochs"],
    seed=DEFAULTS["seed"],
    shuffle=DEFAULTS["shuffle"],
    init=DEFAULTS["init"],
    dtype=DEFAULTS["dtype"],
    params=None,
    callback: Optional[Callable[[Progress], Optional[bool]]] = None,
    validation=None,
    checkpoints=None,
) -> TrainResult:
    """Train a fully connected network by gradient descent, as API.md section 1 defines.

    Keyword arguments are the numeric fields of the run spec, plus ``params`` (initial
    parameters, overriding ``init``) and ``callback``, called with a ``Progress`` between
    chunks of epochs (each a few tens of milliseconds); it returns True to stop training.
    ``validation=(X_val, y_val)`` records the error (and accuracy) on those rows after every
    epoch as ``val_errors`` (``val_accuracy``); they take no part in training.
    ``checkpoints``: epochs at which a chunk must end, so the callback sees exactly that
    epoch last (and can stop there), e.g. the rungs of successive halving.
    Raises ValueError naming the argument on bad input.
    """
    network = check_network(layers, activation, output_activation, loss, dtype)
    lr, batch_mode, batch_size, epochs, seed, shuffle, init = check_training(
        learning_rate, batch_mode, batch_size, epochs, seed, shuffle, init
    )
    X = check_inputs(X, network)
    Y, labels, acc_mode = check_targets(y, X.shape[0], network)
    if params is None:
        initial = init_params(network.sizes.tolist(), init, seed, network.dtype)
    else:
        initial = check_params(params, network)
    check_callback(callback)
    checkpoints = check_checkpoints(checkpoints)
    val_rows = check_validation_set(validation, network, acc_mode)

    run = _Run(network, (X, Y, labels), val_rows, validated=validation is not None,
               acc_mode=acc_mode, flat=pack(initial, network), lr=lr,
               batch=batch_rows(batch_mode, batch_size, X.shape[0]), shuffle=shuffle, seed=seed,
               epochs=epochs)
    done, diverged, stopped = _train_in_chunks(run, epochs, callback, checkpoints)
    return TrainResult(
        **run.history(0, done),
        initial_params=initial,
        params=unpack(run.flat, network),
        diverged=bool(diverged),
        stopped=stopped,
        epochs_done=done,
    )


def _train_in_chunks(run: "_Run", epochs: int, callback, checkpoints: list[int]):
    """Train ``run`` for up to ``epochs`` epochs in jitted chunks of about
    ``knobs.CHUNK_SECONDS``, each ending early at the next checkpoint, with ``callback``
    after each; returns (epochs done, diverged, stopped by the callback)."""
    run.evaluate_initial()
    done, recorded = 0, -1  # the first Progress reports epoch 0 too
    diverged, stopped = not np.isfinite(run.errors[0]), False
    chunk = 1
    while done < epochs and not diverged and not stopped:
        k, at_checkpoint = _next_chunk(chunk, done, epochs, checkpoints)
        started = time.perf_counter()
        ran = run.train_epochs(done, k)
        seconds = time.perf_counter() - started
        done += ran
        known = run.record_chunk_end(done, ran == k, at_checkpoint, epochs)
        diverged = not np.isfinite(run.errors[known])
        if callback is not None:
            progress = Progress(first_epoch=recorded + 1, epochs_done=done, diverged=diverged,
                                seconds=seconds, **run.history(recorded + 1, known))
            stopped = bool(callback(progress)) and done < epochs and not diverged
            if stopped and known < done:
                run.evaluate(done)
                diverged = not np.isfinite(run.errors[done])
        recorded = known
        # Aim the next chunk at CHUNK_SECONDS at this chunk's pace, growing at most 4x.
        chunk = int(min(max(1, knobs.CHUNK_SECONDS / max(seconds / max(ran, 1), 1e-9)), 4 * k))
    return done, diverged, stopped


def _next_chunk(chunk: int, done: int, epochs: int, checkpoints: list[int]):
    """(epochs in the next chunk, whether it ends at a checkpoint); drops passed checkpoints."""
    k = min(chunk, epochs - done)
    while checkpoints and checkpoints[0] <= done:
        checkpoints.pop(0)
    at_checkpoint = bool(checkpoints) and checkpoints[0] - done <= k
    if at_checkpoint:
        k = checkpoints[0] - done
    return k, at_checkpoint


class _Run:
    """One training run's state over the engine: rows, parameters, history and workspaces."""

    def __init__(self, network: Network, rows: tuple, val_rows: tuple, *, validated: bool,
                 acc_mode: int, flat: np.ndarray, lr: float, batch: int, shuffle: bool,
                 seed: int, epochs: int):
        self.network, self.acc_mode, self.flat = network, acc_mode, flat
        self.batch, self.shuffle, self.seed = batch, shuffle, seed
        self.X, self.Y, self.labels = rows
        self.Xv, self.Yv, self.labels_v = val_rows  # no rows without validation
        self.validated = validated
        n = self.X.shape[0]
        self.rows = n if batch >= n else max(batch, min(n, knobs.EVAL_ROWS))
        self.ws = network.workspace(self.rows)
        self.vrows = max(1, min(self.Xv.shape[0], knobs.EVAL_ROWS))
        self.vws = network.workspace(self.vrows)
        self.consts = network.consts(lr)
        self.order = np.empty(n, dtype=np.int64)
        self.errors, self.accuracy = np.empty(epochs + 1), np.empty(epochs + 1)
        self.val_errors = np.full(epochs + 1, np.nan)
        self.val_accuracy = np.full(epochs + 1, np.nan)
        self.blas_min = np.uint64(knobs.BLAS_MIN)
        # Full batches in dataset order leave each epoch's error to the next step's forward pass.
        self.lagging = batch >= n and not shuffle

    def evaluate(self, epoch: int) -> None:
        """Record the training-set error (and accuracy) of the current parameters as ``epoch``'s."""
        self.errors[epoch], self.accuracy[epoch] = E.evaluate(
            self.X, self.Y, self.labels, self.acc_mode, self.flat, self.ws.net,
            self.network.loss, self.consts, self.ws.bufs, self.rows, self.blas_min,
        )

    def evaluate_initial(self) -> None:
        """Record epoch 0: the initial parameters on the training and validation rows."""
        self.evaluate(0)
        if self.validated:
            self.val_errors[0], self.val_accuracy[0] = E.evaluate(
                self.Xv, self.Yv, self.labels_v, self.acc_mode, self.flat, self.vws.net,
                self.network.loss, self.consts, self.vws.bufs, self.vrows, self.blas_min,
            )

    def train_epochs(self, done: int, k: int) -> int:
        """Train up to ``k`` epochs after the first ``done`` in one jitted call; returns how
        many ran (fewer when an error was not finite)."""
        return E.train_epochs(
            self.X, self.Y, self.labels, self.acc_mode, self.flat, self.ws.net, self.network.loss,
            self.consts, self.ws.bufs, self.rows, self.batch, self.shuffle, self.seed, done + 1,
            k, self.lagging and done > 0, self.order, self.errors, self.accuracy,
            self.Xv, self.Yv, self.labels_v, self.vws.net, self.vws.bufs, self.vrows,
            self.val_errors, self.val_accuracy, self.blas_min,
        )

    def record_chunk_end(self, done: int, full: bool, at_checkpoint: bool, epochs: int) -> int:
        """After a chunk that ended at epoch ``done`` (``full``: it ran every epoch asked),
        evaluate what must be known now; returns the last epoch whose error is recorded."""
        # Lagging, a full chunk leaves errors[done] pending; a short one stopped on a
        # non-finite errors[done]. Record the pending one when training ends here.
        if self.lagging and full and done == epochs:
            self.evaluate(done)
        known = done - 1 if self.lagging and full and done < epochs else done
        if at_checkpoint and full and known < done:  # the callback sees the checkpoint
            self.evaluate(done)
            known = done
        return known

    def history(self, first: int, last: int) -> dict:
        """Copies of errors, accuracy, val_errors and val_accuracy of epochs first..last, None
        for what is not recorded (accuracy without class labels, no validation rows)."""
        span = slice(first, last + 1)
        labelled = self.acc_mode != E.ACC_NONE
        return {
            "errors": self.errors[span].copy(),
            "accuracy": self.accuracy[span].copy() if labelled else None,
            "val_errors": self.val_errors[span].copy() if self.validated else None,
            "val_accuracy": self.val_accuracy[span].copy() if self.validated and labelled else None,
        }

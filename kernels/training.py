"""``train``: the validated public entry point over the jitted epoch loops."""

import operator
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import _engine as E
from .init import init_params
from .names import DEFAULTS
from .network import BLAS_MIN, EVAL_ROWS, pack, unpack
from .validation import check_inputs, check_network, check_params, check_targets, check_training

# Wall time one jitted chunk of epochs aims at, so callers can record progress and stop.
CHUNK_SECONDS = 0.03


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
    if callback is not None and not callable(callback):
        raise ValueError("callback: expected a callable")
    if checkpoints is None:
        checkpoints = []
    else:
        try:
            checkpoints = sorted({operator.index(c) for c in checkpoints})
        except TypeError:
            raise ValueError("checkpoints: expected a list of epochs (integers)") from None
        if checkpoints and checkpoints[0] < 1:
            raise ValueError("checkpoints: epochs must be at least 1")
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise ValueError("validation: expected a pair (X_val, y_val)")
        Xv = check_inputs(validation[0], network, name="validation X")
        Yv, labels_v, acc_mode_v = check_targets(validation[1], Xv.shape[0], network,
                                                 name="validation y")
        if acc_mode_v != acc_mode:
            raise ValueError("validation: y_val must be the same kind of target as y")
    else:
        Xv = np.empty((0, X.shape[1]), dtype=network.dtype)
        Yv = np.empty((0, Y.shape[1]), dtype=network.dtype)
        labels_v = np.empty(0, dtype=np.int64)

    n = X.shape[0]
    batch = batch_rows(batch_mode, batch_size, n)
    rows = n if batch >= n else max(batch, min(n, EVAL_ROWS))
    ws = network.workspace(rows)
    consts = network.consts(lr)
    flat = pack(initial, network)
    errors = np.empty(epochs + 1)
    accuracy = np.empty(epochs + 1)
    order = np.empty(n, dtype=np.int64)
    vrows = max(1, min(Xv.shape[0], EVAL_ROWS))
    vws = network.workspace(vrows)
    val_errors = np.full(epochs + 1, np.nan)
    val_accuracy = np.full(epochs + 1, np.nan)

    blas_min = np.uint64(BLAS_MIN)

    def evaluate_epoch(epoch):
        errors[epoch], accuracy[epoch] = E.evaluate(
            X, Y, labels, acc_mode, flat, ws.net, network.loss, consts, ws.bufs, rows, blas_min
        )

    evaluate_epoch(0)
    if validation is not None:
        val_errors[0], val_accuracy[0] = E.evaluate(
            Xv, Yv, labels_v, acc_mode, flat, vws.net, network.loss, consts, vws.bufs, vrows,
            blas_min,
        )
    # Full batches in dataset order leave each epoch's error to the next step's forward pass.
    lagging = batch >= n and not shuffle
    done, recorded = 0, -1  # the first Progress reports epoch 0 too
    diverged, stopped = not np.isfinite(errors[0]), False
    chunk = 1
    while done < epochs and not diverged and not stopped:
        k = min(chunk, epochs - done)
        while checkpoints and checkpoints[0] <= done:
            checkpoints.pop(0)
        at_checkpoint = bool(checkpoints) and checkpoints[0] - done <= k
        if at_checkpoint:
            k = checkpoints[0] - done
        started = time.perf_counter()
        ran = E.train_epochs(
            X, Y, labels, acc_mode, flat, ws.net, network.loss, consts, ws.bufs, rows, batch,
            shuffle, seed, done + 1, k, lagging and done > 0, order, errors, accuracy,
            Xv, Yv, labels_v, vws.net, vws.bufs, vrows, val_errors, val_accuracy, blas_min,
        )
        seconds = time.perf_counter() - started
        done += ran
        # Lagging, a full chunk leaves errors[done] pending; a short one stopped on a
        # non-finite errors[done]. Record the pending one when training ends here.
        if lagging and ran == k and done == epochs:
            evaluate_epoch(done)
        known = done - 1 if lagging and ran == k and done < epochs else done
        if at_checkpoint and ran == k and known < done:  # the callback sees the checkpoint
            evaluate_epoch(done)
            known = done
        diverged = not np.isfinite(errors[known])
        if callback is not None:
            stopped = bool(callback(Progress(
                first_epoch=recorded + 1,
                epochs_done=done,
                errors=errors[recorded + 1:known + 1].copy(),
                accuracy=accuracy[recorded + 1:known + 1].copy() if acc_mode != E.ACC_NONE else None,
                val_errors=val_errors[recorded + 1:known + 1].copy() if validation else None,
                val_accuracy=(val_accuracy[recorded + 1:known + 1].copy()
                              if validation and acc_mode != E.ACC_NONE else None),
                diverged=diverged,
                seconds=seconds,
            ))) and done < epochs and not diverged
            if stopped and known < done:
                evaluate_epoch(done)
                diverged = not np.isfinite(errors[done])
        recorded = known
        chunk = int(min(max(1, CHUNK_SECONDS / max(seconds / max(ran, 1), 1e-9)), 4 * k))

    return TrainResult(
        errors=errors[:done + 1].copy(),
        accuracy=accuracy[:done + 1].copy() if acc_mode != E.ACC_NONE else None,
        initial_params=initial,
        params=unpack(flat, network),
        diverged=bool(diverged),
        stopped=stopped,
        epochs_done=done,
        val_errors=val_errors[:done + 1].copy() if validation is not None else None,
        val_accuracy=(val_accuracy[:done + 1].copy()
                      if validation is not None and acc_mode != E.ACC_NONE else None),
    )

"""``train``: the validated public entry point over the jitted epoch loops."""

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
    """What a callback sees after each chunk of epochs (only the chunk's new epochs)."""

    epochs_done: int
    errors: np.ndarray
    accuracy: Optional[np.ndarray]
    diverged: bool
    seconds: float


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
) -> TrainResult:
    """Train a fully connected network by gradient descent, as API.md section 1 defines.

    Keyword arguments are the numeric fields of the run spec, plus ``params`` (initial
    parameters, overriding ``init``) and ``callback``, called with a ``Progress`` between
    chunks of epochs (each a few tens of milliseconds); it returns True to stop training.
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

    n = X.shape[0]
    batch = batch_rows(batch_mode, batch_size, n)
    rows = n if batch >= n else max(batch, min(n, EVAL_ROWS))
    ws = network.workspace(rows)
    consts = network.consts(lr)
    flat = pack(initial, network)
    errors = np.empty(epochs + 1)
    accuracy = np.empty(epochs + 1)
    order = np.empty(n, dtype=np.int64)

    errors[0], accuracy[0] = E.evaluate(
        X, Y, labels, acc_mode, flat, ws.net, network.loss, consts, ws.bufs, rows, np.uint64(BLAS_MIN)
    )
    done, diverged, stopped = 0, not np.isfinite(errors[0]), False
    chunk = 1
    while done < epochs and not diverged and not stopped:
        k = min(chunk, epochs - done)
        started = time.perf_counter()
        ran = E.train_epochs(
            X, Y, labels, acc_mode, flat, ws.net, network.loss, consts, ws.bufs, rows, batch,
            shuffle, seed, done + 1, k, order, errors[done + 1:done + 1 + k],
            accuracy[done + 1:done + 1 + k], np.uint64(BLAS_MIN),
        )
        seconds = time.perf_counter() - started
        new = slice(done + 1, done + 1 + ran)
        done += ran
        diverged = not np.isfinite(errors[done])
        if callback is not None:
            progress = Progress(
                epochs_done=done,
                errors=errors[new].copy(),
                accuracy=accuracy[new].copy() if acc_mode != E.ACC_NONE else None,
                diverged=diverged,
                seconds=seconds,
            )
            stopped = bool(callback(progress)) and done < epochs and not diverged
        per_epoch = seconds / max(ran, 1)
        chunk = int(min(max(1, CHUNK_SECONDS / max(per_epoch, 1e-9)), 4 * k))

    return TrainResult(
        errors=errors[:done + 1].copy(),
        accuracy=accuracy[:done + 1].copy() if acc_mode != E.ACC_NONE else None,
        initial_params=initial,
        params=unpack(flat, network),
        diverged=bool(diverged),
        stopped=stopped,
        epochs_done=done,
    )

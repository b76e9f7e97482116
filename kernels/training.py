"""``train``: the validated public entry point over the jitted epoch loops."""

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import _engine as E
from . import knobs
from .parallel import MAX_THREADS, batch_parts, batch_rows, parallel_call
from .init import init_params
from .names import DEFAULTS, OPTIMIZER_CODES, PLATEAU_METRICS
from .network import Network, pack, unpack
from .schedule import learning_rates
from .validation import (
    check_callback,
    check_checkpoints,
    check_eval_every,
    check_inputs,
    check_network,
    check_optimizer,
    check_params,
    check_plateau,
    check_schedule,
    check_targets,
    check_threads,
    check_training,
    check_validation_set,
)


@dataclass
class Progress:
    """What a callback sees after each chunk of epochs: the evaluated epochs whose errors
    became known since the last call, from ``first_epoch`` on (0 on the first call);
    ``epochs_evaluated`` numbers the rows (every epoch with eval_every 1). In full-batch
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
    epochs_evaluated: Optional[np.ndarray] = None  # int64, one per row of errors


@dataclass
class TrainResult:
    """Outcome of ``train``: the history of the evaluated epochs (epoch 0 included; every
    epoch with eval_every 1), their epoch numbers, and the parameters."""

    errors: np.ndarray
    accuracy: Optional[np.ndarray]
    initial_params: dict
    params: dict
    diverged: bool
    stopped: bool
    epochs_done: int
    val_errors: Optional[np.ndarray] = None
    val_accuracy: Optional[np.ndarray] = None
    stop_reason: Optional[str] = None  # "plateau" when stop_on_plateau ended the run
    best_epoch: Optional[int] = None  # with stop_on_plateau: the epoch of the best metric
    epochs_evaluated: Optional[np.ndarray] = None  # int64: the epoch of each history row


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
    optimizer="sgd",
    momentum=0.9,
    beta1=0.9,
    beta2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    clip_norm=None,
    lr_schedule=None,
    stop_on_plateau=None,
    eval_every=1,
    engine="jit",
    threads=None,
) -> TrainResult:
    """Train a fully connected network by gradient descent, as API.md section 1 defines.

    Keyword arguments are the numeric fields of the run spec, plus ``params`` (initial
    parameters, overriding ``init``) and ``callback``, called with a ``Progress`` between
    chunks of epochs (each a few tens of milliseconds); it returns True to stop training.
    ``validation=(X_val, y_val)`` records the error (and accuracy) on those rows after every
    epoch as ``val_errors`` (``val_accuracy``); they take no part in training.
    ``checkpoints``: epochs at which a chunk must end, so the callback sees exactly that
    epoch last (and can stop there), e.g. the rungs of successive halving.
    ``optimizer`` (with ``momentum``, or ``beta1``, ``beta2``, ``eps``; the parameters of
    other optimizers are ignored), ``weight_decay``, ``clip_norm``, ``lr_schedule`` and
    ``stop_on_plateau`` are API.md section 1b's; docs/kernels.md fixes the details.
    ``eval_every=k``: the whole-set evaluations (training and validation rows) run only at
    epochs 0, k, 2k, ..., at the last epoch run, and at ``checkpoints``; the history holds
    those epochs, numbered by ``epochs_evaluated``.
    ``engine="python"`` runs the engine's code uncompiled (kernels.interpreted): the same
    bits without waiting for numba's compile, about 1000x slower, float64 only; for tiny
    runs on a machine whose kernel cache is still empty.
    ``threads=T``: for large enough batches, T parts of each batch trained in parallel on T
    cores (kernels.parallel); the bits depend on T, not on the cores that run them. Set
    BLAS's threads around the call to ``kernels.blas_threads_for(T, ...)`` (threadpoolctl):
    1 for a split run, else T. None (the default) is T = 1.
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
    opt = check_optimizer(optimizer, momentum, beta1, beta2, eps, weight_decay, clip_norm)
    lrs = learning_rates(lr, check_schedule(lr_schedule, lr), epochs)
    plateau = check_plateau(stop_on_plateau, validation is not None)
    eval_every = check_eval_every(eval_every)
    kernel_engine = _kernel_engine(engine, network.dtype)
    threads = check_threads(threads, MAX_THREADS)
    batch = batch_rows(batch_mode, batch_size, X.shape[0])
    parts = batch_parts(threads, batch, network.sizes)

    run = _Run(network, (X, Y, labels), val_rows, validated=validation is not None,
               acc_mode=acc_mode, flat=pack(initial, network), lr=lr,
               batch=batch, shuffle=shuffle, seed=seed, epochs=epochs, engine=kernel_engine,
               parts=parts)
    run.configure(opt, lrs, plateau, eval_every)
    with np.errstate(all="ignore") if engine == "python" else contextlib.nullcontext():
        # NumPy scalars warn where compiled code wraps or overflows silently (the same values)
        done, diverged, stopped = _train_in_chunks(run, epochs, callback, checkpoints)
    plateaued = run.plateaued and not diverged
    if plateau is not None and plateau["restore_best"] and not diverged:
        run.flat[:] = run.best
    return TrainResult(
        **run.history(0, done),
        initial_params=initial,
        params=unpack(run.flat, network),
        diverged=bool(diverged),
        stopped=stopped,
        epochs_done=done,
        stop_reason="plateau" if plateaued else None,
        best_epoch=int(run.ctl[E.I_BEST_EPOCH]) if plateau is not None else None,
    )


def _kernel_engine(engine, dtype: np.dtype):
    """The engine module for ``train``'s ``engine`` argument: "jit" (numba) or "python"."""
    if engine == "jit":
        return E
    if engine != "python":
        raise ValueError(f"engine must be 'jit' or 'python', not {engine!r}")
    if dtype != np.float64:
        raise ValueError("engine 'python' runs float64 only")
    from . import interpreted

    return interpreted.engine()


def _train_in_chunks(run: "_Run", epochs: int, callback, checkpoints: list[int]):
    """Train ``run`` for up to ``epochs`` epochs in jitted chunks of about
    ``knobs.CHUNK_SECONDS``, each ending early at the next checkpoint, with ``callback``
    after each; returns (epochs done, diverged, stopped by the callback)."""
    run.evaluate_initial()
    done, recorded = 0, -1  # the first Progress reports epoch 0 too
    # Lagging, epoch 0's error comes from the first step's forward pass (the kernel stops
    # before any update when it is not finite).
    diverged, stopped = not run.lagging and not np.isfinite(run.errors[0]), False
    chunk = 1
    while done < epochs and not diverged and not stopped and not run.plateaued:
        k, at_checkpoint = _next_chunk(chunk, done, epochs, checkpoints)
        started = time.perf_counter()
        ran = run.train_epochs(done, k)
        seconds = time.perf_counter() - started
        done += ran
        known = run.record_chunk_end(done, at_checkpoint, epochs)
        diverged = not np.isfinite(run.errors[run.last_evaluated(known)])
        if callback is not None:
            progress = Progress(first_epoch=recorded + 1, epochs_done=done, diverged=diverged,
                                seconds=seconds, **run.history(recorded + 1, known))
            stopped = (bool(callback(progress)) and done < epochs and not diverged
                       and not run.plateaued)
            if stopped and run.last_evaluated(known) < done:  # the last epoch run is evaluated
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
                 seed: int, epochs: int, engine=E, parts: int = 1):
        self.engine = engine  # the compiled engine, or kernels.interpreted's
        self.parts = parts  # each batch and evaluation split in this many (kernels.parallel)
        self.network, self.acc_mode, self.flat = network, acc_mode, flat
        self.batch, self.shuffle, self.seed = batch, shuffle, seed
        self.X, self.Y, self.labels = rows
        self.Xv, self.Yv, self.labels_v = val_rows  # no rows without validation
        self.validated = validated
        n = self.X.shape[0]
        rows = n if batch >= n else max(batch, min(n, knobs.EVAL_ROWS))
        vrows = max(1, min(self.Xv.shape[0], knobs.EVAL_ROWS))
        self.rows, self.vrows = -(-rows // parts), -(-vrows // parts)  # per part
        if parts == 1:
            self.ws, self.vws = network.workspace(self.rows), network.workspace(self.vrows)
        else:
            self.ws = network.part_workspace(self.rows, parts)
            self.vws = network.part_workspace(self.vrows, parts)
        self.consts = network.consts(lr)
        self.order = np.empty(n, dtype=np.int64)
        self.errors, self.accuracy = np.empty(epochs + 1), np.empty(epochs + 1)
        self.val_errors = np.full(epochs + 1, np.nan)
        self.val_accuracy = np.full(epochs + 1, np.nan)
        self.blas_min = np.uint64(knobs.BLAS_MIN)
        # Full batches in dataset order leave each epoch's error to the next step's forward
        # pass (epoch 0's too, unless no step runs).
        self.lagging = batch >= n and not shuffle and epochs > 0
        self.last = epochs  # the run's last epoch, always evaluated
        self.every = 1
        self.extra: set[int] = set()  # epochs evaluated off the schedule (checkpoints, stops)

    def configure(self, opt: dict, lrs: np.ndarray, plateau: Optional[dict],
                  eval_every: int = 1) -> None:
        """Set the optimizer (its state at zero), the per-epoch learning rates, the plateau
        rule (None: none), as ``check_optimizer`` and ``check_plateau`` return them, and the
        period of the whole-set evaluations."""
        n, dtype = self.flat.shape[0], self.flat.dtype
        code = OPTIMIZER_CODES[opt["optimizer"]]
        self.lrs = lrs
        self.ctl = np.zeros(E.N_CTL, dtype=np.int64)
        # Beyond the last epoch a period means the same as last + 1 (and fits an int64).
        self.every = min(eval_every, self.last + 1)
        self.ctl[E.I_EVERY] = self.every
        self.ctl[E.I_SHARES_ROWS] = knobs.SHARES_MAX_ROWS
        self.hyper = np.zeros(E.N_HYPER, dtype=np.float64)
        self.ctl[E.I_OPT] = code
        # Plain sgd keeps its update fused into the backward pass.
        self.ctl[E.I_GENERAL] = (code != E.OPT_SGD or opt["weight_decay"] != 0.0
                                 or opt["clip_norm"] is not None)
        for index, name in ((E.H_MOMENTUM, "momentum"), (E.H_BETA1, "beta1"),
                            (E.H_BETA2, "beta2"), (E.H_EPS, "eps"), (E.H_DECAY, "weight_decay")):
            self.hyper[index] = opt[name]
        self.hyper[E.H_CLIP] = opt["clip_norm"] or 0.0
        c = self.consts  # the scalars as the dtype's arithmetic sees them
        c[E.C_MU] = opt["momentum"]
        c[E.C_W1] = 1.0 - opt["beta1"]
        c[E.C_W1C] = dtype.type(1.0) - c[E.C_W1]
        c[E.C_BETA2] = opt["beta2"]
        c[E.C_W2] = 1.0 - opt["beta2"]
        c[E.C_EPS] = opt["eps"]
        c[E.C_DECAY] = opt["weight_decay"]
        moments = {E.OPT_SGD: 0, E.OPT_MOMENTUM: 1, E.OPT_NESTEROV: 1}.get(code, 2)
        self.S = np.zeros(moments * n, dtype=dtype)
        self.metric = E.PLATEAU_OFF if plateau is None else PLATEAU_METRICS[plateau["metric"]]
        self.ctl[E.I_METRIC] = self.metric
        restore = plateau is not None and plateau["restore_best"]
        if plateau is not None:
            self.ctl[E.I_PATIENCE] = plateau["patience"]
            self.ctl[E.I_RESTORE] = restore
            self.hyper[E.H_MIN_DELTA] = plateau["min_delta"]
        self.best = np.empty(n if restore else 0, dtype=dtype)  # parameters of best_epoch

    @property
    def plateaued(self) -> bool:
        """Whether the plateau rule ended training."""
        return self.ctl[E.I_STATUS] == E.PLATEAU

    def scheduled(self, epoch: int) -> bool:
        """Whether ``epoch`` is one of eval_every's: a multiple of it, or the last."""
        return epoch % self.every == 0 or epoch == self.last

    def last_evaluated(self, epoch: int) -> int:
        """The latest evaluated epoch up to ``epoch``."""
        latest = epoch if self.scheduled(epoch) else epoch - epoch % self.every
        return max([latest] + [e for e in self.extra if e <= epoch])

    def evaluate(self, epoch: int) -> None:
        """Record the training-set error (and accuracy) of the current parameters as
        ``epoch``'s; on the plateau metric ``error``, apply the plateau rule to it. An epoch
        off eval_every's schedule (a checkpoint, the last before a stop) gets its validation
        rows evaluated too, and is not judged by the plateau rule (so that checkpoints and
        callbacks do not change the numbers)."""
        self.errors[epoch], self.accuracy[epoch] = self._evaluate(
            self.X, self.Y, self.labels, self.ws, self.rows)
        if not self.scheduled(epoch):
            self.extra.add(epoch)
            self.evaluate_validation(epoch)
            return
        value = self.errors[epoch]
        if epoch > 0 and self.metric == E.PLATEAU_ERROR and np.isfinite(value):
            if self.engine.plateau_update(value, epoch, self.ctl, self.hyper, self.flat, self.best):
                self.ctl[E.I_STATUS] = E.PLATEAU

    def evaluate_initial(self) -> None:
        """Record epoch 0: the initial parameters on the training and validation rows; the
        plateau rule's best starts there. Lagging, the training rows' error is the first
        step's forward pass, recorded (and the plateau rule's best set) by the kernel."""
        if not self.lagging:
            self.evaluate(0)
        self.evaluate_validation(0)
        if self.metric == E.PLATEAU_VAL_ERROR or (
                self.metric == E.PLATEAU_ERROR and not self.lagging):
            metric = self.val_errors if self.metric == E.PLATEAU_VAL_ERROR else self.errors
            self.hyper[E.H_BEST] = metric[0]
            self.best[:] = self.flat[:self.best.shape[0]]

    def evaluate_validation(self, epoch: int) -> None:
        """Record the validation rows' error (and accuracy) as ``epoch``'s, if any."""
        if self.validated:
            self.val_errors[epoch], self.val_accuracy[epoch] = self._evaluate(
                self.Xv, self.Yv, self.labels_v, self.vws, self.vrows)

    def _evaluate(self, X, Y, labels, ws, rows: int) -> tuple:
        """(E, accuracy) of the current parameters on a whole set, split as training is."""
        args = (X, Y, labels, self.acc_mode, self.flat, ws.net, self.network.loss,
                self.consts, ws.bufs, rows, self.blas_min)
        if self.parts == 1:
            return self.engine.evaluate(*args)
        with parallel_call(self.parts):
            return self.engine.evaluate_parts(*args, self.parts)

    def train_epochs(self, done: int, k: int) -> int:
        """Train up to ``k`` epochs after the first ``done`` in one jitted call; returns how
        many ran (fewer when an error was not finite or the plateau rule stopped training)."""
        args = (
            self.X, self.Y, self.labels, self.acc_mode, self.flat, self.ws.net, self.network.loss,
            self.consts, self.ws.bufs, self.rows, self.batch, self.shuffle, self.seed, done + 1,
            k, self.lagging and self.scheduled(done),
            self.order, self.errors, self.accuracy,
            self.Xv, self.Yv, self.labels_v, self.vws.net, self.vws.bufs, self.vrows,
            self.val_errors, self.val_accuracy, self.blas_min,
            self.lrs, self.S, self.ctl, self.hyper, self.best,
        )
        if self.parts == 1:
            return self.engine.train_epochs(*args)
        with parallel_call(self.parts):
            return self.engine.train_epochs_parts(*args, self.parts)

    def record_chunk_end(self, done: int, at_checkpoint: bool, epochs: int) -> int:
        """After a chunk that ended at epoch ``done``, evaluate what must be known now;
        returns the last epoch whose error is recorded."""
        status = self.ctl[E.I_STATUS]
        # Lagging, the last epoch's error is still pending after a chunk that ran all its
        # epochs or stopped on a plateau of val_error (a divergence or a plateau of error
        # was seen in a recorded error), if that epoch is evaluated at all. Record it when
        # training ends here, or at a checkpoint (the callback sees the checkpoint).
        pending = self.lagging and self.scheduled(done) and (status == E.RAN or (
            status == E.PLATEAU and self.metric == E.PLATEAU_VAL_ERROR))
        if pending and (done == epochs or status == E.PLATEAU or at_checkpoint):
            self.evaluate(done)
            return done
        if at_checkpoint and status == E.RAN and not self.scheduled(done):
            self.evaluate(done)  # off the schedule: the checkpoint needs its numbers
        return done - 1 if pending else done

    def evaluated(self, first: int, last: int) -> np.ndarray:
        """The evaluated epochs from ``first`` to ``last``, in order (int64)."""
        if self.every == 1:
            return np.arange(first, last + 1, dtype=np.int64)
        start = -(-first // self.every) * self.every
        epochs = set(range(start, last + 1, self.every))
        epochs.update(e for e in self.extra if first <= e <= last)
        if first <= self.last <= last:
            epochs.add(self.last)
        return np.array(sorted(epochs), dtype=np.int64)

    def history(self, first: int, last: int) -> dict:
        """Copies of errors, accuracy, val_errors and val_accuracy of the evaluated epochs
        first..last, and those epochs (``epochs_evaluated``); None for what is not recorded
        (accuracy without class labels, no validation rows)."""
        span = self.evaluated(first, last)
        if self.every == 1:
            span = slice(first, last + 1)  # (the same rows; views copied below)
        labelled = self.acc_mode != E.ACC_NONE
        return {
            "epochs_evaluated": self.evaluated(first, last),
            "errors": self.errors[span].copy(),
            "accuracy": self.accuracy[span].copy() if labelled else None,
            "val_errors": self.val_errors[span].copy() if self.validated else None,
            "val_accuracy": self.val_accuracy[span].copy() if self.validated and labelled else None,
        }

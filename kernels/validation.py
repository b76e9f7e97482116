"""Argument checks shared by the public entry points: each failure is a ValueError whose
message starts with the argument's name."""

import numbers
import operator

import numpy as np

from . import codes as E
from .names import (
    BATCH_MODES,
    CROSS_ENTROPY_OUTPUTS,
    DTYPES,
    HIDDEN_ACTIVATIONS,
    INITS,
    LOSSES,
    LR_SCHEDULES,
    OPTIMIZERS,
    OUTPUT_ACTIVATIONS,
    PLATEAU_DEFAULTS,
    PLATEAU_METRICS,
    SCHEDULE_KEYS,
    default_output_activation,
)
from .network import Network


def _choice(name, value, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}: unknown {value!r}; expected one of {', '.join(options)}")
    return value


def _integer(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def check_layers(layers) -> list[int]:
    """At least two sizes, each an integer >= 1."""
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__len__") or len(layers) < 2:
        raise ValueError(f"layers: expected a list of at least two sizes, got {layers!r}")
    for k, size in enumerate(layers):
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"layers: entry {k} must be an integer >= 1, got {size!r}")
    return [int(size) for size in layers]


def check_network(layers, activation, output_activation, loss, dtype) -> Network:
    """Validate the architecture fields and build the engine's description of the network."""
    layers = check_layers(layers)
    n_hidden = len(layers) - 2
    if isinstance(activation, (list, tuple)):
        if len(activation) != n_hidden:
            raise ValueError(
                f"activation: a list needs one entry per hidden layer ({n_hidden}), "
                f"got {len(activation)}"
            )
        hidden = list(activation)
    else:
        hidden = [activation] * n_hidden
    for act in hidden:
        if act == "softmax":
            raise ValueError("activation: softmax is only allowed as output_activation")
        _choice("activation", act, tuple(HIDDEN_ACTIVATIONS))
    loss = _choice("loss", loss, tuple(LOSSES))
    if output_activation is None:
        output_activation = default_output_activation(loss, layers[-1])
    _choice("output_activation", output_activation, tuple(OUTPUT_ACTIVATIONS))
    if output_activation == "softmax" and layers[-1] < 2:
        raise ValueError("output_activation: softmax needs at least two outputs (layers[-1] >= 2)")
    if loss == "cross_entropy" and output_activation not in CROSS_ENTROPY_OUTPUTS:
        raise ValueError(
            f"output_activation: cross_entropy needs softmax or sigmoid outputs, "
            f"got {output_activation!r}"
        )
    dtype = _choice("dtype", dtype if not isinstance(dtype, np.dtype) else dtype.name, DTYPES)
    codes = [HIDDEN_ACTIVATIONS[a] for a in hidden] + [OUTPUT_ACTIVATIONS[output_activation]]
    return Network(
        sizes=np.array(layers, dtype=np.int64),
        acts=np.array(codes, dtype=np.int64),
        loss=LOSSES[loss],
        dtype=np.dtype(dtype),
    )


def check_inputs(X, network: Network, name="X") -> np.ndarray:
    """A finite 2-D array of width layers[0], as a C-contiguous array of the network's dtype."""
    try:
        X = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name}: not an array: {exc}") from None
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (samples x features), got {X.ndim}-D")
    if X.shape[0] < 1:
        raise ValueError(f"{name}: has no rows")
    if X.shape[1] != network.sizes[0]:
        raise ValueError(
            f"{name}: has {X.shape[1]} columns but layers[0] is {network.sizes[0]}"
        )
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise ValueError(f"{name}: expected numbers, got dtype {X.dtype}")
    X = np.ascontiguousarray(X, dtype=network.dtype)
    if not np.isfinite(X).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return X


def check_targets(y, n_rows: int, network: Network, name="y"):
    """Encode targets per the contract: (Y as a 2-D array of the dtype, labels, accuracy mode).

    2-D floats are used as they are; 1-D integer labels are one-hot encoded (0/1 labels stay
    one column with a single output) and record accuracy; 1-D floats are one column.
    """
    try:
        y = np.asarray(y)
    except Exception as exc:
        raise ValueError(f"{name}: not an array: {exc}") from None
    n_out = int(network.sizes[-1])
    no_labels = np.empty(0, dtype=np.int64)
    if y.ndim not in (1, 2):
        raise ValueError(f"{name}: expected a 1-D or 2-D array, got {y.ndim}-D")
    if y.shape[0] != n_rows:
        raise ValueError(f"{name}: has {y.shape[0]} rows but X has {n_rows}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise ValueError(f"{name}: expected numbers, got dtype {y.dtype}")
    if y.ndim == 2:
        if y.shape[1] != n_out:
            raise ValueError(f"{name}: has {y.shape[1]} columns but layers[-1] is {n_out}")
        Y = np.ascontiguousarray(y, dtype=network.dtype)
        if not np.isfinite(Y).all():
            raise ValueError(f"{name}: contains NaN or infinity")
        return Y, no_labels, E.ACC_NONE
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        labels = y.astype(np.int64)
        if n_out == 1:
            if not np.isin(labels, (0, 1)).all():
                raise ValueError(f"{name}: with one output, class labels must be 0 or 1")
            Y = labels.astype(network.dtype).reshape(-1, 1)
            return np.ascontiguousarray(Y), labels, E.ACC_THRESHOLD
        if labels.min() < 0 or labels.max() >= n_out:
            raise ValueError(
                f"{name}: class labels must lie in 0..{n_out - 1} (layers[-1] = {n_out}), "
                f"got {labels.min()}..{labels.max()}"
            )
        Y = np.zeros((n_rows, n_out), dtype=network.dtype)
        Y[np.arange(n_rows), labels] = 1
        return Y, labels, E.ACC_ARGMAX
    if n_out != 1:
        raise ValueError(
            f"{name}: a 1-D float array is one column, but layers[-1] is {n_out}; "
            "pass integer class labels or a 2-D array"
        )
    Y = np.ascontiguousarray(y, dtype=network.dtype).reshape(-1, 1)
    if not np.isfinite(Y).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return Y, no_labels, E.ACC_NONE


def check_params(params, network: Network) -> dict:
    """Parameters in the API layout with the shapes ``layers`` implies, as arrays of the dtype."""
    if not isinstance(params, dict) or set(params) != {"weights", "biases"}:
        raise ValueError('params: expected {"weights": [...], "biases": [...]}')
    sizes = network.sizes
    n_layers = len(sizes) - 1
    weights, biases = params["weights"], params["biases"]
    if len(weights) != n_layers or len(biases) != n_layers:
        raise ValueError(
            f"params: expected {n_layers} weight matrices and bias vectors, "
            f"got {len(weights)} and {len(biases)}"
        )
    out = {"weights": [], "biases": []}
    for l in range(n_layers):
        W = np.asarray(weights[l], dtype=network.dtype)
        B = np.asarray(biases[l], dtype=network.dtype)
        if W.shape != (sizes[l + 1], sizes[l]):
            raise ValueError(
                f"params: weights[{l}] has shape {W.shape}, expected "
                f"({sizes[l + 1]}, {sizes[l]})"
            )
        if B.shape != (sizes[l + 1],):
            raise ValueError(
                f"params: biases[{l}] has shape {B.shape}, expected ({sizes[l + 1]},)"
            )
        if not (np.isfinite(W).all() and np.isfinite(B).all()):
            raise ValueError(f"params: layer {l} contains NaN or infinity")
        out["weights"].append(W)
        out["biases"].append(B)
    return out


def check_training(learning_rate, batch_mode, batch_size, epochs, seed, shuffle, init):
    """Validate the optimisation fields; returns them normalised."""
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
        raise ValueError(f"learning_rate: expected a number, got {learning_rate!r}")
    if not np.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate: must be a finite number > 0, got {learning_rate}")
    batch_mode = _choice("batch_mode", batch_mode, BATCH_MODES)
    batch_size = _integer("batch_size", batch_size, 1)
    epochs = _integer("epochs", epochs, 0)
    seed = _integer("seed", seed, 0)
    if seed >= 2**64:
        raise ValueError("seed: must be < 2**64")
    if not isinstance(shuffle, (bool, np.bool_)):
        raise ValueError(f"shuffle: expected true or false, got {shuffle!r}")
    init = _choice("init", init, INITS)
    return float(learning_rate), batch_mode, batch_size, epochs, seed, bool(shuffle), init


def check_callback(callback) -> None:
    """None or a callable."""
    if callback is not None and not callable(callback):
        raise ValueError("callback: expected a callable")


def check_checkpoints(checkpoints) -> list[int]:
    """Epochs (integers >= 1) at which a chunk must end, sorted and without repeats."""
    if checkpoints is None:
        return []
    try:
        checkpoints = sorted({operator.index(c) for c in checkpoints})
    except TypeError:
        raise ValueError("checkpoints: expected a list of epochs (integers)") from None
    if checkpoints and checkpoints[0] < 1:
        raise ValueError("checkpoints: epochs must be at least 1")
    return checkpoints


def check_validation_set(validation, network: Network, acc_mode: int):
    """(X_val, Y_val, labels_val) of a pair (X_val, y_val) as ``check_inputs`` and
    ``check_targets`` encode them; the targets must be the same kind as the training ones
    (``acc_mode``). Without validation (None) the arrays have no rows."""
    if validation is None:
        return (np.empty((0, int(network.sizes[0])), dtype=network.dtype),
                np.empty((0, int(network.sizes[-1])), dtype=network.dtype),
                np.empty(0, dtype=np.int64))
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        raise ValueError("validation: expected a pair (X_val, y_val)")
    Xv = check_inputs(validation[0], network, name="validation X")
    Yv, labels_v, acc_mode_v = check_targets(validation[1], Xv.shape[0], network,
                                             name="validation y")
    if acc_mode_v != acc_mode:
        raise ValueError("validation: y_val must be the same kind of target as y")
    return Xv, Yv, labels_v


def _real(name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real number within [low, high] (an open end where asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    value = float(value)
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name}: must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{name}: must be {'<' if high_open else '<='} {high}, got {value}")
    return value


# weight_decay's upper bound: far beyond any useful value, it keeps lr * weight_decay finite.
MAX_WEIGHT_DECAY = 1e3


def check_optimizer(optimizer, momentum, beta1, beta2, eps, weight_decay, clip_norm) -> dict:
    """The optimizer and its parameters, normalised; only the chosen optimizer's own
    parameters are checked (the others are ignored)."""
    optimizer = _choice("optimizer", optimizer, OPTIMIZERS)
    out = {"optimizer": optimizer, "momentum": 0.0, "beta1": 0.0, "beta2": 0.0, "eps": 0.0}
    if optimizer in ("momentum", "nesterov"):
        out["momentum"] = _real("momentum", momentum, 0.0, 1.0, high_open=True)
    elif optimizer in ("adam", "adamw"):
        out["beta1"] = _real("beta1", beta1, 0.0, 1.0, high_open=True)
        out["beta2"] = _real("beta2", beta2, 0.0, 1.0, high_open=True)
        out["eps"] = _real("eps", eps, 0.0, low_open=True)
    out["weight_decay"] = _real("weight_decay", weight_decay, 0.0, MAX_WEIGHT_DECAY)
    out["clip_norm"] = None if clip_norm is None else _real("clip_norm", clip_norm, 0.0,
                                                           low_open=True)
    return out


def check_schedule(lr_schedule, learning_rate: float) -> dict:
    """A learning-rate schedule (None: constant) with its kind's defaults filled in."""
    if lr_schedule is None:
        return {"kind": "constant"}
    if not isinstance(lr_schedule, dict):
        raise ValueError(f"lr_schedule: expected an object with a kind, got {lr_schedule!r}")
    kind = _choice("lr_schedule.kind", lr_schedule.get("kind", "constant"), LR_SCHEDULES)
    required, optional = SCHEDULE_KEYS[kind]
    for key in lr_schedule:
        if key != "kind" and key not in required and key not in optional:
            raise ValueError(f"lr_schedule.{key}: not a parameter of the {kind} schedule")
    for key in required:
        if key not in lr_schedule:
            raise ValueError(f"lr_schedule.{key}: required by the {kind} schedule")
    out = {"kind": kind, **optional, **{k: v for k, v in lr_schedule.items() if k != "kind"}}
    if "step_size" in out:
        out["step_size"] = _integer("lr_schedule.step_size", out["step_size"], 1)
    if "gamma" in out:
        out["gamma"] = _real("lr_schedule.gamma", out["gamma"], 0.0, 1.0, low_open=True)
    if "lr_min" in out:
        out["lr_min"] = _real("lr_schedule.lr_min", out["lr_min"], 0.0, learning_rate,
                              high_open=True)
    return out


def check_plateau(stop_on_plateau, validated: bool):
    """The plateau rule (None: none) with its defaults filled in; metric val_error needs
    validation rows."""
    if stop_on_plateau is None:
        return None
    if not isinstance(stop_on_plateau, dict):
        raise ValueError(f"stop_on_plateau: expected an object or null, got {stop_on_plateau!r}")
    for key in stop_on_plateau:
        if key not in PLATEAU_DEFAULTS:
            raise ValueError(f"stop_on_plateau.{key}: unknown; expected one of "
                             f"{', '.join(PLATEAU_DEFAULTS)}")
    out = {**PLATEAU_DEFAULTS, **stop_on_plateau}
    _choice("stop_on_plateau.metric", out["metric"], tuple(PLATEAU_METRICS))
    if out["metric"] == "val_error" and not validated:
        raise ValueError("stop_on_plateau.metric: val_error needs validation rows "
                         "(a validation split > 0)")
    out["patience"] = _integer("stop_on_plateau.patience", out["patience"], 1)
    out["min_delta"] = _real("stop_on_plateau.min_delta", out["min_delta"], 0.0)
    if not isinstance(out["restore_best"], (bool, np.bool_)):
        raise ValueError(f"stop_on_plateau.restore_best: expected true or false, "
                         f"got {out['restore_best']!r}")
    out["restore_best"] = bool(out["restore_best"])
    return out


def check_threads(threads, maximum: int) -> "int | None":
    """None (the caller's BLAS settings) or an integer from 1 to ``maximum``."""
    if threads is None:
        return None
    threads = _integer("threads", threads, 1)
    if threads > maximum:
        raise ValueError(f"threads: must be <= {maximum}, got {threads}")
    return threads


def check_eval_every(eval_every) -> int:
    """The whole-set evaluation's period in epochs: an integer >= 1 (beyond ``epochs`` it
    means epoch 0 and the last only)."""
    return _integer("eval_every", eval_every, 1)

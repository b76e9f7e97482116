"""Independent plain-NumPy reference implementation of the numeric contract.

This module re-implements, for clarity rather than speed, every choice fixed by
``docs/kernels.md`` (section "Choices the contract leaves open") so that the tests can
check the Numba implementation in ``kernels`` against it to rounding error.

It deliberately does NOT import ``kernels``: it must stay an independent reading of the
documentation.

Conventions (from docs/kernels.md):

* ``W[l]`` has shape ``(n_out, n_in)``, ``B[l]`` shape ``(n_out,)``; a batch is a matrix
  with one row per sample; ``z = a @ W.T + B`` and the layer output is ``f(z)``.
* ``mse``: ``E = 1/(b M) sum 1/2 (y - yhat)^2``.
* ``cross_entropy`` + ``softmax``: ``E = -1/b sum y log_softmax(z)``.
* ``cross_entropy`` + ``sigmoid``: ``E = 1/b sum [y softplus(-z) + (1 - y) softplus(z)]``
  (which is ``-1/b sum [y log yhat + (1-y) log(1-yhat)]`` written with the logits).

Optimizers, schedules, clipping and stopping on a plateau follow API.md section 1b (PyTorch's
definitions) and the choices issue 13 fixed where it leaves room (see ``train``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "linear")
OUTPUT_ACTIVATIONS = HIDDEN_ACTIVATIONS + ("softmax",)
LOSSES = ("mse", "cross_entropy")
BATCH_MODES = ("sgd", "minibatch", "full")
INITS = ("uniform", "normal", "xavier", "he")
DTYPES = ("float64", "float32")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
LR_SCHEDULES = ("constant", "step", "exponential", "cosine")
PLATEAU_METRICS = ("val_error", "error")
PLATEAU_DEFAULTS = {"metric": "val_error", "patience": 10, "min_delta": 0.0, "restore_best": True}
#: torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing
CLIP_EPS = 1e-6

#: every valid (output activation, loss) pair
VALID_OUTPUT_LOSS = tuple(
    [(act, "mse") for act in OUTPUT_ACTIVATIONS]
    + [("softmax", "cross_entropy"), ("sigmoid", "cross_entropy")]
)

LEAKY_SLOPE = 0.01
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


# ---------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (never evaluates exp of a positive number)."""
    z = np.asarray(z)
    one = z.dtype.type(1)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = one / (one + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (one + ez)
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax with the row maximum subtracted."""
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + exp(z)), stable for large |z|."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.where(z <= 0, z.dtype.type(0), z)  # NaN stays NaN, as in torch
    if name == "leaky_relu":
        return np.where(z <= 0, z.dtype.type(LEAKY_SLOPE) * z, z)
    if name == "linear":
        return z.copy()
    if name == "softmax":
        return softmax(z)
    raise ValueError(f"activation: unknown {name!r}")


def activation_derivative(name: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Elementwise f'(z) given z and a = f(z) (not for softmax)."""
    one = z.dtype.type(1)
    if name == "sigmoid":
        return a * (one - a)
    if name == "tanh":
        return one - a * a
    if name == "relu":
        return np.where(z > 0, one, z.dtype.type(0))
    if name == "leaky_relu":
        return np.where(z > 0, one, z.dtype.type(LEAKY_SLOPE))
    if name == "linear":
        return np.ones_like(z)
    raise ValueError(f"activation: no elementwise derivative for {name!r}")


# ---------------------------------------------------------------------------------------
# Argument helpers
# ---------------------------------------------------------------------------------------


def resolve_output_activation(output_activation: str | None, loss: str, n_outputs: int) -> str:
    """``None`` means softmax for cross_entropy with >= 2 outputs, else sigmoid."""
    if output_activation is not None:
        return output_activation
    if loss == "cross_entropy" and n_outputs >= 2:
        return "softmax"
    return "sigmoid"


def hidden_activations(activation: str | list[str], n_hidden: int) -> list[str]:
    if isinstance(activation, str):
        return [activation] * n_hidden
    acts = list(activation)
    if len(acts) != n_hidden:
        raise ValueError("activation: need one name per hidden layer")
    return acts


def layer_activations(activation, output_activation: str, n_layers: int) -> list[str]:
    """Activation names of the ``n_layers`` weight layers (hidden ones, then the output)."""
    return hidden_activations(activation, n_layers - 1) + [output_activation]


def as_params(params: dict, dtype: str) -> dict:
    return {
        "weights": [np.array(W, dtype=dtype) for W in params["weights"]],
        "biases": [np.array(B, dtype=dtype) for B in params["biases"]],
    }


def copy_params(params: dict) -> dict:
    return {
        "weights": [W.copy() for W in params["weights"]],
        "biases": [B.copy() for B in params["biases"]],
    }


def layers_of(params: dict) -> list[int]:
    Ws = params["weights"]
    return [int(Ws[0].shape[1])] + [int(W.shape[0]) for W in Ws]


# ---------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------


def init_params(layers: list[int], init: str = "uniform", seed: int = 0, dtype: str = "float64") -> dict:
    """Draw W then B for each layer in order from ``default_rng(seed)`` in float64, then cast."""
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for n_in, n_out in zip(layers[:-1], layers[1:]):
        if init == "uniform":
            k = 1.0 / math.sqrt(n_in)
            W = rng.uniform(-k, k, (n_out, n_in))
            B = rng.uniform(-k, k, n_out)
        elif init == "normal":
            W = rng.normal(0.0, 1.0 / math.sqrt(n_in), (n_out, n_in))
            B = np.zeros(n_out)
        elif init == "xavier":
            a = math.sqrt(6.0 / (n_in + n_out))
            W = rng.uniform(-a, a, (n_out, n_in))
            B = np.zeros(n_out)
        elif init == "he":
            W = rng.normal(0.0, math.sqrt(2.0 / n_in), (n_out, n_in))
            B = np.zeros(n_out)
        else:
            raise ValueError(f"init: unknown {init!r}")
        weights.append(W.astype(dtype))
        biases.append(B.astype(dtype))
    return {"weights": weights, "biases": biases}


# ---------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------


def encode_targets(y, n_outputs: int, dtype: str = "float64") -> tuple[np.ndarray, np.ndarray | None]:
    """Return ``(Y, labels)``: the 2-D target matrix and the class labels (or None).

    * 1-D integer or bool: class labels; one-hot to ``n_outputs`` columns, or with a single
      output the 0/1 labels themselves as one column.
    * 1-D float: one column.
    * 2-D: used as it is.
    """
    y = np.asarray(y)
    if y.ndim == 1 and (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        labels = y.astype(np.int64)
        if n_outputs == 1:
            if np.any((labels != 0) & (labels != 1)):
                raise ValueError("y: labels must be 0/1 with a single output")
            Y = labels.reshape(-1, 1).astype(dtype)
        else:
            if np.any(labels < 0) or np.any(labels >= n_outputs):
                raise ValueError("y: label out of range")
            Y = np.zeros((labels.shape[0], n_outputs), dtype=dtype)
            Y[np.arange(labels.shape[0]), labels] = 1
        return Y, labels
    if y.ndim == 1:
        return y.astype(dtype).reshape(-1, 1), None
    return y.astype(dtype), None


# ---------------------------------------------------------------------------------------
# Forward pass, loss, accuracy
# ---------------------------------------------------------------------------------------


def forward(params: dict, X: np.ndarray, acts: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return ``(zs, outs)``: pre-activations of every layer and ``outs[0] = X``, ``outs[l+1] = f(zs[l])``."""
    zs, outs = [], [X]
    a = X
    for W, B, name in zip(params["weights"], params["biases"], acts):
        z = a @ W.T + B
        a = activate(name, z)
        zs.append(z)
        outs.append(a)
    return zs, outs


def predict(params: dict, X, activation="sigmoid", output_activation="sigmoid") -> np.ndarray:
    dtype = params["weights"][0].dtype
    X = np.asarray(X, dtype=dtype)
    acts = layer_activations(activation, output_activation, len(params["weights"]))
    return forward(params, X, acts)[1][-1]


def loss_terms(Y: np.ndarray, z_out: np.ndarray, yhat: np.ndarray, output_activation: str, loss: str) -> tuple[np.ndarray, float]:
    """Per-element terms of the loss (in the arithmetic dtype) and the divisor."""
    b, M = Y.shape
    if loss == "mse":
        half = Y.dtype.type(0.5)
        d = Y - yhat
        return half * d * d, float(b * M)
    if loss == "cross_entropy":
        if output_activation == "softmax":
            return -(Y * log_softmax(z_out)), float(b)
        if output_activation == "sigmoid":
            one = Y.dtype.type(1)
            return Y * softplus(-z_out) + (one - Y) * softplus(z_out), float(b)
        raise ValueError("loss: cross_entropy needs a softmax or sigmoid output")
    raise ValueError(f"loss: unknown {loss!r}")


def batch_error(Y, z_out, yhat, output_activation, loss) -> float:
    """E over the rows of ``Y`` as one batch; terms summed in float64."""
    terms, divisor = loss_terms(Y, z_out, yhat, output_activation, loss)
    return float(terms.astype(np.float64).sum() / divisor)


def accuracy_of(yhat: np.ndarray, labels: np.ndarray) -> float:
    if yhat.shape[1] == 1:
        pred = (yhat[:, 0] >= 0.5).astype(np.int64)
    else:
        pred = np.argmax(yhat, axis=1)  # first maximum on ties
    return float(np.mean(pred == labels))


def _prepare(X, y, params, activation, output_activation, loss, dtype):
    params = as_params(params, dtype)
    layers = layers_of(params)
    X = np.asarray(X, dtype=dtype)
    Y, labels = encode_targets(y, layers[-1], dtype)
    out_act = resolve_output_activation(output_activation, loss, layers[-1])
    acts = layer_activations(activation, out_act, len(layers) - 1)
    return params, X, Y, labels, acts


def loss(X, y, params, activation="sigmoid", output_activation=None, loss="mse", dtype="float64") -> float:
    """E of the contract over all of ``X`` as one batch."""
    params, X, Y, _, acts = _prepare(X, y, params, activation, output_activation, loss, dtype)
    zs, outs = forward(params, X, acts)
    return batch_error(Y, zs[-1], outs[-1], acts[-1], loss)


#: alias usable where a parameter named ``loss`` shadows the function
error_of = loss


# ---------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------


def output_delta(Y: np.ndarray, z: np.ndarray, yhat: np.ndarray, output_activation: str, loss: str) -> np.ndarray:
    """dE/dz of the output layer, shape (b, M)."""
    b, M = Y.shape
    if loss == "mse":
        g = (yhat - Y) / Y.dtype.type(b * M)  # dE/dyhat
        if output_activation == "softmax":
            # full Jacobian: dyhat_j/dz_k = yhat_j (delta_jk - yhat_k)
            # (dE/dz)_k = sum_j g_j yhat_j (delta_jk - yhat_k) = yhat_k (g_k - sum_j g_j yhat_j)
            jac = yhat[:, :, None] * (np.eye(M, dtype=Y.dtype)[None, :, :] - yhat[:, None, :])  # [i, j, k]
            return np.einsum("ij,ijk->ik", g, jac)
        return g * activation_derivative(output_activation, z, yhat)
    if loss == "cross_entropy":
        if output_activation == "softmax":
            # general form for soft targets: (yhat_k sum_j y_j - y_k) / b
            return (yhat * Y.sum(axis=1, keepdims=True) - Y) / Y.dtype.type(b)
        if output_activation == "sigmoid":
            return (yhat - Y) / Y.dtype.type(b)
        raise ValueError("loss: cross_entropy needs a softmax or sigmoid output")
    raise ValueError(f"loss: unknown {loss!r}")


def backward(params: dict, X: np.ndarray, Y: np.ndarray, acts: list[str], loss: str) -> tuple[float, dict]:
    """E over the batch and its gradients with respect to every W and B."""
    zs, outs = forward(params, X, acts)
    E = batch_error(Y, zs[-1], outs[-1], acts[-1], loss)
    L = len(params["weights"])
    gW: list[Any] = [None] * L
    gB: list[Any] = [None] * L
    delta = output_delta(Y, zs[-1], outs[-1], acts[-1], loss)
    for l in range(L - 1, -1, -1):
        gW[l] = delta.T @ outs[l]
        gB[l] = delta.sum(axis=0)
        if l > 0:
            delta = (delta @ params["weights"][l]) * activation_derivative(acts[l - 1], zs[l - 1], outs[l])
    return E, {"weights": gW, "biases": gB}


def gradients(X, y, params, activation="sigmoid", output_activation=None, loss="mse", dtype="float64"):
    """Mirror of ``kernels.gradients``: ``(E, {"weights": [...], "biases": [...]})``."""
    params, X, Y, _, acts = _prepare(X, y, params, activation, output_activation, loss, dtype)
    return backward(params, X, Y, acts, loss)


def finite_difference_gradients(X, y, params, activation="sigmoid", output_activation=None, loss="mse", h=1e-5):
    """Central differences of :func:`loss` in float64, same layout as :func:`gradients`."""
    base = as_params(params, "float64")
    lossfn = error_of
    out = {"weights": [], "biases": []}
    for key in ("weights", "biases"):
        for l, P in enumerate(base[key]):
            G = np.zeros_like(P)
            for idx in np.ndindex(P.shape):
                plus = copy_params(base)
                minus = copy_params(base)
                plus[key][l][idx] += h
                minus[key][l][idx] -= h
                ep = lossfn(X, y, plus, activation, output_activation, loss)
                em = lossfn(X, y, minus, activation, output_activation, loss)
                G[idx] = (ep - em) / (2 * h)
            out[key].append(G)
    return out


# ---------------------------------------------------------------------------------------
# Shuffling (SplitMix64-driven Fisher-Yates)
# ---------------------------------------------------------------------------------------


class SplitMix64:
    def __init__(self, state: int):
        self.state = state & MASK64

    def next(self) -> int:
        self.state = (self.state + GOLDEN) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Sample order of 1-based epoch ``epoch``."""
    order = list(range(n))
    if shuffle:
        rng = SplitMix64(seed * GOLDEN + epoch)
        for i in range(n - 1, 0, -1):
            j = ((rng.next() >> 32) * (i + 1)) >> 32
            order[i], order[j] = order[j], order[i]
    return np.array(order, dtype=np.int64)


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


@dataclass
class Result:
    errors: np.ndarray
    accuracy: np.ndarray | None
    initial_params: dict
    params: dict
    diverged: bool
    stopped: bool
    epochs_done: int
    val_errors: np.ndarray | None = None
    val_accuracy: np.ndarray | None = None
    stop_reason: str | None = None
    best_epoch: int | None = None
    epochs_evaluated: np.ndarray | None = None


def batch_size_for(batch_mode: str, batch_size: int, n: int) -> int:
    if batch_mode == "sgd":
        return 1
    if batch_mode == "minibatch":
        return batch_size
    if batch_mode == "full":
        return n
    raise ValueError(f"batch_mode: unknown {batch_mode!r}")


# ---------------------------------------------------------------------------------------
# Learning-rate schedules (API.md 1b)
# ---------------------------------------------------------------------------------------


def resolve_schedule(schedule: dict | None) -> dict:
    """The schedule with its defaults filled in (None is the constant schedule)."""
    if schedule is None:
        return {"kind": "constant"}
    kind = schedule.get("kind", "constant")
    if kind == "constant":
        return {"kind": "constant"}
    if kind == "step":
        return {"kind": "step", "step_size": int(schedule["step_size"]),
                "gamma": float(schedule.get("gamma", 0.1))}
    if kind == "exponential":
        return {"kind": "exponential", "gamma": float(schedule["gamma"])}
    if kind == "cosine":
        return {"kind": "cosine", "lr_min": float(schedule.get("lr_min", 0.0))}
    raise ValueError(f"lr_schedule: unknown kind {kind!r}")


def learning_rate_at(lr: float, schedule: dict | None, epoch: int, epochs: int) -> float:
    """Learning rate of 1-based ``epoch`` out of ``epochs``, in float64, by the formulas of API.md 1b."""
    sched = resolve_schedule(schedule)
    kind = sched["kind"]
    if kind == "constant":
        return float(lr)
    if kind == "step":
        return float(lr) * sched["gamma"] ** ((epoch - 1) // sched["step_size"])
    if kind == "exponential":
        return float(lr) * sched["gamma"] ** (epoch - 1)
    lr_min = sched["lr_min"]
    return lr_min + (float(lr) - lr_min) * (1.0 + math.cos(math.pi * (epoch - 1) / epochs)) / 2.0


# ---------------------------------------------------------------------------------------
# Gradient clipping and optimizers (API.md 1b)
# ---------------------------------------------------------------------------------------


def gradient_norm(grads: dict) -> float:
    """L2 norm of all gradients of a batch together: the squares summed one after the other
    in float64, over the arrays in the order W1, B1, W2, B2, ... (each row-major)."""
    squares = [np.ravel(np.asarray(g, dtype=np.float64)) ** 2
               for gW, gB in zip(grads["weights"], grads["biases"]) for g in (gW, gB)]
    total = np.cumsum(np.concatenate(squares))[-1]  # cumsum adds in order, unlike np.sum
    return math.sqrt(float(total))


def clip_gradients(grads: dict, clip_norm: float) -> dict:
    """Scale every gradient by ``c / (norm + 1e-6)`` (cast to the dtype) when ``norm > c``."""
    norm = gradient_norm(grads)
    if not norm > clip_norm:
        return grads
    dtype = grads["weights"][0].dtype
    scale = dtype.type(clip_norm / (norm + CLIP_EPS))
    return {key: [g * scale for g in grads[key]] for key in ("weights", "biases")}


def lerp(start: np.ndarray, end: np.ndarray, weight) -> np.ndarray:
    """torch.lerp with a scalar weight: ``start + w (end - start)`` for ``|w| < 0.5``, else
    ``end - (end - start)(1 - w)`` (PyTorch's two forms, chosen for rounding)."""
    one = start.dtype.type(1)
    if abs(float(weight)) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (one - weight)


class Optimizer:
    """The state and step of one optimizer over the parameter arrays of a network.

    State (momentum buffers, Adam moments) starts at zero; ``t`` counts the batches of the
    run from 1. Scalars are float64 Python numbers, cast to the network dtype where they
    meet an array (as PyTorch casts a Python scalar to the tensor's dtype).
    """

    def __init__(self, params: dict, optimizer: str = "sgd", momentum: float = 0.9, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: unknown {optimizer!r}")
        self.kind = optimizer
        self.momentum, self.beta1, self.beta2, self.eps = momentum, beta1, beta2, eps
        self.weight_decay = weight_decay
        self.dtype = params["weights"][0].dtype
        self.t = 0
        zeros = {key: [np.zeros_like(P) for P in params[key]] for key in ("weights", "biases")}
        self.buf = zeros  # momentum buffer b, or Adam's first moment m
        self.sq = {key: [np.zeros_like(P) for P in params[key]] for key in ("weights", "biases")}  # Adam's v

    def step(self, params: dict, grads: dict, lr: float) -> dict:
        """One update with the float64 learning rate ``lr`` of the current epoch; returns new params."""
        self.t += 1
        out = {"weights": [], "biases": []}
        for key in ("weights", "biases"):
            decay = self.weight_decay if key == "weights" else 0.0  # never on biases
            for l, (P, G) in enumerate(zip(params[key], grads[key])):
                out[key].append(self._update(key, l, P, G, lr, decay))
        return out

    def _update(self, key: str, l: int, P: np.ndarray, G: np.ndarray, lr: float, decay: float) -> np.ndarray:
        dt = self.dtype.type
        lr_t = dt(lr)
        if self.kind == "adamw":
            if decay != 0.0:
                P = P * dt(1.0 - lr * decay)  # decoupled: W <- W (1 - lr lambda), g unchanged
        elif decay != 0.0:
            G = G + dt(decay) * P  # coupled: g <- g + lambda W
        if self.kind == "sgd":
            return P - lr_t * G
        if self.kind in ("momentum", "nesterov"):
            mu = dt(self.momentum)
            b = G.copy() if self.t == 1 else mu * self.buf[key][l] + G
            self.buf[key][l] = b
            if self.kind == "momentum":
                return P - lr_t * b
            return P - lr_t * (G + mu * b)
        # adam / adamw, in torch's order (single-tensor, non-capturable)
        m = lerp(self.buf[key][l], G, dt(1.0 - self.beta1))
        v = dt(self.beta2) * self.sq[key][l] + dt(1.0 - self.beta2) * G * G
        self.buf[key][l], self.sq[key][l] = m, v
        bias_correction1 = 1.0 - self.beta1 ** self.t
        bias_correction2 = 1.0 - self.beta2 ** self.t
        step_size = dt(lr / bias_correction1)  # float64, as torch's Python-float lr
        denom = np.sqrt(v) / dt(math.sqrt(bias_correction2)) + dt(self.eps)
        return P - step_size * m / denom


# ---------------------------------------------------------------------------------------
# Stopping on a plateau (API.md 1b)
# ---------------------------------------------------------------------------------------


def resolve_plateau(stop_on_plateau: dict | None) -> dict | None:
    """The stop_on_plateau dict with its defaults filled in (None: no plateau stopping)."""
    if stop_on_plateau is None:
        return None
    out = dict(PLATEAU_DEFAULTS)
    out.update(stop_on_plateau)
    return out


class Plateau:
    """Best value and the count of epochs without improvement of the plateau metric.

    ``best`` starts at epoch 0's value; epoch ``e`` improves when ``value < best - min_delta``
    (NaN never does), which resets the count; the run stops when the count reaches patience.
    The count is in epochs: with ``eval_every`` k only every k-th epoch is judged, and the
    run stops at the first judged epoch at least ``patience`` epochs after the best one.
    """

    def __init__(self, spec: dict, value0: float):
        self.patience, self.min_delta = int(spec["patience"]), float(spec["min_delta"])
        self.best, self.best_epoch = value0, 0

    def update(self, epoch: int, value: float) -> tuple[bool, bool]:
        """(improved, stop) after ``epoch`` with metric ``value``."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch = value, epoch
            return True, False
        return False, epoch - self.best_epoch >= self.patience


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


def train(
    X,
    y,
    *,
    layers,
    activation="sigmoid",
    output_activation=None,
    loss="mse",
    learning_rate=0.1,
    batch_mode="minibatch",
    batch_size=32,
    epochs=100,
    seed=0,
    shuffle=True,
    init="uniform",
    dtype="float64",
    params=None,
    callback: Callable | None = None,
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
) -> Result:
    """Reference training loop with the keywords of ``kernels.train`` (callback and
    checkpoints ignored: they never change the numbers).

    Per batch: gradient -> clip -> weight decay -> optimizer step (see ``Optimizer``), with
    the learning rate of the epoch from ``learning_rate_at``. With ``stop_on_plateau`` the
    metric is checked after every epoch (``Plateau``); ``restore_best`` makes the final
    parameters those of the best epoch whenever the run ends without diverging.
    ``eval_every`` k: the history is recorded (and divergence and the plateau rule checked)
    at epochs 0, k, 2k, ... and the last only; ``epochs_evaluated`` lists them.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return _train(X, y, layers=layers, activation=activation, output_activation=output_activation,
                      loss=loss, learning_rate=learning_rate, batch_mode=batch_mode, batch_size=batch_size,
                      epochs=epochs, seed=seed, shuffle=shuffle, init=init, dtype=dtype, params=params,
                      validation=validation,
                      opt=dict(optimizer=optimizer, momentum=momentum, beta1=beta1, beta2=beta2, eps=eps,
                               weight_decay=weight_decay),
                      clip_norm=clip_norm, lr_schedule=lr_schedule, stop_on_plateau=stop_on_plateau,
                      eval_every=eval_every)


def _train(X, y, *, layers, activation, output_activation, loss, learning_rate, batch_mode, batch_size,
           epochs, seed, shuffle, init, dtype, params, validation, opt, clip_norm, lr_schedule,
           stop_on_plateau, eval_every=1) -> Result:
    layers = [int(v) for v in layers]
    X = np.asarray(X, dtype=dtype)
    n = X.shape[0]
    Y, labels = encode_targets(y, layers[-1], dtype)
    out_act = resolve_output_activation(output_activation, loss, layers[-1])
    acts = layer_activations(activation, out_act, len(layers) - 1)
    if params is None:
        current = init_params(layers, init, seed, dtype)
    else:
        current = as_params(params, dtype)
    initial = copy_params(current)
    bs = batch_size_for(batch_mode, batch_size, n)
    optim = Optimizer(current, **opt)
    plateau_spec = resolve_plateau(stop_on_plateau)
    if plateau_spec is not None and plateau_spec["metric"] == "val_error" and validation is None:
        raise ValueError("stop_on_plateau.metric: val_error needs validation rows")
    if validation is not None:
        Xv = np.asarray(validation[0], dtype=dtype)
        Yv, labels_v = encode_targets(validation[1], layers[-1], dtype)

    def record_on(p, Xs, Ys, labs):
        zs, outs = forward(p, Xs, acts)
        err = batch_error(Ys, zs[-1], outs[-1], out_act, loss)
        acc = accuracy_of(outs[-1], labs) if labs is not None else None
        return err, acc

    errors, accs, val_errors, val_accs, evaluated = [], [], [], [], []

    def record(p, epoch):
        evaluated.append(epoch)
        err, acc = record_on(p, X, Y, labels)
        errors.append(err)
        accs.append(acc)
        if validation is not None:
            verr, vacc = record_on(p, Xv, Yv, labels_v)
            val_errors.append(verr)
            val_accs.append(vacc)
        return err

    err = record(current, 0)
    diverged = not math.isfinite(err)  # a non-finite error ends the run, epoch 0 included
    plateau = best_params = None
    stop_reason = None
    if plateau_spec is not None:
        metric = val_errors if plateau_spec["metric"] == "val_error" else errors
        plateau = Plateau(plateau_spec, metric[0])
        best_params = copy_params(current)
    epochs_done = 0
    for epoch in range(1, 0 if diverged else epochs + 1):
        lr = learning_rate_at(learning_rate, lr_schedule, epoch, epochs)
        order = epoch_order(n, seed, epoch, shuffle)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            _, grads = backward(current, X[idx], Y[idx], acts, loss)
            if clip_norm is not None:
                grads = clip_gradients(grads, clip_norm)
            current = optim.step(current, grads, lr)
        epochs_done = epoch
        if epoch % eval_every != 0 and epoch != epochs:
            continue
        err = record(current, epoch)
        if not math.isfinite(err):
            diverged = True
            break
        if plateau is not None:
            improved, stop = plateau.update(epoch, metric[-1])
            if improved:
                best_params = copy_params(current)
            if stop:
                stop_reason = "plateau"
                break
    if plateau is not None and plateau_spec["restore_best"] and not diverged:
        current = best_params
    labelled = labels is not None
    return Result(
        errors=np.array(errors, dtype=np.float64),
        accuracy=np.array(accs, dtype=np.float64) if labelled else None,
        initial_params=initial,
        params=current,
        diverged=diverged,
        stopped=False,
        epochs_done=epochs_done,
        val_errors=np.array(val_errors, dtype=np.float64) if validation is not None else None,
        val_accuracy=np.array(val_accs, dtype=np.float64) if validation is not None and labelled else None,
        stop_reason=stop_reason,
        best_epoch=plateau.best_epoch if plateau is not None else None,
        epochs_evaluated=np.array(evaluated, dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------
# Test-data helpers (shared by the tests; not part of the contract)
# ---------------------------------------------------------------------------------------

KINKED = ("relu", "leaky_relu")


def make_targets(rng: np.random.Generator, n: int, n_outputs: int, output_activation: str, loss: str, soft: bool = False):
    """Targets suited to an (output activation, loss) pair.

    Class labels for softmax (and for a single sigmoid output with cross_entropy unless
    ``soft``), 2-D floats in the output's range otherwise; ``soft`` cross_entropy+softmax
    targets are positive rows that need not sum to one (the general form of the gradient).
    """
    if loss == "cross_entropy":
        if output_activation == "softmax":
            if soft:
                return rng.uniform(0.05, 1.0, (n, n_outputs))
            return rng.integers(0, n_outputs, n)
        if n_outputs == 1 and not soft:
            return rng.integers(0, 2, n)
        return rng.uniform(0.0, 1.0, (n, n_outputs))
    if output_activation == "softmax":
        if soft:
            Y = rng.uniform(0.0, 1.0, (n, n_outputs))
            return Y / Y.sum(axis=1, keepdims=True)
        return rng.integers(0, n_outputs, n)
    if output_activation in ("sigmoid", "relu"):
        return rng.uniform(0.05, 0.95, (n, n_outputs))
    if output_activation == "tanh":
        return rng.uniform(-0.9, 0.9, (n, n_outputs))
    return rng.normal(0.0, 1.0, (n, n_outputs))


def min_abs_kink_preactivation(X, params, acts) -> float:
    """Smallest |z| over the layers whose activation has a kink at 0 (inf if none)."""
    zs, _ = forward(as_params(params, "float64"), np.asarray(X, dtype=np.float64), acts)
    m = math.inf
    for z, name in zip(zs, acts):
        if name in KINKED and z.size:
            m = min(m, float(np.min(np.abs(z))))
    return m


def make_problem(
    activation,
    output_activation: str,
    loss: str,
    layers: list[int],
    n: int,
    seed: int = 0,
    soft: bool = False,
    margin: float = 1e-3,
    init: str = "uniform",
):
    """Deterministic ``(X, y, params)`` whose kinked pre-activations stay ``margin`` away from 0."""
    acts = layer_activations(activation, output_activation, len(layers) - 1)
    for attempt in range(1000):
        rng = np.random.default_rng([seed, attempt])
        X = rng.normal(0.0, 1.0, (n, layers[0]))
        y = make_targets(rng, n, layers[-1], output_activation, loss, soft)
        params = init_params(layers, init, seed * 1000 + attempt)
        if min_abs_kink_preactivation(X, params, acts) >= margin:
            return X, y, params
    raise RuntimeError("could not find data away from the kinks")


def assert_grads_close(actual: dict, expected: dict, rtol: float, atol: float = 0.0, scale_atol: float = 0.0):
    """Compare two gradient dicts entry by entry.

    The absolute tolerance is ``atol + scale_atol * max |expected|`` over all entries, so
    that entries much smaller than the gradient's scale do not need to meet ``rtol``.
    """
    flat = np.concatenate([np.ravel(g) for key in ("weights", "biases") for g in expected[key]])
    tol = atol + scale_atol * float(np.max(np.abs(flat))) if flat.size else atol
    for key in ("weights", "biases"):
        assert len(actual[key]) == len(expected[key]), key
        for l, (a, e) in enumerate(zip(actual[key], expected[key])):
            a = np.asarray(a)
            assert a.shape == np.shape(e), f"{key}[{l}] shape {a.shape} != {np.shape(e)}"
            np.testing.assert_allclose(
                a.astype(np.float64), np.asarray(e, dtype=np.float64), rtol=rtol, atol=tol, err_msg=f"{key}[{l}]"
            )

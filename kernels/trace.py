"""One training step of one sample, layer by layer, for teaching (the tutorial's notation).

Every number comes from the public entry points over the jitted engine that training runs:
pre-activations and activations from ``predict`` on the network cut after each layer,
E and dE/dW, dE/dB from ``gradients``, and the updated parameters from ``train`` itself
(one SGD step on the one sample, no shuffling).
"""

from dataclasses import dataclass

import numpy as np

from .inference import gradients, predict
from .init import init_params
from .names import DEFAULTS, default_output_activation
from .training import train
from .validation import check_network, check_params, check_training


@dataclass
class TraceStep:
    """What one gradient step on one sample did. Lists have one entry per layer of weights."""

    x: np.ndarray  # (n_inputs,)
    target: np.ndarray  # (n_outputs,), the encoded label y
    pre_activations: list  # z of each layer: h_i ... then y_i
    activations: list  # f(z) of each layer: h_o ... then y-hat
    error: float  # E of the contract on this one sample
    params: dict  # the parameters the step started from
    gradients: dict  # {"weights": [dE/dW1, ...], "biases": [dE/dB1, ...]}
    updated: dict  # the parameters after W <- W - learning_rate * dE/dW
    activations_used: list  # the activation function name of each layer (the last: output)


def layer_symbols(n_layers: int) -> list[tuple[str, str]]:
    """(pre-activation, activation) names of each layer of weights, as the tutorial writes
    them: ("h_i", "h_o") then ("y_i", "ŷ") for two layers; ("h1_i", "h1_o"), ("h2_i",
    "h2_o"), ... for the hidden layers of deeper networks; ("y_i", "ŷ") for the output."""
    if n_layers == 2:
        return [("h_i", "h_o"), ("y_i", "ŷ")]
    hidden = [(f"h{l}_i", f"h{l}_o") for l in range(1, n_layers)]
    return hidden + [("y_i", "ŷ")]


def trace_step(x, y, *, layers, activation=DEFAULTS["activation"], output_activation=None,
               loss=DEFAULTS["loss"], learning_rate=DEFAULTS["learning_rate"],
               init=DEFAULTS["init"], seed=DEFAULTS["seed"], dtype=DEFAULTS["dtype"],
               params=None) -> TraceStep:
    """One SGD step on the sample (x, y) of the network ``layers``.

    ``x`` is one input row; ``y`` one target as ``train`` takes it for a single row: an
    integer class label, or a list of layers[-1] numbers. ``params`` (default: drawn by
    ``init`` from ``seed``, as ``train`` would) are the parameters the step starts from.
    Raises ValueError naming the argument on bad input.
    """
    network = check_network(layers, activation, output_activation, loss, dtype)
    check_training(learning_rate, "sgd", 1, 1, seed, False, init)
    layers = network.sizes.tolist()
    if output_activation is None:
        output_activation = default_output_activation(loss, layers[-1])
    n_hidden = len(layers) - 2
    hidden = list(activation) if isinstance(activation, (list, tuple)) else [activation] * n_hidden
    X = np.asarray([x])
    Y = _target_rows(y)
    if params is None:
        start = init_params(layers, init, seed, network.dtype)
    else:
        start = check_params(params, network)
    error, grads = gradients(X, Y, start, activation=hidden, output_activation=output_activation,
                             loss=loss, dtype=dtype)
    # The loss plays no part in a forward pass; mse accepts every output activation.
    kwargs = dict(loss="mse", dtype=dtype)
    pre, post = [], []
    for l in range(len(layers) - 1):
        cut = {"weights": start["weights"][:l + 1], "biases": start["biases"][:l + 1]}
        act = hidden[l] if l < n_hidden else output_activation
        # A cut network's last layer is this layer: linear gives z, its own activation f(z).
        pre.append(predict(cut, X, activation=hidden[:l], output_activation="linear",
                           **kwargs)[0])
        post.append(predict(cut, X, activation=hidden[:l], output_activation=act, **kwargs)[0])
    step = train(X, Y, layers=layers, activation=hidden, output_activation=output_activation,
                 loss=loss, learning_rate=learning_rate, batch_mode="sgd", batch_size=1,
                 epochs=1, seed=seed, shuffle=False, dtype=dtype, params=start)
    target = _encoded_target(Y, layers[-1], network.dtype)
    return TraceStep(x=X[0].astype(network.dtype), target=target, pre_activations=pre,
                     activations=post, error=float(error), params=start, gradients=grads,
                     updated=step.params, activations_used=hidden + [output_activation])


def _target_rows(y):
    """The one sample's target as train takes it: [label] for an integer, else one row."""
    if isinstance(y, (bool, np.bool_)) or isinstance(y, (int, np.integer)):
        return np.asarray([int(y)])
    return np.asarray([y], dtype=np.float64)


def _encoded_target(Y, n_outputs: int, dtype) -> np.ndarray:
    """The target row the loss compares with: a label one-hot encoded (one 0/1 column with
    a single output), a row as it is."""
    if Y.ndim == 2:
        return Y[0].astype(dtype)
    if n_outputs == 1:
        return np.asarray([Y[0]], dtype=dtype)
    return np.eye(n_outputs, dtype=dtype)[int(Y[0])]

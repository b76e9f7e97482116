"""Forward passes and gradients of given parameters, on the same jitted kernels as training."""

import numpy as np

from . import _engine as E
from . import knobs
from .names import DEFAULTS
from .network import pack, unpack
from .validation import check_inputs, check_network, check_params, check_targets


def predict(params, X, *, activation=DEFAULTS["activation"], output_activation=None,
            loss=DEFAULTS["loss"], dtype=None):
    """Outputs (n, layers[-1]) of the network ``params`` for the rows of X.

    ``output_activation`` None means the default for ``loss`` (as in ``train``); ``dtype``
    None means the parameters' own (float32 stays float32, anything else is float64).
    """
    network, flat = _network_of(params, activation, output_activation, loss, dtype)
    X = check_inputs(X, network)
    n = X.shape[0]
    rows = min(n, knobs.EVAL_ROWS)
    ws = network.workspace(rows)
    out = np.empty((n, int(network.sizes[-1])), dtype=network.dtype)
    E.predict(X, flat, ws.net, network.consts(), ws.bufs, rows, out, np.uint64(knobs.BLAS_MIN))
    return out


def gradients(X, y, params, *, activation=DEFAULTS["activation"], output_activation=None,
              loss=DEFAULTS["loss"], dtype=None):
    """(E, grads) of the contract's loss over X taken as one batch.

    ``grads`` is {"weights": [dE/dW1, ...], "biases": [dE/dB1, ...]}, computed by the same
    backward kernel that training uses.
    """
    network, flat = _network_of(params, activation, output_activation, loss, dtype)
    X = check_inputs(X, network)
    Y, _, _ = check_targets(y, X.shape[0], network)
    n = X.shape[0]
    ws = network.workspace(n)
    error = E.gradients(X, Y, flat, ws.net, network.loss, network.consts(), ws.bufs,
                        np.uint64(knobs.BLAS_MIN))
    return float(error), unpack(ws.grads, network)


def _network_of(params, activation, output_activation, loss, dtype):
    """The network a parameter set describes, and its flat parameters."""
    if not isinstance(params, dict) or "weights" not in params or not params["weights"]:
        raise ValueError('params: expected {"weights": [...], "biases": [...]}')
    weights = [np.asarray(W) for W in params["weights"]]
    if any(W.ndim != 2 for W in weights):
        raise ValueError("params: every weight matrix must be 2-D")
    layers = [int(weights[0].shape[1])] + [int(W.shape[0]) for W in weights]
    if dtype is None:
        dtype = "float32" if weights[0].dtype == np.float32 else "float64"
    network = check_network(layers, activation, output_activation, loss, dtype)
    return network, pack(check_params(params, network), network)

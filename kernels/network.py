"""A validated network description and the buffers the engine works in."""

from dataclasses import dataclass

import numpy as np

from . import codes as E
from . import knobs


@dataclass(frozen=True)
class Network:
    """Layer sizes, activation and loss codes and dtype of a network, as the engine wants them."""

    sizes: np.ndarray  # int64, layers
    acts: np.ndarray  # int64, one code per layer (the last is the output activation)
    loss: int
    dtype: np.dtype

    @property
    def n_params(self) -> int:
        """Number of weights and biases."""
        s = self.sizes
        return int(sum(s[l + 1] * s[l] + s[l + 1] for l in range(len(s) - 1)))

    def consts(self, learning_rate: float = 0.0) -> np.ndarray:
        """The engine's scalar constants in the network's dtype."""
        c = np.zeros(E.N_CONSTS, dtype=self.dtype)
        c[E.C_LR] = learning_rate
        c[E.C_SLOPE] = knobs.LEAKY_RELU_SLOPE
        c[E.C_ONE] = 1.0
        c[E.C_HALF] = 0.5
        c[E.C_TINY] = np.finfo(self.dtype).tiny
        return c

    def offsets(self) -> np.ndarray:
        """Start of each layer's W in the flat parameter array (B follows W)."""
        s = self.sizes
        sizes = [s[l + 1] * s[l] + s[l + 1] for l in range(len(s) - 1)]
        return np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.uint64)

    def workspace(self, rows: int) -> "Workspace":
        """The engine's view of the network and scratch space for passes of up to ``rows`` rows."""
        s = self.sizes
        widest = int(s[1:].max())  # deltas never hold the inputs: layer 1 needs no dE/dX
        aoff = np.concatenate(([0], np.cumsum(rows * s)[:-1])).astype(np.uint64)
        bufs = (
            np.empty(rows * int(s.sum()), dtype=self.dtype),  # activations, layer by layer
            np.empty(rows * int(s[-1]), dtype=self.dtype),  # output pre-activations
            np.empty(rows * int(s[-1]), dtype=self.dtype),  # batch targets
            np.empty(rows * widest, dtype=self.dtype),  # delta
            np.empty(rows * widest, dtype=self.dtype),  # delta of the layer below
            np.empty(self.n_params, dtype=self.dtype),  # gradients, laid out like params
            np.empty(rows * (int(s[-1]) + 1), dtype=np.float64),  # loss scratch
        )
        net = (self.sizes.astype(np.uint64), self.offsets(), aoff, self.acts.astype(np.uint64))
        return Workspace(rows=rows, net=net, bufs=bufs)

    def part_workspace(self, rows: int, parts: int) -> "Workspace":
        """``parts`` workspaces of ``rows`` rows each, their buffers stacked (part h's are row
        h of each), for a batch split in parts (kernels.parallel)."""
        one = self.workspace(rows)
        bufs = tuple(np.empty((parts, b.shape[0]), dtype=b.dtype) for b in one.bufs)
        return Workspace(rows=rows, net=one.net, bufs=bufs)


@dataclass(frozen=True)
class Workspace:
    """What the engine's entry points take besides data and parameters."""

    rows: int
    net: tuple
    bufs: tuple

    @property
    def grads(self) -> np.ndarray:
        """The gradient buffer, laid out like the flat parameters."""
        return self.bufs[5]


def pack(params: dict, network: Network) -> np.ndarray:
    """Flatten {"weights": [...], "biases": [...]} into the engine's layout (a new array)."""
    flat = np.empty(network.n_params, dtype=network.dtype)
    off = 0
    for W, B in zip(params["weights"], params["biases"]):
        flat[off:off + W.size] = np.asarray(W).ravel()
        off += W.size
        flat[off:off + B.size] = np.asarray(B).ravel()
        off += B.size
    return flat


def unpack(flat: np.ndarray, network: Network) -> dict:
    """Copies of the layers of a flat parameter array, in the API layout."""
    weights, biases = [], []
    off = 0
    s = network.sizes
    for l in range(len(s) - 1):
        n_in, n_out = int(s[l]), int(s[l + 1])
        weights.append(flat[off:off + n_out * n_in].reshape(n_out, n_in).copy())
        off += n_out * n_in
        biases.append(flat[off:off + n_out].copy())
        off += n_out
    return {"weights": weights, "biases": biases}

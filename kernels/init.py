"""Initial parameters drawn from the run's seed."""

import numpy as np


def init_params(layers, init: str, seed: int, dtype) -> dict:
    """Draw {"weights", "biases"} for ``layers`` with numpy's default_rng(seed).

    Layer by layer, W then B are drawn in float64 and cast to ``dtype``:
    uniform: W, B ~ U(-k, k), k = 1/sqrt(n_in) (PyTorch's nn.Linear default);
    normal: W ~ N(0, 1/n_in), B = 0; xavier: W ~ U(-a, a), a = sqrt(6/(n_in + n_out)), B = 0;
    he: W ~ N(0, 2/n_in), B = 0.
    """
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for n_in, n_out in zip(layers[:-1], layers[1:]):
        shape = (n_out, n_in)
        if init == "uniform":
            k = 1.0 / np.sqrt(n_in)
            W = rng.uniform(-k, k, shape)
            B = rng.uniform(-k, k, n_out)
        elif init == "normal":
            W = rng.normal(0.0, 1.0 / np.sqrt(n_in), shape)
            B = np.zeros(n_out)
        elif init == "xavier":
            a = np.sqrt(6.0 / (n_in + n_out))
            W = rng.uniform(-a, a, shape)
            B = np.zeros(n_out)
        elif init == "he":
            W = rng.normal(0.0, np.sqrt(2.0 / n_in), shape)
            B = np.zeros(n_out)
        else:
            raise ValueError(f"init: unknown {init!r}; expected one of uniform, normal, xavier, he")
        weights.append(np.ascontiguousarray(W, dtype=dtype))
        biases.append(np.ascontiguousarray(B, dtype=dtype))
    return {"weights": weights, "biases": biases}

"""Load every kernel specialisation (compiling on first use) so runs never wait for numba."""

import numpy as np

import kernels


def warm_kernels() -> None:
    """Train, evaluate, predict and differentiate a tiny network in each dtype."""
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([0, 1, 1, 0])
    for dtype in kernels.DTYPES:
        result = kernels.train(X, y, layers=[2, 2, 1], epochs=1, dtype=dtype,
                               validation=(X, y))
        kernels.predict(result.params, X)
        kernels.gradients(X, y, result.params)

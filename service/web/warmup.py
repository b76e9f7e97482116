"""Load the kernels the API itself runs (predict), so no request waits for numba."""

import numpy as np

import kernels


def warm_predict() -> None:
    """Compile, or load from numba's cache, ``kernels.predict`` for every dtype."""
    for dtype in kernels.DTYPES:
        params = kernels.init_params([2, 2, 1], "uniform", 0, dtype)
        kernels.predict(params, np.zeros((1, 2)), dtype=dtype)

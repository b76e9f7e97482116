"""Load every kernel specialisation (compiling on first use) so runs never wait for numba.

A cold compile of everything takes 20-45 s on two cores, more than half of it for kernels a
first run does not need. So a worker warms in two stages: ``warm_first`` (float64 training,
what a default run uses) before its pool forks, so runs start as soon as that is ready; then
``start_warm_rest`` compiles the rest (float64 inference and gradients, everything float32)
in a background process of lower priority that fills the disk cache, from which the pool's
processes load them when a run first needs them (compiling them themselves if it is not done
yet). Meanwhile a status file tells the API that the kernels are compiling
(kernels.compilestate).

``python -m workers.warmup [--rest]`` warms everything (or only the rest).
"""

import os
import subprocess
import sys
import time
from typing import Optional

import numpy as np

import kernels
from kernels import compilestate

_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
_Y = np.array([0, 1, 1, 0])


def _warm_train(dtype: str) -> kernels.TrainResult:
    """Train a tiny network with validation rows: the epoch loop and the evaluation."""
    return kernels.train(_X, _Y, layers=[2, 2, 1], epochs=1, dtype=dtype, validation=(_X, _Y))


def _warm_inference(dtype: str) -> None:
    """Predict and differentiate a tiny network."""
    params = kernels.init_params([2, 2, 1], "uniform", 0, dtype)
    kernels.predict(params, _X)
    kernels.gradients(_X, _Y, params)


def warm_first() -> None:
    """Load or compile the float64 training kernels, publishing "compiling" meanwhile when
    they are not in the cache (and remembering how long the compile took)."""
    cold = not compilestate.training_kernels_cached()
    compilestate.publish("compiling" if cold else "loading",
                         compilestate.expected_compile_seconds() if cold else None)
    started = time.monotonic()
    try:
        _warm_train("float64")
    finally:
        compilestate.publish("ready")
    if cold:
        compilestate.record_compile_seconds(time.monotonic() - started)


def warm_rest() -> None:
    """Every specialisation warm_first leaves out; then the cache is marked complete."""
    _warm_inference("float64")
    for dtype in kernels.DTYPES:
        if dtype != "float64":
            _warm_train(dtype)
            _warm_inference(dtype)
    compilestate.record_rest_cached()


def warm_kernels() -> None:
    """Every kernel specialisation, float64 training first."""
    warm_first()
    warm_rest()


def start_warm_rest() -> Optional[subprocess.Popen]:
    """``warm_rest`` in a background process at a lower priority, which Linux ends with
    its parent; None when an earlier one already cached everything (a process saved: about
    two seconds of CPU at every start)."""
    if compilestate.rest_kernels_cached():
        return None

    def setup():
        os.nice(10)
        if sys.platform.startswith("linux"):
            import ctypes
            import signal

            try:
                ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
            except (OSError, AttributeError):
                pass

    return subprocess.Popen([sys.executable, "-m", "workers.warmup", "--rest"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=setup)


if __name__ == "__main__":
    warm_rest() if "--rest" in sys.argv[1:] else warm_kernels()

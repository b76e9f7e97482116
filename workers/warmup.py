"""Load every kernel specialisation (compiling on first use) so runs never wait for numba.

A cold compile of everything takes 20-45 s on two cores, more than half of it for kernels a
first run does not need. So a worker warms in two stages: ``warm_first`` (float64 training,
what a default run uses), then ``warm_rest`` (float64 inference and gradients, the
parallel loops of batches split in parts, everything float32), which fills the disk cache
from which the pool's processes load them when a run first needs them (compiling them
themselves if it is not done yet). Meanwhile a status file tells the API that the kernels
are compiling (kernels.compilestate).

With the float64 training kernels cached, a worker loads them before its pool forks (about a
second) and runs ``warm_rest`` in a background process of lower priority. With them not
cached (a machine's first start), ``start_warm_up`` runs both stages in a background process
instead, which holds the first-compile lock (compilestate.lock_first_compile) until the
first is cached; the pool starts at once, and runs that arrive meanwhile train interpreted
when tiny or wait for that lock (workers.engines).

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


def _warm_parts(dtype: str) -> kernels.TrainResult:
    """_warm_train with each batch split in two parts (kernels.parallel): the parallel
    epoch loop and evaluation, which only large batches with ``threads`` > 1 use."""
    from kernels import knobs

    saved = knobs.PARALLEL_MIN, knobs.PARALLEL_MIN_ROWS
    knobs.PARALLEL_MIN = knobs.PARALLEL_MIN_ROWS = 0
    try:
        return kernels.train(_X, _Y, layers=[2, 2, 1], epochs=1, dtype=dtype,
                             validation=(_X, _Y), threads=2)
    finally:
        knobs.PARALLEL_MIN, knobs.PARALLEL_MIN_ROWS = saved


def warm_rest() -> None:
    """Every specialisation warm_first leaves out; then the cache is marked complete."""
    _warm_inference("float64")
    _warm_parts("float64")
    for dtype in kernels.DTYPES:
        if dtype != "float64":
            _warm_train(dtype)
            _warm_inference(dtype)
            _warm_parts(dtype)
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
    return _background(["--rest"], nice=10)


def start_warm_up() -> Optional[subprocess.Popen]:
    """Both stages in a background process (ended with its parent) that holds the
    first-compile lock until the float64 training kernels are cached, then lowers its
    priority for the rest. None when another process holds that lock already (it compiles
    them; this worker's runs wait for it like any other's)."""
    fd = compilestate.lock_first_compile()
    if fd is None:
        return None
    try:
        return _background(["--first-holding", str(fd)], nice=0, pass_fds=(fd,))
    finally:
        os.close(fd)  # the child's copy keeps the lock


def _background(arguments: list, nice: int, pass_fds=()) -> subprocess.Popen:
    def setup():
        if nice:
            os.nice(nice)
        if sys.platform.startswith("linux"):
            import ctypes
            import signal

            try:
                ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
            except (OSError, AttributeError):
                pass

    return subprocess.Popen([sys.executable, "-m", "workers.warmup", *arguments],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=setup, pass_fds=pass_fds)


def _warm_holding(fd: int) -> None:
    """start_warm_up's process: the first stage while holding the lock on ``fd``, then the
    rest at a lower priority."""
    try:
        warm_first()
    finally:
        os.close(fd)  # releases the first-compile lock: waiting runs go on
    os.nice(10)
    if not compilestate.rest_kernels_cached():
        warm_rest()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--first-holding"]:
        _warm_holding(int(sys.argv[2]))
    elif "--rest" in sys.argv[1:]:
        warm_rest()
    else:
        warm_kernels()

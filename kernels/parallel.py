"""The threads one training run uses: BLAS's, and numba's when its batches are split.

``kernels.train(threads=T)`` either gives BLAS ``T`` threads (small batches: each product
is split by BLAS) or, when each of ``T`` parts of a batch is big enough (knobs.PARALLEL_MIN),
splits every batch and whole-set evaluation into ``T`` parts trained on ``T`` numba threads,
each calling one-thread BLAS: the elementwise passes run in parallel too, which BLAS
threads leave on one core. The bits depend on ``T`` and the shapes only (the parts are
summed in a fixed order), not on how many cores run them.
"""

import contextlib
import os
import threading

from threadpoolctl import ThreadpoolController

from . import knobs

# numba's thread pool runs on its "workqueue" layer unless NUMBA_THREADING_LAYER says
# otherwise: it needs no OpenMP or TBB, and a forked child (Celery's prefork pool) may
# launch it again, which GNU OpenMP's aborts. It must not be entered by two threads at
# once (it aborts the process), hence _LAUNCH.
_LAUNCH = threading.Lock()
MAX_THREADS = 1024  # a bound on ``threads``, far above any machine's cores

_controllers: dict = {}  # pid -> this process's ThreadpoolController


def blas_threads(n: int):
    """A context that limits the BLAS libraries of this process (the one the engine calls
    included) to ``n`` threads. The libraries are looked up once per process (about 3 ms
    each time otherwise)."""
    pid = os.getpid()
    if pid not in _controllers:
        _controllers.clear()
        _controllers[pid] = ThreadpoolController()
    return _controllers[pid].limit(limits=n, user_api="blas")


def batch_parts(threads, batch: int, sizes) -> int:
    """How many parts each batch of ``batch`` rows is split into for ``threads`` threads
    (None: the caller's BLAS settings, one part): ``threads`` when each part gets at least
    knobs.PARALLEL_MIN multiply-adds per layer pass, else 1."""
    if threads is None or threads < 2 or batch < threads:
        return 1
    weights = sum(int(a) * int(b) for a, b in zip(sizes[:-1], sizes[1:]))
    return threads if -(-batch // threads) * weights >= knobs.PARALLEL_MIN else 1


def run_threads(threads, parts: int):
    """A context for a whole training run: BLAS at ``threads`` threads (at one when the
    run is split in parts, each part's products then run on its own thread); nothing
    changes with ``threads`` None."""
    if threads is None:
        return contextlib.nullcontext()
    return blas_threads(1 if parts > 1 else threads)


@contextlib.contextmanager
def parallel_call(parts: int):
    """A context for one call of a parallel entry point: at most ``parts`` numba threads
    (numba's setting is per calling thread), one such call at a time in this process."""
    import numba  # (imported by the engine already; not at this module's import)

    if not os.environ.get("NUMBA_THREADING_LAYER"):
        numba.config.THREADING_LAYER = "workqueue"  # read at the first parallel launch
    with _LAUNCH:
        previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(parts, numba.config.NUMBA_NUM_THREADS)))
        try:
            yield
        finally:
            numba.set_num_threads(previous)

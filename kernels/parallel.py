"""How one training run uses ``threads``: parts of each batch on as many cores, or BLAS's.

``kernels.train(threads=T)`` splits every batch and whole-set evaluation into T parts trained
on T numba threads when each part is big enough (knobs.PARALLEL_MIN), each part calling BLAS:
the elementwise passes run in parallel too, which BLAS threads leave on one core. Otherwise
it trains in one part, and its products are BLAS's to split. kernels does not set BLAS's
threads (threadpoolctl is the caller's: kernels imports numerics only); ``blas_threads_for``
says what the caller should set: 1 when the run is split, else T. The bits depend on T (and
the BLAS threads), not on how many cores run the parts: they are summed in a fixed order.
"""

import os
import threading

from . import knobs

# numba's thread pool runs on TBB where the ``tbb`` package is installed (a dependency on
# x86-64 Linux), else on its own "workqueue" layer, unless NUMBA_THREADING_LAYER says otherwise.
# Both are safe in a forked child (Celery's prefork pool), which GNU OpenMP's is not. TBB
# starts a parallel region in ~1.6 us where workqueue takes ~105 us (a batch launches 2
# regions: bench/README.md, 2026-12-05 evening). workqueue must not be entered by two
# threads at once (it aborts the process), hence _LAUNCH, kept for every layer.
_LAUNCH = threading.Lock()
_LAYER_CHOSEN = False
MAX_THREADS = 1024  # a bound on ``threads``, far above any machine's cores


def batch_rows(batch_mode: str, batch_size: int, n: int) -> int:
    """Rows per training batch for a batch mode."""
    if batch_mode == "sgd":
        return 1
    if batch_mode == "full":
        return n
    return min(batch_size, n)


def batch_parts(threads, batch: int, sizes) -> int:
    """How many parts each batch of ``batch`` rows is split into for ``threads`` threads
    (None: one part): ``threads`` when each part gets at least knobs.PARALLEL_MIN_ROWS rows
    and knobs.PARALLEL_MIN multiply-adds per layer pass, else 1."""
    if threads is None or threads < 2 or batch < threads:
        return 1
    weights = sum(int(a) * int(b) for a, b in zip(sizes[:-1], sizes[1:]))
    rows = -(-batch // threads)
    big_enough = rows >= knobs.PARALLEL_MIN_ROWS and rows * weights >= knobs.PARALLEL_MIN
    return threads if big_enough else 1


def blas_threads_for(threads: int, *, layers, batch_mode: str, batch_size: int,
                     rows: int) -> int:
    """The BLAS threads to set (threadpoolctl) around ``kernels.train(threads=threads)`` on
    ``rows`` training rows: 1 when its batches are split in parts (each part's products on
    its own core), else ``threads``."""
    parts = batch_parts(threads, batch_rows(batch_mode, batch_size, rows), list(layers))
    return 1 if parts > 1 else threads


class parallel_call:
    """A context for one call of a parallel entry point: at most ``parts`` numba threads
    (numba's setting is per calling thread), one such call at a time in this process."""

    def __init__(self, parts: int):
        self.parts = parts

    def __enter__(self):
        import numba  # (loaded by the engine already; not at this module's import)

        _LAUNCH.acquire()
        _choose_threading_layer()
        self.previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(self.parts, numba.config.NUMBA_NUM_THREADS)))
        return self

    def __exit__(self, *exc):
        import numba

        numba.set_num_threads(self.previous)
        _LAUNCH.release()


def _choose_threading_layer() -> None:
    """Set numba's threading layer before its first parallel launch (it is fixed from then
    on): NUMBA_THREADING_LAYER if set, else "tbb" when its library loads, else "workqueue"."""
    global _LAYER_CHOSEN
    if _LAYER_CHOSEN:
        return
    import numba

    if not os.environ.get("NUMBA_THREADING_LAYER"):
        numba.config.THREADING_LAYER = "tbb" if _load_tbb() else "workqueue"
    _LAYER_CHOSEN = True


def _load_tbb() -> bool:
    """Load TBB's library for numba's tbb layer. pip's ``tbb`` wheel puts it in the
    environment's lib folder, which the dynamic loader does not search in a virtualenv."""
    import ctypes
    import sys

    for library in (os.path.join(sys.prefix, "lib", "libtbb.so.12"), "libtbb.so.12"):
        try:
            ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        try:
            from numba.np.ufunc import tbbpool  # noqa: F401  (numba's own version check)
        except ImportError:
            return False
        return True
    return False

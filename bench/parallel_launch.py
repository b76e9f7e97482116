"""What one parallel region costs to start on each of numba's threading layers: a prange(2)
over two array elements, called 20000 times, microseconds per call (best of 3). The parts
path (kernels/parallel.py) starts two or three regions per batch, so this cost is per batch.

Run by hand:  .venv/bin/python bench/parallel_launch.py
Each layer runs in a process of its own (numba fixes the layer at the first launch); kernels
loads TBB's library the way the engine does, and a layer that cannot load is reported so.
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = """
import time
import numba
import numpy as np
from numba import njit, prange
from kernels import parallel

@njit(parallel=True, cache=False)
def touch(a):
    for i in prange(2):
        a[i] += 1.0

a = np.zeros(2)
with parallel.parallel_call(2):
    touch(a)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(20000):
            touch(a)
        best = min(best, (time.perf_counter() - t) / 20000)
print(f"{numba.threading_layer():10s} {best * 1e6:8.1f} us per parallel region")
"""


def main() -> None:
    """Print the start cost of a parallel region on each threading layer."""
    for layer in ("tbb", "omp", "workqueue"):
        env = dict(os.environ, NUMBA_THREADING_LAYER=layer)
        if layer == "tbb":  # the engine's choice: kernels/parallel.py loads TBB's library
            env.pop("NUMBA_THREADING_LAYER")
        done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if done.returncode == 0:
            print(done.stdout.strip())
        else:
            print(f"{layer:10s} not available: {done.stderr.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()

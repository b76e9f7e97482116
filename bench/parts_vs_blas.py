"""kernels.train on 784-256-128-10 (10000 random rows) with its batches split in parts on two
cores, with two BLAS threads, and with one thread: ms per epoch (eval every epoch), best of 5
after a warm-up. Run by hand:  .venv/bin/python bench/parts_vs_blas.py float64 256|full [S]
S sets knobs.SHARES_MAX_ROWS (0: every part stores its own first-layer gradients; a large
value: the first layer always summed by shares of its units).
"""
import os
import sys

# bench/kernels.py would shadow the package: import it from the checkout's root.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [os.path.dirname(_HERE)] + [p for p in sys.path
                                         if os.path.abspath(p or ".") != _HERE]
import time
import numpy as np
from threadpoolctl import threadpool_limits
import kernels
from kernels import knobs
dtype = sys.argv[1]; batch = sys.argv[2]
if len(sys.argv) > 3:
    knobs.SHARES_MAX_ROWS = int(sys.argv[3])
n = 10000
rng = np.random.default_rng(0)
X = rng.standard_normal((n, 784)).astype(dtype)
lab = rng.integers(0, 10, n)
kw = dict(layers=[784, 256, 128, 10], activation="relu", output_activation="softmax", loss="cross_entropy", learning_rate=0.001, epochs=4, shuffle=False, dtype=dtype)
kw.update(batch_mode="full") if batch == "full" else kw.update(batch_mode="minibatch", batch_size=int(batch))
res = {}
for r in range(6):
    for mode in ("parts", "blas2", "blas1"):
        knobs.PARALLEL_MIN = 0 if mode == "parts" else (1 << 62)
        knobs.PARALLEL_MIN_ROWS = 0
        th = 1 if mode == "blas1" else 2
        with threadpool_limits(kernels.blas_threads_for(th, layers=kw["layers"], batch_mode=kw["batch_mode"], batch_size=kw.get("batch_size", 32), rows=n), user_api="blas"):
            t = time.perf_counter()
            kernels.train(X, lab, threads=th, **kw)
            res.setdefault(mode, []).append(time.perf_counter() - t)
for m, ts in res.items():
    print(dtype, batch, m, f"{min(ts[1:]) * 1e3 / 4:.1f} ms/epoch (eval every epoch)", [round(x*250,1) for x in ts])

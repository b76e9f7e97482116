"""Prototype, not the engine: each mini-batch split in two halves, each trained with one-thread
BLAS on its own core (numba prange(2) over the engine's own inner functions), the two gradient
halves then summed and applied; against kernels.train at one and two BLAS threads.

Run by hand:  .venv/bin/python bench/data_parallel.py [float64|float32] [batch]

784-256-128-10 on 10000 random rows, plain SGD, no shuffling. The prototype scales each half's
delta by the half's rows (timing only: its numbers are not the contract's). kernels.train's
"ms/epoch" is a 3-epoch run with eval_every 3 divided by 3.67 (two whole-set forward passes
count as 2/3 of an epoch's products); the prototype evaluates nothing. GF/s count 6 flops per
weight per row for every layer, an over-count (layer 0 computes no input gradient): compare
the rows with each other, not with a matmul peak.
"""

import os, sys, time

# bench/kernels.py would shadow the package: import it from the checkout's root.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [ROOT] + [
    p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))
]
import numpy as np
import numba
from numba import njit, prange
from threadpoolctl import threadpool_limits
import kernels
from kernels import _engine as E
from kernels.network import pack
from kernels.init import init_params
from kernels.validation import check_network

dtype = np.dtype(sys.argv[1] if len(sys.argv) > 1 else "float64")
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 256
n = 10000
rng = np.random.default_rng(0)
X = rng.standard_normal((n, 784)).astype(dtype)
lab = rng.integers(0, 10, n)
Y = np.eye(10, dtype=dtype)[lab]


@njit(parallel=True, cache=False, nogil=True, error_model="numpy")
def dp_epoch(X, Y, P, nets, bufs0, bufs1, loss, consts, batch, blas_min):
    n = X.shape[0]
    flat_X = X.reshape(X.size)
    n_in = np.uint64(X.shape[1])
    order = np.empty(0, np.int64)
    G0 = bufs0[5]
    G1 = bufs1[5]
    npar = P.shape[0]
    lr = consts[0]
    for start in range(0, n, batch):
        b = min(batch, n - start)
        h0 = (b + 1) // 2
        for h in prange(2):
            s = start if h == 0 else start + h0
            bh = np.uint64(h0 if h == 0 else b - h0)
            bufs = bufs0 if h == 0 else bufs1
            E._load_rows(X, Y, order, s, bh, bufs, True)
            i0 = np.uint64(s) * n_in
            E._forward(P, nets, bufs, bh, consts, blas_min, flat_X, i0)
            E._output_delta(nets, bufs, bh, loss, consts, P[0] * 0 + bh)
            E._backward(
                P,
                nets,
                bufs,
                bh,
                consts,
                np.int64(0),
                blas_min,
                np.empty(0, P.dtype),
                np.int64(0),
                np.bool_(False),
                flat_X,
                i0,
                np.int64(0),
            )
        half = (npar + 1) // 2
        for h in prange(2):
            lo = 0 if h == 0 else half
            hi = half if h == 0 else npar
            for k in range(lo, hi):
                P[k] -= lr * (G0[k] + G1[k])


net = check_network([784, 256, 128, 10], "relu", "softmax", "cross_entropy", dtype)
flat = pack(init_params(net.sizes.tolist(), "uniform", 0, net.dtype), net)
ws0 = net.workspace(batch)
ws1 = net.workspace(batch)
consts = net.consts(0.01)
bm = np.uint64(4096)
numba.set_num_threads(2)
flops_step = 6 * sum(int(a) * int(b) for a, b in zip(net.sizes[:-1], net.sizes[1:]))
with threadpool_limits(1, user_api="blas"):
    P = flat.copy()
    dp_epoch(X, Y, P, ws0.net, ws0.bufs, ws1.bufs, net.loss, consts, batch, bm)
    print("layer", numba.threading_layer())
    ts = []
    for r in range(5):
        t = time.perf_counter()
        dp_epoch(X, Y, P, ws0.net, ws0.bufs, ws1.bufs, net.loss, consts, batch, bm)
        ts.append(time.perf_counter() - t)
    t = min(ts)
    print(
        f"dp: {t * 1e3:.1f} ms/epoch  {flops_step * n / t / 1e9:.1f} GF/s  all={[round(x * 1e3, 1) for x in ts]}"
    )
for th in (1, 2):
    with threadpool_limits(th, user_api="blas"):
        ts = []
        for r in range(3):
            t = time.perf_counter()
            kernels.train(
                X,
                lab,
                layers=[784, 256, 128, 10],
                activation="relu",
                output_activation="softmax",
                loss="cross_entropy",
                learning_rate=0.01,
                batch_mode="minibatch",
                batch_size=batch,
                epochs=3,
                eval_every=3,
                shuffle=False,
                dtype=dtype.name,
            )
            ts.append(time.perf_counter() - t)
        # 3 epochs of training + 2 evals (epoch0, last) ~ forward only (1/3 of step flops each)
        t = min(ts)
        fl = flops_step * n * 3 + 2 * flops_step / 3 * n
        print(f"train@{th}: {t * 1e3 / 3.667:.1f} ms/epoch  {fl / t / 1e9:.1f} GF/s")

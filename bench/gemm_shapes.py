"""The engine's GEMM calls for one epoch of 784-256-128-10, timed alone at 1 and 2 threads.

Each product is called through ``scipy.linalg.blas`` (the OpenBLAS the engine calls) with the
engine's shapes, layouts and transposes (row-major buffers seen as column-major transposes,
biases in C with beta = 1, the weight update folded into the gradient product), best of 5.
The sum is the floor of a training epoch at that batch: what the epoch takes beyond it is
the elementwise passes and the waits between products.

    .venv/bin/python bench/gemm_shapes.py                       # float32, full batch (10000)
    .venv/bin/python bench/gemm_shapes.py --dtype float64 --batch 256
"""

import argparse
import time

import numpy as np
import threadpoolctl
from scipy.linalg import blas

SIZES = [784, 256, 128, 10]
N = 10000  # samples per epoch, as bench/kernels.py's net c


def engine_calls(dtype: str, b: int):
    """(label, FLOPs, call) for each product of one step on a batch of b rows."""
    rng = np.random.default_rng(0)
    gemm = blas.dgemm if dtype == "float64" else blas.sgemm
    A = [rng.standard_normal((b, s)).astype(dtype) for s in SIZES]  # layer outputs
    D = [rng.standard_normal((b, s)).astype(dtype) for s in SIZES]  # deltas
    W = [rng.standard_normal((SIZES[i + 1], SIZES[i])).astype(dtype) for i in range(3)]
    calls = []
    for i in range(3):  # Z (n_out x b, column-major) += W^T-view @ A
        out = A[i + 1] if i < 2 else D[3]
        calls.append((f"forward {i}: m={SIZES[i + 1]} n={b} k={SIZES[i]}",
                      2 * b * SIZES[i] * SIZES[i + 1],
                      lambda i=i, out=out: gemm(1.0, W[i].T, A[i].T, beta=1.0, c=out.T,
                                                trans_a=1, overwrite_c=1)))
    for i in (2, 1, 0):
        if i > 0:  # dA (n_in x b) = W @ D
            calls.append((f"input grad {i}: m={SIZES[i]} n={b} k={SIZES[i + 1]}",
                          2 * b * SIZES[i] * SIZES[i + 1],
                          lambda i=i: gemm(1.0, W[i].T, D[i + 1].T, beta=0.0, c=D[i].T,
                                           overwrite_c=1)))
        # W (n_in x n_out) += -lr * A @ D^T
        calls.append((f"weight grad {i}: m={SIZES[i]} n={SIZES[i + 1]} k={b}",
                      2 * b * SIZES[i] * SIZES[i + 1],
                      lambda i=i: gemm(-0.001, A[i].T, D[i + 1].T, beta=1.0, c=W[i].T,
                                       trans_b=1, overwrite_c=1)))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--batch", type=int, default=N)
    args = parser.parse_args()
    steps = -(-N // args.batch)
    for threads in (1, 2):
        with threadpoolctl.threadpool_limits(threads, user_api="blas"):
            total = 0.0
            for label, flops, call in engine_calls(args.dtype, args.batch):
                call()
                reps = max(1, int(2e9 / flops))
                best = float("inf")
                for _ in range(5):
                    start = time.perf_counter()
                    for _ in range(reps):
                        call()
                    best = min(best, (time.perf_counter() - start) / reps)
                total += best
                print(f"{threads} thread(s) {label:32s} {best * 1e3:8.2f} ms "
                      f"{flops / best / 1e9:7.1f} GFLOP/s")
            print(f"{threads} thread(s) one epoch ({steps} steps of {args.batch}): "
                  f"{total * steps * 1e3:.1f} ms of products")


if __name__ == "__main__":
    main()

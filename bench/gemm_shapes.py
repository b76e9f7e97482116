"""The engine's GEMM calls for one epoch of 784-256-128-10, timed alone at 1 and 2 threads.

Each product is called through ``scipy.linalg.blas`` (the OpenBLAS the engine calls) with the
engine's shapes, layouts and transposes (row-major buffers seen as column-major transposes,
biases in C with beta = 1, the weight update folded into the gradient product), best of 5.
The sum is the floor of a training epoch at that batch: what the epoch takes beyond it is
the elementwise passes and the waits between products.

    .venv/bin/python bench/gemm_shapes.py                       # float32, full batch (10000)
    .venv/bin/python bench/gemm_shapes.py --dtype float64 --batch 256
    .venv/bin/python bench/gemm_shapes.py --numpy-blas          # the same calls, NumPy's BLAS
    .venv/bin/python bench/gemm_shapes.py --transposed          # each product's transpose

``--numpy-blas`` makes the same calls through the OpenBLAS NumPy bundles (the one NumPy's
matmul peak and the sklearn and NumPy peers use: another build, often another version),
through its CBLAS interface with ctypes: what the engine's products would take there.
``--transposed`` computes each product's transpose instead (C^T = B^T A^T, the operands
swapped): the same FLOPs with the batch's rows on the other side of the call, as a layout
with each unit's values of the batch contiguous (instead of each row's) would call it.
"""

import argparse
import ctypes
import glob
import os
import time

import numpy as np
import threadpoolctl
from scipy.linalg import blas

SIZES = [784, 256, 128, 10]
N = 10000  # samples per epoch, as bench/kernels.py's net c


def numpy_blas_gemm(dtype: str):
    """A function called as scipy.linalg.blas's xgemm (F-ordered operands) that runs NumPy's
    bundled OpenBLAS (ILP64 CBLAS, column-major) on them; SystemExit where NumPy has none."""
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    found = sorted(glob.glob(os.path.join(libs, "libscipy_openblas64_*.so*")))
    if not found:
        raise SystemExit(f"--numpy-blas: no bundled OpenBLAS in {os.path.abspath(libs)}")
    lib = ctypes.CDLL(found[0])
    kind = "d" if dtype == "float64" else "s"
    cblas = getattr(lib, f"scipy_cblas_{kind}gemm64_")
    scalar = ctypes.c_double if dtype == "float64" else ctypes.c_float
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    cblas.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i64, i64, i64, scalar, ptr,
                      i64, ptr, i64, scalar, ptr, i64]
    col_major, no_trans, trans = 102, 111, 112

    def gemm(alpha, a, b, beta=0.0, c=None, trans_a=0, trans_b=0, overwrite_c=1):
        assert a.flags.f_contiguous and b.flags.f_contiguous and c.flags.f_contiguous
        m, n = c.shape
        k = a.shape[0] if trans_a else a.shape[1]
        cblas(col_major, trans if trans_a else no_trans, trans if trans_b else no_trans,
              m, n, k, alpha, a.ctypes.data, a.shape[0], b.ctypes.data, b.shape[0], beta,
              c.ctypes.data, c.shape[0])
        return c

    return gemm


def transposed(gemm):
    """A gemm that computes the transpose of what it is asked for (C^T = op(B)^T op(A)^T)
    into a column-major buffer of its own, the same shape as C^T."""
    buffers = {}

    def gemm_t(alpha, a, b, beta=0.0, c=None, trans_a=0, trans_b=0, overwrite_c=1):
        key = (c.shape, c.dtype)
        if key not in buffers:
            buffers[key] = np.asfortranarray(c.T)
        return gemm(alpha, b, a, beta=beta, c=buffers[key], trans_a=1 - trans_b,
                    trans_b=1 - trans_a, overwrite_c=1)

    return gemm_t


def engine_calls(dtype: str, b: int, numpy_blas: bool = False, transpose: bool = False):
    """(label, FLOPs, call) for each product of one step on a batch of b rows."""
    rng = np.random.default_rng(0)
    if numpy_blas:
        gemm = numpy_blas_gemm(dtype)
    else:
        gemm = blas.dgemm if dtype == "float64" else blas.sgemm
    if transpose:
        gemm = transposed(gemm)
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
    parser.add_argument("--numpy-blas", action="store_true",
                        help="call NumPy's bundled OpenBLAS instead of SciPy's (the engine's)")
    parser.add_argument("--transposed", action="store_true",
                        help="compute each product's transpose (the rows on the other side)")
    args = parser.parse_args()
    print(f"{args.dtype}, batch {args.batch}, through "
          f"{'NumPy' if args.numpy_blas else 'SciPy (the engine)'}'s OpenBLAS"
          f"{', each product transposed' if args.transposed else ''}")
    steps = -(-N // args.batch)
    for threads in (1, 2):
        with threadpoolctl.threadpool_limits(threads, user_api="blas"):
            total = 0.0
            calls = engine_calls(args.dtype, args.batch, args.numpy_blas, args.transposed)
            for label, flops, call in calls:
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

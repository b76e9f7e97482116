"""The engine's own code run by the Python interpreter instead of numba: no compile.

A machine whose kernel cache is empty compiles the float64 training kernels for 8-20 s before
its first run can start. A tiny run (examples/xor.json, a dataset of a few rows) can instead
run ``kernels/_engine.py``'s functions as the Python functions they are written as: the same
operations on the same float64 values in the same order, so the same bits, at a few
microseconds per operation (about 1000x slower than compiled, so only for tiny runs).
``kernels.train(..., engine="python")`` does that; tests/kernels/test_interpreted.py checks
the bits against the compiled engine.

What numba provides beyond plain Python is supplied here, with the same results:
- the BLAS intrinsics call the same library (SciPy's OpenBLAS) through ``scipy.linalg.blas``,
  with the same arguments;
- the float64 exp, expm1, sigmoid and tanh (fused multiply-adds, bit casts) are the engine's
  own functions compiled alone: well under a second on an empty cache, then cached;
- bit casts use NumPy views. float32 is not supported (its kernels compile in the background).

The module is built once per process by executing the engine's source into a new namespace
and replacing each jitted function by its Python function, so calls between them stay in
Python; it shares nothing with the compiled engine's dispatchers.
"""

from __future__ import annotations

import types as pytypes

import numpy as np

from . import _engine as jitted

# The engine's scalar functions that the interpreted engine calls compiled (see above):
# each is a few fused multiply-adds that would cost microseconds each through Python.
COMPILED_SCALARS = ("_exp_nonpositive", "_expm1_nonpositive", "_sigmoid", "_tanh")

_module = None


def engine() -> pytypes.ModuleType:
    """The interpreted engine: a module with the compiled engine's entry points
    (``train_epochs``, ``evaluate``, ``plateau_update``...) as plain Python functions."""
    global _module
    if _module is None:
        _module = _build()
    return _module


def _build() -> pytypes.ModuleType:
    from numba.core.registry import CPUDispatcher

    from ._jitcache import njit

    module = pytypes.ModuleType(f"{jitted.__name__}_interpreted")
    module.__file__ = jitted.__file__
    module.__package__ = jitted.__package__
    with open(jitted.__file__, encoding="utf-8") as source:
        code = compile(source.read(), jitted.__file__, "exec")
    namespace = module.__dict__
    exec(code, namespace)
    for name, value in list(namespace.items()):
        if isinstance(value, CPUDispatcher):
            namespace[name] = value.py_func
    scalars = {name: njit(**jitted._JIT)(getattr(jitted, name).py_func)
               for name in COMPILED_SCALARS}
    namespace.update(scalars)
    namespace.update(
        _exp_of=_float64_only(scalars["_exp_nonpositive"]),
        _sigmoid_of=_float64_only(scalars["_sigmoid"]),
        _tanh_of=_float64_only(scalars["_tanh"]),
        _bits_as_float=_bits_as_float,
        _bits_as_float32=_unsupported,
        _fma=_unsupported,  # only the compiled scalars use it
        _gemm=_gemm,
        _gemv=_gemv,
    )
    return module


def _float64_only(compiled):
    def call(v):
        if not isinstance(v, np.float64):
            _unsupported()
        return compiled(v)

    return call


def _unsupported(*_):
    raise TypeError("the interpreted engine runs float64 only")


def _bits_as_float(bits):
    return np.int64(bits).view(np.float64)


def _column_major(flat, offset, rows, cols):
    """rows x cols column-major (leading dimension rows) at flat[offset:], as an F-ordered view."""
    start = int(offset)
    return flat[start:start + int(rows) * int(cols)].reshape(int(cols), int(rows)).T


def _blas(name, flat):
    from scipy.linalg import blas

    if flat.dtype != np.float64:
        _unsupported()
    return getattr(blas, "d" + name)


def _gemm(ta, tb, m, n, k, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc):
    """The engine's _gemm intrinsic (column-major xGEMM on flat arrays from offsets, with
    leading dimensions equal to the stored rows, as every call in the engine has them)."""
    trans_a, trans_b = ta == ord("t"), tb == ord("t")
    a = _column_major(A, a0, lda, m if trans_a else k)
    b = _column_major(B, b0, ldb, k if trans_b else n)
    c = _column_major(C, c0, ldc, n)
    out = _blas("gemm", C)(alpha, a, b, beta=beta, c=c, trans_a=trans_a, trans_b=trans_b,
                           overwrite_c=1)
    if not np.shares_memory(out, c):
        c[...] = out
    return 0


def _gemv(trans, m, n, alpha, A, a0, lda, x, x0, beta, y, y0):
    """The engine's _gemv intrinsic: y[y0:] = alpha * op(A[a0:]) @ x[x0:] + beta * y[y0:]."""
    transposed = trans == ord("t")
    a = _column_major(A, a0, lda, n)
    length_x, length_y = (m, n) if transposed else (n, m)
    xs = x[int(x0):int(x0) + int(length_x)]
    ys = y[int(y0):int(y0) + int(length_y)]
    out = _blas("gemv", y)(alpha, a, xs, beta=beta, y=ys, trans=int(transposed),
                           overwrite_y=1)
    if not np.shares_memory(out, ys):
        ys[...] = out
    return 0

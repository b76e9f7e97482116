"""The engine's own code run by the Python interpreter instead of numba: no compile.

A machine whose kernel cache is empty compiles the float64 training kernels for 8-20 s before
its first run can start. A tiny run (examples/xor.json, a dataset of a few rows) can instead
run ``kernels/_engine.py``'s functions as the Python functions they are written as: the same
operations on the same float64 values in the same order, so the same bits, at a few
microseconds per operation (about 1000x slower than compiled, so only for tiny runs).
``kernels.train(..., engine="python")`` does that; tests/kernels/test_interpreted.py checks
the bits against the compiled engine.

What numba provides beyond plain Python is supplied here, with the same results:
- the BLAS intrinsics make the same calls of the same C function (numba's wrapper of SciPy's
  BLAS, ``numba_xxgemm``/``numba_xxgemv``), through ctypes;
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


def _address(array, offset) -> int:
    """The address of array[offset] (a flat array)."""
    return array.ctypes.data + int(offset) * array.itemsize


def _scalar_slot(array, value):
    """A one-element array of the array's dtype holding ``value`` (BLAS reads alpha and beta
    through pointers)."""
    return np.array([value], dtype=array.dtype)


_helpers: dict = {}


def _helper(name: str):
    """numba's own C wrapper of SciPy's BLAS, ``numba_xxgemm`` or ``numba_xxgemv`` (what the
    engine's intrinsics call), through ctypes with the GIL held (its first call imports
    SciPy's cython_blas)."""
    if name not in _helpers:
        import ctypes

        from numba import _helperlib

        char, size, pointer = ctypes.c_char, ctypes.c_ssize_t, ctypes.c_void_p
        if name == "xxgemm":  # kind, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc
            argtypes = (char, char, char, size, size, size, pointer, pointer, size, pointer,
                        size, pointer, pointer, size)
        else:  # kind, trans, m, n, alpha, a, lda, x, beta, y
            argtypes = (char, char, size, size, pointer, pointer, size, pointer, pointer,
                        pointer)
        prototype = ctypes.PYFUNCTYPE(ctypes.c_int, *argtypes)
        _helpers[name] = prototype(_helperlib.c_helpers[name])
    return _helpers[name]


def _kind(array) -> bytes:
    if array.dtype != np.float64:
        _unsupported()
    return b"d"


def _gemm(ta, tb, m, n, k, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc):
    """The engine's _gemm intrinsic: the same call of numba's BLAS wrapper."""
    alpha_slot, beta_slot = _scalar_slot(C, alpha), _scalar_slot(C, beta)
    return _helper("xxgemm")(
        _kind(C), bytes([int(ta)]), bytes([int(tb)]), int(m), int(n), int(k),
        alpha_slot.ctypes.data, _address(A, a0), int(lda), _address(B, b0), int(ldb),
        beta_slot.ctypes.data, _address(C, c0), int(ldc))


def _gemv(trans, m, n, alpha, A, a0, lda, x, x0, beta, y, y0):
    """The engine's _gemv intrinsic: the same call of numba's BLAS wrapper."""
    alpha_slot, beta_slot = _scalar_slot(y, alpha), _scalar_slot(y, beta)
    return _helper("xxgemv")(
        _kind(y), bytes([int(trans)]), int(m), int(n), alpha_slot.ctypes.data,
        _address(A, a0), int(lda), _address(x, x0), beta_slot.ctypes.data, _address(y, y0))

"""The jitted engine: activations, losses, forward, backward and the epoch loops.

Every jitted function lives in this one module so that numba's on-disk cache (keyed here by
the content of this file and of kernels/codes.py, whose constants it compiles in) is
invalidated whenever any of them changes.
Choices (activation, loss, accuracy mode) travel as integer codes, and scalars that must
stay in the network's dtype travel in the small ``consts`` array, so each public kernel
compiles once per dtype rather than once per combination.

Arrays are flat and indexed by hand, so the per-batch path creates no array views (each
view costs reference counting, which dominated small batches); only products big enough for
BLAS get 2-D views. The network travels as ``net = (sizes, poff, aoff, acts)``:
- ``params`` holds, for each layer l from ``poff[l]``, ``W`` (n_out x n_in, row-major) then ``B``;
- ``abuf`` holds, for each layer l from ``aoff[l]``, up to ``rows`` rows of its activations
  (layer 0 is the batch's inputs);
- ``acts[l]`` is layer l's activation code (the last is the output's).
Scratch buffers travel as ``bufs = (abuf, zout, ybuf, delta1, delta2, grads, scratch)``: the
output layer's pre-activations, the batch's targets, two deltas, a gradient array like params
and a float64 scratch of rows x (outputs + 1) for the loss.

Flat indices are unsigned (``sizes``, ``poff`` and ``aoff`` are uint64 arrays, batch row
counts are passed as uint64): numba wraps negative signed indices, and that check stops LLVM
from vectorising any loop whose start it cannot prove non-negative. Mixing uint64 with int64
makes float64 in numba, so index arithmetic stays uint64 throughout.
"""

import math

import numpy as np
from llvmlite import ir as llvm_ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.linalg import ensure_blas

from ._jitcache import njit  # numba's, with cache=True in a per-user, content-keyed folder
from .cachepaths import ENGINE_KEY_FILES as CACHE_KEY_FILES  # noqa: F401  (see _jitcache)
from .codes import (  # noqa: F401  (the engine's globals: numba compiles them in)
    LINEAR, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX, MSE, CROSS_ENTROPY, ACC_NONE, ACC_ARGMAX,
    ACC_THRESHOLD, C_LR, C_SLOPE, C_ONE, C_ZERO, C_HALF, C_SCRATCH, C_MU, C_W1, C_W1C, C_BETA2,
    C_W2, C_EPS, C_DECAY, C_STEP, C_BC2S, C_SHRINK, C_TINY, N_CONSTS, OPT_SGD, OPT_MOMENTUM,
    OPT_NESTEROV, OPT_ADAM, OPT_ADAMW, PLATEAU_OFF, PLATEAU_ERROR, PLATEAU_VAL_ERROR, I_OPT,
    I_GENERAL, I_METRIC, I_PATIENCE, I_RESTORE, I_T, I_BEST_EPOCH, I_BAD, I_CHECKED, I_STATUS,
    I_EVERY, I_SHARES_ROWS, N_CTL, H_MOMENTUM, H_BETA1, H_BETA2, H_EPS, H_DECAY, H_CLIP,
    H_MIN_DELTA, H_BEST, N_HYPER, RAN, DIVERGED, PLATEAU,
)

# numba's np.dot calls SciPy's BLAS (its own OpenBLAS, not NumPy's), which numba would load
# at the first compile or cache load; loaded now, thread limits set after importing kernels
# (threadpoolctl) reach it too instead of leaving it at one thread per core.
ensure_blas()

_JIT = dict(cache=True, nogil=True, error_model="numpy")
# The functions only jitted code calls (named _...) get no Python or C wrapper: less code to
# generate for each of them (about 1 s of a 9 s cold compile).
_JIT_INNER = dict(_JIT, no_cpython_wrapper=True, no_cfunc_wrapper=True)
# Those of them that neither allocate nor return an array also skip numba's reference counts
# (its private option _nrt=False; the bits are the same): a call otherwise increments and
# decrements the count of each array it unpacks, every one an atomic instruction, which took
# 16 % of the CPU in 64-16-10 training at batch 16 (perf; bench/README.md, 2026-12-06). numba
# refuses to compile an allocation in them; returning an array from one would free it too
# early, which tests/kernels/test_specialisations.py checks for.
_JIT_LEAF = dict(_JIT_INNER, _nrt=False)
_U = np.uint64
_U0 = np.uint64(0)
_U1 = np.uint64(1)
# Arguments passed as typed values, not literals: numba compiles a callee once per literal
# it is called with, so a literal 0 or False beside a run-time int or bool would double it.
_I0 = np.int64(0)
_I1 = np.int64(1)
_NO_DECAY = np.bool_(False)


# ------------------------------------------------------------------------------- BLAS

# numba's own wrappers of SciPy's cython_blas (the functions np.dot calls), declared by
# name: the compiled code refers to the symbol, not to an address, so it stays cacheable.
_LL_CHAR = llvm_ir.IntType(8)
_LL_VOIDP = llvm_ir.IntType(8).as_pointer()
_LL_INTP = llvm_ir.IntType(64)


def _blas_pointer(context, builder, array_type, array, offset, offset_type):
    """An i8* to array[offset] (a flat array of the dtype), for BLAS."""
    data = context.make_array(array_type)(context, builder, array).data
    index = context.cast(builder, offset, offset_type, types.intp)
    return builder.bitcast(builder.gep(data, [index]), _LL_VOIDP)


def _blas_int(context, builder, value, value_type):
    return context.cast(builder, value, value_type, types.intp)


def _blas_kind(dtype):
    return ord("d") if dtype == types.float64 else ord("s")


@intrinsic
def _gemm(typingctx, ta, tb, m, n, k, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc):
    """BLAS xGEMM in its own (column-major) terms on flat arrays from the given offsets:
    C[c0:] = alpha * op(A[a0:]) @ op(B[b0:]) + beta * C[c0:], op by ``ta``/``tb``
    (ord("n") or ord("t")). With beta = 0, C is only written. No array views are made."""
    if not (isinstance(A, types.Array) and A.dtype in (types.float32, types.float64)
            and A == B == C and alpha == beta == A.dtype):
        return None
    sig = types.int32(ta, tb, m, n, k, alpha, A, a0, lda, B, b0, ldb, beta, C, c0, ldc)

    def codegen(context, builder, signature, args):
        t = signature.args
        fnty = llvm_ir.FunctionType(llvm_ir.IntType(32), [
            _LL_CHAR, _LL_CHAR, _LL_CHAR, _LL_INTP, _LL_INTP, _LL_INTP,
            _LL_VOIDP, _LL_VOIDP, _LL_INTP, _LL_VOIDP, _LL_INTP, _LL_VOIDP, _LL_VOIDP, _LL_INTP])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        alpha_slot = cgutils.alloca_once_value(builder, args[5])
        beta_slot = cgutils.alloca_once_value(builder, args[12])
        ints = [_blas_int(context, builder, args[i], t[i]) for i in (2, 3, 4, 8, 11, 15)]
        return builder.call(fn, (
            llvm_ir.Constant(_LL_CHAR, _blas_kind(t[6].dtype)),
            builder.trunc(args[0], _LL_CHAR), builder.trunc(args[1], _LL_CHAR),
            ints[0], ints[1], ints[2],
            builder.bitcast(alpha_slot, _LL_VOIDP),
            _blas_pointer(context, builder, t[6], args[6], args[7], t[7]), ints[3],
            _blas_pointer(context, builder, t[9], args[9], args[10], t[10]), ints[4],
            builder.bitcast(beta_slot, _LL_VOIDP),
            _blas_pointer(context, builder, t[13], args[13], args[14], t[14]), ints[5]))

    return sig, codegen


@intrinsic
def _gemv(typingctx, trans, m, n, alpha, A, a0, lda, x, x0, beta, y, y0):
    """BLAS xGEMV in its own (column-major) terms, unit strides, on flat arrays from the
    given offsets: y[y0:] = alpha * op(A[a0:]) @ x[x0:] + beta * y[y0:]."""
    if not (isinstance(A, types.Array) and A.dtype in (types.float32, types.float64)
            and A == x == y and alpha == beta == A.dtype):
        return None
    sig = types.int32(trans, m, n, alpha, A, a0, lda, x, x0, beta, y, y0)

    def codegen(context, builder, signature, args):
        t = signature.args
        fnty = llvm_ir.FunctionType(llvm_ir.IntType(32), [
            _LL_CHAR, _LL_CHAR, _LL_INTP, _LL_INTP, _LL_VOIDP, _LL_VOIDP, _LL_INTP,
            _LL_VOIDP, _LL_VOIDP, _LL_VOIDP])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemv")
        alpha_slot = cgutils.alloca_once_value(builder, args[3])
        beta_slot = cgutils.alloca_once_value(builder, args[9])
        ints = [_blas_int(context, builder, args[i], t[i]) for i in (1, 2, 6)]
        return builder.call(fn, (
            llvm_ir.Constant(_LL_CHAR, _blas_kind(t[4].dtype)), builder.trunc(args[0], _LL_CHAR),
            ints[0], ints[1], builder.bitcast(alpha_slot, _LL_VOIDP),
            _blas_pointer(context, builder, t[4], args[4], args[5], t[5]), ints[2],
            _blas_pointer(context, builder, t[7], args[7], args[8], t[8]),
            builder.bitcast(beta_slot, _LL_VOIDP),
            _blas_pointer(context, builder, t[10], args[10], args[11], t[11])))

    return sig, codegen


_N, _T = ord("n"), ord("t")


# ------------------------------------------------------------------------ activations


@intrinsic
def _bits_as_float(typingctx, bits):
    """Reinterpret an int64's bits as a float64 (a plain bitcast that vectorises)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.DoubleType())

    return sig, codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma: a vectorisable instruction where the CPU has FMA, a
    correctly rounded libm call where not, so the result is the same everywhere)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None
    sig = a(a, b, c)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_EXP_MIN = -708.0


@njit(inline="always", **_JIT)
def _ln2_reduction(v):
    """(k, r) with v = k ln2 + r and |r| <= ln2/2 (Cody-Waite), v clamped at _EXP_MIN."""
    w = v if v > _EXP_MIN else _EXP_MIN
    k = math.floor(w * _LOG2E + 0.5)
    return k, (w - k * _LN2_HI) - k * _LN2_LO


@njit(inline="always", **_JIT)
def _exp_series_from_half(r):
    """1/2 + r/3! + ... + r^11/13!, so that exp(r) = 1 + r + r^2 * this (|r| <= ln2/2)."""
    p = 1.0 / 6227020800.0
    p = _fma(p, r, 1.0 / 479001600.0)
    p = _fma(p, r, 1.0 / 39916800.0)
    p = _fma(p, r, 1.0 / 3628800.0)
    p = _fma(p, r, 1.0 / 362880.0)
    p = _fma(p, r, 1.0 / 40320.0)
    p = _fma(p, r, 1.0 / 5040.0)
    p = _fma(p, r, 1.0 / 720.0)
    p = _fma(p, r, 1.0 / 120.0)
    p = _fma(p, r, 1.0 / 24.0)
    p = _fma(p, r, 1.0 / 6.0)
    return _fma(p, r, 0.5)


@njit(inline="always", **_JIT)
def _pow2(k):
    """2**k for an integral float k in the normal range, built from its bits."""
    return _bits_as_float((np.int64(k) + 1023) << 52)


@njit(inline="always", **_JIT)
def _exp_nonpositive(v):
    """exp(v) for v <= 0 in float64, within about one ulp, as straight-line code.

    libm's exp is an opaque call that stops loops from vectorising; this one (Cody-Waite
    reduction, degree-13 Taylor polynomial, exponent built from bits) vectorises.
    Results below exp(-708) are flushed to 0; NaN stays NaN, so divergence shows.
    """
    k, r = _ln2_reduction(v)
    p = _fma(_exp_series_from_half(r), r, 1.0)
    e = _fma(p, r, 1.0) * _pow2(k)
    return e if v >= _EXP_MIN else (0.0 if v < _EXP_MIN else v)


@njit(inline="always", **_JIT)
def _expm1_nonpositive(v):
    """exp(v) - 1 for v <= 0 in float64, vectorisable like _exp_nonpositive and without its
    cancellation near 0: 2^k (exp(r) - 1) + (2^k - 1), each part exact or rounded once."""
    k, r = _ln2_reduction(v)
    q = _fma(_exp_series_from_half(r) * r, r, r)  # exp(r) - 1
    s = _pow2(k)
    m = _fma(s, q, s - 1.0)
    return m if v >= _EXP_MIN else (-1.0 if v < _EXP_MIN else v)


@njit(inline="always", **_JIT)
def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow, in float64."""
    e = _exp_nonpositive(-abs(z))
    r = 1.0 / (1.0 + e)
    return r if z >= 0.0 else e * r


@njit(inline="always", **_JIT)
def _tanh(v):
    """tanh in float64 within a few ulps, vectorisable: -m / (2 + m) with m = expm1(-2|v|),
    which stays accurate near 0 (no cancellation, so no separate series there)."""
    m = _expm1_nonpositive(-2.0 * abs(v))
    t = -m / (2.0 + m)
    return t if v >= 0.0 else -t


@intrinsic
def _bits_as_float32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (a bitcast that vectorises)."""
    sig = types.float32(types.int64)

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], llvm_ir.IntType(32))
        return builder.bitcast(low, llvm_ir.FloatType())

    return sig, codegen


# float32 constants: a bare Python float would promote float32 arithmetic to float64.
_F32 = np.float32
_F32_ZERO, _F32_HALF, _F32_ONE, _F32_TWO = _F32(0.0), _F32(0.5), _F32(1.0), _F32(2.0)
_F32_EXP_MIN = _F32(-87.0)
_F32_LOG2E = _F32(1.4426950408889634)
_F32_LN2_HI = _F32(0.693145751953125)
_F32_LN2_LO = _F32(1.4286068203094172e-06)
_F32_EXP_TAYLOR = tuple(_F32(1.0 / math.factorial(n)) for n in range(8))
_F32_TANH_SMALL = _F32(0.1)
_F32_TANH_TAYLOR = (_F32(-1.0 / 3.0), _F32(2.0 / 15.0), _F32(-17.0 / 315.0))


@njit(inline="always", **_JIT)
def _exp_nonpositive32(v):
    """exp(v) for v <= 0 in float32 arithmetic, within a few ulps, vectorisable; results
    below exp(-87) are flushed to 0, NaN stays NaN."""
    w = v if v > _F32_EXP_MIN else _F32_EXP_MIN
    k = np.floor(w * _F32_LOG2E + _F32_HALF)
    r = (w - k * _F32_LN2_HI) - k * _F32_LN2_LO
    c = _F32_EXP_TAYLOR
    p = c[7]
    p = _fma(p, r, c[6])
    p = _fma(p, r, c[5])
    p = _fma(p, r, c[4])
    p = _fma(p, r, c[3])
    p = _fma(p, r, c[2])
    p = _fma(p, r, c[1])
    p = _fma(p, r, c[0])
    e = p * _bits_as_float32((np.int64(k) + 127) << 23)
    return e if v >= _F32_EXP_MIN else (_F32_ZERO if v < _F32_EXP_MIN else v)


@njit(inline="always", **_JIT)
def _sigmoid32(z):
    """1 / (1 + exp(-z)) in float32 arithmetic, without overflow."""
    e = _exp_nonpositive32(-abs(z))
    r = _F32_ONE / (_F32_ONE + e)
    return r if z >= _F32_ZERO else e * r


@njit(inline="always", **_JIT)
def _tanh32(v):
    """tanh in float32 arithmetic within a few ulps, like _tanh."""
    a = abs(v)
    e = _exp_nonpositive32(-_F32_TWO * a)
    t = (_F32_ONE - e) / (_F32_ONE + e)
    x2 = v * v
    c = _F32_TANH_TAYLOR
    small = _fma(a * x2, _fma(x2, _fma(x2, c[2], c[1]), c[0]), a)
    r = small if a < _F32_TANH_SMALL else t
    return r if v >= _F32_ZERO else -r


def _exp_of(v):
    """exp(v) for v <= 0 in v's own precision (dispatched by type at compile time)."""


def _sigmoid_of(z):
    """sigmoid in z's own precision (dispatched by type at compile time)."""


def _tanh_of(v):
    """tanh in v's own precision (dispatched by type at compile time)."""


@overload(_exp_of, inline="always")
def _exp_of_typed(v):
    return (lambda v: _exp_nonpositive32(v)) if v == types.float32 else (
        lambda v: _exp_nonpositive(v))


@overload(_sigmoid_of, inline="always")
def _sigmoid_of_typed(z):
    return (lambda z: _sigmoid32(z)) if z == types.float32 else (lambda z: _sigmoid(z))


@overload(_tanh_of, inline="always")
def _tanh_of_typed(v):
    return (lambda v: _tanh32(v)) if v == types.float32 else (lambda v: _tanh(v))


@njit(**_JIT_LEAF)
def _activate(buf, start, count, width, code, consts):
    """buf[start:start + count] = f(itself), rows of ``width`` (in place so loops vectorise)."""
    zero = consts[C_ZERO]
    stop = start + count
    if code == SIGMOID:
        for k in range(start, stop):
            buf[k] = _sigmoid_of(buf[k])
    elif code == TANH:
        for k in range(start, stop):
            buf[k] = _tanh_of(buf[k])
    elif code == RELU:
        for k in range(start, stop):
            z = buf[k]
            buf[k] = zero if z <= zero else z  # NaN stays NaN, so divergence shows
    elif code == LEAKY_RELU:
        slope = consts[C_SLOPE]
        for k in range(start, stop):
            z = buf[k]
            buf[k] = slope * z if z <= zero else z
    elif code == SOFTMAX:
        for r in range(start, stop, width):
            m = buf[r]
            for j in range(r + _U1, r + width):
                if buf[j] > m:
                    m = buf[j]
            for j in range(r, r + width):
                buf[j] = buf[j] - m
        for k in range(start, stop):  # one pass over the block, so that it vectorises
            buf[k] = _exp_of(buf[k])
        for r in range(start, stop, width):
            total = zero
            for j in range(r, r + width):
                total += buf[j]
            for j in range(r, r + width):
                buf[j] = buf[j] / total
    # LINEAR: nothing to do.


@njit(**_JIT_LEAF)
def _times_derivative(G, A, a0, count, code, consts):
    """G[:count] *= f'(z), with f'(z) written through the outputs A[a0:a0 + count] = f(z)."""
    one = consts[C_ONE]
    zero = consts[C_ZERO]
    if code == SIGMOID:
        for k in range(count):
            a = A[a0 + k]
            G[k] *= a * (one - a)
    elif code == TANH:
        for k in range(count):
            a = A[a0 + k]
            G[k] *= one - a * a
    elif code == RELU:
        for k in range(count):
            G[k] = G[k] if A[a0 + k] > zero else zero
    elif code == LEAKY_RELU:
        slope = consts[C_SLOPE]
        for k in range(count):
            G[k] = G[k] if A[a0 + k] > zero else G[k] * slope
    # LINEAR: derivative 1. SOFTMAX is output-only, handled in _output_delta.


# ----------------------------------------------------------------------------- losses


@njit(**_JIT_LEAF)
def _softplus(t):
    """log(1 + exp(t)) without overflow, in float64."""
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


@njit(**_JIT_LEAF)
def _row_loss(Y, A, Z, y0, a0, M, act, loss):
    """Loss of one row before the batch mean, in float64: sum_j 1/2 (y - yhat)^2, or the
    cross-entropy sum computed from the logits. The row starts at Y[y0], A[a0] and Z[y0]."""
    total = 0.0
    if loss == MSE:
        for j in range(M):
            d = float(Y[y0 + j]) - float(A[a0 + j])
            total += 0.5 * d * d
    elif act == SOFTMAX:
        m = float(Z[y0])
        for j in range(_U1, M):
            if Z[y0 + j] > m:
                m = float(Z[y0 + j])
        se = 0.0
        for j in range(M):
            se += math.exp(float(Z[y0 + j]) - m)
        lse = m + math.log(se)
        for j in range(M):
            y = float(Y[y0 + j])
            if y != 0.0:
                total += y * (lse - float(Z[y0 + j]))
    else:  # sigmoid with binary cross-entropy
        for j in range(M):
            y = float(Y[y0 + j])
            z = float(Z[y0 + j])
            total += y * _softplus(-z) + (1.0 - y) * _softplus(z)
    return total


@njit(**_JIT_LEAF)
def _label_correct(A, a0, M, label, acc_mode):
    """1 if the output row at A[a0] predicts ``label`` (argmax, or yhat >= 1/2 with one output)."""
    if acc_mode == ACC_ARGMAX:
        best = _U0
        for j in range(_U1, M):
            if A[a0 + j] > A[a0 + best]:
                best = j
        return 1 if np.int64(best) == label else 0
    predicted = 1 if A[a0] >= 0.5 else 0
    return 1 if predicted == label else 0


@njit(**_JIT_LEAF)
def _logits_suffice(net, loss, acc_mode):
    """Whether the loss and accuracy come from the output logits alone (softmax with
    cross-entropy), so that an evaluation pass can skip the output activation."""
    sizes, acts = net[0], net[3]
    output = acts[sizes.shape[0] - 2]
    return loss == CROSS_ENTROPY and output == SOFTMAX and acc_mode != ACC_THRESHOLD


@njit(**_JIT_LEAF)
def _batch_metrics(net, bufs, b, labels, offset, loss, acc_mode):
    """(summed row loss, number correct) of the forward pass in ``bufs``, whose row s is
    sample offset + s of the set in its own order. Every path that records an error goes
    through here, so that the same epoch's error has the same bits however it was reached."""
    if _logits_suffice(net, loss, acc_mode):
        return _softmax_ce_metrics(bufs, b, net[0][net[0].shape[0] - 1], labels, offset,
                                   acc_mode)
    return _output_metrics(net, bufs, b, labels, offset, loss, acc_mode)


@njit(**_JIT_LEAF)
def _output_metrics(net, bufs, b, labels, offset, loss, acc_mode):
    """_batch_metrics from the outputs (and logits) row by row."""
    sizes, poff, aoff, acts = net
    abuf, zout, ybuf = bufs[0], bufs[1], bufs[2]
    L = sizes.shape[0] - 1
    M = sizes[L]
    act = acts[L - 1]
    total = 0.0
    correct = 0
    for s in range(b):
        total += _row_loss(ybuf, abuf, zout, s * M, aoff[L] + s * M, M, act, loss)
        if acc_mode != ACC_NONE:
            correct += _label_correct(abuf, aoff[L] + s * M, M, labels[offset + np.int64(s)],
                                      acc_mode)
    return total, correct


@njit(**_JIT_LEAF)
def _softmax_ce_metrics(bufs, b, M, labels, offset, acc_mode):
    """(summed row loss, number correct) of a softmax cross-entropy output, from the logits
    in zout alone: the same sums as _row_loss and _label_correct (argmax of the logits is
    the argmax of the softmax), with the exponentials in one vectorisable pass over a
    float64 scratch buffer (shifted logits, then each row's maximum after the b rows)."""
    zout, ybuf, S = bufs[1], bufs[2], bufs[6]
    n = b * M
    total = 0.0
    correct = 0
    for s in range(b):
        r = s * M
        best = _U0
        for j in range(_U1, M):
            if zout[r + j] > zout[r + best]:
                best = j
        m = float(zout[r + best])
        S[n + s] = m
        for j in range(M):
            v = float(zout[r + j]) - m
            if v != v:  # a NaN logit (the exponential below would flush it to 0)
                total = math.nan
            S[r + j] = v
        if acc_mode == ACC_ARGMAX and np.int64(best) == labels[offset + np.int64(s)]:
            correct += 1
    for k in range(n):
        S[k] = _exp_nonpositive(S[k])
    for s in range(b):
        r = s * M
        se = 0.0
        for j in range(M):
            se += S[r + j]
        lse = S[n + s] + math.log(se)
        for j in range(M):
            y = float(ybuf[r + j])
            if y != 0.0:
                total += y * (lse - float(zout[r + j]))
    return total, correct


@njit(**_JIT_LEAF)
def _loss_divisor(b, M, loss, consts):
    """The batch mean's divisor, in the dtype: b rows (cross-entropy) or b x M outputs (mse).
    Computed once per batch (it writes consts) before any part of the batch runs."""
    consts[C_SCRATCH] = b if loss == CROSS_ENTROPY else b * M
    return consts[C_SCRATCH]


@njit(**_JIT_LEAF)
def _output_delta(net, bufs, b, loss, consts, divisor):
    """delta1 = dE/dz of the output layer for the b rows in ``bufs``, of a batch whose mean
    divides by ``divisor`` (_loss_divisor; the whole batch's when b rows are one part)."""
    sizes, poff, aoff, acts = net
    abuf, ybuf, D = bufs[0], bufs[2], bufs[3]
    L = sizes.shape[0] - 1
    M = sizes[L]
    act = acts[L - 1]
    a0 = aoff[L]
    if loss == CROSS_ENTROPY:
        if act == SOFTMAX:
            for s in range(b):
                r = s * M
                sy = consts[C_ZERO]
                for j in range(M):
                    sy += ybuf[r + j]
                for k in range(M):
                    D[r + k] = (abuf[a0 + r + k] * sy - ybuf[r + k]) / divisor
        else:  # sigmoid
            for k in range(b * M):
                D[k] = (abuf[a0 + k] - ybuf[k]) / divisor
        return
    for k in range(b * M):
        D[k] = (abuf[a0 + k] - ybuf[k]) / divisor
    if act == SOFTMAX:
        for s in range(b):
            r = s * M
            dot = consts[C_ZERO]
            for j in range(M):
                dot += D[r + j] * abuf[a0 + r + j]
            for k in range(M):
                D[r + k] = abuf[a0 + r + k] * (D[r + k] - dot)
    else:
        _times_derivative(D, abuf, a0, b * M, act, consts)


# ------------------------------------------------------------------- forward, backward


@njit(**_JIT_LEAF)
def _dense_forward(P, sizes, poff, l, A, a0, Z, z0, b, blas_min, consts):
    """Z[z0:] = A[a0:] @ W[l].T + B[l] for b rows: BLAS for large products, loops for small."""
    n_in = sizes[l]
    n_out = sizes[l + 1]
    w0 = poff[l]
    b0 = w0 + n_out * n_in
    if b * n_in * n_out >= blas_min:
        # Z starts as the biases and BLAS adds the product to it (beta = 1): one pass that
        # only writes Z instead of BLAS zeroing it and a pass adding the biases.
        for s in range(b):
            r = z0 + s * n_out
            for o in range(n_out):
                Z[r + o] = P[b0 + o]
        one = consts[C_ONE]
        if b == _U1:  # Z += W @ a
            _gemv(_T, n_in, n_out, one, P, w0, n_in, A, a0, one, Z, z0)
        else:  # Z += A @ W.T
            _gemm(_T, _N, n_out, b, n_in, one, P, w0, n_in, A, a0, n_in, one, Z, z0, n_out)
        return
    for s in range(b):
        ra = a0 + s * n_in
        rz = z0 + s * n_out
        for o in range(n_out):
            rw = w0 + o * n_in
            acc = A[ra] * P[rw]
            for i in range(_U1, n_in):
                acc += A[ra + i] * P[rw + i]
            Z[rz + o] = acc + P[b0 + o]


@njit(**_JIT_LEAF)
def _forward_logits(P, net, bufs, b, consts, blas_min, inp, i0):
    """Forward pass of the b input rows at inp[i0:] (layer 0 of abuf, or the data itself)
    up to the output layer's pre-activations (in zout), leaving every hidden layer's output
    in abuf."""
    sizes, poff, aoff, acts = net
    abuf, zout = bufs[0], bufs[1]
    L = sizes.shape[0] - 1
    for l in range(L - 1):
        src, s0 = (inp, i0) if l == 0 else (abuf, aoff[l])
        _dense_forward(P, sizes, poff, l, src, s0, abuf, aoff[l + 1], b, blas_min, consts)
        _activate(abuf, aoff[l + 1], b * sizes[l + 1], sizes[l + 1], acts[l], consts)
    src, s0 = (inp, i0) if L == 1 else (abuf, aoff[L - 1])
    _dense_forward(P, sizes, poff, L - 1, src, s0, zout, _U0, b, blas_min, consts)


@njit(**_JIT_LEAF)
def _forward(P, net, bufs, b, consts, blas_min, inp, i0):
    """Forward pass of the b input rows at inp[i0:] (see _forward_logits); leaves every
    layer's output in abuf and the output layer's pre-activations in zout."""
    sizes, poff, aoff, acts = net
    abuf, zout = bufs[0], bufs[1]
    L = sizes.shape[0] - 1
    M = sizes[L]
    _forward_logits(P, net, bufs, b, consts, blas_min, inp, i0)
    a0 = aoff[L]
    for k in range(b * M):
        abuf[a0 + k] = zout[k]
    _activate(abuf, a0, b * M, M, acts[L - 1], consts)


# What _layer_backward does with a layer's gradients: store them in G; apply plain gradient
# descent as it goes (W -= lr * dE/dW); or store them and apply the optimizer's step to the
# layer's weights, then its biases, once their gradients are complete.
STORE, APPLY_SGD, APPLY_STEP = 0, 1, 2
_STORE = np.int64(STORE)
# APPLY_STEP steps a layer's weights row by row when it has at least this many (rows of a
# large layer are stepped while in cache, instead of reading its gradients back from memory),
# else all at once after its last row (a call per row would cost more than it saves).
ROW_STEP_MIN = 32768


@njit(**_JIT_LEAF)
def _layer_backward(P, G, sizes, poff, l, abuf, a0, D, dA, need_dA, lr, apply, b, blas_min,
                    S, code, decay, consts):
    """Gradients of layer l from its delta D (b rows of n_out).

    Writes dE/d(layer input) into dA (when need_dA) with the weights before the update, then
    stores the gradients in G (laid out like P) and, by ``apply``, updates nothing (STORE),
    applies ``W -= lr * dE/dW`` (APPLY_SGD) or the optimizer's step (APPLY_STEP, with the
    state S, see _step_range; by row or by layer, see ROW_STEP_MIN). Small products run as
    fused loops that pass over each weight row once; large ones use BLAS.
    """
    n_in = sizes[l]
    n_out = sizes[l + 1]
    w0 = poff[l]
    b0 = w0 + n_out * n_in
    n = _U(P.shape[0])
    if b > _U1 and b * n_in * n_out >= blas_min:
        one, zero = consts[C_ONE], consts[C_ZERO]
        if need_dA:  # dA = D @ W, with the weights before the update
            _gemm(_N, _N, n_in, b, n_out, one, P, w0, n_in, D, _U0, n_out, zero, dA, _U0, n_in)
        if apply == APPLY_SGD:  # W += (-lr) * D.T @ A inside BLAS: no gradient pass
            _gemm(_N, _T, n_in, n_out, b, -lr, abuf, a0, n_in, D, _U0, n_out, one, P, w0, n_in)
        else:  # G = D.T @ A
            _gemm(_N, _T, n_in, n_out, b, one, abuf, a0, n_in, D, _U0, n_out, zero, G, w0, n_in)
        for o in range(n_out):
            G[b0 + o] = D[o]
        for s in range(_U1, b):  # row by row, so the column sums read memory in order
            for o in range(n_out):
                G[b0 + o] += D[s * n_out + o]
        if apply == APPLY_SGD:
            for k in range(b0, b0 + n_out):
                P[k] -= lr * G[k]
        elif apply == APPLY_STEP:
            _step_range(P, G, S, n, w0, b0, code, decay, consts)
            _step_range(P, G, S, n, b0, b0 + n_out, code, _NO_DECAY, consts)
        return
    if need_dA:
        for k in range(b * n_in):
            dA[k] = 0
    row_steps = apply == APPLY_STEP and n_in * n_out >= ROW_STEP_MIN
    for o in range(n_out):
        rw = w0 + o * n_in
        if need_dA:
            for s in range(b):
                d = D[s * n_out + o]
                if d == 0:  # common behind relu; adding d * W changes nothing then
                    continue
                ra = s * n_in
                for i in range(n_in):
                    dA[ra + i] += d * P[rw + i]
        d = D[o]
        if b == _U1 and apply == APPLY_SGD:
            if d != 0:  # W - lr * (0 * a) is W again
                for i in range(n_in):
                    P[rw + i] -= lr * (d * abuf[a0 + i])
        else:
            for i in range(n_in):
                G[rw + i] = d * abuf[a0 + i]
            for s in range(_U1, b):
                d = D[s * n_out + o]
                ra = a0 + s * n_in
                for i in range(n_in):
                    G[rw + i] += d * abuf[ra + i]
            if apply == APPLY_SGD:
                for i in range(n_in):
                    P[rw + i] -= lr * G[rw + i]
            elif row_steps:
                _step_range(P, G, S, n, rw, rw + n_in, code, decay, consts)
        g = D[o]
        for s in range(_U1, b):
            g += D[s * n_out + o]
        if apply == APPLY_SGD:
            P[b0 + o] -= lr * g
        else:
            G[b0 + o] = g
    if apply == APPLY_STEP:
        if not row_steps:
            _step_range(P, G, S, n, w0, b0, code, decay, consts)
        _step_range(P, G, S, n, b0, b0 + n_out, code, _NO_DECAY, consts)


@njit(**_JIT_LEAF)
def _backward(P, net, bufs, b, consts, apply, blas_min, S, code, decay, inp, i0, first):
    """Backpropagate the output delta in delta1 through the layers down to ``first`` (0:
    every layer), filling the gradient buffer and updating P as ``apply`` says (see
    _layer_backward). From ``first`` 1, the first layer's delta is left in delta1 or delta2
    (_first_delta_buffer) and its gradients are not computed."""
    sizes, poff, aoff, acts = net
    abuf, D, dA, G = bufs[0], bufs[3], bufs[4], bufs[5]
    L = sizes.shape[0] - 1
    lr = consts[C_LR]
    for l in range(L - 1, first - 1, -1):
        need_dA = l > 0
        src, s0 = (inp, i0) if l == 0 else (abuf, aoff[l])
        _layer_backward(P, G, sizes, poff, l, src, s0, D, dA, need_dA, lr, apply, b,
                        blas_min, S, code, decay, consts)
        if need_dA:
            _times_derivative(dA, abuf, aoff[l], b * sizes[l], acts[l - 1], consts)
        D, dA = dA, D


# ------------------------------------------------------------------------- optimizers


@njit(**_JIT_LEAF)
def _clip_gradients(G, clip, consts):
    """Scale G by clip / (norm + 1e-6) when its L2 norm (squares summed in float64, in
    order) exceeds clip (torch.nn.utils.clip_grad_norm_ with the contract's condition)."""
    total = 0.0
    for k in range(_U(G.shape[0])):
        g = float(G[k])
        total += g * g
    norm = math.sqrt(total)
    if norm > clip:
        consts[C_SCRATCH] = clip / (norm + 1e-6)
        scale = consts[C_SCRATCH]
        for k in range(_U(G.shape[0])):
            G[k] *= scale


@njit(**_JIT_LEAF)
def _step_range(P, G, S, n, lo, hi, code, decay, consts):
    """One optimizer step on P[lo:hi] from the gradients G[lo:hi] (weight decay when
    ``decay``), in one pass; S holds the momentum buffer or Adam's m at S[k], v at S[n + k].
    The expressions are PyTorch's (docs/kernels.md), in the dtype's arithmetic, except that
    state values below the smallest normal number are stored as zero: a buffer that decays
    geometrically (gradients at zero) would otherwise go subnormal, and arithmetic on
    subnormals costs x86 about a hundred times more. NaN stays NaN."""
    lr = consts[C_LR]
    lam = consts[C_DECAY]
    tiny, zero = consts[C_TINY], consts[C_ZERO]
    if code == OPT_SGD:
        if decay:
            for k in range(lo, hi):
                P[k] -= lr * (G[k] + lam * P[k])
        else:
            for k in range(lo, hi):
                P[k] -= lr * G[k]
    elif code == OPT_MOMENTUM or code == OPT_NESTEROV:
        mu = consts[C_MU]
        if code == OPT_MOMENTUM:
            for k in range(lo, hi):
                g = G[k] + lam * P[k] if decay else G[k]
                b = S[k] * mu + g
                S[k] = zero if abs(b) < tiny else b
                P[k] -= lr * b
        else:
            for k in range(lo, hi):
                g = G[k] + lam * P[k] if decay else G[k]
                b = S[k] * mu + g
                S[k] = zero if abs(b) < tiny else b
                P[k] -= lr * (g + mu * b)
    else:
        w1, w1c = consts[C_W1], consts[C_W1C]
        beta2, w2, eps = consts[C_BETA2], consts[C_W2], consts[C_EPS]
        step, bc2s, shrink = consts[C_STEP], consts[C_BC2S], consts[C_SHRINK]
        small = w1 < consts[C_HALF]  # torch.lerp's choice of form
        decoupled = decay and code == OPT_ADAMW
        coupled = decay and code == OPT_ADAM
        for k in range(lo, hi):
            p = P[k] * shrink if decoupled else P[k]
            g = G[k] + lam * p if coupled else G[k]
            m = S[k]
            m = m + w1 * (g - m) if small else g - (g - m) * w1c
            v = S[n + k] * beta2 + w2 * g * g
            S[k] = zero if abs(m) < tiny else m
            S[n + k] = zero if v < tiny else v
            P[k] = p - step * m / (np.sqrt(v) / bc2s + eps)


@njit(**_JIT_LEAF)
def _begin_step(ctl, hyper, lr, consts):
    """Count the batch's step (t) and set its scalars: Adam's step size and sqrt(bc2)."""
    ctl[I_T] += 1
    code = ctl[I_OPT]
    if code == OPT_ADAM or code == OPT_ADAMW:
        t = float(ctl[I_T])
        consts[C_STEP] = lr / (1.0 - math.pow(hyper[H_BETA1], t))
        consts[C_BC2S] = math.sqrt(1.0 - math.pow(hyper[H_BETA2], t))


@njit(**_JIT_LEAF)
def _clipped_step(P, G, S, net, code, decay, clip, consts):
    """The update of a batch whose gradients are all in G: clip them, then step every
    layer (weights with weight decay, then biases)."""
    sizes, poff = net[0], net[1]
    _clip_gradients(G, clip, consts)
    n = _U(P.shape[0])
    for l in range(sizes.shape[0] - 1):
        w0 = poff[l]
        b0 = w0 + sizes[l + 1] * sizes[l]
        _step_range(P, G, S, n, w0, b0, code, decay, consts)
        _step_range(P, G, S, n, b0, b0 + sizes[l + 1], code, _NO_DECAY, consts)


@njit(**_JIT_LEAF)
def _plateau_update(value, epoch, ctl, hyper, P, best):
    """The plateau rule for ``epoch``'s metric ``value`` (each evaluated epoch counted once,
    in order): an improvement (value < best - min_delta; never NaN) resets the count and,
    with restore_best, copies P into ``best``; otherwise the count grows by the epochs since
    the previous judged one (1 with eval_every 1); returns True when it reaches patience."""
    if ctl[I_METRIC] == PLATEAU_OFF or epoch <= ctl[I_CHECKED]:
        return False
    since = epoch - ctl[I_CHECKED]
    ctl[I_CHECKED] = epoch
    if value < hyper[H_BEST] - hyper[H_MIN_DELTA]:
        hyper[H_BEST] = value
        ctl[I_BEST_EPOCH] = epoch
        ctl[I_BAD] = 0
        if ctl[I_RESTORE] != 0:
            for k in range(_U(P.shape[0])):
                best[k] = P[k]
        return False
    ctl[I_BAD] += since
    return ctl[I_BAD] >= ctl[I_PATIENCE]


@njit(**_JIT)
def plateau_update(value, epoch, ctl, hyper, P, best):
    """_plateau_update for an epoch whose metric was recorded outside train_epochs."""
    return _plateau_update(value, epoch, ctl, hyper, P, best)


# ------------------------------------------------------------------------ epoch loops


@njit(**_JIT_LEAF)
def _shuffle_order(order, seed, epoch):
    """Fisher-Yates shuffle of 0..n-1 driven by SplitMix64 keyed by (seed, epoch)."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    m1 = np.uint64(0xBF58476D1CE4E5B9)
    m2 = np.uint64(0x94D049BB133111EB)
    state = np.uint64(seed) * golden + np.uint64(epoch)
    n = order.shape[0]
    for i in range(n):
        order[i] = i
    for i in range(n - 1, 0, -1):
        state += golden
        z = state
        z = (z ^ (z >> np.uint64(30))) * m1
        z = (z ^ (z >> np.uint64(27))) * m2
        z = z ^ (z >> np.uint64(31))
        j = ((z >> np.uint64(32)) * np.uint64(i + 1)) >> np.uint64(32)
        k = np.int64(j)
        t = order[i]
        order[i] = order[k]
        order[k] = t


@njit(**_JIT_LEAF)
def _load_rows(X, Y, order, start, b, bufs, in_order):
    """Copy the batch's targets into ybuf and, unless the batch is rows start.. in order
    (which the passes read where they are, see _batch_input), its input rows into layer 0
    of abuf."""
    abuf, ybuf = bufs[0], bufs[2]
    n_in = _U(X.shape[1])
    M = _U(Y.shape[1])
    for s in range(b):
        r = start + np.int64(s) if in_order else order[start + np.int64(s)]
        if not in_order:
            for j in range(n_in):
                abuf[s * n_in + j] = X[r, np.int64(j)]
        for j in range(M):
            ybuf[s * M + j] = Y[r, np.int64(j)]


@njit(**_JIT_INNER)
def _batch_input(flat_X, n_in, start, bufs, in_order):
    """(array, offset) of a batch's first input row: the data itself (flat_X, X's rows
    flattened) for rows start.. in order, else layer 0 of abuf where _load_rows put them."""
    if in_order:
        return flat_X, _U(start) * n_in
    return bufs[0], _U0


@njit(**_JIT_LEAF)
def _mean_error(total, n, M, loss):
    """The contract's E from a sum of row losses over n rows of M outputs."""
    return total / (n * M) if loss == MSE else total / n


@njit(**_JIT_INNER)
def _evaluate_range(X, Y, labels, acc_mode, P, net, loss, consts, bufs, rows, blas_min, lo, hi):
    """(summed row loss, number correct) over the rows lo..hi of the set, in blocks of
    ``rows`` rows."""
    total = 0.0
    correct = 0
    order = np.empty(0, np.int64)
    in_order = order.shape[0] == 0  # always; a run-time bool like train_epochs' (see _I0)
    logits_only = _logits_suffice(net, loss, acc_mode)
    flat_X = X.reshape(X.size)
    n_in = _U(X.shape[1])
    for start in range(lo, hi, rows):
        b = _U(min(rows, hi - start))
        _load_rows(X, Y, order, start, b, bufs, in_order)
        inp, i0 = _batch_input(flat_X, n_in, start, bufs, in_order)
        if logits_only:
            _forward_logits(P, net, bufs, b, consts, blas_min, inp, i0)
        else:
            _forward(P, net, bufs, b, consts, blas_min, inp, i0)
        t, c = _batch_metrics(net, bufs, b, labels, start, loss, acc_mode)
        total += t
        correct += c
    return total, correct


@njit(**_JIT_INNER)
def _evaluate(X, Y, labels, acc_mode, P, net, loss, consts, bufs, rows, blas_min):
    """(E, accuracy) over the whole set, in blocks of ``rows`` rows."""
    n = X.shape[0]
    total, correct = _evaluate_range(X, Y, labels, acc_mode, P, net, loss, consts, bufs, rows,
                                     blas_min, _I0, n)
    return _mean_error(total, n, Y.shape[1], loss), correct / n


# ------------------------------------------------------------------ data-parallel parts
# A run with ``parts`` > 1 splits each batch, and each whole-set evaluation, into that many
# contiguous parts, each through its own buffers (row h of 2-D "pbufs", stacked like bufs),
# run in parallel by numba's prange when the caller is compiled with parallel=True (the
# functions below are inlined into it; in a serial caller prange is a plain loop, so the
# interpreted engine and the serial entry points compute the same bits). Each part stores
# its gradients; they are summed in part order and applied by shares of the parameters.


@njit(inline="always", **_JIT)
def _part(pbufs, h):
    """Part h's buffers: row h of each of the stacked buffers."""
    return (pbufs[0][h], pbufs[1][h], pbufs[2][h], pbufs[3][h], pbufs[4][h], pbufs[5][h],
            pbufs[6][h])


@njit(inline="always", **_JIT)
def _as_parts(bufs):
    """One part's stacked buffers over the buffers of a serial workspace (no copy)."""
    return (bufs[0].reshape((1, bufs[0].shape[0])), bufs[1].reshape((1, bufs[1].shape[0])),
            bufs[2].reshape((1, bufs[2].shape[0])), bufs[3].reshape((1, bufs[3].shape[0])),
            bufs[4].reshape((1, bufs[4].shape[0])), bufs[5].reshape((1, bufs[5].shape[0])),
            bufs[6].reshape((1, bufs[6].shape[0])))


@njit(**_JIT_LEAF)
def _share(lo, hi, h, parts):
    """Part h's contiguous share of lo..hi (uint64) among ``parts``."""
    w = hi - lo
    return lo + w * _U(h) // _U(parts), lo + w * _U(h + 1) // _U(parts)


@njit(inline="always", **_JIT)
def _evaluate_parts(X, Y, labels, acc_mode, P, net, loss, consts, pbufs, rows, blas_min, parts):
    """(E, accuracy) over the whole set in ``parts`` contiguous slices, each in blocks of
    ``rows`` rows through its own buffers, the totals summed in part order. One part gives
    _evaluate's bits; a full batch split in the same parts gives the same bits as its
    pending metrics (train_epochs)."""
    n = X.shape[0]
    totals = np.empty(parts, np.float64)
    counts = np.empty(parts, np.int64)
    for h in prange(parts):
        lo = n * h // parts
        hi = n * (h + 1) // parts
        tp, cp = _evaluate_range(X, Y, labels, acc_mode, P, net, loss, consts, _part(pbufs, h),
                                 rows, blas_min, lo, hi)
        totals[h] = tp
        counts[h] = cp
    total = 0.0
    correct = 0
    for h in range(parts):
        total += totals[h]
        correct += counts[h]
    return _mean_error(total, n, Y.shape[1], loss), correct / n


@njit(inline="always", **_JIT)
def _parts_gradients(X, Y, labels, acc_mode, P, net, loss, consts, pbufs, parts, order, start,
                     b, load, in_order, metrics, totals, counts, divisor, blas_min, flat_X,
                     n_in, S, code, decay, shares):
    """Forward and backward passes of the batch of b rows from ``start``, in ``parts``
    contiguous parts: part h's gradients in its own G (row h of pbufs[5]), applied to
    nothing; with ``shares``, those of every layer but the first, its first layer's delta
    left for _first_layer_share; with ``metrics``, its summed row loss and number correct
    in totals[h] and counts[h]. A part without rows has zero gradients."""
    for h in prange(parts):
        lo, hi = _share(_U0, b, h, parts)
        rows_h = hi - lo
        pb = _part(pbufs, h)
        first = start + np.int64(lo)
        if rows_h == _U0:
            Gh = pb[5]
            for k in range(_U(Gh.shape[0])):
                Gh[k] = 0
            totals[h] = 0.0
            counts[h] = 0
        else:
            if load:
                _load_rows(X, Y, order, first, rows_h, pb, in_order)
            src, s0 = _batch_input(flat_X, n_in, first, pb, in_order)
            _forward(P, net, pb, rows_h, consts, blas_min, src, s0)
            if metrics:
                tp, cp = _batch_metrics(net, pb, rows_h, labels, first, loss, acc_mode)
                totals[h] = tp
                counts[h] = cp
            _output_delta(net, pb, rows_h, loss, consts, divisor)
            _backward(P, net, pb, rows_h, consts, _STORE, blas_min, S, code, decay, src, s0,
                      _I1 if shares else _I0)  # shares: the first layer's by _first_layer_share


@njit(**_JIT_LEAF)
def _sum_share(pG, lo, hi):
    """pG[0][lo:hi] += pG[1][lo:hi], then pG[2]'s, ... (the parts' gradients, in order)."""
    G = pG[0]
    for q in range(1, pG.shape[0]):
        Gq = pG[q]
        for k in range(lo, hi):
            G[k] += Gq[k]


@njit(**_JIT_LEAF)
def _step_share(P, G, S, net, lo, hi, code, decay, consts):
    """_step_range on P[lo:hi], layer by layer: weights with weight decay, biases without."""
    sizes, poff = net[0], net[1]
    n = _U(P.shape[0])
    for l in range(sizes.shape[0] - 1):
        w0 = poff[l]
        b0 = w0 + sizes[l + 1] * sizes[l]
        e = b0 + sizes[l + 1]
        _step_range(P, G, S, n, max(lo, w0), min(hi, b0), code, decay, consts)
        _step_range(P, G, S, n, max(lo, b0), min(hi, e), code, _NO_DECAY, consts)


@njit(**_JIT_LEAF)
def _first_delta_buffer(net):
    """Which of bufs holds the first layer's delta after _backward down to layer 1."""
    return 3 if (net[0].shape[0] - 2) % 2 == 0 else 4


# What _first_layer_share does with the gradients of its share of the first layer.
# (Typed values: a literal argument would compile the callee once per value.)
SHARE_STORE, SHARE_SGD, SHARE_STEP = np.int64(0), np.int64(1), np.int64(2)


@njit(**_JIT_LEAF)
def _first_layer_share(P, pbufs, S, net, h, parts, b, start, flat_X, n_in, in_order,
                       blas_min, code, decay, consts, mode):
    """Part h's share of the first layer's output units (rows of W and their biases), with
    the gradients summed over every part's rows in part order: stored in part 0's G
    (SHARE_STORE), applied as plain sgd (SHARE_SGD: inside the products when BLAS runs
    them, W += -lr D^T A, as the unsplit backward pass does), or stored and stepped by the
    optimizer (SHARE_STEP). The first layer holds most of a wide-input network's weights:
    this way they are neither stored per part nor summed in a pass of their own."""
    sizes, poff = net[0], net[1]
    n_out = sizes[1]
    o_lo, o_hi = _share(_U0, n_out, h, parts)
    width = o_hi - o_lo
    if width == _U0:
        return
    G = pbufs[5][0]
    w0 = poff[0]
    b0 = w0 + n_out * n_in
    lr, one, zero = consts[C_LR], consts[C_ONE], consts[C_ZERO]
    in_delta1 = _first_delta_buffer(net) == 3
    most_rows = (b + _U(parts) - _U1) // _U(parts)
    blas = most_rows * n_in * width >= blas_min
    fused = blas and mode == SHARE_SGD
    first = True
    for q in range(parts):
        lo, hi = _share(_U0, b, q, parts)
        rows = hi - lo
        if rows == _U0:
            continue
        pb = _part(pbufs, q)
        A, a0 = _batch_input(flat_X, n_in, start + np.int64(lo), pb, in_order)
        D = pb[3] if in_delta1 else pb[4]
        if fused:
            _gemm(_N, _T, n_in, width, rows, -lr, A, a0, n_in, D, o_lo, n_out, one, P,
                  w0 + o_lo * n_in, n_in)
        elif blas:
            _gemm(_N, _T, n_in, width, rows, one, A, a0, n_in, D, o_lo, n_out,
                  zero if first else one, G, w0 + o_lo * n_in, n_in)
        else:
            for o in range(o_lo, o_hi):
                rw = w0 + o * n_in
                for s in range(rows):
                    d = D[s * n_out + o]
                    ra = a0 + s * n_in
                    if first and s == _U0:
                        for i in range(n_in):
                            G[rw + i] = d * A[ra + i]
                    else:
                        for i in range(n_in):
                            G[rw + i] += d * A[ra + i]
        for o in range(o_lo, o_hi):
            g = D[o]
            for s in range(_U1, rows):
                g += D[s * n_out + o]
            G[b0 + o] = g if first else G[b0 + o] + g
        first = False
    n = _U(P.shape[0])
    if mode == SHARE_SGD:
        if not fused:
            for k in range(w0 + o_lo * n_in, w0 + o_hi * n_in):
                P[k] -= lr * G[k]
        for k in range(b0 + o_lo, b0 + o_hi):
            P[k] -= lr * G[k]
    elif mode == SHARE_STEP:
        _step_range(P, G, S, n, w0 + o_lo * n_in, w0 + o_hi * n_in, code, decay, consts)
        _step_range(P, G, S, n, b0 + o_lo, b0 + o_hi, code, _NO_DECAY, consts)


@njit(inline="always", **_JIT)
def _parts_step(P, pbufs, S, net, parts, general, code, decay, clip, consts, b, start,
                flat_X, n_in, in_order, blas_min, shares):
    """Sum the parts' gradients into part 0's G and apply the optimizer's step (plain sgd
    when not ``general``), each part taking a share of the parameters; with ``shares``, the
    parts' G hold the layers after the first, and each part also takes a share of the first
    layer's units (_first_layer_share). With clipping, every gradient is summed first (the
    norm needs all of them), then clipped, then stepped."""
    pG = pbufs[5]
    n = _U(P.shape[0])
    sizes, poff = net[0], net[1]
    rest = poff[1] if sizes.shape[0] > 2 else n  # the layers after the first
    if not shares:
        rest = _U0
    if clip > 0.0:
        for h in prange(parts):
            lo, hi = _share(rest, n, h, parts)
            _sum_share(pG, lo, hi)
            if shares:
                _first_layer_share(P, pbufs, S, net, h, parts, b, start, flat_X, n_in,
                                   in_order, blas_min, code, decay, consts, SHARE_STORE)
        _clip_gradients(pG[0], clip, consts)
        for h in prange(parts):
            lo, hi = _share(_U0, n, h, parts)
            _step_share(P, pG[0], S, net, lo, hi, code, decay, consts)
    else:
        mode = SHARE_STEP if general else SHARE_SGD
        for h in prange(parts):
            lo, hi = _share(rest, n, h, parts)
            _sum_share(pG, lo, hi)
            _step_share(P, pG[0], S, net, lo, hi, code, decay, consts)
            if shares:
                _first_layer_share(P, pbufs, S, net, h, parts, b, start, flat_X, n_in,
                                   in_order, blas_min, code, decay, consts, mode)


# ------------------------------------------------------------------ the epoch loop


@njit(inline="always", **_JIT)
def _epochs(X, Y, labels, acc_mode, P, net, loss, consts, pbufs, rows, batch, shuffle,
            seed, first_epoch, n_epochs, pending, order, errors, accuracy, validation, blas_min,
            lrs, S, ctl, hyper, best, parts):
    """train_epochs' loop, over ``parts`` (see train_epochs and train_epochs_parts), with
    validation = (Xv, Yv, labels_v, vnet, pvbufs, vrows, val_errors, val_accuracy): Python
    3.11 passes more than 30 arguments as *args, which numba cannot inline."""
    Xv, Yv, labels_v, vnet, pvbufs, vrows, val_errors, val_accuracy = validation
    n = X.shape[0]
    M = Y.shape[1]
    reuse = batch >= n and not shuffle
    general = ctl[I_GENERAL] != 0
    metric = ctl[I_METRIC]
    code = ctl[I_OPT]
    decay = hyper[H_DECAY] != 0.0
    clip = hyper[H_CLIP]
    # How the backward pass applies the gradients (see _layer_backward): plain sgd inside
    # it; with clipping, after it (the norm needs every gradient of the batch first); else
    # each weight row as soon as its gradients are known. A run-time value, not a constant
    # per call site: one compiled backward pass instead of three (seconds of a cold compile).
    apply = APPLY_SGD if not general else (STORE if clip > 0.0 else APPLY_STEP)
    bufs = _part(pbufs, 0)
    G = bufs[5]
    totals = np.zeros(parts, np.float64)
    counts = np.zeros(parts, np.int64)
    every = ctl[I_EVERY]
    shares_rows = _U(ctl[I_SHARES_ROWS])
    last = errors.shape[0] - 1
    # Full batches in order: the rows stay loaded from step to step (the first call, pending
    # epoch 0's error, loads them).
    in_place = pending and first_epoch > 1
    flat_X = X.reshape(X.size)
    n_in = _U(X.shape[1])
    ctl[I_STATUS] = RAN
    for e in range(n_epochs):
        epoch = first_epoch + e
        evaluated = epoch % every == 0 or epoch == last
        lr = lrs[epoch]
        consts[C_LR] = lr
        consts[C_SHRINK] = 1.0 - lr * hyper[H_DECAY]
        if shuffle:
            _shuffle_order(order, seed, epoch)
        for start in range(0, n, batch):
            b = _U(min(batch, n - start))
            load = not (reuse and in_place)  # else a previous step left the rows in place
            in_place = reuse
            divisor = _loss_divisor(b, _U(M), loss, consts)
            shares = (b + _U(parts) - _U1) // _U(parts) <= shares_rows
            inp, i0 = _batch_input(flat_X, n_in, start, bufs, not shuffle)
            if parts == 1:
                if load:
                    _load_rows(X, Y, order, start, b, bufs, not shuffle)
                _forward(P, net, bufs, b, consts, blas_min, inp, i0)
                if pending:
                    totals[0], counts[0] = _batch_metrics(net, bufs, b, labels, _I0, loss,
                                                          acc_mode)
            else:  # every part's gradients, none applied yet
                _parts_gradients(X, Y, labels, acc_mode, P, net, loss, consts, pbufs, parts,
                                 order, start, b, load, not shuffle, pending, totals, counts,
                                 divisor, blas_min, flat_X, n_in, S, code, decay, shares)
            if pending:
                t = totals[0]
                c = counts[0]
                for h in range(1, parts):
                    t += totals[h]
                    c += counts[h]
                E = _mean_error(t, n, M, loss)
                errors[epoch - 1] = E
                accuracy[epoch - 1] = c / n
                pending = False
                if not math.isfinite(E):
                    ctl[I_STATUS] = DIVERGED
                    return e
                if epoch == 1 and metric == PLATEAU_ERROR:  # the rule's best starts at epoch 0
                    hyper[H_BEST] = E
                    if ctl[I_RESTORE] != 0:
                        for k in range(_U(P.shape[0])):
                            best[k] = P[k]
                # Decided before this step's update, so P is still epoch - 1's.
                if metric == PLATEAU_ERROR and _plateau_update(E, epoch - 1, ctl, hyper, P, best):
                    ctl[I_STATUS] = PLATEAU
                    return e
            if parts == 1:
                _output_delta(net, bufs, b, loss, consts, divisor)
                if general:
                    _begin_step(ctl, hyper, lr, consts)
                _backward(P, net, bufs, b, consts, apply, blas_min, S, code, decay, inp, i0,
                          _I0)
                if general and clip > 0.0:
                    _clipped_step(P, G, S, net, code, decay, clip, consts)
            else:
                if general:
                    _begin_step(ctl, hyper, lr, consts)
                _parts_step(P, pbufs, S, net, parts, general, code, decay, clip, consts, b,
                            start, flat_X, n_in, not shuffle, blas_min, shares)
        if not evaluated:
            continue
        if Xv.shape[0] > 0:
            val_errors[epoch], val_accuracy[epoch] = _evaluate_parts(
                Xv, Yv, labels_v, acc_mode, P, vnet, loss, consts, pvbufs, vrows, blas_min,
                parts)
        if reuse:
            pending = True
            if metric == PLATEAU_VAL_ERROR and _plateau_update(val_errors[epoch], epoch, ctl,
                                                                hyper, P, best):
                ctl[I_STATUS] = PLATEAU
                return e + 1
            continue
        E, acc = _evaluate_parts(X, Y, labels, acc_mode, P, net, loss, consts, pbufs, rows,
                                 blas_min, parts)
        errors[epoch] = E
        accuracy[epoch] = acc
        if not math.isfinite(E):
            ctl[I_STATUS] = DIVERGED
            return e + 1
        value = val_errors[epoch] if metric == PLATEAU_VAL_ERROR else E
        if _plateau_update(value, epoch, ctl, hyper, P, best):
            ctl[I_STATUS] = PLATEAU
            return e + 1
    return n_epochs


@njit(**_JIT)
def train_epochs(X, Y, labels, acc_mode, P, net, loss, consts, bufs, rows, batch, shuffle,
                 seed, first_epoch, n_epochs, pending, order, errors, accuracy,
                 Xv, Yv, labels_v, vnet, vbufs, vrows, val_errors, val_accuracy, blas_min,
                 lrs, S, ctl, hyper, best):
    """Run up to n_epochs epochs, numbered from first_epoch, in place on the parameters P.

    With validation rows (Xv non-empty, evaluated through their own workspace vnet/vbufs),
    val_errors[epoch] and val_accuracy[epoch] are recorded at the end of every epoch.

    errors and accuracy are the whole history (index = epoch). After each evaluated epoch
    (a multiple of ctl[I_EVERY], or the run's last, errors.shape[0] - 1) its whole-set error
    (and the validation rows') is recorded; other epochs evaluate nothing. Except in
    full-batch mode without shuffling, where the forward pass of the next step is exactly
    that evaluation and is reused: there the last epoch's error stays pending (recorded by
    the next call, given ``pending``, or by ``evaluate``).

    lrs[epoch] is the epoch's float64 learning rate. Plain sgd (ctl[I_GENERAL] == 0) updates
    P inside the backward pass; otherwise each batch counts a step (t in ctl) and the
    optimizer, with its state S, steps each weight row inside the backward pass as soon as
    its gradients are known, or, with clipping, after all of them (_clipped_step). With a
    plateau metric in ctl, each recorded metric goes through _plateau_update.
    Returns the number of epochs trained, with ctl[I_STATUS] saying why it stopped: RAN (all
    of them), DIVERGED (a recorded error was not finite) or PLATEAU (its last epoch met the
    plateau rule; with full batches in order and metric val_error its error is pending).
    """
    validation = (Xv, Yv, labels_v, vnet, _as_parts(vbufs), vrows, val_errors, val_accuracy)
    return _epochs(X, Y, labels, acc_mode, P, net, loss, consts, _as_parts(bufs), rows, batch,
                   shuffle, seed, first_epoch, n_epochs, pending, order, errors, accuracy,
                   validation, blas_min, lrs, S, ctl, hyper, best, 1)  # (a constant: numba
    # prunes the parts-only branches, seconds of a cold compile)


@njit(parallel=True, **_JIT)
def train_epochs_parts(X, Y, labels, acc_mode, P, net, loss, consts, pbufs, rows, batch,
                       shuffle, seed, first_epoch, n_epochs, pending, order, errors, accuracy,
                       Xv, Yv, labels_v, vnet, pvbufs, vrows, val_errors, val_accuracy,
                       blas_min, lrs, S, ctl, hyper, best, parts):
    """train_epochs with each batch and each whole-set evaluation split in ``parts`` parts
    run in parallel (numba threads; call it with BLAS at one thread): ``pbufs`` and
    ``pvbufs`` stack one workspace of ``rows`` (``vrows``) rows per part, ``net`` and
    ``vnet`` describe such a workspace. The parts' gradients are summed in part order, so
    the bits depend on ``parts``, not on how many threads run them."""
    validation = (Xv, Yv, labels_v, vnet, pvbufs, vrows, val_errors, val_accuracy)
    return _epochs(X, Y, labels, acc_mode, P, net, loss, consts, pbufs, rows, batch, shuffle,
                   seed, first_epoch, n_epochs, pending, order, errors, accuracy, validation,
                   blas_min, lrs, S, ctl, hyper, best, parts)


@njit(**_JIT)
def evaluate(X, Y, labels, acc_mode, P, net, loss, consts, bufs, rows, blas_min):
    """(E, accuracy) of the parameters P over the whole set."""
    return _evaluate(X, Y, labels, acc_mode, P, net, loss, consts, bufs, rows, blas_min)


@njit(parallel=True, **_JIT)
def evaluate_parts(X, Y, labels, acc_mode, P, net, loss, consts, pbufs, rows, blas_min, parts):
    """evaluate split as train_epochs_parts splits it (the same bits as its evaluations)."""
    return _evaluate_parts(X, Y, labels, acc_mode, P, net, loss, consts, pbufs, rows,
                           blas_min, parts)


@njit(**_JIT)
def gradients(X, Y, P, net, loss, consts, bufs, blas_min):
    """Fill the gradient buffer (bufs[5]) with dE/dP over X as one batch; return E.
    The buffers must hold X.shape[0] rows."""
    n = _U(X.shape[0])
    order = np.empty(0, np.int64)
    in_order = order.shape[0] == 0  # typed values, not literals, as train_epochs' (see _I0)
    _load_rows(X, Y, order, _I0, n, bufs, in_order)
    flat_X = X.reshape(X.size)
    _forward(P, net, bufs, n, consts, blas_min, flat_X, _U0)
    t, _ = _batch_metrics(net, bufs, n, np.empty(0, np.int64), _I0, loss, np.int64(ACC_NONE))
    _output_delta(net, bufs, n, loss, consts, _loss_divisor(n, _U(Y.shape[1]), loss, consts))
    _backward(P, net, bufs, n, consts, np.int64(STORE), blas_min, np.empty(0, P.dtype),
              np.int64(OPT_SGD), _NO_DECAY, flat_X, _U0, _I0)
    return _mean_error(t, X.shape[0], Y.shape[1], loss)


@njit(**_JIT)
def predict(X, P, net, consts, bufs, rows, out, blas_min):
    """Write the network's outputs for every row of X into ``out``."""
    sizes, poff, aoff, acts = net
    abuf = bufs[0]
    n = X.shape[0]
    n_in = _U(X.shape[1])
    flat_X = X.reshape(X.size)
    M = _U(out.shape[1])
    a0 = aoff[sizes.shape[0] - 1]
    for start in range(0, n, rows):
        b = _U(min(rows, n - start))
        _forward(P, net, bufs, b, consts, blas_min, flat_X, _U(start) * n_in)
        for s in range(b):
            for j in range(M):
                out[start + np.int64(s), np.int64(j)] = abuf[a0 + s * M + j]

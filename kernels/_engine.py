"""The jitted engine: activations, losses, forward, backward and the epoch loops.

Every jitted function lives in this one module so that numba's on-disk cache (which only
watches the file of the function it compiles) is invalidated whenever any of them changes.
Choices (activation, loss, accuracy mode) travel as integer codes, and scalars that must
stay in the network's dtype travel in the small ``consts`` array, so each public kernel
compiles once per dtype rather than once per combination.

Parameters live in one flat array: for each layer ``W`` (n_out x n_in, row-major) then ``B``.
Activations live in one flat buffer with ``rows`` rows per layer.
"""

import math

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic

_JIT = dict(cache=True, nogil=True, error_model="numpy")

# Activation codes.
LINEAR, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX = 0, 1, 2, 3, 4, 5
# Loss codes.
MSE, CROSS_ENTROPY = 0, 1
# Accuracy modes.
ACC_NONE, ACC_ARGMAX, ACC_THRESHOLD = 0, 1, 2
# Indices into ``consts`` (an array of the network's dtype).
C_LR, C_SLOPE, C_ONE, C_ZERO, C_HALF, C_SCRATCH = 0, 1, 2, 3, 4, 5
N_CONSTS = 6


# ----------------------------------------------------------------------------- layout


@njit(**_JIT)
def _layer(params, sizes, l):
    """Views of W[l] (n_out, n_in) and B[l] (n_out,) inside the flat parameter array."""
    off = 0
    for k in range(l):
        off += sizes[k + 1] * sizes[k] + sizes[k + 1]
    n_in = sizes[l]
    n_out = sizes[l + 1]
    W = params[off:off + n_out * n_in].reshape((n_out, n_in))
    B = params[off + n_out * n_in:off + n_out * n_in + n_out]
    return W, B


@njit(**_JIT)
def _rows(buf, sizes, rows, l, b):
    """View of layer l's activations (b of ``rows`` rows, sizes[l] columns) in ``buf``."""
    off = 0
    for k in range(l):
        off += rows * sizes[k]
    return buf[off:off + b * sizes[l]].reshape((b, sizes[l]))


@njit(**_JIT)
def _block(buf, b, n):
    """A (b, n) view of the start of a flat scratch buffer."""
    return buf[:b * n].reshape((b, n))


# ------------------------------------------------------------------------ activations


@intrinsic
def _bits_as_float(typingctx, bits):
    """Reinterpret an int64's bits as a float64 (a plain bitcast that vectorises)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.DoubleType())

    return sig, codegen


@njit(**_JIT)
def _exp_nonpositive(v):
    """exp(v) for v <= 0 in float64, within about one ulp, as straight-line code.

    libm's exp is an opaque call that stops loops from vectorising; this one (Cody-Waite
    reduction, degree-13 Taylor polynomial, exponent built from bits) vectorises.
    Results below exp(-708) are flushed to 0.
    """
    w = v if v > -708.0 else -708.0
    k = math.floor(w * 1.4426950408889634 + 0.5)
    r = (w - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    e = p * _bits_as_float((np.int64(k) + 1023) << 52)
    return e if v >= -708.0 else 0.0


@njit(**_JIT)
def _sigmoid(z):
    """1 / (1 + exp(-z)) without overflow, in float64."""
    e = _exp_nonpositive(-abs(z))
    r = 1.0 / (1.0 + e)
    return r if z >= 0.0 else e * r


@njit(**_JIT)
def _tanh(v):
    """tanh in float64 within a few ulps, vectorisable: (1 - e)/(1 + e) with e = exp(-2|v|),
    and its odd Taylor series below 0.1 where that quotient would cancel."""
    a = abs(v)
    e = _exp_nonpositive(-2.0 * a)
    t = (1.0 - e) / (1.0 + e)
    x2 = v * v
    p = -929569.0 / 638512875.0
    p = p * x2 + 21844.0 / 6081075.0
    p = p * x2 - 1382.0 / 155925.0
    p = p * x2 + 62.0 / 2835.0
    p = p * x2 - 17.0 / 315.0
    p = p * x2 + 2.0 / 15.0
    p = p * x2 - 1.0 / 3.0
    small = a + a * x2 * p
    r = small if a < 0.1 else t
    return r if v >= 0.0 else -r


@njit(**_JIT)
def _activate(A, code, consts):
    """A = f(A) in place, row by row (in place so that the loops vectorise)."""
    b, n = A.shape
    flat = A.reshape(b * n)
    zero = consts[C_ZERO]
    if code == SIGMOID:
        for k in range(b * n):
            flat[k] = _sigmoid(flat[k])
    elif code == TANH:
        for k in range(b * n):
            flat[k] = _tanh(flat[k])
    elif code == RELU:
        for k in range(b * n):
            z = flat[k]
            flat[k] = z if z > zero else zero
    elif code == LEAKY_RELU:
        slope = consts[C_SLOPE]
        for k in range(b * n):
            z = flat[k]
            flat[k] = z if z > zero else slope * z
    elif code == SOFTMAX:
        for s in range(b):
            m = A[s, 0]
            for j in range(1, n):
                if A[s, j] > m:
                    m = A[s, j]
            total = zero
            for j in range(n):
                e = _exp_nonpositive(A[s, j] - m)
                A[s, j] = e
                total += e
            for j in range(n):
                A[s, j] = A[s, j] / total
    # LINEAR: nothing to do.


@njit(**_JIT)
def _times_derivative(G, A, code, consts):
    """G *= f'(z) in place, with f'(z) written through the activation's output A = f(z)."""
    b, n = G.shape
    one = consts[C_ONE]
    zero = consts[C_ZERO]
    if code == SIGMOID:
        for s in range(b):
            for j in range(n):
                a = A[s, j]
                G[s, j] *= a * (one - a)
    elif code == TANH:
        for s in range(b):
            for j in range(n):
                a = A[s, j]
                G[s, j] *= one - a * a
    elif code == RELU:
        for s in range(b):
            for j in range(n):
                if not A[s, j] > zero:
                    G[s, j] = zero
    elif code == LEAKY_RELU:
        slope = consts[C_SLOPE]
        for s in range(b):
            for j in range(n):
                if not A[s, j] > zero:
                    G[s, j] *= slope
    # LINEAR: derivative 1. SOFTMAX never reaches here (output only, handled in _output_delta).


# ----------------------------------------------------------------------------- losses


@njit(**_JIT)
def _softplus(t):
    """log(1 + exp(t)) without overflow, in float64."""
    return max(t, 0.0) + math.log1p(math.exp(-abs(t)))


@njit(**_JIT)
def _row_loss(Y, A, Z, s, act, loss):
    """Loss of row s before the batch mean: sum_j 1/2 (y - yhat)^2, or the cross-entropy
    sum computed from the logits Z. Always float64."""
    M = A.shape[1]
    total = 0.0
    if loss == MSE:
        for j in range(M):
            d = float(Y[s, j]) - float(A[s, j])
            total += 0.5 * d * d
    elif act == SOFTMAX:
        m = float(Z[s, 0])
        for j in range(1, M):
            if Z[s, j] > m:
                m = float(Z[s, j])
        se = 0.0
        for j in range(M):
            se += math.exp(float(Z[s, j]) - m)
        lse = m + math.log(se)
        for j in range(M):
            y = float(Y[s, j])
            if y != 0.0:
                total += y * (lse - float(Z[s, j]))
    else:  # sigmoid with binary cross-entropy
        for j in range(M):
            y = float(Y[s, j])
            z = float(Z[s, j])
            total += y * _softplus(-z) + (1.0 - y) * _softplus(z)
    return total


@njit(**_JIT)
def _output_delta(Y, A, D, act, loss, consts):
    """D = dE/dz of the output layer for a batch of b = D.shape[0] rows."""
    b, M = D.shape
    scratch = consts[C_SCRATCH:C_SCRATCH + 1]
    if loss == CROSS_ENTROPY:
        scratch[0] = b
        bf = scratch[0]
        if act == SOFTMAX:
            for s in range(b):
                sy = consts[C_ZERO]
                for j in range(M):
                    sy += Y[s, j]
                for k in range(M):
                    D[s, k] = (A[s, k] * sy - Y[s, k]) / bf
        else:  # sigmoid
            for s in range(b):
                for k in range(M):
                    D[s, k] = (A[s, k] - Y[s, k]) / bf
        return
    scratch[0] = b * M
    bm = scratch[0]
    for s in range(b):
        for k in range(M):
            D[s, k] = (A[s, k] - Y[s, k]) / bm
    if act == SOFTMAX:
        for s in range(b):
            dot = consts[C_ZERO]
            for j in range(M):
                dot += D[s, j] * A[s, j]
            for k in range(M):
                D[s, k] = A[s, k] * (D[s, k] - dot)
    else:
        _times_derivative(D, A, act, consts)


# ------------------------------------------------------------------- forward, backward


@njit(**_JIT)
def _dense(A, W, B, Z, blas_min):
    """Z = A @ W.T + B for a batch of rows: BLAS for large products, loops for small ones."""
    b, n_in = A.shape
    n_out = W.shape[0]
    if b * n_in * n_out >= blas_min:
        if b == 1:
            np.dot(W, A[0], Z[0])
        else:
            np.dot(A, W.T, Z)
        for s in range(b):
            for o in range(n_out):
                Z[s, o] += B[o]
    else:
        for s in range(b):
            for o in range(n_out):
                acc = A[s, 0] * W[o, 0]
                for i in range(1, n_in):
                    acc += A[s, i] * W[o, i]
                Z[s, o] = acc + B[o]


@njit(**_JIT)
def _forward(params, sizes, acts, consts, abuf, rows, zout, b, blas_min):
    """Forward pass of b rows already in layer 0 of ``abuf``; leaves every layer's output in
    ``abuf`` and the output layer's pre-activation in ``zout``."""
    L = sizes.shape[0] - 1
    for l in range(L):
        W, B = _layer(params, sizes, l)
        A_prev = _rows(abuf, sizes, rows, l, b)
        A = _rows(abuf, sizes, rows, l + 1, b)
        if l == L - 1:
            Z = _block(zout, b, sizes[L])
            _dense(A_prev, W, B, Z, blas_min)
            A[:, :] = Z
            _activate(A, acts[l], consts)
        else:
            _dense(A_prev, W, B, A, blas_min)
            _activate(A, acts[l], consts)


@njit(**_JIT)
def _layer_backward(D, A_prev, W, B, dA, need_dA, GW, GB, lr, apply, blas_min):
    """Gradients of one layer from its delta D (b, n_out).

    Writes dE/dA_prev into dA (when need_dA) with the weights before the update, then
    either applies ``W -= lr * dE/dW`` (apply) or stores the gradients in GW, GB.
    Small products run as fused loops that touch each weight row once; large ones use BLAS.
    """
    b, n_out = D.shape
    n_in = A_prev.shape[1]
    if b > 1 and b * n_in * n_out >= blas_min:
        if need_dA:
            np.dot(D, W, dA)
        np.dot(D.T, A_prev, GW)
        for o in range(n_out):
            g = D[0, o]
            for s in range(1, b):
                g += D[s, o]
            GB[o] = g
        if apply:
            for o in range(n_out):
                for i in range(n_in):
                    W[o, i] -= lr * GW[o, i]
                B[o] -= lr * GB[o]
        return
    if need_dA:
        dA[:, :] = 0
    for o in range(n_out):
        if need_dA:
            for s in range(b):
                d = D[s, o]
                for i in range(n_in):
                    dA[s, i] += d * W[o, i]
        g_row = GW[o]
        if b == 1:
            d = D[0, o]
            if apply:
                for i in range(n_in):
                    W[o, i] -= lr * (d * A_prev[0, i])
            else:
                for i in range(n_in):
                    g_row[i] = d * A_prev[0, i]
        else:
            d = D[0, o]
            for i in range(n_in):
                g_row[i] = d * A_prev[0, i]
            for s in range(1, b):
                d = D[s, o]
                for i in range(n_in):
                    g_row[i] += d * A_prev[s, i]
            if apply:
                for i in range(n_in):
                    W[o, i] -= lr * g_row[i]
        g = D[0, o]
        for s in range(1, b):
            g += D[s, o]
        if apply:
            B[o] -= lr * g
        else:
            GB[o] = g


@njit(**_JIT)
def _backward(params, grads, sizes, acts, consts, abuf, rows, dbuf1, dbuf2, b, apply, blas_min):
    """Backpropagate the output delta held in dbuf1 through every layer, updating the
    parameters (apply) or filling ``grads`` (same layout as params)."""
    L = sizes.shape[0] - 1
    lr = consts[C_LR]
    use_first = True
    for l in range(L - 1, -1, -1):
        W, B = _layer(params, sizes, l)
        GW, GB = _layer(grads, sizes, l)
        A_prev = _rows(abuf, sizes, rows, l, b)
        if use_first:
            D = _block(dbuf1, b, sizes[l + 1])
            dA = _block(dbuf2, b, sizes[l])
        else:
            D = _block(dbuf2, b, sizes[l + 1])
            dA = _block(dbuf1, b, sizes[l])
        need_dA = l > 0
        _layer_backward(D, A_prev, W, B, dA, need_dA, GW, GB, lr, apply, blas_min)
        if need_dA:
            _times_derivative(dA, A_prev, acts[l - 1], consts)
        use_first = not use_first


# ------------------------------------------------------------------------ epoch loops


@njit(**_JIT)
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


@njit(**_JIT)
def _load_rows(X, Y, order, start, b, A0, Yb, in_order):
    """Copy the batch's input and target rows into the layer-0 and target buffers."""
    for s in range(b):
        r = start + s if in_order else order[start + s]
        for j in range(X.shape[1]):
            A0[s, j] = X[r, j]
        for j in range(Y.shape[1]):
            Yb[s, j] = Y[r, j]


@njit(**_JIT)
def _batch_metrics(Y, A, Z, labels, offset, act, loss, acc_mode):
    """(summed row loss, number correct) of a computed forward pass whose row s is
    sample offset + s of the set in its own order."""
    total = 0.0
    correct = 0
    for s in range(A.shape[0]):
        total += _row_loss(Y, A, Z, s, act, loss)
        if acc_mode != ACC_NONE:
            correct += _label_correct(A, labels[offset + s], s, acc_mode)
    return total, correct


@njit(**_JIT)
def _label_correct(A, label, s, acc_mode):
    """1 if row s of A predicts ``label``."""
    if acc_mode == ACC_ARGMAX:
        best = 0
        for j in range(1, A.shape[1]):
            if A[s, j] > A[s, best]:
                best = j
        return 1 if best == label else 0
    predicted = 1 if A[s, 0] >= 0.5 else 0
    return 1 if predicted == label else 0


@njit(**_JIT)
def _evaluate(X, Y, labels, acc_mode, params, sizes, acts, loss, consts, abuf, rows, zout,
              ybuf, blas_min):
    """(E, accuracy) over the whole set, in blocks of ``rows`` rows."""
    n = X.shape[0]
    L = sizes.shape[0] - 1
    M = sizes[L]
    total = 0.0
    correct = 0
    order = np.empty(0, np.int64)
    for start in range(0, n, rows):
        b = min(rows, n - start)
        A0 = _rows(abuf, sizes, rows, 0, b)
        Yb = _block(ybuf, b, M)
        _load_rows(X, Y, order, start, b, A0, Yb, True)
        _forward(params, sizes, acts, consts, abuf, rows, zout, b, blas_min)
        t, c = _batch_metrics(Yb, _rows(abuf, sizes, rows, L, b), _block(zout, b, M),
                              labels, start, acts[L - 1], loss, acc_mode)
        total += t
        correct += c
    E = total / (n * M) if loss == MSE else total / n
    return E, correct / n


@njit(**_JIT)
def train_epochs(X, Y, labels, acc_mode, params, grads, sizes, acts, loss, consts, batch,
                 shuffle, seed, first_epoch, n_epochs, abuf, rows, zout, ybuf, dbuf1, dbuf2,
                 order, errors, accuracy, blas_min):
    """Run up to n_epochs epochs (numbered from first_epoch) in place on ``params``.

    After epoch k, errors[k] and accuracy[k] hold the whole-set error and accuracy.
    Returns the number of epochs run: it stops after the first epoch whose error is not finite.
    """
    n = X.shape[0]
    L = sizes.shape[0] - 1
    M = sizes[L]
    out_act = acts[L - 1]
    # In full-batch mode without shuffling, the forward pass of one step is exactly the
    # evaluation of the previous step's parameters: reuse it instead of a second pass.
    reuse = batch >= n and not shuffle
    pending = False
    for e in range(n_epochs):
        if shuffle:
            _shuffle_order(order, seed, first_epoch + e)
        for start in range(0, n, batch):
            b = min(batch, n - start)
            A0 = _rows(abuf, sizes, rows, 0, b)
            Yb = _block(ybuf, b, M)
            if not (reuse and e > 0):
                _load_rows(X, Y, order, start, b, A0, Yb, not shuffle)
            _forward(params, sizes, acts, consts, abuf, rows, zout, b, blas_min)
            if pending:
                t, c = _batch_metrics(Yb, _rows(abuf, sizes, rows, L, b), _block(zout, b, M),
                                      labels, 0, out_act, loss, acc_mode)
                E = t / (n * M) if loss == MSE else t / n
                errors[e - 1] = E
                accuracy[e - 1] = c / n
                pending = False
                if not math.isfinite(E):
                    return e
            _output_delta(Yb, _rows(abuf, sizes, rows, L, b), _block(dbuf1, b, M),
                          out_act, loss, consts)
            _backward(params, grads, sizes, acts, consts, abuf, rows, dbuf1, dbuf2, b, True,
                      blas_min)
        if reuse and e < n_epochs - 1:
            pending = True
            continue
        E, acc = _evaluate(X, Y, labels, acc_mode, params, sizes, acts, loss, consts, abuf,
                           rows, zout, ybuf, blas_min)
        errors[e] = E
        accuracy[e] = acc
        if not math.isfinite(E):
            return e + 1
    return n_epochs


@njit(**_JIT)
def evaluate(X, Y, labels, acc_mode, params, sizes, acts, loss, consts, abuf, rows, zout,
             ybuf, blas_min):
    """(E, accuracy) of the parameters over the whole set."""
    return _evaluate(X, Y, labels, acc_mode, params, sizes, acts, loss, consts, abuf, rows,
                     zout, ybuf, blas_min)


@njit(**_JIT)
def gradients(X, Y, params, grads, sizes, acts, loss, consts, abuf, zout, ybuf, dbuf1, dbuf2,
              blas_min):
    """Fill ``grads`` with dE/dparams over X as one batch; return E."""
    n = X.shape[0]
    L = sizes.shape[0] - 1
    M = sizes[L]
    order = np.empty(0, np.int64)
    A0 = _rows(abuf, sizes, n, 0, n)
    Yb = _block(ybuf, n, M)
    _load_rows(X, Y, order, 0, n, A0, Yb, True)
    _forward(params, sizes, acts, consts, abuf, n, zout, n, blas_min)
    labels = np.empty(0, np.int64)
    t, _ = _batch_metrics(Yb, _rows(abuf, sizes, n, L, n), _block(zout, n, M), labels, 0,
                          acts[L - 1], loss, ACC_NONE)
    _output_delta(Yb, _rows(abuf, sizes, n, L, n), _block(dbuf1, n, M), acts[L - 1], loss,
                  consts)
    _backward(params, grads, sizes, acts, consts, abuf, n, dbuf1, dbuf2, n, False, blas_min)
    return t / (n * M) if loss == MSE else t / n


@njit(**_JIT)
def predict(X, params, sizes, acts, consts, abuf, rows, zout, out, blas_min):
    """Write the network's outputs for every row of X into ``out``."""
    n = X.shape[0]
    L = sizes.shape[0] - 1
    M = sizes[L]
    order = np.empty(0, np.int64)
    for start in range(0, n, rows):
        b = min(rows, n - start)
        A0 = _rows(abuf, sizes, rows, 0, b)
        for s in range(b):
            for j in range(X.shape[1]):
                A0[s, j] = X[start + s, j]
        _forward(params, sizes, acts, consts, abuf, rows, zout, b, blas_min)
        A = _rows(abuf, sizes, rows, L, b)
        for s in range(b):
            for j in range(M):
                out[start + s, j] = A[s, j]

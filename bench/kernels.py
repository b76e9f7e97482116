"""Training throughput of Descent's kernels against peers, side by side in one run.

Run by hand (not a test):

    .venv/bin/python bench/kernels.py                 # full run, ~10-15 min on 2 cores
    .venv/bin/python bench/kernels.py --quick         # ~2 min, shorter measurements
    .venv/bin/python bench/kernels.py --cells a b-32 c-full-f32 --reps 5 --threads 1
    .venv/bin/python bench/kernels.py --optimizer adam      # the adam cells (batch 1, 32, 256)
    .venv/bin/python bench/kernels.py --optimizer momentum  # SGD with momentum 0.9
    .venv/bin/python bench/kernels.py --cells c-256 c-full --eval-every epochs  # + De@ columns

Every implementation does the same training: same architecture, activations, loss, learning
rate, batch size, number of epochs, no shuffling and (Descent, PyTorch, NumPy) the same initial
parameters, plus one whole-training-set loss evaluation before training and after every epoch
(Descent records that history by contract, so the PyTorch and NumPy peers compute it too).
See bench/README.md for what each column means.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import sys
import time
import types
import warnings

# This file is called kernels.py: when run as a script its own folder is sys.path[0] and
# `import kernels` would import this file. Put the repository root there instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, _ROOT)

import numpy as np  # noqa: E402

try:  # numba's np.dot calls BLAS through scipy.linalg.cython_blas: load it before any limit
    import scipy  # noqa: E402
    import scipy.linalg.cython_blas  # noqa: E402,F401
except Exception:  # pragma: no cover
    scipy = None

try:
    import threadpoolctl  # noqa: E402
except Exception:  # pragma: no cover
    threadpoolctl = None


# --------------------------------------------------------------------------------------------
# thread control
# --------------------------------------------------------------------------------------------

class _blas_threads:
    """Limit every loaded BLAS (numpy's and scipy's OpenBLAS) to n threads inside the block."""

    def __init__(self, n):
        self.n = n
        self._ctx = None

    def __enter__(self):
        if threadpoolctl is not None and self.n is not None:
            self._ctx = threadpoolctl.threadpool_limits(limits=self.n, user_api="blas")
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        return False


BUSY_BG = 0.25  # cores used by other processes above which a cell counts as disturbed
# Pause after a multi-threaded run so that idle BLAS/OpenMP threads stop spinning: OpenBLAS's
# spin about 0.1 s (bench/blas_spin.py: 10 ticks with no pause, 0-1 after 0.1 s, 0 after 0.15).
SETTLE_SECONDS = 0.2


def _timed(fn, settle=False):
    """Seconds taken by fn() (garbage collection off while it runs), and its result."""
    if settle:
        time.sleep(SETTLE_SECONDS)
    gc.disable()
    try:
        t0 = time.perf_counter()
        out = fn()
        t = time.perf_counter() - t0
    finally:
        gc.enable()
    return t, out


def _cpu_snapshot():
    """(wall seconds, busy CPU seconds of the whole machine incl. steal, CPU seconds of this
    process): the difference tells how much CPU other processes took meanwhile."""
    busy = None
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        # user nice system idle iowait irq softirq steal
        busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system


def _others_load(a, b):
    """Average number of cores busy with other processes (or stolen) between two snapshots."""
    if a[1] is None or b[1] is None or b[0] <= a[0]:
        return None
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / (b[0] - a[0]))


# --------------------------------------------------------------------------------------------
# the cells
# --------------------------------------------------------------------------------------------

NETS = {
    # key: (layers, hidden activation, output activation, loss, learning rate, description)
    "a": ([2, 8, 1], "sigmoid", "sigmoid", "mse", 0.5, "2-8-1 sigmoid/sigmoid/mse"),
    "b": ([64, 128, 64, 10], "tanh", "softmax", "cross_entropy", 0.02,
          "64-128-64-10 tanh/softmax/ce"),
    "c": ([784, 256, 128, 10], "relu", "softmax", "cross_entropy", 0.001,
          "784-256-128-10 relu/softmax/ce"),
}
BATCHES = ["1", "32", "256", "full"]
# --optimizer: plain gradient descent (the default, the cells above) or the optimizer cells,
# at batch 1, 32 and 256. Each peer runs its own implementation of the same optimizer:
# torch.optim.Adam / SGD(momentum=0.9), scikit-learn's solver="adam" / "sgd" with momentum,
# and the NumPy peer's. Learning rates per net, smaller than plain GD's (Adam's steps do not
# scale with the gradient; momentum 0.9 multiplies the step by up to 10).
OPTIMIZERS = {
    # name: (kernels.train keywords, learning rate per net, batches)
    "sgd": ({}, None, BATCHES),
    "adam": ({"optimizer": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
             {"a": 0.01, "b": 0.001, "c": 0.0001}, ["1", "32", "256"]),
    "momentum": ({"optimizer": "momentum", "momentum": 0.9},
                 {"a": 0.05, "b": 0.002, "c": 0.0001}, ["1", "32", "256"]),
}
DTYPES = ["f64", "f32"]
DTYPE_NAME = {"f64": "float64", "f32": "float32"}

# Targets (Descent against peers), checked per cell.
TORCH_TARGETS = {("a", "1"): 100.0, ("b", "1"): 20.0, ("c", "1"): 4.0, ("a", "32"): 30.0}
BEST_PEER_TARGET = 1.0
GFLOP_TARGET_PCT = {("c", "256"): 70.0, ("c", "full"): 70.0}
# --eval-every epochs: the cells of net c that also run with eval_every = epochs.
MATCHED_BATCHES = ("256", "full")
# ... and the fewest epochs they time. The contract's error before training and after the
# last epoch are a fixed cost of a run (at full batch the first is the first step's forward
# pass, reused; the last is one extra forward pass): over one epoch they are half of
# Descent's work at batch 256, over ten about 5%, over a real run of hundreds next to nothing.
MATCHED_MIN_EPOCHS = 10


def cell_id(net, batch, dt):
    return f"{net}-{batch}-{dt}"


def net_lr(net, optimizer):
    """Learning rate of a net's cells under an optimizer."""
    rates = OPTIMIZERS[optimizer][1]
    return NETS[net][4] if rates is None else rates[net]


def select_cells(patterns, optimizer="sgd"):
    batches = OPTIMIZERS[optimizer][2]
    cells = [(n, b, d) for n in NETS for b in batches for d in DTYPES]
    if not patterns:
        return cells
    out = []
    for c in cells:
        cid = cell_id(*c)
        if any(cid == p or cid.startswith(p + "-") for p in patterns):
            out.append(c)
    return out


def make_data(net, n_c, notes):
    """float64 X and integer labels y for a network (converted to each dtype later)."""
    if net == "a":
        rng = np.random.default_rng(1)
        X = rng.uniform(-1.0, 1.0, (1024, 2))
        y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(np.int64)  # XOR of the signs, 0/1
        return X, y, "1024 random points, y = XOR of signs"
    if net == "b":
        try:
            from kernels import load_dataset
            X, y = load_dataset("digits")
            src = "kernels.load_dataset('digits')"
        except Exception as e:  # noqa: BLE001
            path = os.path.join(_ROOT, "kernels", "data", "digits.npz")
            try:
                with np.load(path) as d:
                    X, y = d["X"], d["y"]
                src = f"kernels/data/digits.npz read directly (load_dataset failed: {e!r:.60})"
            except Exception:  # noqa: BLE001
                rng = np.random.default_rng(2)
                X = rng.integers(0, 17, (1797, 64)).astype(np.float64)
                y = rng.integers(0, 10, 1797)
                src = "RANDOM 1797x64 stand-in (digits not available)"
                notes.append("digits not available: net b uses random data")
        X = np.asarray(X, dtype=np.float64) / 16.0
        y = np.asarray(y).astype(np.int64)
        return X, y, f"digits {X.shape[0]}x{X.shape[1]} scaled by 1/16 ({src})"
    rng = np.random.default_rng(3)
    X = rng.standard_normal((n_c, 784))
    y = rng.integers(0, 10, n_c)
    return X, y, f"{n_c} samples standard normal X, random labels 0..9"


# --------------------------------------------------------------------------------------------
# plain NumPy peer (vectorised per batch; the math of docs/kernels.md)
# --------------------------------------------------------------------------------------------

def _np_act(name, z):
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "linear":
        return z
    raise ValueError(name)


def _np_dact(name, a):
    """Derivative of the activation, from its output a."""
    if name == "sigmoid":
        return a * (1 - a)
    if name == "tanh":
        return 1 - a * a
    if name == "relu":
        return (a > 0).astype(a.dtype)
    if name == "linear":
        return np.ones_like(a)
    raise ValueError(name)


def _np_forward(X, Ws, Bs, act, out_act):
    """Logits of the last layer and the activations of every layer (acts[0] = X)."""
    acts = [X]
    a = X
    L = len(Ws)
    for l in range(L - 1):
        z = a @ Ws[l].T
        z += Bs[l]
        a = _np_act(act, z)
        acts.append(a)
    z = a @ Ws[-1].T
    z += Bs[-1]
    return z, acts


def _np_eval(X, Y, labels, Ws, Bs, act, out_act, loss):
    z, _ = _np_forward(X, Ws, Bs, act, out_act)
    if out_act == "softmax":
        m = z.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
        err = float(np.mean(lse - z[np.arange(len(z)), labels], dtype=np.float64))
        acc = float(np.mean(z.argmax(axis=1) == labels))
    else:
        yhat = _np_act(out_act, z)
        d = Y - yhat
        err = float(0.5 * np.mean(d * d, dtype=np.float64))
        acc = float(np.mean((yhat[:, 0] >= 0.5) == (labels == 1))) if labels is not None else None
    return err, acc


class NumpyOptimizer:
    """The optimizer step of the NumPy peer, in place, with API.md 1b's formulas written in
    PyTorch's order (docs/kernels.md): momentum (b = g at t = 1, then b = mu b + g) and Adam."""

    def __init__(self, arrays, lr, optimizer="sgd", momentum=0.9, beta1=0.9, beta2=0.999,
                 eps=1e-8):
        self.kind, self.lr, self.mu = optimizer, lr, momentum
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.t = 0
        self.m = [np.zeros_like(a) for a in arrays]
        self.v = [np.zeros_like(a) for a in arrays] if optimizer == "adam" else None

    def next_batch(self):
        self.t += 1
        if self.kind == "adam":
            dt = self.m[0].dtype.type
            bc1, bc2 = 1.0 - self.b1 ** self.t, 1.0 - self.b2 ** self.t
            self.step_size = dt(float(self.lr) / bc1)
            self.bc2_sqrt = dt(math.sqrt(bc2))

    def update(self, i, p, g):
        """p <- the optimizer's step from gradient g; i numbers the parameter array."""
        if self.kind == "momentum":
            b = self.m[i]
            if self.t == 1:
                b[...] = g
            else:
                b *= self.mu
                b += g
            p -= self.lr * b
        else:
            m, v = self.m[i], self.v[i]
            m += (1.0 - self.b1) * (g - m)  # torch's lerp form
            v *= self.b2
            v += (1.0 - self.b2) * g * g
            denom = np.sqrt(v)
            denom /= self.bc2_sqrt
            denom += self.eps
            step = self.step_size * m
            step /= denom
            p -= step


def numpy_train(X, labels, params, *, act, out_act, loss, lr, batch, epochs, opt=None):
    """NumPy training with the contract's math (``opt``: kernels.train's optimizer
    keywords; plain GD without). Returns the error history."""
    dt = X.dtype
    Ws = [np.array(w, dtype=dt, copy=True) for w in params["weights"]]
    Bs = [np.array(b, dtype=dt, copy=True) for b in params["biases"]]
    optim = None  # plain GD updates inline, as before the optimizer cells existed
    if opt and opt.get("optimizer", "sgd") != "sgd":
        optim = NumpyOptimizer([a for pair in zip(Ws, Bs) for a in pair], dt.type(lr), **opt)
    n, M = X.shape[0], Ws[-1].shape[0]
    if out_act == "softmax":
        Y = np.zeros((n, M), dtype=dt)
        Y[np.arange(n), labels] = 1
    else:
        Y = labels.reshape(n, 1).astype(dt)
    bs = n if batch == "full" else int(batch)
    L = len(Ws)
    errors = []
    with np.errstate(over="ignore"):
        errors.append(_np_eval(X, Y, labels, Ws, Bs, act, out_act, loss)[0])
        for _ in range(epochs):
            for s in range(0, n, bs):
                xb = X[s:s + bs]
                yb = Y[s:s + bs]
                b = xb.shape[0]
                if optim is not None:
                    optim.next_batch()
                z, acts = _np_forward(xb, Ws, Bs, act, out_act)
                if out_act == "softmax":  # softmax + cross-entropy
                    p = np.exp(z - z.max(axis=1, keepdims=True))
                    p /= p.sum(axis=1, keepdims=True)
                    delta = (p - yb) / b
                else:  # sigmoid output + mse
                    yhat = _np_act(out_act, z)
                    delta = (yhat - yb) * (1.0 / (b * M)) * _np_dact(out_act, yhat)
                for l in range(L - 1, -1, -1):
                    gW = delta.T @ acts[l]
                    gB = delta.sum(axis=0)
                    if l > 0:
                        delta = (delta @ Ws[l]) * _np_dact(act, acts[l])
                    if optim is None:
                        Ws[l] -= lr * gW
                        Bs[l] -= lr * gB
                    else:
                        optim.update(2 * l, Ws[l], gW)
                        optim.update(2 * l + 1, Bs[l], gB)
            errors.append(_np_eval(X, Y, labels, Ws, Bs, act, out_act, loss)[0])
    return np.array(errors)


def _contract_uniform_init(layers, seed, dtype):
    rng = np.random.default_rng(seed)
    Ws, Bs = [], []
    for n_in, n_out in zip(layers[:-1], layers[1:]):
        k = 1.0 / math.sqrt(n_in)
        Ws.append(rng.uniform(-k, k, (n_out, n_in)).astype(dtype))
        Bs.append(rng.uniform(-k, k, n_out).astype(dtype))
    return {"weights": Ws, "biases": Bs}


def standin_train(X, y, *, layers, activation, output_activation, loss, learning_rate,
                  batch_mode, batch_size, epochs, seed, shuffle, init, dtype, **opt):
    """Used only when `kernels.train` does not work yet: the NumPy peer behind the API."""
    assert not shuffle and init == "uniform"
    X = np.ascontiguousarray(X, dtype=dtype)
    p0 = _contract_uniform_init(layers, seed, dtype)
    batch = {"sgd": "1", "full": "full"}.get(batch_mode, str(batch_size))
    errors = numpy_train(X, y, p0, act=activation, out_act=output_activation, loss=loss,
                         lr=learning_rate, batch=batch, epochs=epochs, opt=opt)
    return types.SimpleNamespace(errors=errors, initial_params=p0, epochs_done=epochs,
                                 diverged=False, params=None, accuracy=None)


# --------------------------------------------------------------------------------------------
# PyTorch peer
# --------------------------------------------------------------------------------------------

def _torch_setup(torch, layers, act, out_act, X, labels, dt):
    import torch.nn as nn

    tdt = {"f64": torch.float64, "f32": torch.float32}[dt]
    mods = []
    for i, (n_in, n_out) in enumerate(zip(layers[:-1], layers[1:])):
        mods.append(nn.Linear(n_in, n_out))
        if i < len(layers) - 2:
            mods.append({"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[act]())
    model = nn.Sequential(*mods).to(tdt)
    lins = [m for m in mods if isinstance(m, nn.Linear)]
    Xt = torch.from_numpy(X)
    if out_act == "softmax":
        Yt = torch.from_numpy(labels)  # int64 class targets for F.cross_entropy
    else:
        Yt = torch.from_numpy(labels.reshape(-1, 1).astype(X.dtype))
    return model, lins, Xt, Yt


def torch_optimizer(torch, parameters, lr, opt):
    """torch.optim's counterpart of kernels.train's optimizer keywords (PyTorch's defaults:
    the single-tensor implementation on CPU)."""
    kind = opt.get("optimizer", "sgd")
    if kind == "adam":
        return torch.optim.Adam(parameters, lr=lr, betas=(opt["beta1"], opt["beta2"]),
                                eps=opt["eps"])
    if kind == "momentum":
        return torch.optim.SGD(parameters, lr=lr, momentum=opt["momentum"], dampening=0.0)
    return torch.optim.SGD(parameters, lr=lr, momentum=0.0)


def torch_train(torch, setup, params, *, out_act, lr, batch, epochs, threads, rows=None,
                opt=None):
    import torch.nn.functional as F

    model, lins, Xt, Yt = setup
    if rows is not None:
        Xt, Yt = Xt[:rows], Yt[:rows]
    torch.set_num_threads(threads)
    with torch.no_grad():
        for lin, W, B in zip(lins, params["weights"], params["biases"]):
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)))
            lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(B)))
    if out_act == "softmax":
        def lossf(out, t):
            return F.cross_entropy(out, t)
    else:
        def lossf(out, t):
            return 0.5 * F.mse_loss(torch.sigmoid(out), t)
    n = Xt.shape[0]
    bs = n if batch == "full" else int(batch)
    batches = [(Xt[s:s + bs], Yt[s:s + bs]) for s in range(0, n, bs)]
    optim = torch_optimizer(torch, model.parameters(), lr, opt or {})
    errors = []

    def evaluate():
        with torch.no_grad():
            out = model(Xt)
            e = lossf(out, Yt).item()
            if out_act == "softmax":
                (out.argmax(dim=1) == Yt).double().mean().item()  # accuracy, as Descent records
            else:
                ((torch.sigmoid(out) >= 0.5) == (Yt >= 0.5)).double().mean().item()
        return e

    errors.append(evaluate())
    for _ in range(epochs):
        for xb, yb in batches:
            optim.zero_grad(set_to_none=True)
            lossf(model(xb), yb).backward()
            optim.step()
        errors.append(evaluate())
    return np.array(errors)


# --------------------------------------------------------------------------------------------
# scikit-learn peer
# --------------------------------------------------------------------------------------------

def sklearn_train(sk, *, layers, act, loss, lr, batch, epochs, X, labels, opt=None):
    from sklearn.exceptions import ConvergenceWarning

    n = X.shape[0]
    bs = n if batch == "full" else min(int(batch), n)
    kw = dict(hidden_layer_sizes=tuple(layers[1:-1]),
              activation={"sigmoid": "logistic", "tanh": "tanh", "relu": "relu"}[act],
              solver="sgd", alpha=0.0, batch_size=bs, learning_rate="constant",
              learning_rate_init=lr, max_iter=epochs, shuffle=False, momentum=0.0,
              nesterovs_momentum=False, tol=0.0, n_iter_no_change=epochs + 1,
              early_stopping=False, random_state=0)
    opt = opt or {}
    if opt.get("optimizer") == "adam":
        kw.update(solver="adam", beta_1=opt["beta1"], beta_2=opt["beta2"], epsilon=opt["eps"])
    elif opt.get("optimizer") == "momentum":
        kw.update(momentum=opt["momentum"])
    if loss == "mse":
        model = sk.MLPRegressor(**kw)
        target = labels.astype(X.dtype)
    else:
        model = sk.MLPClassifier(**kw)
        target = labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, target)
    assert model.n_iter_ == epochs, (model.n_iter_, epochs)
    return None


# --------------------------------------------------------------------------------------------
# FLOPs and the NumPy matmul peak
# --------------------------------------------------------------------------------------------

def train_flops(layers, n, epochs, full_batch=False):
    """2*MACs forward + 4*MACs backward minus the first layer's input gradient, per sample
    and epoch, plus a whole-set forward for each of the epochs+1 recorded errors. At full
    batch (in order) Descent's error of each epoch but the last is the next step's forward
    pass, so only the last one costs a forward pass of its own."""
    macs = [a * b for a, b in zip(layers[:-1], layers[1:])]
    M = sum(macs)
    per_sample_step = 2 * M + 4 * M - 2 * macs[0]
    evaluations = 1 if full_batch else epochs + 1
    return epochs * n * per_sample_step + evaluations * n * 2 * M


def paired_peak(threads, dt):
    """GFLOP/s of numpy matmuls at a thread count now, a quick version of matmul_peak
    (best of both shapes), taken just before each timed Descent repetition on net c: this
    VM's 2-thread capacity drifts by up to 1.5x within minutes (neighbours on the host), so
    a run is also compared with what the machine could do at that moment."""
    rng = np.random.default_rng(1)
    npdt = np.dtype(DTYPE_NAME[dt])
    best = 0.0
    with _blas_threads(threads):
        for (m, k, n), reps in (((256, 784, 256), 20), ((2048, 2048, 2048), 2)):
            A = rng.standard_normal((m, k)).astype(npdt)
            B = rng.standard_normal((k, n)).astype(npdt)
            C = np.empty((m, n), dtype=npdt)
            np.matmul(A, B, out=C)  # warm-up
            for _ in range(reps):
                t0 = time.perf_counter()
                np.matmul(A, B, out=C)
                best = max(best, 2.0 * m * k * n / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_peak(threads, dts, quick):
    """Best GFLOP/s of numpy matmuls at a BLAS thread count, per dtype and shape."""
    rng = np.random.default_rng(0)
    big = 1024 if quick else 2048
    shapes = [("(256x784)@(784x256)", (256, 784, 256), 10 if quick else 30),
              (f"({big}x{big})@({big}x{big})", (big, big, big), 2 if quick else 4)]
    out = {}
    with _blas_threads(threads):
        for dt in dts:
            npdt = np.dtype(DTYPE_NAME[dt])
            for label, (m, k, n), reps in shapes:
                A = rng.standard_normal((m, k)).astype(npdt)
                B = rng.standard_normal((k, n)).astype(npdt)
                C = np.empty((m, n), dtype=npdt)
                np.matmul(A, B, out=C)  # warm-up
                best = math.inf
                for _ in range(reps):
                    t0 = time.perf_counter()
                    np.matmul(A, B, out=C)
                    best = min(best, time.perf_counter() - t0)
                out[(dt, label)] = 2.0 * m * k * n / best / 1e9
    return out


# --------------------------------------------------------------------------------------------
# environment report
# --------------------------------------------------------------------------------------------

def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def print_environment(peers, descent_info):
    import numba

    print("== Environment")
    print(f"python {platform.python_version()}  {platform.machine()}  cpu: {_cpu_model()}  "
          f"logical cpus: {os.cpu_count()}  affinity: {len(os.sched_getaffinity(0))}")
    print(f"numpy {np.__version__}  numba {numba.__version__} "
          f"(NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}, "
          f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(unset)')})  "
          f"scipy {scipy.__version__ if scipy else 'missing'}  "
          f"threadpoolctl "
          f"{threadpoolctl.__version__ if threadpoolctl else 'MISSING (no thread control)'}")
    print(f"OPENBLAS_CORETYPE: {os.environ.get('OPENBLAS_CORETYPE', '(not set)')}   "
          f"OMP_NUM_THREADS: {os.environ.get('OMP_NUM_THREADS', '(not set)')}   "
          f"OPENBLAS_NUM_THREADS: {os.environ.get('OPENBLAS_NUM_THREADS', '(not set)')}")
    if threadpoolctl is not None:
        for info in threadpoolctl.threadpool_info():
            fp = info.get("filepath", "")
            owner = ("numpy" if "numpy" in fp else "scipy (numba's np.dot)" if "scipy" in fp
                     else "torch" if "torch" in fp else "?")
            print(f"  pool: {owner:22s} {info.get('user_api')}/{info.get('internal_api')} "
                  f"version={info.get('version')} architecture/coretype="
                  f"{info.get('architecture', '-')} threading={info.get('threading_layer', '-')} "
                  f"num_threads={info.get('num_threads')}  [{os.path.basename(fp)}]")
    print(f"Descent: {descent_info}")
    for name, (ok, ver) in peers.items():
        print(f"peer {name:8s}: {'found ' + ver if ok else 'NOT FOUND (' + ver + ')'}")
    if peers.get("torch", (False,))[0]:
        import torch
        print(f"  torch BLAS: {'MKL' if torch.backends.mkl.is_available() else 'no MKL'}, "
              f"mkldnn={torch.backends.mkldnn.is_available()}, "
              f"cpu capability={torch.backends.cpu.get_cpu_capability()}, "
              f"default threads={torch.get_num_threads()}")


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------

def fmt_rate(x):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if x >= 1e9:
        return f"{x / 1e9:.2f}G"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_ratio(x):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    return f"{x:.2f}x"


def fmt_diff(x):
    if x is None:
        return "-"
    return f"{x:.0e}" if x > 0 else "0"


# --------------------------------------------------------------------------------------------
# one cell
# --------------------------------------------------------------------------------------------

def rel_diff(a, b):
    """Largest relative difference over the common prefix of two error histories."""
    if a is None or b is None:
        return None
    k = min(len(a), len(b))
    a, b = np.asarray(a[:k], float), np.asarray(b[:k], float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300)))


def run_cell(cell, ctx):
    net, batch, dt = cell
    layers, act, out_act, loss, _, _ = NETS[net]
    lr = net_lr(net, ctx["optimizer"])
    opt = OPTIMIZERS[ctx["optimizer"]][0]
    X64, labels, _ = ctx["data"][net]
    if net == "c" and batch == "1":
        X64, labels = X64[:ctx["c_sgd_n"]], labels[:ctx["c_sgd_n"]]
    npdt = np.dtype(DTYPE_NAME[dt])
    X = np.ascontiguousarray(X64, dtype=npdt)
    n = X.shape[0]
    bmode = {"1": "sgd", "full": "full"}.get(batch, "minibatch")
    bsize = 32 if batch == "full" else int(batch) if batch != "1" else 1
    target, cap, reps = ctx["target"], ctx["cap"], ctx["reps"]
    d_threads = ctx["threads"]
    notes = []

    def descent(epochs, eval_every=1, threads=None):
        every = {} if eval_every == 1 else {"eval_every": eval_every}  # (the stand-in has none)
        if threads is not None and ctx["train"] is not standin_train:
            every["threads"] = threads  # BLAS's, or parts of big batches on as many cores
        return ctx["train"](X, labels, layers=layers, activation=act, output_activation=out_act,
                            loss=loss, learning_rate=lr, batch_mode=bmode, batch_size=bsize,
                            epochs=epochs, seed=0, shuffle=False, init="uniform",
                            dtype=DTYPE_NAME[dt], **every, **opt)

    def descent_blas(T):
        """BLAS threads beside threads=T: one when Descent splits the batches in parts."""
        if ctx["train"] is standin_train:
            return T
        import kernels
        return kernels.blas_threads_for(T, layers=layers, batch_mode=bmode, batch_size=bsize,
                                        rows=n)

    matched = ctx["eval_every"] == "epochs" and net == "c" and batch in MATCHED_BATCHES

    # Descent: warm-up (absorbs numba compilation), then pick the epochs for ~target seconds
    # (at least MATCHED_MIN_EPOCHS in the matched cells of a full run).
    with _blas_threads(descent_blas(d_threads[0])):
        t_warm, res = _timed(lambda: descent(1, threads=d_threads[0]))
        e = 1
        while True:
            t, res = _timed(lambda: descent(e, threads=d_threads[0]))
            if t >= target / 4 or e >= 10**7:
                break
            e = int(e * min(100, max(2, target / 4 / max(t, 1e-6))))
        E = max(1, int(round(e * target / max(t, 1e-9))))
        if matched and not ctx["quick"]:
            E = max(E, MATCHED_MIN_EPOCHS)
    p0 = res.initial_params

    # The implementations: fn(k, m) trains k epochs on the first m samples (the whole
    # training set unless a slow peer is capped) and returns the error history.
    impls = {}
    for T in d_threads:
        def run_d(k, m, T=T):
            with _blas_threads(descent_blas(T)):
                r = descent(k, threads=T)
            if r.epochs_done != k:
                raise RuntimeError(f"Descent stopped after {r.epochs_done} of {k} epochs "
                                   f"(diverged={r.diverged})")
            return r.errors
        impls[f"D@{T}"] = run_d
    # --eval-every epochs: Descent also evaluates only before training and after the last
    # epoch (eval_every = epochs), sklearn's work, on the large net's big batches.
    for T in d_threads if matched else ():
        def run_de(k, m, T=T):
            with _blas_threads(descent_blas(T)):
                r = descent(k, eval_every=k, threads=T)
            if r.epochs_done != k:
                raise RuntimeError(f"Descent stopped after {r.epochs_done} of {k} epochs")
            return r.errors
        impls[f"De@{T}"] = run_de
    if ctx["torch"] is not None:
        torch = ctx["torch"]
        setup = _torch_setup(torch, layers, act, out_act, X, labels, dt)
        for T in ctx["torch_threads"]:
            impls[f"torch@{T}"] = (lambda k, m, T=T: torch_train(
                torch, setup, p0, out_act=out_act, lr=lr, batch=batch, epochs=k, threads=T,
                rows=m, opt=opt))
    if ctx["sklearn"] is not None:
        def run_sk(k, m):
            with _blas_threads(ctx["peer_threads"]):
                return sklearn_train(ctx["sklearn"], layers=layers, act=act, loss=loss, lr=lr,
                                     batch=batch, epochs=k, X=X[:m], labels=labels[:m],
                                     opt=opt)
        impls["sklearn"] = run_sk

    def run_np(k, m):
        with _blas_threads(ctx["peer_threads"]):
            return numpy_train(X[:m], labels[:m], p0, act=act, out_act=out_act, loss=loss,
                               lr=lr, batch=batch, epochs=k, opt=opt)
    impls["numpy"] = run_np

    # Peers: a warm-up and a probe of one epoch on a few batches give the seconds per sample;
    # run the same work as Descent (E epochs on all n samples) unless that would exceed the
    # cap, in which case time fewer whole epochs, or one epoch on the first m samples (the
    # per-epoch evaluation then covers those m samples too). Said in the output.
    bs = n if batch == "full" else int(batch)
    work = {}
    for name, fn in impls.items():
        if name.startswith(("D@", "De@")):
            work[name] = (E, n)
            continue
        m0 = n if batch == "full" else min(n, max(8 * bs, 256))
        try:
            _timed(lambda: fn(1, m0), settle=True)
            t1, _ = _timed(lambda: fn(1, m0))
        except Exception as ex:  # noqa: BLE001
            notes.append(f"{name} failed: {ex!r:.120}")
            work[name] = None
            continue
        per_sample = t1 / m0
        if per_sample * n * E <= 2 * cap:  # same work as Descent whenever it is affordable
            work[name] = (E, n)
        elif per_sample * n <= cap or batch == "full":
            k = max(1, min(E, int(cap / (per_sample * n))))
            work[name] = (k, n)
            if k < E:
                notes.append(f"{name}: timed {k} of {E} epochs (whole epochs, same per-epoch "
                             f"work; rate extrapolated to the full run)")
        else:
            m = max(m0, min(n, int(cap / per_sample) // bs * bs))
            work[name] = (1, m)
            if m == n:
                notes.append(f"{name}: timed 1 of {E} epochs (whole epochs, same per-epoch "
                             f"work; rate extrapolated to the full run)")
                continue
            notes.append(f"{name}: timed 1 epoch on the first {m} of {n} samples instead of "
                         f"{E} epoch(s) on {n} (fraction of an epoch; rate extrapolated)")

    # Timed repetitions, interleaved so that drift hits every implementation alike.
    def multi(name):  # did this implementation leave extra threads behind?
        T = int(name.split("@")[1]) if "@" in name else ctx["peer_threads"]
        return T > 1

    times = {name: [] for name in impls}
    peaks = {name: [] for name in impls}  # net c: the paired peak before each D@T repetition
    hist = {}
    prev = None
    for _ in range(reps):
        for name, fn in impls.items():
            if work[name] is None:
                continue
            k, m = work[name]
            if net == "c" and name.startswith("D@") and not ctx["quick"]:
                if prev is not None and multi(prev):
                    time.sleep(SETTLE_SECONDS)
                peaks[name].append(paired_peak(int(name.split("@")[1]), dt))
                prev = name
            try:
                t, h = _timed(lambda: fn(k, m), settle=prev is not None and multi(prev))
                prev = name
            except Exception as ex:  # noqa: BLE001
                notes.append(f"{name} failed: {ex!r:.120}")
                work[name] = None
                continue
            times[name].append(t)
            hist[name] = h
    rate = {}
    for name in impls:
        if work[name] is not None and times[name]:
            rate[name] = work[name][0] * work[name][1] / statistics.median(times[name])
        else:
            rate[name] = None

    # Ratios.
    d_rates = {T: rate[f"D@{T}"] for T in d_threads if rate.get(f"D@{T}")}
    d_best = max(d_rates.values()) if d_rates else None
    de_rates = [rate[f"De@{T}"] for T in d_threads if rate.get(f"De@{T}")]
    de_best = max(de_rates) if de_rates else None
    peers = [p for p in impls if not p.startswith(("D@", "De@")) and rate.get(p)]
    ratio = {}
    for p in peers:
        if p.startswith("torch@"):
            T = int(p.split("@")[1])
            dr = d_rates.get(T, d_best)
        elif p == "sklearn" and de_best:  # the same work: no per-epoch evaluation
            dr = de_best
        else:
            dr = d_best
        ratio[p] = dr / rate[p] if dr else None
    best_peer = max(peers, key=lambda p: rate[p]) if peers else None
    ratio_best = d_best / rate[best_peer] if (d_best and best_peer) else None
    if de_best and d_best and peers:  # each peer against Descent doing its work
        ratio_best = min((de_best if p == "sklearn" else d_best) / rate[p] for p in peers)

    # Agreement of the error histories (same initial parameters, same math).
    # (Only for runs on all n samples: a capped run on m < n samples evaluates only those.)
    full = {name: h for name, h in hist.items() if work.get(name) and work[name][1] == n}
    d_hist = next((full[f"D@{T}"] for T in d_threads if f"D@{T}" in full), None)
    diff_np = rel_diff(d_hist, full.get("numpy"))
    diff_t = rel_diff(d_hist, next((full[f"torch@{T}"] for T in ctx["torch_threads"]
                                    if f"torch@{T}" in full), None))
    # Spread of the repetitions: flag implementations whose slowest rep took > 1.3x the fastest.
    noisy = [name for name, ts in times.items() if len(ts) > 1 and max(ts) > 1.3 * min(ts)]

    # GFLOP/s on the large net, and against the paired peaks: the median over the
    # repetitions of (the repetition's GFLOP/s / the peak measured just before it).
    gflops, paired = {}, {}
    if net == "c":
        fl = train_flops(layers, n, E, full_batch=batch == "full")
        for T in d_threads:
            ts = times.get(f"D@{T}")
            if ts:
                gflops[T] = fl / statistics.median(ts) / 1e9
            pks = peaks.get(f"D@{T}")
            if ts and pks and len(pks) == len(ts):
                paired[T] = statistics.median(100.0 * fl / t / 1e9 / pk
                                              for t, pk in zip(ts, pks))

    # Targets.
    targets, verdicts = [], []
    tt = TORCH_TARGETS.get((net, batch))
    if tt is not None:
        tr = [ratio[p] for p in peers if p.startswith("torch@")
              and (int(p.split("@")[1]) in d_rates or not any(
                  int(q.split("@")[1]) in d_rates for q in peers if q.startswith("torch@")))]
        ok = bool(tr) and min(tr) >= tt
        targets.append(f"torch>={tt:g}x")
        verdicts.append(ok)
    targets.append(f"best>={BEST_PEER_TARGET:g}x")
    verdicts.append(ratio_best is not None and ratio_best >= BEST_PEER_TARGET)
    pct = {}
    gt = GFLOP_TARGET_PCT.get((net, batch))
    if net == "c":
        for T, g in gflops.items():
            peak = ctx["peak"].get(T, {})
            pk = max((v for (d, _), v in peak.items() if d == dt), default=None)
            pct[T] = 100.0 * g / pk if pk else None
        if gt is not None:
            targets.append(f"matmul>={gt:g}%")
            verdicts.append(matmul_verdict(pct, paired, gt))

    return dict(cell=cell, n=n, E=E, work=work, rate=rate, ratio=ratio,
                ratio_best=ratio_best, best_peer=best_peer, diff_np=diff_np, diff_t=diff_t,
                gflops=gflops, pct=pct, paired=paired, targets=targets, checks=verdicts,
                verdict=all(verdicts), notes=notes, noisy=noisy,
                t_warm=t_warm, impls=list(impls))


def matmul_verdict(pct, paired, target):
    """The matmul target at every thread count: judged on the paired percentages when the
    run has them (full mode), else on those against the run's best peak."""
    got = paired or pct
    return bool(got) and all(v is not None and v >= target for v in got.values())


# --------------------------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------------------------

def table_columns(ctx):
    cols = [f"D@{T}" for T in ctx["threads"]]
    if ctx.get("eval_every") == "epochs":
        cols += [f"De@{T}" for T in ctx["threads"]]
    if ctx["torch"] is not None:
        cols += [f"torch@{T}" for T in ctx["torch_threads"]]
    if ctx["sklearn"] is not None:
        cols.append("sklearn")
    cols.append("numpy")
    return cols


def header(ctx):
    cols = table_columns(ctx)
    peers = [c for c in cols if not c.startswith(("D@", "De@"))]
    h = f"{'net':15s} {'batch':>5s} {'dtype':5s} {'work':>13s} "
    h += " ".join(f"{c:>8s}" for c in cols)
    h += " | " + " ".join(f"{'D/' + p.replace('sklearn', 'skl'):>8s}" for p in peers)
    h += f" {'D/best':>7s} | {'chk np/torch':>12s} {'bg':>4s} {'sec':>4s} | targets"
    return h


def row(r, ctx):
    net, batch, dt = r["cell"]
    cols = table_columns(ctx)
    peers = [c for c in cols if not c.startswith(("D@", "De@"))]
    layers = NETS[net][0]
    name = "-".join(str(x) for x in layers)
    work = f"{r['E']}ep x {r['n']}"
    s = f"{name:15s} {batch:>5s} {DTYPE_NAME[dt]:5s} {work:>13s} "
    cells = []
    for c in cols:
        v = fmt_rate(r["rate"].get(c))
        if r["work"].get(c) is not None and r["work"][c] != (r["E"], r["n"]):
            v += "*"
        if c in r["noisy"]:
            v = "~" + v
        cells.append(f"{v:>8s}")
    s += " ".join(cells)
    s += " | " + " ".join(f"{fmt_ratio(r['ratio'].get(p)):>8s}" for p in peers)
    bg = f"{r['bg']:.2f}" if r.get("bg") is not None else "-"
    s += (f" {fmt_ratio(r['ratio_best']):>7s} | "
          f"{fmt_diff(r['diff_np']) + '/' + fmt_diff(r['diff_t']):>12s} {bg:>4s} "
          f"{r.get('sec', 0):4.0f} | ")
    s += " ".join(f"{t}:{'ok' if ok else 'NO'}" for t, ok in zip(r["targets"], r["checks"]))
    s += "  => PASS" if r["verdict"] else "  => FAIL"
    return s


def gflop_table(results, ctx):
    rows = [r for r in results if r["cell"][0] == "c" and r["gflops"]]
    if not rows:
        return
    print()
    print("== 784-256-128-10: achieved GFLOP/s of Descent vs NumPy matmul peak at the same "
          "BLAS thread count")
    print("   FLOPs = per sample and step 2*MACs forward + 4*MACs backward - 2*MACs(layer 1 "
          "input gradient), plus 2*MACs per sample for each of the epochs+1 whole-set error "
          "evaluations (at full batch only the last: the others are the next step's forward "
          "pass); elementwise work not counted. Peak = best of the NumPy matmuls below. "
          "% paired@T (full mode) = median over the timed repetitions of the repetition's "
          "GFLOP/s over the NumPy matmul peak measured just before it (paired_peak); the "
          "target is judged on it when present.")
    for T in ctx["threads"]:
        pk = ctx["peak"].get(T, {})
        print(f"   numpy matmul @{T} thread(s): " + "; ".join(
            f"{DTYPE_NAME[d]} {lab} {v:.1f}" for (d, lab), v in pk.items()) + " GFLOP/s")
    h = f"   {'batch':>5s} {'dtype':7s} " + " ".join(
        f"{'D@' + str(T) + ' GF/s':>11s} {'% peak@' + str(T):>9s} {'% paired@' + str(T):>11s}"
        for T in ctx["threads"])
    h += "  target"
    print(h)
    for r in rows:
        _, batch, dt = r["cell"]
        s = f"   {batch:>5s} {DTYPE_NAME[dt]:7s} "
        for T in ctx["threads"]:
            g, p, q = r["gflops"].get(T), r["pct"].get(T), r["paired"].get(T)
            s += (f"{(f'{g:.1f}' if g else '-'):>11s} {(f'{p:.0f}%' if p else '-'):>9s} "
                  f"{(f'{q:.0f}%' if q else '-'):>11s} ")
        gt = GFLOP_TARGET_PCT.get(("c", batch))
        if gt is not None:
            ok = matmul_verdict(r["pct"], r["paired"], gt)
            s += f" >={gt:g}% at every thread count: {'PASS' if ok else 'FAIL'}"
        print(s)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def describe_optimizer(name):
    """What each implementation runs under --optimizer NAME."""
    if name == "adam":
        return ("adam (beta1 0.9, beta2 0.999, eps 1e-8): Descent optimizer='adam', "
                "torch.optim.Adam, sklearn solver='adam', NumPy peer's Adam")
    if name == "momentum":
        return ("momentum 0.9 (no dampening, not Nesterov): Descent optimizer='momentum', "
                "torch.optim.SGD(momentum=0.9), sklearn solver='sgd' momentum=0.9 "
                "nesterovs_momentum=False, NumPy peer's momentum")
    return "plain gradient descent (torch.optim.SGD momentum=0, sklearn solver='sgd' momentum=0)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="shorter measurements, 4000 samples on net c (~2 min)")
    ap.add_argument("--cells", nargs="*", default=None,
                    help="cell ids or prefixes: a, b-32, c-full-f32 (net-batch-dtype)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (median)")
    ap.add_argument("--threads", default="1,2",
                    help="Descent's BLAS thread counts, e.g. 1 or 1,2 (default 1,2)")
    ap.add_argument("--peers", default="torch,sklearn,numpy",
                    help="peers to run (numpy always runs)")
    ap.add_argument("--target", type=float, default=None,
                    help="seconds per Descent measurement (default 0.5, quick 0.1)")
    ap.add_argument("--cap", type=float, default=None,
                    help="max seconds per peer measurement before timing fewer epochs "
                         "(default 1.5, quick 0.2)")
    ap.add_argument("--retries", type=int, default=4,
                    help="full mode: cells measured while other processes used > "
                         "0.25 cores are measured once more, at most this many (default 4)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each cell wait up to S seconds until other processes use "
                         "< 0.15 cores (default 0: no waiting)")
    ap.add_argument("--optimizer", choices=list(OPTIMIZERS), default="sgd",
                    help="sgd: plain gradient descent (default, 24 cells); adam or momentum: "
                         "those optimizer cells at batch 1, 32 and 256 against torch.optim.Adam "
                         "/ SGD(momentum=0.9) and scikit-learn's adam / sgd+momentum solvers")
    ap.add_argument("--eval-every", choices=["1", "epochs"], default="1",
                    help="epochs: on 784-256-128-10 at batch 256 and full, also time Descent "
                         "with eval_every = epochs (columns De@T: the whole-set evaluation "
                         "before training and after the last epoch only, sklearn's work) and "
                         "compare sklearn with those; default 1: every epoch only")
    ap.add_argument("--parallel-min", type=int, default=None, metavar="N",
                    help="set kernels.knobs.PARALLEL_MIN (multiply-adds per part of a batch "
                         "from which D@T with T > 1 splits batches in T parts on T cores; "
                         "2**62: never, BLAS threads only) to measure the crossover")
    ap.add_argument("--parallel-min-rows", type=int, default=None, metavar="R",
                    help="set kernels.knobs.PARALLEL_MIN_ROWS (rows per part of a batch "
                         "from which D@T splits, with --parallel-min)")
    ap.add_argument("--standin", action="store_true",
                    help="use the NumPy stand-in for Descent even if kernels works")
    args = ap.parse_args(argv)

    ctx = {
        "target": args.target or (0.1 if args.quick else 0.5),
        "cap": args.cap or (0.2 if args.quick else 1.5),
        "reps": args.reps or 3,
        "threads": [int(t) for t in args.threads.split(",") if t.strip()],
        "torch_threads": [1, 2],
        "c_n": 4000 if args.quick else 10000,
        "c_sgd_n": 500 if args.quick else 2000,
        "optimizer": args.optimizer,
        "eval_every": args.eval_every,
        "quick": args.quick,
    }
    global SETTLE_SECONDS
    if args.quick:
        SETTLE_SECONDS = 0.05
    ctx["peer_threads"] = max(ctx["threads"])
    wanted = {p.strip() for p in args.peers.split(",")}

    # Descent.
    descent_info = None
    ctx["train"] = None
    if not args.standin:
        try:
            import kernels
            t0 = time.perf_counter()
            r = kernels.train(np.zeros((4, 2)), np.array([0, 1, 1, 0]), layers=[2, 2, 1],
                              epochs=1, shuffle=False)
            assert len(r.errors) == 2
            ctx["train"] = kernels.train
            descent_info = (f"kernels.train from {os.path.dirname(kernels.__file__)} "
                            f"(first call incl. compile/cache load "
                            f"{time.perf_counter() - t0:.1f} s)")
            from kernels import knobs
            if args.parallel_min is not None:
                knobs.PARALLEL_MIN = args.parallel_min
            if args.parallel_min_rows is not None:
                knobs.PARALLEL_MIN_ROWS = args.parallel_min_rows
            descent_info += (f"; PARALLEL_MIN={knobs.PARALLEL_MIN}, "
                             f"PARALLEL_MIN_ROWS={knobs.PARALLEL_MIN_ROWS}")
        except Exception as e:  # noqa: BLE001
            descent_info = f"kernels.train NOT WORKING ({e!r:.150})"
    if ctx["train"] is None:
        ctx["train"] = standin_train
        descent_info = ("*** STAND-IN: the 'D@' columns are the NumPy peer behind the train() "
                        "API, NOT Descent *** " + (descent_info or "(--standin)"))

    peers = {"numpy": (True, np.__version__)}
    ctx["torch"] = ctx["sklearn"] = None
    if "torch" in wanted:
        try:
            import torch
            ctx["torch"] = torch
            peers["torch"] = (True, torch.__version__)
        except Exception as e:  # noqa: BLE001
            peers["torch"] = (False, repr(e)[:80])
    if "sklearn" in wanted:
        try:
            import sklearn
            import sklearn.neural_network as skn
            ctx["sklearn"] = skn
            peers["sklearn"] = (True, sklearn.__version__)
        except Exception as e:  # noqa: BLE001
            peers["sklearn"] = (False, repr(e)[:80])

    print_environment(peers, descent_info)
    load0 = os.getloadavg()
    print(f"load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
          + ("   (recent activity: other processes may compete for the cores; the bg column "
             "says how much they took during each cell)" if load0[0] > 0.5 else ""))
    cells = select_cells(args.cells, args.optimizer)
    if not cells:
        sys.exit(f"--cells {args.cells}: no cell matches; ids look like a-1-f64, b-32, c-full-f32")
    global_notes = []
    ctx["data"] = {}
    for net in sorted({c[0] for c in cells}):
        X, y, desc = make_data(net, ctx["c_n"], global_notes)
        ctx["data"][net] = (X, y, desc)

    print()
    print("== Setup")
    mode = "quick" if args.quick else "full"
    print(f"mode {mode}: ~{ctx['target']} s per Descent measurement, peers capped at "
          f"~{ctx['cap']} s per measurement, median of {ctx['reps']} interleaved repetitions "
          f"after a warm-up (Descent's warm-up absorbs numba compilation).")
    print(f"Descent BLAS threads (threadpoolctl): {ctx['threads']}; torch.set_num_threads: "
          f"{ctx['torch_threads']}; numpy and sklearn peers: BLAS limited to "
          f"{ctx['peer_threads']} thread(s).")
    print("All: shuffle=False, same architecture/activations/loss/lr/batch/epochs. Descent, "
          "torch and numpy start from the same parameters (Descent's initial_params).")
    print("Descent, torch and numpy evaluate the whole-training-set loss (and accuracy) before "
          "training and after every epoch; torch does it under no_grad. sklearn keeps only its "
          "own running loss, has its own init, and for the mse net uses MLPRegressor (identity "
          "output, 1/2 mean squared error) since it has no sigmoid-output regressor; its "
          "classifier uses softmax + cross-entropy like ours.")
    print(f"optimizer: {describe_optimizer(args.optimizer)}")
    for net in sorted(ctx["data"]):
        desc = NETS[net][5]
        print(f"net {net}: {desc}, lr={net_lr(net, args.optimizer)}; data: {ctx['data'][net][2]}")
    if any(c[0] == "c" and c[1] == "1" for c in cells):
        print(f"batch 1 on 784-256-128-10 uses the first {ctx['c_sgd_n']} samples for every "
              f"implementation (same work).")

    if any(c[0] == "c" for c in cells):
        ctx["peak"] = {T: matmul_peak(T, sorted({c[2] for c in cells if c[0] == 'c'}), args.quick)
                       for T in ctx["threads"]}
    else:
        ctx["peak"] = {}

    gc.collect()
    gc.freeze()  # torch's many objects: keep the collections between cells cheap
    print()
    print(f"== Training throughput ({args.optimizer}), samples/s (= epochs * n_samples / median "
          "seconds); * = capped: less work timed (see notes); ~ = repetitions spread > 1.3x")
    print(header(ctx))
    sys.stdout.flush()
    results = []
    t_start = time.perf_counter()
    waited = [0.0]

    def wait_quiet():
        """Up to --wait-quiet seconds for other processes to use < 0.15 cores (0.5 s window)."""
        deadline = time.perf_counter() + args.wait_quiet
        while time.perf_counter() < deadline:
            a = _cpu_snapshot()
            time.sleep(0.5)
            bg = _others_load(a, _cpu_snapshot())
            if bg is None or bg < 0.15:
                return
            waited[0] += 0.5

    def measure(cell):
        if args.wait_quiet > 0:
            wait_quiet()
        gc.collect()
        snap = _cpu_snapshot()
        r = run_cell(cell, ctx)
        snap2 = _cpu_snapshot()
        r["sec"] = snap2[0] - snap[0]
        r["bg"] = _others_load(snap, snap2)
        return r

    for cell in cells:
        r = measure(cell)
        results.append(r)
        print(row(r, ctx))
        sys.stdout.flush()
    # Cells that ran while other processes took a good share of the CPU are measured once
    # more (full mode, a few at most); the run with the quieter machine is kept.
    retried = []
    if not args.quick and args.retries > 0:
        busy = sorted((i for i, r in enumerate(results) if (r["bg"] or 0) > BUSY_BG),
                      key=lambda i: -results[i]["bg"])[:args.retries]
        if busy:
            print(f"-- re-measuring {len(busy)} cell(s) that ran on a busy machine "
                  f"(bg > {BUSY_BG})")
        for i in sorted(busy):
            r2 = measure(results[i]["cell"])
            print(row(r2, ctx))
            sys.stdout.flush()
            keep = r2 if (r2["bg"] or 0) < (results[i]["bg"] or 0) else results[i]
            retried.append(f"{cell_id(*results[i]['cell'])}: measured twice (bg "
                           f"{results[i]['bg']:.2f} then {r2['bg']:.2f}); kept the run with "
                           f"bg {keep['bg']:.2f}")
            results[i] = keep
    elapsed = time.perf_counter() - t_start - waited[0]
    if ctx["peak"]:  # the peak is the best seen: measure again now, keep the higher
        dts_c = sorted({c[2] for c in cells if c[0] == "c"})
        for T in ctx["threads"]:
            again = matmul_peak(T, dts_c, args.quick)
            for key, v in again.items():
                ctx["peak"][T][key] = max(v, ctx["peak"][T].get(key, 0.0))
        for r in results:  # percentages against the final peak
            net, batch, dt = r["cell"]
            if net != "c":
                continue
            for T, g in r["gflops"].items():
                pk = max(v for (d, _), v in ctx["peak"][T].items() if d == dt)
                r["pct"][T] = 100.0 * g / pk
            gt = GFLOP_TARGET_PCT.get((net, batch))
            if gt is not None:
                r["checks"][-1] = matmul_verdict(r["pct"], r["paired"], gt)
                r["verdict"] = all(r["checks"])

    print()
    print(f"== Summary table ({describe_optimizer(args.optimizer)})")
    print(header(ctx))
    for r in results:
        print(row(r, ctx))
    gflop_table(results, ctx)

    print()
    print("== Notes")
    print("D@T = Descent (kernels.train) with BLAS limited to T threads; torch@T = PyTorch with "
          "torch.set_num_threads(T). D/torch@T compares the two at the same thread count; "
          "D/skl, D/np and D/best use Descent's best thread count. 'best' = the fastest peer. "
          "A torch target must hold at every matched thread count.")
    print("bg = average number of cores busy with OTHER processes (or stolen by the "
          "hypervisor) while the cell ran; above ~0.1 the 2-thread columns are unreliable. "
          "sec = wall seconds the cell took.")
    print("sklearn runs its own fit loop and skips the whole-set evaluation after each epoch "
          "that the others do: that evaluation is ~30% of the FLOPs on all three nets "
          "(2*MACs of 6*MACs + 2*MACs - 2*MACs(layer 1) per sample and epoch).")
    print("chk np/torch = largest relative difference of Descent's error history from the "
          "NumPy / torch peer's over the epochs both ran (same initial parameters).")
    for n in global_notes + retried:
        print(f"- {n}")
    for r in results:
        for n in r["notes"]:
            print(f"- {cell_id(*r['cell'])}: {n}")
    n_pass = sum(r["verdict"] for r in results)
    print(f"targets: {n_pass}/{len(results)} cells PASS.  Cells measured in {elapsed:.0f} s"
          + (f" (plus {waited[0]:.0f} s waiting for a quiet machine)." if waited[0] else "."))
    load1 = os.getloadavg()
    print(f"load average at end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (this benchmark "
          f"itself contributes about 1-2)")
    if ctx["train"] is standin_train:
        print("*** The D@ columns are a NumPy STAND-IN, not Descent. ***")


if __name__ == "__main__":
    main()

"""Optimizers, schedules, clipping and stopping on a plateau (API.md 1b): ``kernels.train``
against the independent reference (tests/reference.py), itself checked against torch.optim
in tests/kernels/test_reference.py."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import kernels
import kernels.knobs
from tests import reference as ref
from tests.reference import make_problem, make_targets

OPTIMIZERS = ref.OPTIMIZERS
BATCH_MODES = [("sgd", 1), ("minibatch", 4), ("full", 1)]  # n = 13: a batch of 4 does not divide it
MODE_IDS = [m for m, _ in BATCH_MODES]
N = 13
EPOCHS = 4
SCHEDULES = {
    "constant": {"kind": "constant"},
    "step": {"kind": "step", "step_size": 2, "gamma": 0.5},
    "exponential": {"kind": "exponential", "gamma": 0.7},
    "cosine": {"kind": "cosine", "lr_min": 0.001},
}
# A learning rate per optimizer that trains without blowing up on the test problems.
LR = {"sgd": 0.3, "momentum": 0.1, "nesterov": 0.1, "adam": 0.01, "adamw": 0.01}
# Every hyperparameter off its default, so that a default baked in somewhere shows.
HYPER = dict(momentum=0.85, beta1=0.8, beta2=0.99, eps=1e-7)

# float64: the kernel reproduces the reference to rounding error; float32: to float32 accuracy
# (as tests/kernels/test_contract.py).
TOL = {
    "float64": dict(rtol=1e-12, atol=1e-14),
    "float32": dict(rtol=1e-4, atol=1e-6),
}


def problem(n=N, seed=0):
    X, y, params = make_problem("tanh", "softmax", "cross_entropy", [3, 5, 4], n=n, seed=seed)
    base = dict(layers=[3, 5, 4], activation="tanh", output_activation="softmax", loss="cross_entropy")
    return X, y, params, base


def spec(optimizer, **extra):
    """Keyword arguments of one optimizer with its non-default hyperparameters."""
    kw = dict(optimizer=optimizer, learning_rate=LR[optimizer])
    if optimizer in ("momentum", "nesterov"):
        kw["momentum"] = HYPER["momentum"]
    if optimizer in ("adam", "adamw"):
        kw.update(beta1=HYPER["beta1"], beta2=HYPER["beta2"], eps=HYPER["eps"])
    kw.update(extra)
    return kw


def run_both(X, y, **kw):
    return kernels.train(X, y, **kw), ref.train(X, y, **kw)


def assert_params_close(actual, expected, dtype, **tol):
    for key in ("weights", "biases"):
        assert len(actual[key]) == len(expected[key])
        for l, (a, e) in enumerate(zip(actual[key], expected[key])):
            assert a.dtype == np.dtype(dtype), f"{key}[{l}] dtype {a.dtype} != {dtype}"
            assert a.shape == e.shape
            np.testing.assert_allclose(a, e, err_msg=f"{key}[{l}]", **tol)


def assert_same_params(a, b):
    for key in ("weights", "biases"):
        assert len(a[key]) == len(b[key])
        for x, z in zip(a[key], b[key]):
            assert x.dtype == z.dtype and np.array_equal(x, z), key


def assert_same_bits(a, b):
    """Two kernels results are identical, bit for bit."""
    assert a.epochs_done == b.epochs_done and a.diverged == b.diverged
    assert np.array_equal(a.errors, b.errors)
    for name in ("accuracy", "val_errors", "val_accuracy"):
        x, z = getattr(a, name), getattr(b, name)
        assert (x is None) == (z is None), name
        if x is not None:
            assert np.array_equal(x, z, equal_nan=True), name
    assert a.stop_reason == b.stop_reason and a.best_epoch == b.best_epoch
    assert_same_params(a.initial_params, b.initial_params)
    assert_same_params(a.params, b.params)


def param_scale(params):
    return max(float(np.max(np.abs(a), initial=0.0)) for key in ("weights", "biases") for a in params[key])


def assert_matches_reference(res, want, dtype):
    """Same run as the reference: errors to TOL elementwise, parameters to TOL relative to the
    largest parameter of the network (a weight that passes near zero after hundreds of
    steps keeps the absolute rounding of its neighbours, not a relative bound of its own;
    test_properties.py compares the same way)."""
    tol = TOL[dtype]
    assert res.epochs_done == want.epochs_done
    assert bool(res.diverged) == want.diverged
    assert res.stop_reason == want.stop_reason
    assert res.best_epoch == want.best_epoch
    assert res.errors.shape == want.errors.shape
    np.testing.assert_allclose(res.errors, want.errors, err_msg="errors", **tol)
    if want.accuracy is None:
        assert res.accuracy is None
    else:
        np.testing.assert_array_equal(res.accuracy, want.accuracy, err_msg="accuracy")
    if want.val_errors is None:
        assert res.val_errors is None
    else:
        np.testing.assert_allclose(res.val_errors, want.val_errors, err_msg="val_errors", **tol)
    assert_params_close(res.initial_params, want.initial_params, dtype, rtol=0, atol=0)
    atol = max(tol["atol"], tol["rtol"] * param_scale(want.params))
    assert_params_close(res.params, want.params, dtype, rtol=tol["rtol"], atol=atol)


def differ(a, b):
    return any(not np.array_equal(x, z) for key in ("weights", "biases") for x, z in zip(a[key], b[key]))


# --- every optimizer x schedule x batch mode x shuffle x dtype against the reference ------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
@pytest.mark.parametrize("batch_mode,batch_size", BATCH_MODES, ids=MODE_IDS)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizer_schedule_batch_mode_matches_reference(optimizer, schedule, batch_mode, batch_size, shuffle,
                                                         dtype):
    X, y, _, base = problem()
    res, want = run_both(X, y, **base, **spec(optimizer, lr_schedule=SCHEDULES[schedule], weight_decay=0.01),
                         batch_mode=batch_mode, batch_size=batch_size, epochs=EPOCHS, seed=3, shuffle=shuffle,
                         dtype=dtype)
    assert res.epochs_done == EPOCHS and not res.diverged
    assert res.stop_reason is None and res.best_epoch is None
    assert_matches_reference(res, want, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_with_defaults_matches_reference(optimizer, dtype):
    """The documented defaults (momentum 0.9, betas 0.9/0.999, eps 1e-8) on another net and loss."""
    X, y, params = make_problem("sigmoid", "sigmoid", "mse", [2, 6, 3], n=17, seed=4)
    kw = dict(layers=[2, 6, 3], optimizer=optimizer, learning_rate=LR[optimizer], batch_size=5, epochs=5,
              seed=1, dtype=dtype)
    res, want = run_both(X, y, **kw)
    assert_matches_reference(res, want, dtype)
    if optimizer != "sgd":
        assert differ(res.params, kernels.train(X, y, **dict(kw, optimizer="sgd")).params)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_deeper_net_with_relu_and_many_epochs_matches_reference(optimizer):
    """Optimizer state carried over many steps and epochs (t counts batches of the whole run)."""
    acts = ["relu", "tanh", "leaky_relu"]
    layers = [3, 6, 5, 4, 2]
    X, y, _ = make_problem(acts, "sigmoid", "cross_entropy", layers, n=19, seed=6)
    kw = dict(layers=layers, activation=acts, output_activation="sigmoid", loss="cross_entropy", batch_size=3,
              epochs=25, seed=2, **spec(optimizer, weight_decay=0.003, lr_schedule=SCHEDULES["step"]))
    res, want = run_both(X, y, **kw)
    assert_matches_reference(res, want, "float64")


PATHS = {"blas": 1, "loops": 2**62}  # knobs.BLAS_MIN at its extremes: every product down one path


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,batch_size", BATCH_MODES, ids=MODE_IDS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("path", sorted(PATHS))
def test_blas_and_loop_paths_match_reference(path, optimizer, batch_mode, batch_size, dtype, monkeypatch):
    monkeypatch.setattr(kernels.knobs, "BLAS_MIN", PATHS[path])
    rng = np.random.default_rng(5)
    X = rng.normal(size=(37, 6))
    y = rng.integers(0, 4, 37)
    kw = dict(layers=[6, 12, 9, 4], activation="relu", loss="cross_entropy", batch_mode=batch_mode,
              batch_size=batch_size, epochs=3, seed=2, dtype=dtype, validation=(X[:9], y[:9]),
              **spec(optimizer, weight_decay=0.02, clip_norm=0.5, lr_schedule=SCHEDULES["cosine"],
                     stop_on_plateau={"metric": "val_error", "patience": 2}))
    assert_matches_reference(kernels.train(X, y, **kw), ref.train(X, y, **kw), dtype)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_digits_net_over_many_batches_matches_reference(optimizer):
    """A 64-32-10 net on 300 digits, 30 epochs of batches of 32 (300 steps, products large
    enough for BLAS at the default threshold): the optimizer state stays exact."""
    X, y = kernels.load_dataset("digits")
    X, y = X[:300] / 16.0, y[:300]
    kw = dict(layers=[64, 32, 10], activation="tanh", loss="cross_entropy", batch_size=32, epochs=30,
              seed=4, **spec(optimizer, learning_rate=LR[optimizer] / 3, weight_decay=1e-3))
    assert_matches_reference(kernels.train(X, y, **kw), ref.train(X, y, **kw), "float64")


# --- weight decay --------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_weight_decay_applies_to_weights_only(optimizer):
    """Against the reference; and the biases after one full-batch step do not depend on lambda
    (for the coupled optimizers) while the weights do."""
    X, y, params, base = problem()
    kw = dict(base, params=params, batch_mode="full", shuffle=False, **spec(optimizer))
    small = kernels.train(X, y, epochs=1, weight_decay=0.0, **kw)
    big = kernels.train(X, y, epochs=1, weight_decay=0.5, **kw)
    for a, b in zip(small.params["biases"], big.params["biases"]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(small.params["weights"], big.params["weights"]):
        assert not np.array_equal(a, b)
    res, want = run_both(X, y, epochs=6, weight_decay=0.3, **dict(kw, batch_mode="minibatch", batch_size=4))
    assert_matches_reference(res, want, "float64")


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov"])
def test_coupled_weight_decay_first_step_from_the_gradient(optimizer):
    """One full batch: W <- W - lr (g + lambda W) (nesterov: (1 + mu) times that), B <- B - lr g."""
    X, y, params, base = problem()
    lam, lr, mu = 0.4, 0.2, 0.7
    res = kernels.train(X, y, params=params, batch_mode="full", shuffle=False, epochs=1, optimizer=optimizer,
                        learning_rate=lr, momentum=mu, weight_decay=lam, **base)
    _, g = kernels.gradients(X, y, params, activation="tanh", output_activation="softmax", loss="cross_entropy")
    k = 1.0 + mu if optimizer == "nesterov" else 1.0
    for W, G, got in zip(params["weights"], g["weights"], res.params["weights"]):
        np.testing.assert_allclose(got, W - lr * k * (G + lam * W), rtol=1e-13, atol=1e-15)
    for B, G, got in zip(params["biases"], g["biases"], res.params["biases"]):
        np.testing.assert_allclose(got, B - lr * k * G, rtol=1e-13, atol=1e-15)


def test_adamw_decay_is_decoupled_and_adam_decay_is_coupled():
    X, y, params, base = problem()
    kw = dict(base, params=params, batch_size=4, epochs=5, seed=2, learning_rate=0.02)
    adam = kernels.train(X, y, optimizer="adam", weight_decay=0.2, **kw)
    adamw = kernels.train(X, y, optimizer="adamw", weight_decay=0.2, **kw)
    assert differ(adam.params, adamw.params)
    assert_matches_reference(adam, ref.train(X, y, optimizer="adam", weight_decay=0.2, **kw), "float64")
    assert_matches_reference(adamw, ref.train(X, y, optimizer="adamw", weight_decay=0.2, **kw), "float64")
    # without decay the two are the same optimizer
    assert_same_bits(kernels.train(X, y, optimizer="adam", **kw), kernels.train(X, y, optimizer="adamw", **kw))


def test_adamw_first_step_scales_weights_then_steps():
    """t = 1: W <- W (1 - lr lambda) - lr g / (|g| + eps); biases take the plain Adam step."""
    X, y, params, base = problem()
    lam, lr, eps = 0.5, 0.01, 1e-8
    res = kernels.train(X, y, params=params, batch_mode="full", shuffle=False, epochs=1, optimizer="adamw",
                        learning_rate=lr, weight_decay=lam, **base)
    _, g = kernels.gradients(X, y, params, activation="tanh", output_activation="softmax", loss="cross_entropy")
    for W, G, got in zip(params["weights"], g["weights"], res.params["weights"]):
        np.testing.assert_allclose(got, W * (1 - lr * lam) - lr * G / (np.abs(G) + eps), rtol=1e-9, atol=1e-15)
    for B, G, got in zip(params["biases"], g["biases"], res.params["biases"]):
        np.testing.assert_allclose(got, B - lr * G / (np.abs(G) + eps), rtol=1e-9, atol=1e-15)


# --- clipping ------------------------------------------------------------------------------------------


def batch_gradient_norms(X, y, kw):
    """The unclipped gradient norm of every batch of the reference run, in order."""
    seen = []
    real = ref.clip_gradients

    def spy(grads, c):
        seen.append(ref.gradient_norm(grads))
        return grads

    ref.clip_gradients = spy
    try:
        ref.train(X, y, **dict(kw, clip_norm=1.0))
    finally:
        ref.clip_gradients = real
    return np.array(seen)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,batch_size", BATCH_MODES, ids=MODE_IDS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_clipping_some_batches_matches_reference(optimizer, batch_mode, batch_size, dtype):
    X, y, params, base = problem()
    kw = dict(base, params=params, batch_mode=batch_mode, batch_size=batch_size, epochs=EPOCHS, seed=5,
              dtype=dtype, **spec(optimizer, learning_rate=LR[optimizer] * 3, weight_decay=0.05))
    norms = batch_gradient_norms(X, y, kw)
    clip = float(np.median(norms)) if batch_mode != "full" else 0.5 * float(norms.min())
    assert np.any(norms > clip)
    res, want = run_both(X, y, clip_norm=clip, **kw)
    assert_matches_reference(res, want, dtype)
    assert differ(res.params, kernels.train(X, y, **kw).params)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_clip_above_every_norm_changes_nothing(optimizer):
    X, y, params, base = problem()
    kw = dict(base, params=params, batch_size=4, epochs=EPOCHS, seed=5, **spec(optimizer))
    norms = batch_gradient_norms(X, y, kw)
    plain = kernels.train(X, y, **kw)
    assert_same_bits(plain, kernels.train(X, y, clip_norm=float(norms.max()) * 1.01, **kw))


def test_clipped_full_batch_step_has_norm_lr_times_c():
    """One full-batch sgd step with c below the gradient norm moves the parameters by
    lr * c/(norm + 1e-6) * g: a step of norm ~ lr * c."""
    X, y, params, base = problem()
    _, g = kernels.gradients(X, y, params, activation="tanh", output_activation="softmax", loss="cross_entropy")
    norm = ref.gradient_norm(g)
    c, lr = 0.25 * norm, 0.5
    res = kernels.train(X, y, params=params, batch_mode="full", shuffle=False, epochs=1, learning_rate=lr,
                        clip_norm=c, **base)
    scale = c / (norm + 1e-6)
    for key in ("weights", "biases"):
        for P, G, got in zip(params[key], g[key], res.params[key]):
            np.testing.assert_allclose(got, P - lr * (G * scale), rtol=1e-13, atol=1e-15)
    step = {k: [a - b for a, b in zip(res.params[k], params[k])] for k in ("weights", "biases")}
    assert ref.gradient_norm(step) == pytest.approx(lr * c, rel=1e-5)


# --- schedules -------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", list(SCHEDULES) + ["step_default_gamma", "cosine_default"])
def test_learning_rate_at_is_the_contract_formula(schedule):
    sched = {"step_default_gamma": {"kind": "step", "step_size": 3},
             "cosine_default": {"kind": "cosine"}}.get(schedule, SCHEDULES.get(schedule))
    for epoch in range(1, 13):
        assert kernels.learning_rate_at(0.3, sched, epoch, 12) == ref.learning_rate_at(0.3, sched, epoch, 12)
    assert kernels.learning_rate_at(0.3, None, 5, 12) == 0.3


def test_names_are_exported():
    assert kernels.OPTIMIZERS == ("sgd", "momentum", "nesterov", "adam", "adamw")
    assert kernels.LR_SCHEDULES == ("constant", "step", "exponential", "cosine")


def test_full_batch_sgd_with_a_schedule_steps_at_each_epochs_rate():
    X, y, params, base = problem()
    sched = SCHEDULES["exponential"]
    res = kernels.train(X, y, params=params, batch_mode="full", shuffle=False, epochs=3, learning_rate=0.4,
                        lr_schedule=sched, **base)
    p = params
    for epoch in (1, 2, 3):
        _, g = kernels.gradients(X, y, p, activation="tanh", output_activation="softmax", loss="cross_entropy")
        lr = 0.4 * 0.7 ** (epoch - 1)
        p = {k: [P - lr * G for P, G in zip(p[k], g[k])] for k in ("weights", "biases")}
    assert_params_close(res.params, p, "float64", rtol=1e-12, atol=1e-15)


# --- defaults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,batch_size,shuffle", [("sgd", 1, True), ("minibatch", 4, True),
                                                           ("full", 1, False), ("full", 1, True)])
def test_defaults_are_bit_identical_to_a_plain_run(batch_mode, batch_size, shuffle, dtype):
    X, y, params, base = problem(n=20)
    kw = dict(base, batch_mode=batch_mode, batch_size=batch_size, shuffle=shuffle, epochs=6, seed=4,
              dtype=dtype, learning_rate=0.3, validation=(X[13:], y[13:]))
    X, y = X[:13], y[:13]
    plain = kernels.train(X, y, **kw)
    explicit = kernels.train(X, y, optimizer="sgd", momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8,
                             weight_decay=0.0, clip_norm=None, lr_schedule=None, stop_on_plateau=None, **kw)
    constant = kernels.train(X, y, lr_schedule={"kind": "constant"}, **kw)
    for other in (explicit, constant):
        assert_same_bits(plain, other)
    assert plain.stop_reason is None and plain.best_epoch is None
    assert_matches_reference(plain, ref.train(X, y, **kw), dtype)


def test_exponential_and_step_with_gamma_one_are_the_constant_schedule():
    X, y, params, base = problem()
    kw = dict(base, params=params, batch_size=4, epochs=5, seed=1, learning_rate=0.3)
    plain = kernels.train(X, y, **kw)
    assert_same_bits(plain, kernels.train(X, y, lr_schedule={"kind": "exponential", "gamma": 1.0}, **kw))
    assert_same_bits(plain, kernels.train(X, y, lr_schedule={"kind": "step", "step_size": 1, "gamma": 1.0}, **kw))


# --- finite differences -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_first_adam_step_follows_the_finite_difference_gradient(optimizer, dtype):
    """At t = 1 Adam moves every parameter by lr * g / (|g| + eps): about lr against the sign
    of the gradient, the gradient taken here by central differences of the loss."""
    X, y, params, base = problem()
    fd = ref.finite_difference_gradients(X, y, params, "tanh", "softmax", "cross_entropy")
    lr = 0.01
    res = kernels.train(X, y, params=params, batch_mode="full", shuffle=False, epochs=1, optimizer=optimizer,
                        learning_rate=lr, dtype=dtype, **base)
    for key in ("weights", "biases"):
        for P, G, got in zip(params[key], fd[key], res.params[key]):
            assert np.all(np.abs(G) > 1e-5)  # the step is lr * sign(g) only away from eps
            step = got.astype(np.float64) - P.astype(dtype).astype(np.float64)
            np.testing.assert_array_equal(np.sign(step), -np.sign(G))
            want = -lr * G / (np.abs(G) + 1e-8)
            if dtype == "float64":
                np.testing.assert_allclose(step, want, rtol=1e-7)
            else:  # the difference of two float32 numbers near |P|: float32 rounding of P
                np.testing.assert_allclose(step, want, rtol=0, atol=4 * np.finfo(np.float32).eps)


def test_momentum_steps_follow_the_finite_difference_gradient():
    """Full batches: the first momentum step is -lr g; the second -lr (mu g0 + g1)."""
    X, y, params, base = problem()
    lr, mu = 0.2, 0.6
    kw = dict(base, params=params, batch_mode="full", shuffle=False, optimizer="momentum", learning_rate=lr,
              momentum=mu)
    one = kernels.train(X, y, epochs=1, **kw)
    two = kernels.train(X, y, epochs=2, **kw)
    fd0 = ref.finite_difference_gradients(X, y, params, "tanh", "softmax", "cross_entropy")
    fd1 = ref.finite_difference_gradients(X, y, one.params, "tanh", "softmax", "cross_entropy")
    for key in ("weights", "biases"):
        for P0, P1, P2, G0, G1 in zip(params[key], one.params[key], two.params[key], fd0[key], fd1[key]):
            np.testing.assert_allclose(P1 - P0, -lr * G0, rtol=1e-6, atol=1e-10)
            np.testing.assert_allclose(P2 - P1, -lr * (mu * G0 + G1), rtol=1e-6, atol=1e-10)


# --- stopping on a plateau --------------------------------------------------------------------------


def plateau_problem():
    """12 training rows (4 labels flipped) and 48 validation rows of a linearly separable
    3-class problem: the validation error falls for a few epochs, then rises as the net
    learns the flipped labels."""
    rng = np.random.default_rng(12)
    X = rng.normal(size=(60, 3))
    y = np.argmax(X @ rng.normal(size=(3, 3)), axis=1)
    y[:4] = (y[:4] + 1) % 3
    base = dict(layers=[3, 8, 3], activation="tanh", loss="cross_entropy",
                params=ref.init_params([3, 8, 3], "uniform", 12), validation=(X[12:], y[12:]))
    return X[:12], y[:12], base


PLATEAU_CASES = [
    # (metric, patience, min_delta): each stops well before EPOCHS_LONG on plateau_problem
    ("val_error", 2, 0.0),
    ("val_error", 4, 0.001),
    ("error", 2, 0.02),
    ("error", 5, 0.005),
]
EPOCHS_LONG = 150


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,shuffle",
                         [("minibatch", True), ("full", False), ("full", True), ("sgd", False)])
@pytest.mark.parametrize("restore_best", [True, False])
@pytest.mark.parametrize("metric,patience,min_delta", PLATEAU_CASES)
def test_plateau_stops_like_the_reference(metric, patience, min_delta, restore_best, batch_mode, shuffle, dtype):
    X, y, base = plateau_problem()
    stop = {"metric": metric, "patience": patience, "min_delta": min_delta, "restore_best": restore_best}
    kw = dict(base, optimizer="adam", learning_rate=0.05, batch_mode=batch_mode, batch_size=5, shuffle=shuffle,
              seed=3, epochs=EPOCHS_LONG, dtype=dtype)
    res, want = run_both(X, y, stop_on_plateau=stop, **kw)
    assert want.stop_reason == "plateau" and want.epochs_done < EPOCHS_LONG  # the case is a real plateau
    assert_matches_reference(res, want, dtype)
    k, best = res.epochs_done, res.best_epoch
    assert len(res.errors) == len(res.val_errors) == k + 1
    # the history of the epochs that ran is that of a run that does not stop
    full = kernels.train(X, y, **kw)
    np.testing.assert_array_equal(res.errors, full.errors[:k + 1])
    np.testing.assert_array_equal(res.val_errors, full.val_errors[:k + 1])
    np.testing.assert_array_equal(res.accuracy, full.accuracy[:k + 1])
    assert full.stop_reason is None and full.best_epoch is None
    # the stop follows the rule on the recorded metric
    values = res.val_errors if metric == "val_error" else res.errors
    assert k - best == patience
    assert all(not values[e] < values[best] - min_delta for e in range(best + 1, k + 1))
    # final parameters: the best epoch's, or the last epoch's
    at = kernels.train(X, y, **dict(kw, epochs=best if restore_best else k))
    assert_same_params(res.params, at.params)


@pytest.mark.parametrize("restore_best", [True, False])
def test_plateau_that_never_triggers_records_best_epoch(restore_best):
    X, y, base = plateau_problem()
    kw = dict(base, optimizer="adam", learning_rate=0.05, batch_size=5, seed=3, epochs=30)
    stop = {"metric": "val_error", "patience": 1000, "min_delta": 0.0, "restore_best": restore_best}
    res, want = run_both(X, y, stop_on_plateau=stop, **kw)
    assert res.stop_reason is None and res.epochs_done == 30
    assert_matches_reference(res, want, "float64")
    assert res.best_epoch == int(np.argmin(res.val_errors))  # first minimum: later ties do not improve
    plain = kernels.train(X, y, **kw)
    np.testing.assert_array_equal(res.errors, plain.errors)
    if restore_best:  # "the final parameters are those of the best epoch"
        assert_same_params(res.params, kernels.train(X, y, **dict(kw, epochs=res.best_epoch)).params)
    else:
        assert_same_params(res.params, plain.params)


def test_plateau_defaults_are_filled_in():
    """Missing keys take the documented defaults: val_error, patience 10, min_delta 0, restore_best."""
    X, y, base = plateau_problem()
    kw = dict(base, optimizer="adam", learning_rate=0.05, batch_size=5, seed=3, epochs=EPOCHS_LONG)
    short = kernels.train(X, y, stop_on_plateau={}, **kw)
    explicit = kernels.train(X, y, stop_on_plateau=dict(ref.PLATEAU_DEFAULTS), **kw)
    assert_same_bits(short, explicit)
    assert_matches_reference(short, ref.train(X, y, stop_on_plateau={}, **kw), "float64")
    assert short.stop_reason == "plateau"


def test_plateau_on_error_without_validation_rows():
    X, y, base = plateau_problem()
    del base["validation"]
    kw = dict(base, optimizer="momentum", learning_rate=0.1, batch_size=4, seed=1, epochs=EPOCHS_LONG)
    stop = {"metric": "error", "patience": 3, "min_delta": 0.01, "restore_best": True}
    res, want = run_both(X, y, stop_on_plateau=stop, **kw)
    assert res.stop_reason == "plateau" and res.val_errors is None
    assert_matches_reference(res, want, "float64")


def test_plateau_min_delta_ignores_small_improvements():
    X, y, base = plateau_problem()
    kw = dict(base, optimizer="sgd", learning_rate=0.5, batch_size=4, seed=1, epochs=EPOCHS_LONG)
    loose = kernels.train(X, y, stop_on_plateau={"metric": "error", "patience": 3, "min_delta": 0.0}, **kw)
    strict = kernels.train(X, y, stop_on_plateau={"metric": "error", "patience": 3, "min_delta": 0.01}, **kw)
    assert strict.stop_reason == "plateau"
    assert strict.epochs_done < loose.epochs_done  # training error keeps creeping down


def test_plateau_with_a_schedule_uses_the_planned_epochs():
    """A run stopped on a plateau has followed the schedule of ``epochs``, not of the epochs it ran."""
    X, y, base = plateau_problem()
    kw = dict(base, optimizer="nesterov", learning_rate=0.2, batch_size=5, seed=3, epochs=EPOCHS_LONG,
              lr_schedule={"kind": "cosine", "lr_min": 0.01}, clip_norm=0.5, weight_decay=0.01)
    res, want = run_both(X, y, stop_on_plateau={"metric": "val_error", "patience": 3}, **kw)
    assert res.stop_reason == "plateau"
    assert_matches_reference(res, want, "float64")


# --- chunks, callback, checkpoints: the optimizer state is carried across chunks ----------------------


CHUNK_SPECS = {
    "momentum": dict(optimizer="momentum", learning_rate=0.1, momentum=0.8),
    "nesterov_clip": dict(optimizer="nesterov", learning_rate=0.1, clip_norm=0.3, weight_decay=0.01),
    "adam_cosine": dict(optimizer="adam", learning_rate=0.02, lr_schedule={"kind": "cosine", "lr_min": 0.001}),
    "adamw_step": dict(optimizer="adamw", learning_rate=0.02, weight_decay=0.1,
                       lr_schedule={"kind": "step", "step_size": 3, "gamma": 0.5}),
    "adam_plateau": dict(optimizer="adam", learning_rate=0.05,
                         stop_on_plateau={"metric": "val_error", "patience": 2, "min_delta": 0.0}),
    "sgd_plateau_keep": dict(optimizer="sgd", learning_rate=1.0,
                             stop_on_plateau={"metric": "error", "patience": 2, "min_delta": 0.01,
                                              "restore_best": False}),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,shuffle", [("minibatch", True), ("full", False), ("sgd", True)])
@pytest.mark.parametrize("name", list(CHUNK_SPECS))
def test_many_small_chunks_give_the_same_bits(name, batch_mode, shuffle, dtype, monkeypatch):
    X, y, base = plateau_problem()
    kw = dict(base, batch_mode=batch_mode, batch_size=5, shuffle=shuffle, seed=7, epochs=40, dtype=dtype,
              **CHUNK_SPECS[name])
    monkeypatch.setattr(kernels.knobs, "CHUNK_SECONDS", 1e9)  # few, large chunks (each up to 4x the last)
    few = kernels.train(X, y, callback=lambda p: False, **kw)
    seen = []
    monkeypatch.setattr(kernels.knobs, "CHUNK_SECONDS", 0.0)  # one epoch per chunk
    many = kernels.train(X, y, callback=lambda p: seen.append(p) and False, **kw)
    assert_same_bits(few, many)
    assert len(seen) >= many.epochs_done  # the chunks were single epochs
    np.testing.assert_array_equal(np.concatenate([p.errors for p in seen]), many.errors)
    np.testing.assert_array_equal(np.concatenate([p.val_errors for p in seen]), many.val_errors)
    assert seen[-1].epochs_done == many.epochs_done
    if name == "adam_plateau":
        assert many.stop_reason == "plateau" and many.epochs_done < 40
    monkeypatch.undo()
    assert_same_bits(few, kernels.train(X, y, **kw))
    assert_same_bits(few, kernels.train(X, y, checkpoints=[1, 2, 5, 11, 12, 30], callback=lambda p: False, **kw))
    assert_matches_reference(few, ref.train(X, y, **kw), dtype)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_callback_stop_is_a_prefix_of_the_full_run(optimizer, monkeypatch):
    """Stopped by the callback after 3 one-epoch chunks: the same bits as a 3-epoch run."""
    X, y, base = plateau_problem()
    kw = dict(base, batch_size=5, seed=7, epochs=20, **spec(optimizer, clip_norm=0.5, weight_decay=0.01))
    monkeypatch.setattr(kernels.knobs, "CHUNK_SECONDS", 0.0)
    calls = []
    res = kernels.train(X, y, callback=lambda p: calls.append(p) or len(calls) >= 3, **kw)
    assert res.stopped and res.epochs_done == 3
    assert_same_bits(res, kernels.train(X, y, **dict(kw, epochs=3)))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_checkpoints_split_chunks_without_changing_the_run(optimizer):
    X, y, base = plateau_problem()
    kw = dict(base, batch_size=5, seed=7, epochs=60,
              **spec(optimizer, lr_schedule={"kind": "exponential", "gamma": 0.97}))
    ends = []

    def callback(progress):
        ends.append(progress.first_epoch + len(progress.errors) - 1)

    res = kernels.train(X, y, callback=callback, checkpoints=[7, 19, 40], **kw)
    assert {7, 19, 40} <= set(ends)
    assert_same_bits(res, kernels.train(X, y, **kw))


# --- random small specs (hypothesis) ---------------------------------------------------------------

PROPERTY_EXAMPLES = int(os.environ.get("DESCENT_PROPERTY_EXAMPLES", "60"))
PROPERTY_RANDOM = os.environ.get("DESCENT_PROPERTY_RANDOM", "") == "1"


@st.composite
def optimizer_cases(draw):
    n_hidden = draw(st.integers(1, 3))
    hidden = draw(st.lists(st.integers(1, 6), min_size=n_hidden, max_size=n_hidden))
    output_activation, loss = draw(st.sampled_from(ref.VALID_OUTPUT_LOSS))
    n_out = draw(st.integers(2 if output_activation == "softmax" else 1, 3))
    layers = [draw(st.integers(1, 4))] + hidden + [n_out]
    optimizer = draw(st.sampled_from(OPTIMIZERS))
    case = dict(
        layers=layers, output_activation=output_activation, loss=loss, optimizer=optimizer,
        activation=draw(st.sampled_from(ref.HIDDEN_ACTIVATIONS)),
        n=draw(st.integers(2, 20)),
        batch_mode=draw(st.sampled_from(["sgd", "minibatch", "full"])),
        batch_size=draw(st.integers(1, 8)),
        epochs=draw(st.integers(0, 8)),
        seed=draw(st.integers(0, 2**32)),
        shuffle=draw(st.booleans()),
        learning_rate=draw(st.sampled_from([0.001, 0.01, 0.1] if optimizer.startswith("adam")
                                           else [0.01, 0.1, 0.5])),
        weight_decay=draw(st.sampled_from([0.0, 0.0, 0.01, 0.5])),
        clip_norm=draw(st.sampled_from([None, None, 0.05, 1.0])),
    )
    if optimizer in ("momentum", "nesterov"):
        case["momentum"] = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99]))
    if optimizer in ("adam", "adamw"):
        case["beta1"] = draw(st.sampled_from([0.0, 0.5, 0.9]))
        case["beta2"] = draw(st.sampled_from([0.0, 0.9, 0.999]))
        case["eps"] = draw(st.sampled_from([1e-8, 1e-3]))
    kind = draw(st.sampled_from(ref.LR_SCHEDULES))
    case["lr_schedule"] = {
        "constant": {"kind": "constant"},
        "step": {"kind": "step", "step_size": draw(st.integers(1, 3)),
                 "gamma": draw(st.sampled_from([0.1, 0.5, 1.0]))},
        "exponential": {"kind": "exponential", "gamma": draw(st.sampled_from([0.5, 0.9, 1.0]))},
        "cosine": {"kind": "cosine", "lr_min": draw(st.sampled_from([0.0, 0.0001]))},
    }[kind]
    if draw(st.booleans()):
        case["stop_on_plateau"] = {"metric": "error", "patience": draw(st.integers(1, 3)),
                                   "min_delta": draw(st.sampled_from([0.0, 0.01, 0.1])),
                                   "restore_best": draw(st.booleans())}
    return case


def reference_with_adam_conditioning(X, y, case):
    """The reference run, and for Adam the smallest nonzero |g| of a step relative to the
    largest |g| of that step. Adam divides each step by the gradient's own scale, so an
    entry that is a near-cancellation of much larger terms (its relative rounding error
    large: summation orders differ between BLAS, the fused loops and NumPy) moves its
    parameter by a step of the usual size whose rounding error is that relative error."""
    smallest = [np.inf]
    real = ref.Optimizer.step

    def spy(self, params, grads, lr):
        flat = np.abs(np.concatenate([np.ravel(g) for k in ("weights", "biases") for g in grads[k]]))
        top = float(flat.max(initial=0.0))
        nonzero = flat[flat > 0]
        if top > 0 and nonzero.size:
            smallest[0] = min(smallest[0], float(nonzero.min()) / top)
        return real(self, params, grads, lr)

    ref.Optimizer.step = spy
    try:
        want = ref.train(X, y, **case)
    finally:
        ref.Optimizer.step = real
    return want, smallest[0]


def blowing_up(want):
    """Runs that explode are compared structurally only (as in test_properties.py): their
    rounding differences are amplified without bound."""
    errors = want.errors
    return param_scale(want.params) > 1e3 or not np.all(np.isfinite(errors)) or float(np.max(errors)) > 1e6


@settings(max_examples=PROPERTY_EXAMPLES, deadline=None, derandomize=not PROPERTY_RANDOM,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=optimizer_cases())
def test_random_optimizer_specs_match_reference(case):
    note(f"case: {case!r}")
    case = dict(case)
    n = case.pop("n")
    rng = np.random.default_rng(case["seed"])
    X = rng.normal(size=(n, case["layers"][0]))
    y = make_targets(rng, n, case["layers"][-1], case["output_activation"], case["loss"])
    res = kernels.train(X, y, **case)
    want, conditioning = reference_with_adam_conditioning(X, y, case)
    assert res.epochs_done == want.epochs_done or res.diverged
    if blowing_up(want):
        event("reference run blows up: compared structurally only")
        return
    rtol = 1e-10
    if case["optimizer"].startswith("adam") and conditioning < 1e-6:
        rtol = 1e-5  # see reference_with_adam_conditioning
        event("adam: a gradient entry below 1e-6 of its step's largest: compared to 1e-5")
    event(f"{case['optimizer']} plateau={'stop_on_plateau' in case} stop={want.stop_reason}")
    assert res.epochs_done == want.epochs_done
    assert res.stop_reason == want.stop_reason and res.best_epoch == want.best_epoch
    # normwise on the parameters (test_properties.py's bound), elementwise on the errors
    np.testing.assert_allclose(res.errors, want.errors, rtol=rtol, atol=1e-13)
    scale = param_scale(want.params)
    for key in ("weights", "biases"):
        for a, b in zip(res.params[key], want.params[key]):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=max(1e-13, rtol * scale))


# --- bad arguments: ValueError naming the argument ---------------------------------------------------


BAD = [
    ("optimizer", dict(optimizer="rmsprop"), r"^optimizer"),
    ("optimizer", dict(optimizer=None), r"^optimizer"),
    ("momentum", dict(optimizer="momentum", momentum=-0.1), r"^momentum"),
    ("momentum", dict(optimizer="nesterov", momentum=1.0), r"^momentum"),
    ("momentum", dict(optimizer="momentum", momentum=float("nan")), r"^momentum"),
    ("beta1", dict(optimizer="adam", beta1=1.0), r"^beta1"),
    ("beta1", dict(optimizer="adamw", beta1=-0.5), r"^beta1"),
    ("beta2", dict(optimizer="adam", beta2=1.0), r"^beta2"),
    ("beta2", dict(optimizer="adam", beta2=float("inf")), r"^beta2"),
    ("eps", dict(optimizer="adam", eps=0.0), r"^eps"),
    ("eps", dict(optimizer="adam", eps=-1e-8), r"^eps"),
    ("weight_decay", dict(weight_decay=-0.1), r"^weight_decay"),
    ("weight_decay", dict(weight_decay=float("nan")), r"^weight_decay"),
    ("weight_decay", dict(weight_decay=float("inf")), r"^weight_decay"),
    ("clip_norm", dict(clip_norm=0.0), r"^clip_norm"),
    ("clip_norm", dict(clip_norm=-1.0), r"^clip_norm"),
    ("clip_norm", dict(clip_norm=float("nan")), r"^clip_norm"),
    ("lr_schedule", dict(lr_schedule={"kind": "linear"}), r"^lr_schedule"),
    ("lr_schedule", dict(lr_schedule="cosine"), r"^lr_schedule"),
    ("lr_schedule", dict(lr_schedule={"kind": "step"}), r"^lr_schedule.*step_size"),
    ("lr_schedule", dict(lr_schedule={"kind": "step", "step_size": 0}), r"^lr_schedule.*step_size"),
    ("lr_schedule", dict(lr_schedule={"kind": "step", "step_size": 2, "gamma": 0.0}), r"^lr_schedule.*gamma"),
    ("lr_schedule", dict(lr_schedule={"kind": "step", "step_size": 2, "gamma": 1.5}), r"^lr_schedule.*gamma"),
    ("lr_schedule", dict(lr_schedule={"kind": "exponential"}), r"^lr_schedule.*gamma"),
    ("lr_schedule", dict(lr_schedule={"kind": "exponential", "gamma": -0.5}), r"^lr_schedule.*gamma"),
    ("lr_schedule", dict(lr_schedule={"kind": "cosine", "lr_min": 0.1}), r"^lr_schedule.*lr_min"),  # == lr
    ("lr_schedule", dict(lr_schedule={"kind": "cosine", "lr_min": -0.01}), r"^lr_schedule.*lr_min"),
    ("lr_schedule", dict(lr_schedule={"kind": "cosine", "gamma": 0.5}), r"^lr_schedule.*gamma"),
    ("lr_schedule", dict(lr_schedule={"kind": "constant", "step_size": 2}), r"^lr_schedule.*step_size"),
    ("stop_on_plateau", dict(stop_on_plateau={"metric": "accuracy"}), r"^stop_on_plateau.*metric"),
    ("stop_on_plateau", dict(stop_on_plateau={"metric": "error", "patience": 0}), r"^stop_on_plateau.*patience"),
    ("stop_on_plateau", dict(stop_on_plateau={"metric": "error", "min_delta": -1.0}),
     r"^stop_on_plateau.*min_delta"),
    ("stop_on_plateau", dict(stop_on_plateau={"metric": "error", "restore_best": "yes"}),
     r"^stop_on_plateau.*restore_best"),
    ("stop_on_plateau", dict(stop_on_plateau={"metric": "error", "mode": "min"}), r"^stop_on_plateau.*mode"),
    # val_error without validation rows
    ("stop_on_plateau", dict(stop_on_plateau={"metric": "val_error"}), r"^stop_on_plateau.*metric"),
    ("stop_on_plateau", dict(stop_on_plateau=[3]), r"^stop_on_plateau"),
]


@pytest.mark.parametrize("name,kwargs,message", BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)])
def test_bad_arguments_are_a_value_error_naming_them(name, kwargs, message):
    X, y, _, base = problem()
    with pytest.raises(ValueError, match=message):
        kernels.train(X, y, **base, learning_rate=0.1, epochs=1, **kwargs)


def test_boundary_values_are_accepted():
    X, y, _, base = problem()
    kw = dict(base, epochs=2, batch_size=4)
    for extra in (dict(optimizer="momentum", momentum=0.0), dict(optimizer="adam", beta1=0.0, beta2=0.0),
                  dict(weight_decay=0.0), dict(lr_schedule={"kind": "exponential", "gamma": 1.0}),
                  dict(lr_schedule={"kind": "cosine", "lr_min": 0.0}),
                  dict(stop_on_plateau={"metric": "error", "patience": 1, "min_delta": 0.0})):
        res, want = run_both(X, y, learning_rate=0.1, **kw, **extra)
        assert_matches_reference(res, want, "float64")

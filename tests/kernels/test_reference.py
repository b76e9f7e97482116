"""Self-tests of tests/reference.py (no dependency on ``kernels``).

The optimizers, schedules and clipping of the reference are also checked against PyTorch
(``torch.optim``, ``torch.optim.lr_scheduler``, ``clip_grad_norm_``), the oracle API.md 1b
names. torch (2.13.0, CPU) is a test dependency: `make test` installs it; elsewhere those
tests skip, and fail under DESCENT_REQUIRE_SERVICES=1 (CI).
"""

import math
import os

import numpy as np
import pytest

from tests import reference as ref
from tests.reference import (
    HIDDEN_ACTIVATIONS,
    VALID_OUTPUT_LOSS,
    assert_grads_close,
    finite_difference_gradients,
    make_problem,
)


# --- gradients ---------------------------------------------------------------------------


@pytest.mark.parametrize("output_activation,loss", VALID_OUTPUT_LOSS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "soft"])
def test_analytic_gradients_match_finite_differences(activation, output_activation, loss, soft):
    layers = [3, 5, 4]
    X, y, params = make_problem(activation, output_activation, loss, layers, n=7, seed=1, soft=soft)
    E, grads = ref.gradients(X, y, params, activation, output_activation, loss)
    assert E == ref.loss(X, y, params, activation, output_activation, loss)
    fd = finite_difference_gradients(X, y, params, activation, output_activation, loss)
    assert_grads_close(grads, fd, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("output_activation,loss", [("sigmoid", "mse"), ("linear", "mse"), ("sigmoid", "cross_entropy")])
def test_single_output_gradients(output_activation, loss):
    layers = [2, 3, 3, 1]
    X, y, params = make_problem(["tanh", "relu"], output_activation, loss, layers, n=6, seed=2)
    _, grads = ref.gradients(X, y, params, ["tanh", "relu"], output_activation, loss)
    fd = finite_difference_gradients(X, y, params, ["tanh", "relu"], output_activation, loss)
    assert_grads_close(grads, fd, rtol=1e-6, atol=1e-10)


def test_softmax_mse_jacobian_by_loops():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(4, 3))
    Y = rng.uniform(size=(4, 3))
    yhat = ref.softmax(z)
    got = ref.output_delta(Y, z, yhat, "softmax", "mse")
    b, M = Y.shape
    want = np.zeros_like(z)
    for i in range(b):
        for k in range(M):
            for j in range(M):
                dyj_dzk = yhat[i, j] * ((j == k) - yhat[i, k])
                want[i, k] += (yhat[i, j] - Y[i, j]) / (b * M) * dyj_dzk
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-17)


def test_softmax_cross_entropy_delta_one_hot_is_yhat_minus_y():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(5, 3))
    Y, _ = ref.encode_targets(np.array([0, 2, 1, 1, 0]), 3)
    yhat = ref.softmax(z)
    np.testing.assert_allclose(ref.output_delta(Y, z, yhat, "softmax", "cross_entropy"), (yhat - Y) / 5, rtol=1e-14)


# --- losses ------------------------------------------------------------------------------


def test_mse_value_by_hand():
    params = {"weights": [np.array([[1.0, -1.0]])], "biases": [np.array([0.5])]}
    X = np.array([[1.0, 2.0], [0.0, 1.0]])
    y = np.array([[1.0], [0.0]])
    # z = [-0.5, -0.5]; linear output
    E = ref.loss(X, y, params, "sigmoid", "linear", "mse")
    assert E == pytest.approx((0.5 * 1.5**2 + 0.5 * 0.5**2) / 2, rel=1e-15)


def test_cross_entropy_softmax_finite_for_large_logits():
    params = {"weights": [np.array([[1000.0], [-1000.0], [0.0]])], "biases": [np.zeros(3)]}
    X = np.array([[1.0], [-1.0]])
    y = np.array([1, 1])
    E = ref.loss(X, y, params, "sigmoid", "softmax", "cross_entropy")
    assert math.isfinite(E)
    assert E == pytest.approx(1000.0, rel=1e-12)


def test_binary_cross_entropy_matches_naive_formula_and_is_stable():
    rng = np.random.default_rng(5)
    layers = [3, 2]
    params = ref.init_params(layers, "uniform", 1)
    X = rng.normal(size=(6, 3))
    Y = rng.uniform(size=(6, 2))
    yhat = ref.predict(params, X, "sigmoid", "sigmoid")
    naive = -np.sum(Y * np.log(yhat) + (1 - Y) * np.log(1 - yhat)) / 6
    assert ref.loss(X, Y, params, "sigmoid", "sigmoid", "cross_entropy") == pytest.approx(naive, rel=1e-12)
    big = {"weights": [np.array([[800.0]])], "biases": [np.zeros(1)]}
    assert ref.loss(np.array([[1.0]]), np.array([0]), big, "sigmoid", "sigmoid", "cross_entropy") == pytest.approx(800.0)


def test_sigmoid_stable_and_symmetric():
    z = np.array([-800.0, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0])
    s = ref.sigmoid(z)
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s + ref.sigmoid(-z), 1.0, rtol=1e-15)
    assert s[3] == 0.5


def test_activation_derivatives_at_zero():
    z = np.array([0.0])
    assert ref.activation_derivative("relu", z, ref.activate("relu", z))[0] == 0.0
    assert ref.activation_derivative("leaky_relu", z, ref.activate("leaky_relu", z))[0] == 0.01


def test_default_output_activation():
    assert ref.resolve_output_activation(None, "cross_entropy", 3) == "softmax"
    assert ref.resolve_output_activation(None, "cross_entropy", 1) == "sigmoid"
    assert ref.resolve_output_activation(None, "mse", 3) == "sigmoid"


# --- targets -----------------------------------------------------------------------------


def test_encode_targets():
    Y, labels = ref.encode_targets(np.array([2, 0, 1]), 3)
    np.testing.assert_array_equal(Y, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(labels, [2, 0, 1])
    Y, labels = ref.encode_targets(np.array([True, False]), 1)
    np.testing.assert_array_equal(Y, [[1.0], [0.0]])
    Y, labels = ref.encode_targets(np.array([0.5, 0.25]), 1)
    assert labels is None and Y.shape == (2, 1)
    Y, labels = ref.encode_targets(np.ones((2, 3)), 3)
    assert labels is None and Y.shape == (2, 3)
    with pytest.raises(ValueError):
        ref.encode_targets(np.array([0, 2]), 1)
    with pytest.raises(ValueError):
        ref.encode_targets(np.array([0, 3]), 3)


def test_accuracy_ties_and_threshold():
    yhat = np.array([[0.5, 0.5], [0.2, 0.8]])
    assert ref.accuracy_of(yhat, np.array([0, 1])) == 1.0
    assert ref.accuracy_of(np.array([[0.5], [0.49]]), np.array([1, 0])) == 1.0


# --- init --------------------------------------------------------------------------------


@pytest.mark.parametrize("init", ref.INITS)
def test_init_shapes_and_draw_order(init):
    layers = [3, 5, 2]
    p = ref.init_params(layers, init, seed=7)
    assert [W.shape for W in p["weights"]] == [(5, 3), (2, 5)]
    assert [B.shape for B in p["biases"]] == [(5,), (2,)]
    rng = np.random.default_rng(7)
    if init == "uniform":
        W1 = rng.uniform(-1 / math.sqrt(3), 1 / math.sqrt(3), (5, 3))
        B1 = rng.uniform(-1 / math.sqrt(3), 1 / math.sqrt(3), 5)
        W2 = rng.uniform(-1 / math.sqrt(5), 1 / math.sqrt(5), (2, 5))
        np.testing.assert_array_equal(p["biases"][0], B1)
    elif init == "normal":
        W1 = rng.normal(0, 1 / math.sqrt(3), (5, 3))
        W2 = rng.normal(0, 1 / math.sqrt(5), (2, 5))
    elif init == "xavier":
        W1 = rng.uniform(-math.sqrt(6 / 8), math.sqrt(6 / 8), (5, 3))
        W2 = rng.uniform(-math.sqrt(6 / 7), math.sqrt(6 / 7), (2, 5))
    else:
        W1 = rng.normal(0, math.sqrt(2 / 3), (5, 3))
        W2 = rng.normal(0, math.sqrt(2 / 5), (2, 5))
    np.testing.assert_array_equal(p["weights"][0], W1)
    np.testing.assert_array_equal(p["weights"][1], W2)
    if init != "uniform":
        assert all(np.all(B == 0) for B in p["biases"])
    p32 = ref.init_params(layers, init, seed=7, dtype="float32")
    assert p32["weights"][0].dtype == np.float32
    np.testing.assert_array_equal(p32["weights"][1], W2.astype(np.float32))


# --- shuffle -----------------------------------------------------------------------------


def test_splitmix64_known_vector():
    # Reference outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
    g = ref.SplitMix64(0)
    assert g.next() == 0xE220A8397B1DCDAF
    assert g.next() == 0x6E789E6AA1B965F4
    assert g.next() == 0x06C45D188009454F


@pytest.mark.parametrize("n", [1, 2, 3, 10, 257])
@pytest.mark.parametrize("seed", [0, 1, 2**40 + 3])
def test_shuffle_is_a_permutation(n, seed):
    for epoch in (1, 2, 5):
        order = ref.epoch_order(n, seed, epoch)
        assert sorted(order.tolist()) == list(range(n))


def test_shuffle_varies_with_epoch_and_seed_and_is_deterministic():
    a = ref.epoch_order(50, 0, 1)
    np.testing.assert_array_equal(a, ref.epoch_order(50, 0, 1))
    assert not np.array_equal(a, ref.epoch_order(50, 0, 2))
    assert not np.array_equal(a, ref.epoch_order(50, 1, 1))
    np.testing.assert_array_equal(ref.epoch_order(7, 3, 1, shuffle=False), np.arange(7))


def test_shuffle_by_hand_small_case():
    # n = 2, seed 0, epoch 1: one draw from state 1.
    g = ref.SplitMix64(1)
    j = ((g.next() >> 32) * 2) >> 32
    expected = [1, 0] if j == 0 else [0, 1]
    assert ref.epoch_order(2, 0, 1).tolist() == expected


def test_large_seed_wraps_modulo_2_64():
    assert ref.epoch_order(20, 2**64 + 5, 1).tolist() == ref.epoch_order(20, 5, 1).tolist()


# --- training ----------------------------------------------------------------------------


def test_full_batch_step_is_one_gradient_step():
    X, y, params = make_problem("tanh", "sigmoid", "mse", [3, 4, 2], n=6, seed=3)
    res = ref.train(X, y, layers=[3, 4, 2], activation="tanh", output_activation="sigmoid", learning_rate=0.3,
                    batch_mode="full", epochs=1, params=params, shuffle=False)
    E0, g = ref.gradients(X, y, params, "tanh", "sigmoid", "mse")
    assert res.errors[0] == E0
    for key in ("weights", "biases"):
        for P, G, Q in zip(params[key], g[key], res.params[key]):
            np.testing.assert_array_equal(Q, P - 0.3 * G)
    assert res.errors[1] == ref.loss(X, y, res.params, "tanh", "sigmoid", "mse")
    assert res.accuracy is None and not res.diverged and res.epochs_done == 1


def test_minibatch_steps_follow_shuffled_slices():
    X, y, params = make_problem("sigmoid", "softmax", "cross_entropy", [2, 3, 3], n=7, seed=4)
    res = ref.train(X, y, layers=[2, 3, 3], loss="cross_entropy", learning_rate=0.5, batch_mode="minibatch",
                    batch_size=3, epochs=2, params=params, seed=11)
    p = ref.copy_params(params)
    for epoch in (1, 2):
        order = ref.epoch_order(7, 11, epoch)
        for s in (0, 3, 6):
            idx = order[s:s + 3]
            _, g = ref.gradients(X[idx], y[idx], p, "sigmoid", "softmax", "cross_entropy")
            for key in ("weights", "biases"):
                p[key] = [P - 0.5 * G for P, G in zip(p[key], g[key])]
    for key in ("weights", "biases"):
        for a, b in zip(res.params[key], p[key]):
            np.testing.assert_array_equal(a, b)
    assert res.accuracy.shape == (3,)


def test_divergence_stops_training():
    X, y, params = make_problem("linear", "linear", "mse", [2, 4, 1], n=8, seed=5)
    y = np.asarray(y)[:, 0]
    res = ref.train(X, y * 100, layers=[2, 4, 1], activation="linear", output_activation="linear",
                    learning_rate=1e3, batch_mode="sgd", epochs=1000, seed=0)
    assert res.diverged
    assert not math.isfinite(res.errors[-1])
    assert np.all(np.isfinite(res.errors[:-1]))
    assert res.epochs_done < 1000 and len(res.errors) == res.epochs_done + 1


def test_float32_training_stays_float32_and_close_to_float64():
    X, y, params = make_problem("tanh", "sigmoid", "mse", [3, 5, 4], n=10, seed=6)
    kw = dict(layers=[3, 5, 4], activation="tanh", output_activation="sigmoid", learning_rate=0.2,
              batch_mode="minibatch", batch_size=3, epochs=3, seed=1)
    r64 = ref.train(X, y, dtype="float64", **kw)
    r32 = ref.train(X, y, dtype="float32", **kw)
    assert all(W.dtype == np.float32 for W in r32.params["weights"])
    np.testing.assert_allclose(r32.errors, r64.errors, rtol=1e-5)


# --- learning-rate schedules -------------------------------------------------------------------


def test_schedules_by_hand():
    lr = 0.4
    step = {"kind": "step", "step_size": 3, "gamma": 0.5}
    assert [ref.learning_rate_at(lr, step, e, 10) for e in range(1, 8)] == [0.4, 0.4, 0.4, 0.2, 0.2, 0.2, 0.1]
    assert ref.learning_rate_at(lr, {"kind": "step", "step_size": 1}, 3, 10) == pytest.approx(0.004, rel=1e-15)
    expo = {"kind": "exponential", "gamma": 0.5}
    assert [ref.learning_rate_at(lr, expo, e, 10) for e in (1, 2, 3)] == [0.4, 0.2, 0.1]
    cos = {"kind": "cosine", "lr_min": 0.1}
    assert ref.learning_rate_at(lr, cos, 1, 10) == 0.4
    assert ref.learning_rate_at(lr, cos, 6, 10) == pytest.approx(0.25, rel=1e-15)  # halfway
    assert ref.learning_rate_at(lr, cos, 10, 10) == pytest.approx(0.1 + 0.3 * (1 + math.cos(0.9 * math.pi)) / 2)
    assert ref.learning_rate_at(lr, {"kind": "cosine"}, 6, 10) == pytest.approx(0.2, rel=1e-15)
    for sched in (None, {"kind": "constant"}):
        assert ref.learning_rate_at(lr, sched, 7, 10) == lr


# --- clipping ------------------------------------------------------------------------------------


def test_clip_scales_every_array_by_one_factor():
    grads = {"weights": [np.array([[3.0, 0.0]]), np.array([[0.0]])], "biases": [np.array([4.0]), np.array([0.0])]}
    assert ref.gradient_norm(grads) == 5.0
    assert ref.clip_gradients(grads, 5.0) is grads  # norm == c: not above it, untouched
    clipped = ref.clip_gradients(grads, 1.0)
    scale = 1.0 / (5.0 + 1e-6)
    np.testing.assert_array_equal(clipped["weights"][0], [[3.0 * scale, 0.0]])
    np.testing.assert_array_equal(clipped["biases"][0], [4.0 * scale])
    assert ref.gradient_norm(clipped) == pytest.approx(1.0, rel=1e-6)
    g32 = {k: [a.astype(np.float32) for a in v] for k, v in grads.items()}
    assert ref.clip_gradients(g32, 1.0)["weights"][0].dtype == np.float32


# --- optimizers ---------------------------------------------------------------------------------


def _one_problem(n=9, seed=3):
    X, y, params = make_problem("tanh", "sigmoid", "mse", [3, 4, 2], n=n, seed=seed)
    kw = dict(layers=[3, 4, 2], activation="tanh", output_activation="sigmoid", batch_mode="full",
              shuffle=False, params=params)
    return X, y, params, kw


def _grad(X, y, p):
    return ref.gradients(X, y, p, "tanh", "sigmoid", "mse")[1]


def _map(f, *dicts):
    return {key: [f(*arrays) for arrays in zip(*(d[key] for d in dicts))] for key in ("weights", "biases")}


def _assert_params_equal(a, b, rtol=0.0):
    for key in ("weights", "biases"):
        for x, z in zip(a[key], b[key]):
            np.testing.assert_allclose(x, z, rtol=rtol, atol=0)


def test_momentum_and_nesterov_two_full_batch_steps_by_hand():
    X, y, p0, kw = _one_problem()
    lr, mu = 0.3, 0.8
    g0 = _grad(X, y, p0)
    p1 = _map(lambda P, G: P - lr * G, p0, g0)  # b = g at t = 1
    g1 = _grad(X, y, p1)
    b1 = _map(lambda B0, G1: mu * B0 + G1, g0, g1)
    want_m = _map(lambda P, B: P - lr * B, p1, b1)
    res = ref.train(X, y, optimizer="momentum", momentum=mu, learning_rate=lr, epochs=2, **kw)
    _assert_params_equal(res.params, want_m)
    # nesterov: p <- p - lr (g + mu b)
    q1 = _map(lambda P, G: P - lr * (G + mu * G), p0, g0)
    h1 = _grad(X, y, q1)
    c1 = _map(lambda B0, G1: mu * B0 + G1, g0, h1)
    want_n = _map(lambda P, G, B: P - lr * (G + mu * B), q1, h1, c1)
    res = ref.train(X, y, optimizer="nesterov", momentum=mu, learning_rate=lr, epochs=2, **kw)
    _assert_params_equal(res.params, want_n)


def test_first_adam_step_moves_each_parameter_by_lr_against_the_finite_difference_gradient():
    """At t = 1, m/(1-b1) = g and sqrt(v/(1-b2)) = |g|: every parameter moves by lr*g/(|g|+eps)."""
    X, y, p0, kw = _one_problem()
    fd = finite_difference_gradients(X, y, p0, "tanh", "sigmoid", "mse")
    res = ref.train(X, y, optimizer="adam", learning_rate=0.01, epochs=1, **kw)
    for key in ("weights", "biases"):
        for P0, P1, G in zip(p0[key], res.params[key], fd[key]):
            assert np.all(np.abs(G) > 1e-6)  # well above eps: the direction is -sign(g)
            np.testing.assert_array_equal(np.sign(P1 - P0), -np.sign(G))
            np.testing.assert_allclose(P1 - P0, -0.01 * G / (np.abs(G) + 1e-8), rtol=1e-8)


def test_adam_two_steps_by_the_contract_formula():
    X, y, p0, kw = _one_problem()
    lr, b1, b2, eps = 0.05, 0.8, 0.9, 1e-3
    p, m, v = p0, _map(np.zeros_like, p0), _map(np.zeros_like, p0)
    for t in (1, 2):
        g = _grad(X, y, p)
        m = _map(lambda M, G: b1 * M + (1 - b1) * G, m, g)
        v = _map(lambda V, G: b2 * V + (1 - b2) * G * G, v, g)
        p = _map(lambda P, M, V: P - lr * (M / (1 - b1**t)) / (np.sqrt(V / (1 - b2**t)) + eps), p, m, v)
    res = ref.train(X, y, optimizer="adam", beta1=b1, beta2=b2, eps=eps, learning_rate=lr, epochs=2, **kw)
    _assert_params_equal(res.params, p, rtol=1e-13)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
def test_coupled_weight_decay_is_added_to_weight_gradients_only(optimizer):
    X, y, p0, kw = _one_problem()
    lam, lr = 0.5, 0.2
    got = ref.train(X, y, optimizer=optimizer, weight_decay=lam, learning_rate=lr, epochs=1, **kw)
    if optimizer == "adam":
        g = _grad(X, y, p0)
        g["weights"] = [G + lam * W for G, W in zip(g["weights"], p0["weights"])]
        # t = 1: m = (1 - b1) g, v = (1 - b2) g^2
        want = _map(lambda P, G: P - (lr / (1 - 0.9)) * ((1 - 0.9) * G)
                    / (np.sqrt((1 - 0.999) * G * G) / math.sqrt(1 - 0.999) + 1e-8), p0, g)
        _assert_params_equal(got.params, want, rtol=1e-13)
        return
    g = _grad(X, y, p0)
    mu = 0.9 if optimizer == "nesterov" else 0.0  # first nesterov step: g + mu b with b = g
    want_w = [W - lr * ((G + lam * W) + mu * (G + lam * W)) for W, G in zip(p0["weights"], g["weights"])]
    want_b = [B - lr * (G + mu * G) for B, G in zip(p0["biases"], g["biases"])]
    _assert_params_equal(got.params, {"weights": want_w, "biases": want_b})


def test_adamw_decays_weights_before_the_adam_step_and_never_biases():
    X, y, p0, kw = _one_problem()
    lam, lr = 0.5, 0.2
    adamw = ref.train(X, y, optimizer="adamw", weight_decay=lam, learning_rate=lr, epochs=1, **kw)
    adam = ref.train(X, y, optimizer="adam", learning_rate=lr, epochs=1, **kw)
    for W0, Wa, Ww in zip(p0["weights"], adam.params["weights"], adamw.params["weights"]):
        # the Adam step itself (from g, unchanged by lambda) is the same; only W (1 - lr lambda) differs
        np.testing.assert_allclose(Ww - W0 * (1 - lr * lam), Wa - W0, rtol=1e-12, atol=1e-15)
    for Ba, Bw in zip(adam.params["biases"], adamw.params["biases"]):
        np.testing.assert_array_equal(Bw, Ba)


def test_defaults_are_plain_gradient_descent():
    X, y, p0, kw = _one_problem()
    plain = ref.train(X, y, learning_rate=0.3, epochs=3, **kw)
    explicit = ref.train(X, y, learning_rate=0.3, epochs=3, optimizer="sgd", weight_decay=0.0, clip_norm=None,
                         lr_schedule={"kind": "constant"}, momentum=0.5, beta1=0.1, **kw)
    _assert_params_equal(plain.params, explicit.params)
    assert np.array_equal(plain.errors, explicit.errors)
    assert plain.stop_reason is None and plain.best_epoch is None


# --- stopping on a plateau ---------------------------------------------------------------------


def test_plateau_counts_epochs_without_improvement():
    plateau = ref.Plateau({"patience": 2, "min_delta": 0.1}, 1.0)
    assert plateau.update(1, 0.95) == (False, False)  # not below best - min_delta
    assert plateau.update(2, 0.85) == (True, False)   # 0.85 < 0.9: best, count reset
    assert plateau.best_epoch == 2 and plateau.best == 0.85
    assert plateau.update(3, float("nan")) == (False, False)  # NaN never improves
    assert plateau.update(4, 0.8) == (False, True)     # 0.8 is not < 0.75: second epoch in a row
    assert plateau.best_epoch == 2


def test_plateau_stops_restores_and_keeps_the_history():
    X, y, params = make_problem("tanh", "softmax", "cross_entropy", [3, 6, 3], n=30, seed=2)
    kw = dict(layers=[3, 6, 3], activation="tanh", loss="cross_entropy", learning_rate=2.0, batch_size=4,
              epochs=60, seed=1, params=params, validation=(X[20:], y[20:]))
    X, y = X[:20], y[:20]
    full = ref.train(X, y, **kw)
    metric = full.val_errors
    stop = {"metric": "val_error", "patience": 3, "min_delta": 0.0}
    res = ref.train(X, y, stop_on_plateau=stop, **kw)  # restore_best defaults to true
    assert res.stop_reason == "plateau" and res.epochs_done < 60
    k = res.epochs_done
    np.testing.assert_array_equal(res.errors, full.errors[:k + 1])
    np.testing.assert_array_equal(res.val_errors, full.val_errors[:k + 1])
    best = res.best_epoch
    assert metric[best] == min(metric[:k + 1])
    assert k - best == 3 and all(metric[e] >= metric[best] for e in range(best + 1, k + 1))
    at_best = ref.train(X, y, **dict(kw, epochs=best))
    _assert_params_equal(res.params, at_best.params)
    kept = ref.train(X, y, stop_on_plateau=dict(stop, restore_best=False), **kw)
    at_stop = ref.train(X, y, **dict(kw, epochs=k))
    _assert_params_equal(kept.params, at_stop.params)
    assert kept.best_epoch == best


# --- against PyTorch -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch():
    try:
        import torch
    except ImportError as error:  # a test extra: missing only outside `make test`
        message = f"torch is not installed ({error}): make .venv/.installed"
        if os.environ.get("DESCENT_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (DESCENT_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(message)
    return torch


def torch_train(torch, X, y, *, layers, activation, output_activation, loss, learning_rate, batch_mode,
                batch_size, epochs, seed, shuffle, params, dtype="float64", optimizer="sgd", momentum=0.9,
                beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=None, lr_schedule=None):
    """The same training with torch.optim: weights and biases as two parameter groups (decay on
    weights only), the scheduler stepped once per epoch, clip_grad_norm_ before each step,
    batches in the reference's epoch order. Returns (errors, params, learning rates per epoch)."""
    import torch.nn.functional as F

    tdt = {"float64": torch.float64, "float32": torch.float32}[dtype]
    Ws = [torch.tensor(W, dtype=tdt, requires_grad=True) for W in params["weights"]]
    Bs = [torch.tensor(B, dtype=tdt, requires_grad=True) for B in params["biases"]]
    Y, _ = ref.encode_targets(y, layers[-1], dtype)
    Xt, Yt = torch.tensor(np.asarray(X, dtype=dtype)), torch.tensor(Y)
    acts = ref.layer_activations(activation, output_activation, len(Ws))
    fns = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "linear": lambda z: z,
           "leaky_relu": lambda z: F.leaky_relu(z, 0.01)}

    def error(xb, yb):
        a = xb
        for l, (W, B) in enumerate(zip(Ws, Bs)):
            z = a @ W.T + B
            a = fns[acts[l]](z) if l < len(Ws) - 1 else z
        if loss == "mse":
            yhat = torch.softmax(a, dim=1) if acts[-1] == "softmax" else fns[acts[-1]](a)
            return 0.5 * ((yb - yhat) ** 2).mean()
        if acts[-1] == "softmax":
            return -(yb * torch.log_softmax(a, dim=1)).sum() / yb.shape[0]
        return F.binary_cross_entropy_with_logits(a, yb, reduction="sum") / yb.shape[0]

    groups = [{"params": Ws, "weight_decay": weight_decay}, {"params": Bs, "weight_decay": 0.0}]
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=learning_rate, momentum=0.0, foreach=False)
    elif optimizer in ("momentum", "nesterov"):
        opt = torch.optim.SGD(groups, lr=learning_rate, momentum=momentum, dampening=0.0,
                              nesterov=optimizer == "nesterov", foreach=False)
    else:
        cls = torch.optim.Adam if optimizer == "adam" else torch.optim.AdamW
        opt = cls(groups, lr=learning_rate, betas=(beta1, beta2), eps=eps, foreach=False)
    sched = ref.resolve_schedule(lr_schedule)
    S = torch.optim.lr_scheduler
    scheduler = {
        "constant": lambda: None,
        "step": lambda: S.StepLR(opt, step_size=sched.get("step_size", 1), gamma=sched.get("gamma", 0.1)),
        "exponential": lambda: S.ExponentialLR(opt, gamma=sched.get("gamma", 1.0)),
        "cosine": lambda: S.CosineAnnealingLR(opt, T_max=epochs, eta_min=sched.get("lr_min", 0.0)),
    }[sched["kind"]]()

    n = Xt.shape[0]
    bs = ref.batch_size_for(batch_mode, batch_size, n)
    errors, lrs = [], []
    with torch.no_grad():
        errors.append(error(Xt, Yt).item())
    for epoch in range(1, epochs + 1):
        lrs.append(opt.param_groups[0]["lr"])
        order = torch.tensor(ref.epoch_order(n, seed, epoch, shuffle))
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            opt.zero_grad(set_to_none=True)
            error(Xt[idx], Yt[idx]).backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(Ws + Bs, clip_norm)
            opt.step()
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            errors.append(error(Xt, Yt).item())
    out = {"weights": [W.detach().numpy() for W in Ws], "biases": [B.detach().numpy() for B in Bs]}
    return np.array(errors), out, lrs


SCHEDULES = {
    "constant": None,
    "step": {"kind": "step", "step_size": 2, "gamma": 0.5},
    "exponential": {"kind": "exponential", "gamma": 0.8},
    "cosine": {"kind": "cosine", "lr_min": 0.01},
}
LEARNING_RATES = {"sgd": 0.5, "momentum": 0.2, "nesterov": 0.2, "adam": 0.02, "adamw": 0.02}
TORCH_EPOCHS = 6


def _compare_with_torch(torch, X, y, kw, rtol):
    want_errors, want_params, lrs = torch_train(torch, X, y, **kw)
    kw = dict(kw)
    res = ref.train(X, y, **kw)
    assert np.all(np.isfinite(res.errors)) and res.epochs_done == kw["epochs"]
    np.testing.assert_allclose(res.errors, want_errors, rtol=rtol, atol=0, err_msg="errors")
    scale = max(float(np.max(np.abs(W))) for key in ("weights", "biases") for W in want_params[key])
    for key in ("weights", "biases"):
        for l, (a, b) in enumerate(zip(res.params[key], want_params[key])):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=f"{key}[{l}]")
    # the scheduler's learning rates (recursive in torch) are the contract's closed forms
    closed = [ref.learning_rate_at(kw["learning_rate"], kw.get("lr_schedule"), e, kw["epochs"])
              for e in range(1, kw["epochs"] + 1)]
    np.testing.assert_allclose(lrs, closed, rtol=1e-13, atol=0)
    return res


@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("optimizer", ref.OPTIMIZERS)
def test_reference_matches_torch_optim(torch, optimizer, schedule):
    X, y, params = make_problem("tanh", "softmax", "cross_entropy", [3, 5, 4], n=13, seed=6)
    kw = dict(layers=[3, 5, 4], activation="tanh", output_activation="softmax", loss="cross_entropy",
              learning_rate=LEARNING_RATES[optimizer], batch_mode="minibatch", batch_size=4,
              epochs=TORCH_EPOCHS, seed=2, shuffle=True, params=params, optimizer=optimizer,
              momentum=0.7, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.05,
              lr_schedule=SCHEDULES[schedule])
    _compare_with_torch(torch, X, y, kw, rtol=1e-12)


@pytest.mark.parametrize("batch_mode,batch_size", [("sgd", 1), ("minibatch", 5), ("full", 1)])
@pytest.mark.parametrize("optimizer", ref.OPTIMIZERS)
def test_reference_matches_torch_with_clipping(torch, optimizer, batch_mode, batch_size):
    """clip_norm between the smallest and largest batch gradient norms: some batches clip."""
    X, y, params = make_problem("sigmoid", "sigmoid", "mse", [2, 6, 3], n=11, seed=8)
    kw = dict(layers=[2, 6, 3], activation="sigmoid", output_activation="sigmoid", loss="mse",
              learning_rate=LEARNING_RATES[optimizer] * 4, batch_mode=batch_mode, batch_size=batch_size,
              epochs=TORCH_EPOCHS, seed=4, shuffle=True, params=params, optimizer=optimizer,
              weight_decay=0.1)
    norms = _batch_gradient_norms(X, y, kw)
    clip = float(np.median(norms))
    if batch_mode == "full":
        clip = 0.5 * min(norms)  # one batch per epoch: clip every step
    clipped = [g > clip for g in norms]
    assert any(clipped) and (all(clipped) if batch_mode == "full" else not all(clipped))
    _compare_with_torch(torch, X, y, dict(kw, clip_norm=clip), rtol=1e-12)


def _batch_gradient_norms(X, y, kw):
    """Gradient norm of every batch of the reference run (unclipped), in order."""
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
    return seen


@pytest.mark.parametrize("optimizer", ref.OPTIMIZERS)
def test_reference_matches_torch_in_float32(torch, optimizer):
    X, y, params = make_problem("relu", "softmax", "mse", [4, 6, 3], n=12, seed=9)
    kw = dict(layers=[4, 6, 3], activation="relu", output_activation="softmax", loss="mse",
              learning_rate=LEARNING_RATES[optimizer], batch_mode="minibatch", batch_size=5,
              epochs=TORCH_EPOCHS, seed=1, shuffle=True, params=params, optimizer=optimizer,
              weight_decay=0.01, lr_schedule=SCHEDULES["cosine"], dtype="float32")
    res = _compare_with_torch(torch, X, y, kw, rtol=1e-5)
    assert res.params["weights"][0].dtype == np.float32

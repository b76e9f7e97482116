"""Self-tests of tests/reference.py (no dependency on ``kernels``)."""

import math

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

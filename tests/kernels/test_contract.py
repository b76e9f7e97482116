"""``kernels`` against the independent reference (tests/reference.py) and docs/kernels.md."""

import numpy as np
import pytest

import kernels
from tests import reference as ref
from tests.reference import HIDDEN_ACTIVATIONS, VALID_OUTPUT_LOSS, assert_grads_close, make_problem

BATCH_MODES = [("sgd", 1), ("minibatch", 4), ("full", 1)]  # n = 13: a batch of 4 does not divide it
N = 13
EPOCHS = 4

# float64: the kernel must reproduce the reference to rounding error; float32: to float32 accuracy.
TOL = {
    "float64": dict(rtol=1e-12, atol=1e-14),
    "float32": dict(rtol=1e-4, atol=1e-6),
}


def case_layers(output_activation, loss):
    """A net per (output activation, loss): one output (0/1 labels or a 1-D float target)
    for two pairs, so both single-output target forms are exercised, 3-5-4 otherwise."""
    if (output_activation, loss) in (("sigmoid", "cross_entropy"), ("linear", "mse")):
        return [3, 5, 1]
    return [3, 5, 4]


def case_problem(activation, output_activation, loss, seed=0, n=N):
    layers = case_layers(output_activation, loss)
    X, y, params = make_problem(activation, output_activation, loss, layers, n=n, seed=seed)
    if (output_activation, loss) == ("linear", "mse"):
        y = np.asarray(y)[:, 0]  # 1-D float: one column
    return layers, X, y, params


def run_both(X, y, **kw):
    return kernels.train(X, y, **kw), ref.train(X, y, **kw)


def assert_params_close(actual, expected, dtype, **tol):
    for key in ("weights", "biases"):
        assert len(actual[key]) == len(expected[key])
        for l, (a, e) in enumerate(zip(actual[key], expected[key])):
            assert isinstance(a, np.ndarray), f"{key}[{l}] is not an ndarray"
            assert a.dtype == np.dtype(dtype), f"{key}[{l}] dtype {a.dtype} != {dtype}"
            assert a.shape == e.shape, f"{key}[{l}] shape {a.shape} != {e.shape}"
            np.testing.assert_allclose(a, e, err_msg=f"{key}[{l}]", **tol)


def assert_matches_reference(res, want, dtype):
    tol = TOL[dtype]
    assert isinstance(res.errors, np.ndarray) and res.errors.dtype == np.float64
    assert res.errors.shape == want.errors.shape
    assert res.epochs_done == want.epochs_done
    assert bool(res.diverged) == want.diverged
    assert not res.stopped
    np.testing.assert_allclose(res.errors, want.errors, err_msg="errors", **tol)
    if want.accuracy is None:
        assert res.accuracy is None
    else:
        assert res.accuracy is not None and res.accuracy.dtype == np.float64
        np.testing.assert_array_equal(res.accuracy, want.accuracy, err_msg="accuracy")
    assert_params_close(res.initial_params, want.initial_params, dtype, rtol=0, atol=0)
    assert_params_close(res.params, want.params, dtype, **tol)


# --- training matches the reference ---------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
@pytest.mark.parametrize("batch_mode,batch_size", BATCH_MODES, ids=[m for m, _ in BATCH_MODES])
@pytest.mark.parametrize("output_activation,loss", VALID_OUTPUT_LOSS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_training_matches_reference(activation, output_activation, loss, batch_mode, batch_size, shuffle, dtype):
    layers, X, y, _ = case_problem(activation, output_activation, loss)
    res, want = run_both(
        X, y, layers=layers, activation=activation, output_activation=output_activation, loss=loss,
        learning_rate=0.2, batch_mode=batch_mode, batch_size=batch_size, epochs=EPOCHS, seed=3,
        shuffle=shuffle, dtype=dtype,
    )
    assert len(res.errors) == EPOCHS + 1
    assert_matches_reference(res, want, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("init", ref.INITS)
def test_initialisation_matches_reference_exactly(init, dtype):
    layers = [4, 6, 3, 2]
    res = kernels.train(np.zeros((2, 4)), np.array([0, 1]), layers=layers, init=init, seed=42, epochs=0, dtype=dtype)
    assert_params_close(res.initial_params, ref.init_params(layers, init, 42, dtype), dtype, rtol=0, atol=0)
    assert_params_close(res.params, res.initial_params, dtype, rtol=0, atol=0)
    assert len(res.errors) == 1 and res.epochs_done == 0


@pytest.mark.parametrize("init", ref.INITS)
def test_training_with_each_init_matches_reference(init):
    X, y, _ = make_problem("tanh", "softmax", "cross_entropy", [3, 6, 3], n=11, seed=5)
    res, want = run_both(X, y, layers=[3, 6, 3], activation="tanh", loss="cross_entropy", init=init,
                         learning_rate=0.3, batch_size=4, epochs=3, seed=9)
    assert_matches_reference(res, want, "float64")


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 + 7, 2**62 + 1])
@pytest.mark.parametrize("batch_mode,batch_size", BATCH_MODES, ids=[m for m, _ in BATCH_MODES])
def test_shuffled_training_matches_reference_across_seeds(seed, batch_mode, batch_size):
    X, y, params = make_problem("sigmoid", "sigmoid", "mse", [2, 4, 3], n=17, seed=7)
    res, want = run_both(X, y, layers=[2, 4, 3], batch_mode=batch_mode, batch_size=batch_size, epochs=3,
                         seed=seed, shuffle=True, params=params, learning_rate=0.5)
    assert_matches_reference(res, want, "float64")


def test_per_layer_activation_list_matches_reference():
    acts = ["relu", "tanh", "leaky_relu"]
    layers = [3, 5, 4, 6, 2]
    X, y, _ = make_problem(acts, "softmax", "mse", layers, n=12, seed=2)
    res, want = run_both(X, y, layers=layers, activation=acts, output_activation="softmax", loss="mse",
                         learning_rate=0.4, batch_size=5, epochs=4, seed=1)
    assert_matches_reference(res, want, "float64")


@pytest.mark.parametrize("n_outputs,expected", [(3, "softmax"), (1, "sigmoid")])
def test_default_output_activation_for_cross_entropy(n_outputs, expected):
    layers = [3, 4, n_outputs]
    X, y, _ = make_problem("tanh", expected, "cross_entropy", layers, n=9, seed=4)
    kw = dict(layers=layers, activation="tanh", loss="cross_entropy", epochs=3, batch_size=4, seed=2)
    res = kernels.train(X, y, **kw)
    want = ref.train(X, y, output_activation=expected, **kw)
    assert_matches_reference(res, want, "float64")


def test_default_output_activation_for_mse_is_sigmoid():
    X, y, _ = make_problem("sigmoid", "sigmoid", "mse", [3, 4, 2], n=9, seed=4)
    kw = dict(layers=[3, 4, 2], epochs=3, batch_size=4, seed=2)
    assert_matches_reference(kernels.train(X, y, **kw), ref.train(X, y, output_activation="sigmoid", **kw), "float64")


def test_documented_defaults():
    """Only X, y and layers given: minibatch of 32, lr 0.1, 100 epochs, seed 0, shuffled, uniform."""
    X, y, _ = make_problem("sigmoid", "sigmoid", "mse", [2, 3, 1], n=40, seed=8)
    res = kernels.train(X, y, layers=[2, 3, 1])
    want = ref.train(X, y, layers=[2, 3, 1], activation="sigmoid", output_activation="sigmoid", loss="mse",
                     learning_rate=0.1, batch_mode="minibatch", batch_size=32, epochs=100, seed=0, shuffle=True,
                     init="uniform", dtype="float64")
    assert res.epochs_done == 100
    np.testing.assert_allclose(res.errors, want.errors, rtol=1e-11, atol=1e-14)
    assert_params_close(res.params, want.params, "float64", rtol=1e-11, atol=1e-14)


# --- gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("output_activation,loss", VALID_OUTPUT_LOSS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_gradients_match_finite_differences_and_reference(activation, output_activation, loss, soft):
    layers = case_layers(output_activation, loss)
    X, y, params = make_problem(activation, output_activation, loss, layers, n=7, seed=11, soft=soft)
    kw = dict(activation=activation, output_activation=output_activation, loss=loss)
    E, grads = kernels.gradients(X, y, params, dtype="float64", **kw)
    E_ref, grads_ref = ref.gradients(X, y, params, **kw)
    fd = ref.finite_difference_gradients(X, y, params, **kw)
    assert np.isclose(E, E_ref, rtol=1e-13, atol=0)
    assert_grads_close(grads, fd, rtol=1e-6, atol=1e-10)
    assert_grads_close(grads, grads_ref, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("output_activation,loss", VALID_OUTPUT_LOSS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_float32_gradients_close_to_reference(activation, output_activation, loss):
    layers = case_layers(output_activation, loss)
    X, y, params = make_problem(activation, output_activation, loss, layers, n=7, seed=12)
    kw = dict(activation=activation, output_activation=output_activation, loss=loss)
    E, grads = kernels.gradients(X, y, params, dtype="float32", **kw)
    E_ref, grads_ref = ref.gradients(X, y, params, **kw)
    assert np.isclose(E, E_ref, rtol=1e-5)
    assert_grads_close(grads, grads_ref, rtol=1e-4, scale_atol=1e-5)


def test_gradients_of_deeper_net_with_activation_list():
    acts = ["leaky_relu", "sigmoid", "relu"]
    layers = [4, 3, 5, 4, 3]
    X, y, params = make_problem(acts, "softmax", "cross_entropy", layers, n=6, seed=13, soft=True)
    kw = dict(activation=acts, output_activation="softmax", loss="cross_entropy")
    _, grads = kernels.gradients(X, y, params, dtype="float64", **kw)
    assert_grads_close(grads, ref.finite_difference_gradients(X, y, params, **kw), rtol=1e-6, atol=1e-10)
    assert_grads_close(grads, ref.gradients(X, y, params, **kw)[1], rtol=1e-12, atol=1e-16)


# --- predict ------------------------------------------------------------------------------


@pytest.mark.parametrize("output_activation", ref.OUTPUT_ACTIVATIONS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_predict_matches_reference(activation, output_activation):
    X, _, params = make_problem(activation, output_activation, "mse", [3, 5, 4], n=8, seed=14)
    out = kernels.predict(params, X, activation=activation, output_activation=output_activation)
    assert out.shape == (8, 4)
    np.testing.assert_allclose(out, ref.predict(params, X, activation, output_activation), rtol=1e-13, atol=1e-16)


# --- targets ------------------------------------------------------------------------------


def test_integer_labels_are_one_hot_and_record_accuracy():
    X, _, _ = make_problem("tanh", "softmax", "cross_entropy", [3, 5, 4], n=20, seed=15)
    labels = np.arange(20) % 4
    kw = dict(layers=[3, 5, 4], activation="tanh", loss="cross_entropy", learning_rate=0.5, batch_size=6,
              epochs=5, seed=0)
    res = kernels.train(X, labels, **kw)
    onehot = np.eye(4)[labels]
    as_floats = kernels.train(X, onehot, **kw)
    np.testing.assert_array_equal(res.errors, as_floats.errors)
    assert as_floats.accuracy is None
    assert res.accuracy.shape == res.errors.shape
    for k, params in ((0, res.initial_params), (5, res.params)):
        out = kernels.predict(params, X, activation="tanh", output_activation="softmax")
        assert res.accuracy[k] == np.mean(np.argmax(out, axis=1) == labels)
    assert_matches_reference(res, ref.train(X, labels, **kw), "float64")


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8, np.bool_])
def test_single_output_binary_labels(label_dtype):
    X, _, _ = make_problem("sigmoid", "sigmoid", "mse", [2, 4, 1], n=15, seed=16)
    labels = (X[:, 0] * X[:, 1] > 0).astype(label_dtype)
    kw = dict(layers=[2, 4, 1], learning_rate=1.0, batch_size=4, epochs=6, seed=3)
    res = kernels.train(X, labels, **kw)
    column = kernels.train(X, labels.astype(np.float64).reshape(-1, 1), **kw)
    np.testing.assert_array_equal(res.errors, column.errors)
    assert column.accuracy is None
    for k, params in ((0, res.initial_params), (6, res.params)):
        out = kernels.predict(params, X, activation="sigmoid", output_activation="sigmoid")
        assert res.accuracy[k] == np.mean((out[:, 0] >= 0.5) == labels.astype(bool))
    assert_matches_reference(res, ref.train(X, labels, **kw), "float64")


def test_one_dimensional_float_target_is_one_column():
    X, y, _ = make_problem("tanh", "linear", "mse", [3, 4, 1], n=10, seed=17)
    y1 = np.ascontiguousarray(np.asarray(y)[:, 0])
    kw = dict(layers=[3, 4, 1], activation="tanh", output_activation="linear", epochs=4, batch_size=3, seed=1)
    res = kernels.train(X, y1, **kw)
    assert res.accuracy is None
    np.testing.assert_array_equal(res.errors, kernels.train(X, y1.reshape(-1, 1), **kw).errors)
    assert_matches_reference(res, ref.train(X, y1, **kw), "float64")


def test_two_dimensional_float_target_used_as_is():
    X, y, _ = make_problem("relu", "sigmoid", "cross_entropy", [3, 4, 3], n=10, seed=18)
    kw = dict(layers=[3, 4, 3], activation="relu", output_activation="sigmoid", loss="cross_entropy", epochs=4,
              batch_size=3, seed=1)
    res = kernels.train(X, y, **kw)
    assert res.accuracy is None
    assert_matches_reference(res, ref.train(X, y, **kw), "float64")
    # a Fortran-ordered X is read the same way
    Xf = np.asfortranarray(X)
    np.testing.assert_array_equal(kernels.train(Xf, y, **kw).errors, res.errors)


def test_soft_targets_cross_entropy_softmax_training():
    X, y, _ = make_problem("sigmoid", "softmax", "cross_entropy", [3, 4, 3], n=10, seed=19, soft=True)
    kw = dict(layers=[3, 4, 3], loss="cross_entropy", epochs=4, batch_size=4, seed=1, learning_rate=0.3)
    assert_matches_reference(kernels.train(X, y, **kw), ref.train(X, y, **kw), "float64")


# --- validation rows --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,batch_size", BATCH_MODES, ids=[m for m, _ in BATCH_MODES])
def test_validation_rows_are_evaluated_every_epoch_and_do_not_train(batch_mode, batch_size, dtype):
    layers, X, y, params = case_problem("tanh", "softmax", "cross_entropy", n=20)
    X_train, y_train, X_val, y_val = X[:13], y[:13], X[13:], y[13:]
    kw = dict(layers=layers, activation="tanh", output_activation="softmax", loss="cross_entropy",
              learning_rate=0.4, batch_mode=batch_mode, batch_size=batch_size, epochs=EPOCHS,
              seed=3, shuffle=False, dtype=dtype)
    plain = kernels.train(X_train, y_train, params=params, **kw)
    checked = kernels.train(X_train, y_train, params=params, validation=(X_val, y_val), **kw)
    assert np.array_equal(plain.errors, checked.errors)  # validation takes no part in training
    assert plain.val_errors is None and checked.val_errors.shape == checked.errors.shape
    for epoch in range(EPOCHS + 1):
        snapshot = ref.train(X_train, y_train, params=params, **dict(kw, epochs=epoch))
        want = ref.loss(X_val, y_val, snapshot.params, activation="tanh",
                        output_activation="softmax", loss="cross_entropy", dtype=dtype)
        np.testing.assert_allclose(checked.val_errors[epoch], want, **TOL[dtype])
        acc = ref.accuracy_of(ref.predict(snapshot.params, X_val, "tanh", "softmax"), np.asarray(y_val))
        assert checked.val_accuracy[epoch] == pytest.approx(acc)


def test_validation_must_match_the_training_targets():
    layers, X, y, _ = case_problem("tanh", "softmax", "cross_entropy")
    with pytest.raises(ValueError, match=r"^validation X"):
        kernels.train(X, y, layers=layers, loss="cross_entropy", validation=(X[:, :2], y))
    with pytest.raises(ValueError, match=r"^validation"):
        kernels.train(X, y, layers=layers, loss="cross_entropy", validation=(X, y.astype(float)))

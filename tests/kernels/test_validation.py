"""Bad arguments raise ValueError whose message starts with the argument's name."""

import numpy as np
import pytest

import kernels
from tests import reference as ref

LAYERS = [3, 4, 2]


def data(n=6, width=3, n_out=2):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, width)), rng.integers(0, n_out, n)


def call(**overrides):
    X, y = data()
    kw = dict(layers=LAYERS, epochs=1)
    X = overrides.pop("X", X)
    y = overrides.pop("y", y)
    kw.update(overrides)
    return kernels.train(X, y, **kw)


def bad(argname, **overrides):
    with pytest.raises(ValueError, match=rf"^(?:{argname})\b"):
        call(**overrides)


def test_valid_call_works():
    res = call()
    assert res.epochs_done == 1


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argname,value",
    [
        ("activation", "foo"),
        ("activation", "Sigmoid"),
        ("output_activation", "foo"),
        ("loss", "hinge"),
        ("batch_mode", "stochastic"),
        ("init", "zeros"),
        ("dtype", "float16"),
        ("dtype", "int32"),
    ],
)
def test_unknown_names(argname, value):
    bad(argname, **{argname: value})


def test_unknown_name_message_lists_options():
    with pytest.raises(ValueError, match=r"^activation: unknown 'foo'; expected one of .*sigmoid"):
        call(activation="foo")


def test_softmax_as_hidden_activation():
    bad("activation", activation="softmax")
    bad("activation", layers=[3, 4, 4, 2], activation=["tanh", "softmax"])


def test_unknown_name_in_activation_list():
    bad("activation", layers=[3, 4, 4, 2], activation=["tanh", "swish"])


@pytest.mark.parametrize("output_activation", ["linear", "tanh", "relu", "leaky_relu"])
def test_cross_entropy_needs_softmax_or_sigmoid_output(output_activation):
    bad("loss|output_activation", loss="cross_entropy", output_activation=output_activation)


@pytest.mark.parametrize("acts", [["tanh"], ["tanh", "relu", "relu"], []])
def test_activation_list_of_wrong_length(acts):
    bad("activation", layers=[3, 4, 4, 2], activation=acts)


def test_softmax_output_needs_two_outputs():
    X, _ = data()
    bad("output_activation", layers=[3, 4, 1], y=np.zeros(6), output_activation="softmax")


# --- shapes -----------------------------------------------------------------------------


def test_X_width_differs_from_layers0():
    X, y = data(width=4)
    bad("X", X=X, y=y)


def test_X_not_two_dimensional():
    bad("X", X=np.zeros(6), y=np.zeros(6, dtype=int))


def test_y_rows_differ_from_X_rows():
    _, y = data(n=5)
    bad("y", y=y)


def test_y_columns_differ_from_outputs():
    bad("y", y=np.zeros((6, 3)))


def test_float_1d_target_with_several_outputs():
    bad("y", y=np.zeros(6))


@pytest.mark.parametrize("labels", [[0, 1, 2, 0, 1, 0], [0, 1, -1, 0, 1, 0]])
def test_label_out_of_range(labels):
    bad("y", y=np.array(labels))


def test_single_output_labels_must_be_binary():
    bad("y", layers=[3, 4, 1], y=np.array([0, 1, 2, 0, 1, 0]))


# --- numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [0, 0.0, -0.1, float("nan"), float("inf")])
def test_non_positive_or_non_finite_learning_rate(lr):
    bad("learning_rate", learning_rate=lr)


@pytest.mark.parametrize("batch_size", [0, -3])
def test_bad_batch_size(batch_size):
    bad("batch_size", batch_size=batch_size)


def test_negative_epochs():
    bad("epochs", epochs=-1)


def test_negative_seed():
    bad("seed", seed=-1)


@pytest.mark.parametrize("layers", [[3, 0, 2], [0, 2], [3, 4, 0], [3], [], [3, -1, 2]])
def test_bad_layers(layers):
    bad("layers", layers=layers)


@pytest.mark.parametrize("where", ["nan", "inf", "-inf"])
def test_non_finite_X(where):
    X, y = data()
    X[2, 1] = float(where)
    bad("X", X=X, y=y)


@pytest.mark.parametrize("where", ["nan", "inf"])
def test_non_finite_y(where):
    rng = np.random.default_rng(1)
    Y = rng.uniform(size=(6, 2))
    Y[3, 0] = float(where)
    bad("y", y=Y)
    y1 = rng.uniform(size=6)
    y1[0] = float(where)
    bad("y", layers=[3, 4, 1], y=y1)


# --- params -----------------------------------------------------------------------------


def good_params():
    return ref.init_params(LAYERS, "uniform", 0)


def test_good_params_accepted():
    assert call(params=good_params()).epochs_done == 1


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p["weights"].__setitem__(0, np.zeros((4, 2))),
        lambda p: p["weights"].__setitem__(1, np.zeros((4, 2))),
        lambda p: p["biases"].__setitem__(0, np.zeros(3)),
        lambda p: p["biases"].__setitem__(1, np.zeros((2, 1))),
        lambda p: p["weights"].pop(),
        lambda p: p["biases"].append(np.zeros(2)),
        lambda p: p.pop("biases"),
        lambda p: p["weights"][0].__setitem__((0, 0), np.nan),
    ],
    ids=["W1", "W2", "B1", "B2-2d", "missing-W", "extra-B", "no-biases", "nan"],
)
def test_params_with_wrong_shapes(mutate):
    p = good_params()
    mutate(p)
    bad("params", params=p)


# --- gradients and predict validate too -----------------------------------------------------


def test_gradients_validation():
    X, y = data()
    p = good_params()
    with pytest.raises(ValueError, match=r"^activation\b"):
        kernels.gradients(X, y, p, activation="foo", output_activation="sigmoid", loss="mse", dtype="float64")
    with pytest.raises(ValueError, match=r"^loss\b"):
        kernels.gradients(X, y, p, activation="tanh", output_activation="sigmoid", loss="l1", dtype="float64")
    with pytest.raises(ValueError, match=r"^dtype\b"):
        kernels.gradients(X, y, p, activation="tanh", output_activation="sigmoid", loss="mse", dtype="half")
    with pytest.raises(ValueError, match=r"^X\b"):
        kernels.gradients(X[:, :2], y, p, activation="tanh", output_activation="sigmoid", loss="mse",
                          dtype="float64")
    with pytest.raises(ValueError, match=r"^y\b"):
        kernels.gradients(X, y[:4], p, activation="tanh", output_activation="sigmoid", loss="mse", dtype="float64")


def test_predict_validation():
    X, _ = data()
    p = good_params()
    with pytest.raises(ValueError, match=r"^activation\b"):
        kernels.predict(p, X, activation="softmax", output_activation="sigmoid")
    with pytest.raises(ValueError, match=r"^output_activation\b"):
        kernels.predict(p, X, activation="tanh", output_activation="foo")
    with pytest.raises(ValueError, match=r"^X\b"):
        kernels.predict(p, X[:, :2], activation="tanh", output_activation="sigmoid")
    with pytest.raises(ValueError, match=r"^X\b"):
        Xn = X.copy()
        Xn[0, 0] = np.nan
        kernels.predict(p, Xn, activation="tanh", output_activation="sigmoid")
    bad_p = good_params()
    bad_p["weights"][1] = np.zeros((2, 5))
    with pytest.raises(ValueError, match=r"^params\b"):
        kernels.predict(bad_p, X, activation="tanh", output_activation="sigmoid")

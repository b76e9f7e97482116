"""kernels.trace_step: one SGD step of one sample, checked against training itself
(kernels.train, kernels.gradients), the NumPy reference and a worked 2-2-2 example."""

import numpy as np
import pytest

import kernels
from tests import reference

# The classic worked example of a 2-2-2 sigmoid network (Matt Mazur, "A Step by Step
# Backpropagation Example"): the tutorial's network shape and notation with numbers.
MAZUR = {"weights": [np.array([[0.15, 0.20], [0.25, 0.30]]),
                     np.array([[0.40, 0.45], [0.50, 0.55]])],
         "biases": [np.array([0.35, 0.35]), np.array([0.60, 0.60])]}
MAZUR_X = [0.05, 0.10]
MAZUR_Y = [0.01, 0.99]


def test_the_worked_2_2_2_example():
    step = kernels.trace_step(MAZUR_X, MAZUR_Y, layers=[2, 2, 2], learning_rate=0.5,
                              params=MAZUR)
    h_i, y_i = step.pre_activations
    h_o, yhat = step.activations
    np.testing.assert_allclose(h_i, [0.3775, 0.3925], rtol=1e-12)
    np.testing.assert_allclose(h_o, [0.593269992, 0.596884378], rtol=1e-9)
    np.testing.assert_allclose(y_i, [1.105905967, 1.224921404], rtol=1e-9)
    np.testing.assert_allclose(yhat, [0.75136507, 0.772928465], rtol=1e-8)
    # Mazur's E_total sums 1/2 (y - ŷ)^2 over the two outputs; the contract's E takes the
    # mean over outputs (1/M), so E and every gradient are half of his.
    np.testing.assert_allclose(step.error, 0.298371109 / 2, rtol=1e-8)
    dW1, dW2 = step.gradients["weights"]
    np.testing.assert_allclose(dW2, np.array([[0.082167041, 0.082667628],
                                              [-0.022602540, -0.022740242]]) / 2, rtol=1e-7)
    np.testing.assert_allclose(dW1, np.array([[0.000438568, 0.000877135],
                                              [0.000497713, 0.000995425]]) / 2, rtol=1e-5)
    # W <- W - 0.5 dE/dW with the halved gradients
    np.testing.assert_allclose(step.updated["weights"][1],
                               MAZUR["weights"][1] - 0.5 * dW2, rtol=1e-15)
    np.testing.assert_allclose(step.updated["weights"][1][0, 0], 0.4 - 0.5 * 0.082167041 / 2,
                               rtol=1e-8)
    np.testing.assert_array_equal(step.target, MAZUR_Y)
    assert step.activations_used == ["sigmoid", "sigmoid"]


CASES = [
    dict(layers=[2, 2, 2], activation="sigmoid", loss="mse", x=[0.3, -1.2], y=[0.0, 1.0]),
    dict(layers=[3, 5, 4, 3], activation=["tanh", "relu"], loss="cross_entropy",
         output_activation="softmax", x=[0.5, -0.25, 2.0], y=2, init="he", seed=7),
    dict(layers=[4, 6, 1], activation="leaky_relu", loss="cross_entropy", x=[1, 2, 3, 4], y=1,
         init="xavier", seed=3),
    dict(layers=[2, 3, 2], activation="sigmoid", output_activation="softmax", loss="mse",
         x=[1.0, 0.5], y=[0.2, 0.8], seed=11),
    dict(layers=[3, 2], activation="sigmoid", output_activation="linear", loss="mse",
         x=[0.1, 0.2, 0.3], y=[1.5, -0.5], seed=5),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c["layers"])))
def test_the_step_is_what_training_and_gradients_compute(case, dtype):
    case = dict(case)
    x, y = case.pop("x"), case.pop("y")
    step = kernels.trace_step(x, y, learning_rate=0.3, dtype=dtype, **case)
    layers = case["layers"]
    init = kernels.init_params(layers, case.get("init", "uniform"), case.get("seed", 0), dtype)
    for got, want in zip(step.params["weights"] + step.params["biases"],
                         init["weights"] + init["biases"]):
        np.testing.assert_array_equal(got, want)
    X = np.asarray([x])
    Y = np.asarray([y]) if isinstance(y, int) else np.asarray([y], dtype=float)
    spec = {k: case[k] for k in ("activation", "output_activation", "loss") if k in case}
    # The updated parameters are one SGD step of training on this one sample...
    trained = kernels.train(X, Y, layers=layers, learning_rate=0.3, batch_mode="sgd",
                            epochs=1, shuffle=False, dtype=dtype, params=init, **spec)
    for got, want in zip(step.updated["weights"] + step.updated["biases"],
                         trained.params["weights"] + trained.params["biases"]):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, want)
    # ...and the gradients those of kernels.gradients, with E its error
    error, grads = kernels.gradients(X, Y, init, dtype=dtype, **spec)
    assert step.error == error
    for got, want in zip(step.gradients["weights"] + step.gradients["biases"],
                         grads["weights"] + grads["biases"]):
        np.testing.assert_array_equal(got, want)
    # ...so the step is W - learning_rate * dE/dW
    rtol = 1e-12 if dtype == "float64" else 1e-5
    for W, dW, new in zip(init["weights"] + init["biases"], grads["weights"] + grads["biases"],
                          step.updated["weights"] + step.updated["biases"]):
        np.testing.assert_allclose(new, W - 0.3 * dW, rtol=rtol, atol=rtol * 1e-3)
    # The forward pass matches the NumPy reference layer by layer.
    acts = reference.layer_activations(
        case.get("activation", "sigmoid"),
        reference.resolve_output_activation(case.get("output_activation"), case["loss"],
                                            layers[-1]),
        len(layers) - 1)
    zs, outs = reference.forward({k: [np.asarray(a, np.float64) for a in v]
                                  for k, v in init.items()}, X.astype(np.float64), acts)
    for got, want in zip(step.pre_activations, zs):
        np.testing.assert_allclose(got, np.ravel(want), rtol=rtol, atol=1e-6 if rtol > 1e-9
                                   else 1e-12)
    for got, want in zip(step.activations, outs[1:]):
        np.testing.assert_allclose(got, np.ravel(want), rtol=rtol, atol=1e-6 if rtol > 1e-9
                                   else 1e-12)
    assert step.activations[-1].shape == (layers[-1],)


def test_symbols_follow_the_tutorial():
    assert kernels.layer_symbols(2) == [("h_i", "h_o"), ("y_i", "ŷ")]
    assert kernels.layer_symbols(1) == [("y_i", "ŷ")]
    assert kernels.layer_symbols(3) == [("h1_i", "h1_o"), ("h2_i", "h2_o"), ("y_i", "ŷ")]


@pytest.mark.parametrize("kwargs,name", [
    (dict(x=[1.0], y=[0.0], layers=[2, 1]), "X"),
    (dict(x=[1.0, 2.0], y=[0.0, 1.0], layers=[2, 1]), "y"),
    (dict(x=[1.0, 2.0], y=3, layers=[2, 2]), "y"),
    (dict(x=[1.0, 2.0], y=1, layers=[2, 3, 2], activation="nope"), "activation"),
    (dict(x=[1.0, 2.0], y=1, layers=[2, 2], learning_rate=0), "learning_rate"),
    (dict(x=[1.0, 2.0], y=1, layers=[2, 2], params={"weights": [np.ones((3, 2))],
                                                    "biases": [np.ones(2)]}), "params"),
])
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        kernels.trace_step(**kwargs)

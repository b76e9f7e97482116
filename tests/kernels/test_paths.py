"""The engine picks BLAS or fused loops by the size of each product; both must match the
reference. Forcing the threshold to its extremes runs every layer down each path."""

import numpy as np
import pytest

import kernels
import kernels.knobs
from tests import reference as ref
from tests.kernels.test_contract import TOL, assert_matches_reference

PATHS = {"blas": 1, "loops": 2**62}


@pytest.fixture(params=sorted(PATHS))
def path(request, monkeypatch):
    monkeypatch.setattr(kernels.knobs, "BLAS_MIN", PATHS[request.param])
    return request.param


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,batch_size", [("sgd", 1), ("minibatch", 8), ("full", 1)])
@pytest.mark.parametrize("activation,output_activation,loss", [
    ("relu", "softmax", "cross_entropy"),
    ("tanh", "sigmoid", "mse"),
    ("leaky_relu", "softmax", "mse"),
])
def test_training_matches_reference_on_each_path(path, activation, output_activation, loss,
                                                  batch_mode, batch_size, dtype):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(37, 6))
    y = rng.integers(0, 4, 37)
    kw = dict(layers=[6, 12, 9, 4], activation=activation, output_activation=output_activation,
              loss=loss, learning_rate=0.3, batch_mode=batch_mode, batch_size=batch_size,
              epochs=3, seed=2, shuffle=True, dtype=dtype)
    assert_matches_reference(kernels.train(X, y, **kw), ref.train(X, y, **kw), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gradients_and_predict_match_reference_on_each_path(path, dtype):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(11, 5))
    y = rng.integers(0, 3, 11)
    params = kernels.init_params([5, 7, 3], "xavier", 1, dtype)
    kw = dict(activation="tanh", output_activation="softmax", loss="cross_entropy")
    error, grads = kernels.gradients(X, y, params, dtype=dtype, **kw)
    want_error, want_grads = ref.gradients(X, y, params, **kw)
    tol = TOL[dtype]
    np.testing.assert_allclose(error, want_error, **tol)
    for key in ("weights", "biases"):
        for got, want in zip(grads[key], want_grads[key]):
            np.testing.assert_allclose(got, want, rtol=tol["rtol"] * 100, atol=tol["atol"] * 10)
    outputs = kernels.predict(params, X, dtype=dtype, **kw)
    np.testing.assert_allclose(outputs, ref.predict(params, X, activation="tanh",
                                                    output_activation="softmax"), **tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,batch_size", [("sgd", 1), ("minibatch", 8), ("full", 1)])
@pytest.mark.parametrize("optimizer", ["momentum", "adamw"])
@pytest.mark.parametrize("clip_norm", [None, 0.2], ids=["row_steps", "clipped"])
def test_optimizer_steps_match_reference_on_each_path(path, optimizer, clip_norm, batch_mode,
                                                      batch_size, dtype):
    """The optimizer's step runs inside the backward pass (row by row on the loop path, per
    layer after BLAS) or, with clipping, after every gradient of the batch is known."""
    rng = np.random.default_rng(7)
    X = rng.normal(size=(37, 6))
    y = rng.integers(0, 4, 37)
    kw = dict(layers=[6, 12, 9, 4], activation="relu", output_activation="softmax",
              loss="cross_entropy", learning_rate=0.02, batch_mode=batch_mode,
              batch_size=batch_size, epochs=3, seed=2, shuffle=True, dtype=dtype,
              optimizer=optimizer, weight_decay=0.05, clip_norm=clip_norm)
    assert_matches_reference(kernels.train(X, y, **kw), ref.train(X, y, **kw), dtype)

"""POST /api/v1/trace: one backprop step in the tutorial's notation, checked against the
kernels training runs on, and its validation."""

import numpy as np
import pytest

import kernels

from .conftest import API, error_of

@pytest.fixture
def database_backend():
    """SQLite only: the trace touches no database (the app needs one for the token)."""
    return "sqlite"


MAZUR = {"W1": [[0.15, 0.20], [0.25, 0.30]], "B1": [0.35, 0.35],
         "W2": [[0.40, 0.45], [0.50, 0.55]], "B2": [0.60, 0.60]}


def trace(client, **body):
    response = client.post(f"{API}/trace", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_the_worked_example_in_the_tutorials_notation(client):
    out = trace(client, layers=[2, 2, 2], x=[0.05, 0.10], y=[0.01, 0.99], learning_rate=0.5,
                params=MAZUR)
    assert set(out["forward"]) == {"X", "h_i", "h_o", "y_i", "ŷ"}
    assert out["forward"]["X"] == [0.05, 0.10]
    np.testing.assert_allclose(out["forward"]["h_i"], [0.3775, 0.3925], rtol=1e-12)
    np.testing.assert_allclose(out["forward"]["ŷ"], [0.75136507, 0.772928465], rtol=1e-8)
    np.testing.assert_allclose(out["E"], 0.298371109 / 2, rtol=1e-8)
    assert set(out["gradients"]) == {"dE/dW1", "dE/dB1", "dE/dW2", "dE/dB2"}
    np.testing.assert_allclose(out["gradients"]["dE/dW2"][0][0], 0.082167041 / 2, rtol=1e-7)
    assert out["params"] == MAZUR
    np.testing.assert_allclose(out["updated"]["W2"][0][0], 0.4 - 0.5 * 0.082167041 / 2,
                               rtol=1e-8)
    assert out["y"] == [0.01, 0.99]
    assert [layer["pre_activation"] for layer in out["layers"]] == ["h_i", "y_i"]
    assert [layer["activation"] for layer in out["layers"]] == ["h_o", "ŷ"]
    assert out["spec"]["output_activation"] == "sigmoid"


def test_the_trace_is_the_training_step_of_the_kernels(client):
    body = dict(layers=[3, 4, 3, 2], activation=["tanh", "relu"], loss="cross_entropy",
                x=[0.2, -1.0, 0.5], y=1, learning_rate=0.7, init="he", seed=9)
    out = trace(client, **body)
    assert set(out["forward"]) == {"X", "h1_i", "h1_o", "h2_i", "h2_o", "y_i", "ŷ"}
    assert out["spec"]["output_activation"] == "softmax" and out["y"] == [0.0, 1.0]
    init = kernels.init_params([3, 4, 3, 2], "he", 9, "float64")
    X, Y = np.asarray([body["x"]]), np.asarray([1])
    spec = dict(activation=["tanh", "relu"], loss="cross_entropy")
    trained = kernels.train(X, Y, layers=[3, 4, 3, 2], learning_rate=0.7, batch_mode="sgd",
                            epochs=1, shuffle=False, params=init, **spec)
    error, grads = kernels.gradients(X, Y, init, **spec)
    assert out["E"] == error
    for k in range(3):
        assert out["params"][f"W{k + 1}"] == init["weights"][k].tolist()
        assert out["updated"][f"W{k + 1}"] == trained.params["weights"][k].tolist()
        assert out["updated"][f"B{k + 1}"] == trained.params["biases"][k].tolist()
        assert out["gradients"][f"dE/dW{k + 1}"] == grads["weights"][k].tolist()
        assert out["gradients"][f"dE/dB{k + 1}"] == grads["biases"][k].tolist()
    np.testing.assert_allclose(out["forward"]["ŷ"], kernels.predict(
        init, X, activation=["tanh", "relu"], loss="cross_entropy")[0], rtol=1e-15)
    # the same request gives the same numbers; float32 too
    assert trace(client, **body) == out
    small = trace(client, **{**body, "dtype": "float32"})
    np.testing.assert_allclose(small["E"], out["E"], rtol=1e-5)
    # parameters in the layout of GET /runs/{id}/params work as well
    again = trace(client, **{**body, "params": {"weights": out["params"]["W1"] and
                                                [out["params"][f"W{k}"] for k in (1, 2, 3)],
                                                "biases": [out["params"][f"B{k}"]
                                                           for k in (1, 2, 3)]}})
    assert again["updated"] == out["updated"]


@pytest.mark.parametrize("body,fields", [
    ({"layers": [2, 65, 1], "x": [0, 0], "y": 1}, {"layers[1]"}),
    ({"layers": [2, 2, 2, 2, 2, 2, 2], "x": [0, 0], "y": 1}, {"layers"}),
    ({"layers": [2, 1], "x": [0, 0, 0], "y": 1}, {"x"}),
    ({"layers": [2, 2], "x": [0, 0], "y": [1, 0, 0]}, {"y"}),
    ({"layers": [2, 2], "x": [0, 0], "y": 5}, {"y"}),
    ({"layers": [2, 1], "x": [0, 0]}, {"y"}),
    ({"layers": [2, 1], "x": [0, "a"], "y": 1}, {"x[1]"}),
    ({"layers": [2, 1], "x": [0, 0], "y": "cat"}, {"y"}),
    ({"layers": [2, 1], "x": [0, 0], "y": 1, "learning_rate": -1}, {"learning_rate"}),
    ({"layers": [2, 1], "x": [0, 0], "y": 1, "epochs": 3}, {"epochs"}),
    ({"layers": [2, 3, 1], "x": [0, 0], "y": 1, "activation": ["relu", "tanh"]}, {"activation"}),
    ({"layers": [2, 1], "x": [0, 0], "y": 1, "loss": "cross_entropy",
      "output_activation": "relu"}, {"output_activation"}),
    ({"layers": [2, 1], "x": [0, 0], "y": 1, "params": {"W1": [[1, 2]]}}, {"params.B1"}),
    ({"layers": [2, 1], "x": [0, 0], "y": 1,
      "params": {"W1": [[1, 2, 3]], "B1": [0], "W7": [1]}}, {"params.W1", "params.W7"}),
    ({"layers": [2, 1], "x": [0, 0], "y": 1,
      "params": {"W1": [["1", 2]], "B1": [True]}}, {"params.W1", "params.B1"}),
    ({"layers": [2, 1], "x": [0, 0], "y": 1, "params": {"weights": 5, "biases": []}},
     {"params.weights"}),
])
def test_bad_requests_are_422_naming_the_fields(client, body, fields):
    error = error_of(client.post(f"{API}/trace", json=body), 422)
    assert set(error["fields"]) == fields, error


def test_the_trace_is_in_the_openapi_document(client):
    paths = client.get(f"{API}/openapi.json").get_json()["paths"]
    assert "post" in paths["/api/v1/trace"]
    assert "image/png" in paths["/api/v1/runs/{run_id}/plot.png"]["get"]["responses"]["200"][
        "content"]
    assert "image/svg+xml" in paths["/api/v1/runs/{run_id}/network.svg"]["get"]["responses"][
        "200"]["content"]
    assert "404" in paths["/api/v1/sweeps/{sweep_id}/plot.png"]["get"]["responses"]

"""The interpreted engine (kernels.interpreted, ``train(engine="python")``) gives the compiled
engine's bits: every history row, every parameter, on random tiny specs over every
activation, loss, batch mode, optimizer and training option, and on products large enough
for BLAS."""

import numpy as np
import pytest

import kernels
from kernels import knobs

HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu", "linear"]
OPTIMIZERS = ["sgd", "momentum", "nesterov", "adam", "adamw"]


def _random_spec(rng) -> dict:
    n_out = int(rng.choice([1, 3]))
    loss = str(rng.choice(["mse", "cross_entropy"]))
    if loss == "cross_entropy":
        output = "softmax" if n_out > 1 else "sigmoid"
    else:
        output = str(rng.choice(["sigmoid", "linear", "tanh"] + (["softmax"] if n_out > 1 else [])))
    hidden = [int(h) for h in rng.integers(2, 7, size=int(rng.integers(1, 3)))]
    spec = {
        "layers": [3, *hidden, n_out],
        "activation": str(rng.choice(HIDDEN)),
        "output_activation": output,
        "loss": loss,
        "learning_rate": float(rng.choice([0.01, 0.1, 0.5])),
        "batch_mode": str(rng.choice(["sgd", "minibatch", "full"])),
        "batch_size": int(rng.choice([2, 5, 8])),
        "epochs": int(rng.integers(1, 9)),
        "seed": int(rng.integers(0, 1000)),
        "shuffle": bool(rng.integers(0, 2)),
        "init": str(rng.choice(["uniform", "normal", "xavier", "he"])),
        "optimizer": str(rng.choice(OPTIMIZERS)),
        "eval_every": int(rng.choice([1, 2, 3])),
    }
    if rng.random() < 0.3:
        spec["weight_decay"] = 0.01
    if rng.random() < 0.3:
        spec["clip_norm"] = 0.5
    if rng.random() < 0.3:
        spec["lr_schedule"] = {"kind": "cosine"}
    return spec


def _data(rng, spec: dict, n: int):
    X = rng.standard_normal((n, 3))
    n_out = spec["layers"][-1]
    if n_out > 1:
        y = rng.integers(0, n_out, size=n)
    elif spec["loss"] == "cross_entropy":
        y = rng.integers(0, 2, size=n)
    else:
        y = rng.standard_normal(n)
    return X, y


def _assert_same_bits(a: kernels.TrainResult, b: kernels.TrainResult) -> None:
    for name in ("errors", "accuracy", "val_errors", "val_accuracy", "epochs_evaluated"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True), name
    for key in ("weights", "biases"):
        assert len(a.params[key]) == len(b.params[key])
        for x, y in zip(a.params[key], b.params[key]):
            assert np.array_equal(x, y, equal_nan=True), key
    assert (a.diverged, a.stopped, a.epochs_done, a.stop_reason, a.best_epoch) == (
        b.diverged, b.stopped, b.epochs_done, b.stop_reason, b.best_epoch)


def _both_engines_agree(X, y, **kwargs) -> kernels.TrainResult:
    """Train with each engine; assert the same bits; return the compiled engine's result."""
    compiled = kernels.train(X, y, **kwargs)
    _assert_same_bits(compiled, kernels.train(X, y, engine="python", **kwargs))
    return compiled


@pytest.mark.parametrize("seed", range(40))
def test_random_specs_give_the_compiled_bits(seed):
    rng = np.random.default_rng(seed)
    spec = _random_spec(rng)
    X, y = _data(rng, spec, int(rng.integers(4, 13)))
    kwargs = dict(spec)
    if rng.random() < 0.5:
        Xv, yv = _data(rng, spec, 5)
        kwargs["validation"] = (Xv, yv)
        if rng.random() < 0.5:
            kwargs["stop_on_plateau"] = {"patience": 2}
    elif rng.random() < 0.3:
        kwargs["stop_on_plateau"] = {"metric": "error", "patience": 2}
    _both_engines_agree(X, y, **kwargs)


@pytest.mark.parametrize("batch_mode", ["sgd", "minibatch", "full"])
def test_blas_products_give_the_compiled_bits(monkeypatch, batch_mode):
    """Products at or above BLAS_MIN go through BLAS (gemm, and gemv for single rows)."""
    monkeypatch.setattr(knobs, "BLAS_MIN", 1)
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((20, 4)), rng.integers(0, 3, size=20)
    _both_engines_agree(X, y, layers=[4, 6, 3], activation="tanh", loss="cross_entropy",
                        epochs=3, batch_mode=batch_mode, batch_size=8, learning_rate=0.3,
                        seed=3, optimizer="adam", validation=(X[:7], y[:7]))


def test_the_example_run_gives_the_compiled_bits():
    X, y = kernels.load_dataset("xor")
    _both_engines_agree(X, y, layers=[2, 8, 1], activation="sigmoid",
                        output_activation="sigmoid", loss="mse", learning_rate=2.0,
                        batch_mode="full", epochs=200, seed=0)


def test_a_diverging_run_diverges_alike():
    X, y = kernels.load_dataset("xor")
    compiled = _both_engines_agree(X, y, layers=[2, 4, 1], activation="relu",
                                   output_activation="linear", loss="mse", learning_rate=1e6,
                                   batch_mode="sgd", epochs=20, seed=1)
    assert compiled.diverged


def test_bad_engine_arguments_are_named():
    X, y = kernels.load_dataset("xor")
    with pytest.raises(ValueError, match="engine"):
        kernels.train(X, y, layers=[2, 2, 1], epochs=1, engine="fortran")
    with pytest.raises(ValueError, match="float64"):
        kernels.train(X, y, layers=[2, 2, 1], epochs=1, engine="python", dtype="float32")


def test_checkpoints_and_a_stopping_callback_give_the_compiled_bits():
    """The chunks between callbacks differ in length (each engine times its own), which must
    not change the numbers; a stop at a checkpoint stops both at the same epoch."""
    rng = np.random.default_rng(11)
    X, y = rng.standard_normal((30, 3)), rng.integers(0, 2, size=30)

    def stop_at_six(progress):
        return progress.epochs_done >= 6

    compiled = _both_engines_agree(X, y, layers=[3, 5, 1], activation="tanh",
                                   loss="cross_entropy", epochs=20, batch_size=4, seed=2,
                                   checkpoints=[3, 6, 12], callback=stop_at_six)
    assert compiled.stopped and compiled.epochs_done == 6

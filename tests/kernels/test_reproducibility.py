"""Bit-for-bit reproducibility of ``kernels.train``, ``params=``, callbacks and early stopping."""

import numpy as np
import pytest

import kernels
import kernels.knobs
from tests import reference as ref
from tests.reference import make_problem

MODES = [("sgd", 1), ("minibatch", 5), ("full", 1)]
MODE_IDS = [m for m, _ in MODES]


def problem(n=23):
    X, y, _ = make_problem("tanh", "softmax", "cross_entropy", [4, 7, 3], n=n, seed=21)
    return X, y


def base_kw(batch_mode, batch_size, dtype, **extra):
    kw = dict(layers=[4, 7, 3], activation="tanh", loss="cross_entropy", learning_rate=0.3,
              batch_mode=batch_mode, batch_size=batch_size, epochs=12, seed=5, shuffle=True, dtype=dtype)
    kw.update(extra)
    return kw


def assert_same_bits(a, b):
    assert np.array_equal(a.errors, b.errors)
    if a.accuracy is None:
        assert b.accuracy is None
    else:
        assert np.array_equal(a.accuracy, b.accuracy)
    for which in ("initial_params", "params"):
        pa, pb = getattr(a, which), getattr(b, which)
        for key in ("weights", "biases"):
            assert len(pa[key]) == len(pb[key])
            for x, y in zip(pa[key], pb[key]):
                assert x.dtype == y.dtype and np.array_equal(x, y), f"{which} {key}"
    assert a.epochs_done == b.epochs_done and a.diverged == b.diverged


def assert_params_differ(a, b):
    assert any(not np.array_equal(x, y) for x, y in zip(a["weights"], b["weights"]))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,batch_size", MODES, ids=MODE_IDS)
def test_same_seed_same_bits(batch_mode, batch_size, dtype):
    X, y = problem()
    kw = base_kw(batch_mode, batch_size, dtype)
    first = kernels.train(X, y, **kw)
    second = kernels.train(X.copy(), y.copy(), **kw)
    assert first.errors.dtype == np.float64
    assert first.params["weights"][0].dtype == np.dtype(dtype)
    assert_same_bits(first, second)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,batch_size", MODES, ids=MODE_IDS)
def test_different_seeds_differ(batch_mode, batch_size, dtype):
    X, y = problem()
    a = kernels.train(X, y, **base_kw(batch_mode, batch_size, dtype, seed=1))
    b = kernels.train(X, y, **base_kw(batch_mode, batch_size, dtype, seed=2))
    assert not np.array_equal(a.errors, b.errors)
    assert_params_differ(a.initial_params, b.initial_params)
    assert_params_differ(a.params, b.params)


@pytest.mark.parametrize("batch_mode,batch_size", [("sgd", 1), ("minibatch", 5)], ids=["sgd", "minibatch"])
def test_shuffle_seed_alone_changes_the_run(batch_mode, batch_size):
    """Same initial parameters, different seeds: only the epoch orders differ."""
    X, y = problem()
    params = ref.init_params([4, 7, 3], "uniform", 0)
    a = kernels.train(X, y, **base_kw(batch_mode, batch_size, "float64", seed=1, params=params))
    b = kernels.train(X, y, **base_kw(batch_mode, batch_size, "float64", seed=2, params=params))
    assert a.errors[0] == b.errors[0]
    assert not np.array_equal(a.errors[1:], b.errors[1:])


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffled", "ordered"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,batch_size", MODES, ids=MODE_IDS)
def test_chunking_does_not_change_the_bits(batch_mode, batch_size, dtype, shuffle, monkeypatch):
    """Ordered full batches reuse each step's forward pass as the previous epoch's
    evaluation, so their errors reach the callback one chunk late: still each exactly once."""
    X, y = problem()
    kw = base_kw(batch_mode, batch_size, dtype, epochs=15, shuffle=shuffle)
    plain = kernels.train(X, y, **kw)

    seen = []

    def callback(progress):
        seen.append(progress)
        return None

    # Aim each jitted chunk at zero seconds, so every chunk is a single epoch.
    monkeypatch.setattr(kernels.knobs, "CHUNK_SECONDS", 0.0)
    chunked = kernels.train(X, y, callback=callback, **kw)
    assert [p.epochs_done for p in seen] == list(range(1, 16)), "chunks were not single epochs"
    assert_same_bits(plain, chunked)
    # the callback saw every epoch exactly once, in order, with the recorded values
    np.testing.assert_array_equal(np.concatenate([p.errors for p in seen]), chunked.errors)
    np.testing.assert_array_equal(np.concatenate([p.accuracy for p in seen]), chunked.accuracy)
    starts = [p.first_epoch for p in seen]
    assert starts == list(np.cumsum([0] + [len(p.errors) for p in seen[:-1]]))
    assert all(p.first_epoch + len(p.errors) - 1 <= p.epochs_done for p in seen)
    assert all(not p.diverged and p.seconds >= 0 for p in seen)

    # and very large chunks give the same bits again
    monkeypatch.setattr(kernels.knobs, "CHUNK_SECONDS", 1e9)
    assert_same_bits(plain, kernels.train(X, y, callback=lambda p: False, **kw))


def test_progress_accuracy_is_none_without_labels():
    X, _ = problem()
    Y = np.random.default_rng(0).uniform(size=(X.shape[0], 3))
    seen = []
    res = kernels.train(X, Y, layers=[4, 7, 3], epochs=5, callback=seen.append)
    assert res.accuracy is None
    assert seen and all(p.accuracy is None for p in seen)
    assert seen[-1].epochs_done == 5
    np.testing.assert_array_equal(np.concatenate([p.errors for p in seen]), res.errors)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_params_override_init(dtype):
    X, y = problem()
    given = ref.init_params([4, 7, 3], "normal", 99)
    given["biases"] = [np.full(7, 0.25), np.array([0.1, -0.2, 0.3])]
    snapshot = ref.copy_params(given)
    kw = base_kw("minibatch", 5, dtype, epochs=3)
    res = kernels.train(X, y, params=given, **kw)
    for key in ("weights", "biases"):
        for got, want, orig in zip(res.initial_params[key], given[key], snapshot[key]):
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(got, want.astype(dtype))
            np.testing.assert_array_equal(want, orig)  # the caller's arrays are not modified
    # init and seed do not affect the initial parameters when params are given
    other = kernels.train(X, y, params=given, **base_kw("minibatch", 5, dtype, epochs=3, init="he", seed=7))
    for a, b in zip(res.initial_params["weights"], other.initial_params["weights"]):
        assert np.array_equal(a, b)
    # nested lists (the serialised form) are accepted too
    as_lists = {k: [a.tolist() for a in v] for k, v in given.items()}
    assert_same_bits(res, kernels.train(X, y, params=as_lists, **kw))
    # and training continues from them exactly like the reference
    want = ref.train(X, y, params=given, **kw)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == "float64" else dict(rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res.errors, want.errors, **tol)


def test_returned_params_are_independent_of_the_run():
    X, y = problem()
    res = kernels.train(X, y, **base_kw("minibatch", 5, "float64", epochs=2))
    again = kernels.train(X, y, **base_kw("minibatch", 5, "float64", epochs=2))
    res.params["weights"][0][...] = 0.0
    res.initial_params["weights"][0][...] = 0.0
    assert not np.all(again.params["weights"][0] == 0.0)


@pytest.mark.parametrize("batch_mode,shuffle", [("minibatch", True), ("full", False)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("stop_after", [1, 3])
def test_callback_stops_early(stop_after, dtype, batch_mode, shuffle, monkeypatch):
    X, y = problem()
    monkeypatch.setattr(kernels.knobs, "CHUNK_SECONDS", 0.0)
    calls = []

    def callback(progress):
        calls.append(progress.epochs_done)
        return len(calls) >= stop_after

    kw = base_kw(batch_mode, 5, dtype, epochs=50, shuffle=shuffle)
    res = kernels.train(X, y, callback=callback, **kw)
    assert res.stopped is True
    assert not res.diverged
    assert len(calls) == stop_after
    assert res.epochs_done == calls[-1] < 50
    assert len(res.errors) == res.epochs_done + 1
    assert len(res.accuracy) == res.epochs_done + 1
    # the stopped run is the prefix of the full run
    full = kernels.train(X, y, **kw)
    assert np.array_equal(res.errors, full.errors[: res.epochs_done + 1])
    short = kernels.train(X, y, **base_kw(batch_mode, 5, dtype, epochs=res.epochs_done,
                                          shuffle=shuffle))
    assert_same_bits(res, short)
    assert not short.stopped


def test_callback_true_with_default_chunking_stops():
    X, y = problem()
    res = kernels.train(X, y, callback=lambda p: True, **base_kw("sgd", 1, "float64", epochs=100_000))
    assert res.stopped and 1 <= res.epochs_done < 100_000
    assert len(res.errors) == res.epochs_done + 1


def test_no_callback_not_stopped():
    X, y = problem()
    res = kernels.train(X, y, **base_kw("full", 1, "float64", epochs=3))
    assert res.stopped is False and res.diverged is False and res.epochs_done == 3


def test_thread_limits_set_after_import_reach_every_blas_the_kernels_use():
    """Reproducing a worker means one BLAS thread: a ``threadpool_limits`` set after
    ``import kernels`` must cover the BLAS numba's np.dot calls (SciPy's, not NumPy's), so
    training must not load a BLAS library that was not there at import."""
    import subprocess
    import sys

    script = """
import numpy as np
from threadpoolctl import threadpool_info
import kernels
before = {lib["filepath"] for lib in threadpool_info() if lib["user_api"] == "blas"}
X = np.random.default_rng(0).normal(size=(256, 64))
kernels.train(X, X[:, :8], layers=[64, 64, 8], batch_mode="full", epochs=1)
after = {lib["filepath"] for lib in threadpool_info() if lib["user_api"] == "blas"}
assert after <= before, sorted(after - before)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

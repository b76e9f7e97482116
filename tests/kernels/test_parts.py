"""Batches split in parts (``kernels.train(threads=T)``, kernels.parallel): the reference's
numbers to rounding, the same bits however the epochs are chunked, checkpointed or spread
over cores, the interpreted engine's bits, and one thread unchanged."""

import contextlib
import importlib.metadata
import multiprocessing
import os
import platform
import sys
import threading

import numpy as np
import pytest

import kernels
import kernels.training
from kernels import knobs, parallel
from tests import reference as ref
from tests.kernels.test_interpreted import _assert_same_bits

pytestmark = pytest.mark.slow  # the parallel loop compiles once per dtype (~10 s cold)


@pytest.fixture(autouse=True)
def split_every_batch(monkeypatch):
    """Tiny test networks split like large ones."""
    monkeypatch.setattr(knobs, "PARALLEL_MIN", 0)
    monkeypatch.setattr(knobs, "PARALLEL_MIN_ROWS", 0)


def _problem(n=23, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    return X, rng.integers(0, 3, size=n)


BASE = dict(layers=[4, 6, 3], activation="tanh", output_activation="softmax",
            loss="cross_entropy", learning_rate=0.2, epochs=5, seed=1)
CASES = {
    "sgd-minibatch": dict(batch_mode="minibatch", batch_size=7),
    "sgd-full-in-order": dict(batch_mode="full", shuffle=False),
    "momentum-decay-shuffled": dict(batch_mode="minibatch", batch_size=5, optimizer="momentum",
                                    weight_decay=0.01),
    "adam-clip": dict(batch_mode="minibatch", batch_size=8, optimizer="adam", clip_norm=0.3,
                      learning_rate=0.02),
    "adamw-full-eval-every": dict(batch_mode="full", shuffle=False, optimizer="adamw",
                                  weight_decay=0.1, learning_rate=0.05, eval_every=2),
    "nesterov-plateau": dict(batch_mode="full", shuffle=False, optimizer="nesterov",
                             learning_rate=0.05,
                             stop_on_plateau={"metric": "error", "patience": 1,
                                              "min_delta": 0.05}),
}


def _train(X, y, threads=2, **kw):
    return kernels.train(X, y, threads=threads, validation=(X[:9], y[:9]), **{**BASE, **kw})


# knobs.SHARES_MAX_ROWS: the first layer's gradients summed by shares of its units in every
# batch, stored per part in every batch, or each way by the batch (parts of 4 rows per part,
# then 1 in the last batch of 23 rows at batch_size 7 or 8).
FIRST_LAYER = {"by-shares": 1 << 40, "per-part": 0, "by-batch": 3}


@pytest.fixture(params=sorted(FIRST_LAYER))
def first_layer(request, monkeypatch):
    monkeypatch.setattr(knobs, "SHARES_MAX_ROWS", FIRST_LAYER[request.param])
    return request.param


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_parts_match_the_reference(case, threads, first_layer):
    """Each part's gradients summed: the batch's gradient to rounding (a part may be empty:
    3 parts of a last batch of 2 rows), however the first layer's are summed."""
    X, y = _problem()
    got = _train(X, y, threads=threads, **CASES[case])
    want = ref.train(X, y, validation=(X[:9], y[:9]), **{**BASE, **CASES[case]})
    assert got.epochs_done == want.epochs_done and got.stop_reason == want.stop_reason
    np.testing.assert_allclose(got.errors, want.errors, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.val_errors, want.val_errors, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(got.accuracy, want.accuracy)
    for key in ("weights", "biases"):
        for a, b in zip(got.params[key], want.params[key]):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("case", sorted(CASES))
def test_chunks_and_checkpoints_do_not_change_the_bits(monkeypatch, case):
    """One epoch per jitted call, and checkpoints (evaluated off eval_every's schedule): the
    Python-side evaluations split the set as the kernel's do."""
    X, y = _problem()
    whole = _train(X, y, **CASES[case])
    monkeypatch.setattr(knobs, "CHUNK_SECONDS", 0.0)
    chunked = _train(X, y, checkpoints=[1, 3], **CASES[case])
    if CASES[case].get("eval_every", 1) == 1:
        _assert_same_bits(whole, chunked)
    else:  # the checkpoints add rows; the parameters and the scheduled rows are the same
        for key in ("weights", "biases"):
            for a, b in zip(whole.params[key], chunked.params[key]):
                assert np.array_equal(a, b)
        rows = np.isin(chunked.epochs_evaluated, whole.epochs_evaluated)
        assert np.array_equal(whole.errors, chunked.errors[rows])


def test_the_number_of_cores_does_not_change_the_bits(monkeypatch):
    """Parts run on one numba thread or on two: the same sums in the same order."""
    X, y = _problem(40)
    two = _train(X, y, **CASES["adam-clip"])
    one_thread = parallel.parallel_call

    @contextlib.contextmanager
    def on_one_thread(parts):
        with one_thread(1):
            yield

    monkeypatch.setattr(kernels.training, "parallel_call", on_one_thread)
    _assert_same_bits(two, _train(X, y, **CASES["adam-clip"]))


@pytest.mark.parametrize("case", ["sgd-full-in-order", "adam-clip", "momentum-decay-shuffled"])
def test_the_interpreted_engine_gives_the_same_bits(case, first_layer):
    X, y = _problem()
    _assert_same_bits(_train(X, y, **CASES[case]),
                      _train(X, y, engine="python", **CASES[case]))


def test_float32_parts_are_close_to_float64():
    X, y = _problem()
    got = _train(X, y, dtype="float32", **CASES["sgd-minibatch"])
    want = _train(X, y, **CASES["sgd-minibatch"])
    assert got.params["weights"][0].dtype == np.float32
    np.testing.assert_allclose(got.errors, want.errors, rtol=1e-4)


def test_one_thread_is_the_unsplit_run():
    """threads=1 (and None) train in one part, as before threads existed; BLAS threads are
    the caller's to set: one for a split run."""
    X, y = _problem()
    _assert_same_bits(kernels.train(X, y, **BASE), kernels.train(X, y, threads=1, **BASE))
    shape = dict(layers=BASE["layers"], batch_mode="minibatch", batch_size=7, rows=len(X))
    assert kernels.blas_threads_for(2, **shape) == 1  # split (PARALLEL_MIN is 0 here)
    assert kernels.blas_threads_for(1, **shape) == 1
    assert kernels.blas_threads_for(3, **{**shape, "batch_mode": "sgd"}) == 3  # one row


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_parts_run_on_tbb_where_it_is_a_dependency():
    """The tbb threading layer (a parallel region starts ~100x sooner than on numba's
    workqueue) wherever the package declares tbb, unless NUMBA_THREADING_LAYER says."""
    import numba

    X, y = _problem()
    _train(X, y, **CASES["sgd-minibatch"])
    if sys.platform == "linux" and platform.machine() == "x86_64":
        assert _installed("tbb")
    expected = os.environ.get("NUMBA_THREADING_LAYER") or (
        "tbb" if _installed("tbb") else "workqueue")
    assert numba.threading_layer() == expected


def test_the_first_layer_way_follows_the_parts_size(monkeypatch):
    """Both ways sum the same products in part order (to rounding: BLAS accumulates the
    shares' products into one output); which one runs depends on the parts' rows only."""
    monkeypatch.setattr(knobs, "BLAS_MIN", 1)
    X, y = _problem(64)
    kw = dict(CASES["sgd-minibatch"], batch_size=32)
    runs = {}
    for name in ("by-shares", "per-part"):
        monkeypatch.setattr(knobs, "SHARES_MAX_ROWS", FIRST_LAYER[name])
        runs[name] = _train(X, y, **kw)
    np.testing.assert_allclose(runs["by-shares"].errors, runs["per-part"].errors, rtol=1e-12)
    monkeypatch.setattr(knobs, "SHARES_MAX_ROWS", 16)  # parts of 16 rows: by shares
    _assert_same_bits(runs["by-shares"], _train(X, y, **kw))
    monkeypatch.setattr(knobs, "SHARES_MAX_ROWS", 15)
    _assert_same_bits(runs["per-part"], _train(X, y, **kw))


def _train_in_child(queue):
    X, y = _problem(40)
    result = _train(X, y, **CASES["sgd-minibatch"])
    queue.put(result)


def test_a_forked_child_trains_in_parts_after_its_parent_did():
    """Celery's prefork pool forks worker processes from a parent that may have trained
    (GNU OpenMP's layer would abort the child): the child's split run has the parent's bits."""
    X, y = _problem(40)
    here = _train(X, y, **CASES["sgd-minibatch"])
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_train_in_child, args=(queue,))
    child.start()
    there = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    _assert_same_bits(here, there)


def test_runs_in_threads_of_one_process_take_turns():
    """numba's workqueue pool aborts the process when two threads launch it at once; the
    launches are serialised, and each run gets its own bits."""
    X, y = _problem(60)
    alone = _train(X, y, **CASES["sgd-minibatch"])
    results, errors = [], []

    def run():
        try:
            results.append(_train(X, y, **CASES["sgd-minibatch"]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors and len(results) == 4
    for result in results:
        _assert_same_bits(alone, result)


def test_which_runs_are_split(monkeypatch):
    monkeypatch.setattr(knobs, "PARALLEL_MIN", 1000)
    sizes = [10, 10, 10]  # 200 weights
    assert parallel.batch_parts(None, 64, sizes) == 1
    assert parallel.batch_parts(1, 64, sizes) == 1
    assert parallel.batch_parts(2, 64, sizes) == 2  # 32 rows x 200 >= 1000
    assert parallel.batch_parts(4, 20, sizes) == 4  # 5 rows x 200
    assert parallel.batch_parts(2, 8, sizes) == 1  # 4 rows x 200 < 1000
    assert parallel.batch_parts(4, 3, sizes) == 1  # fewer rows than threads
    monkeypatch.setattr(knobs, "PARALLEL_MIN_ROWS", 6)
    assert parallel.batch_parts(4, 20, sizes) == 1  # 5 rows a part < 6
    assert parallel.batch_parts(4, 24, sizes) == 4  # 6 rows x 200


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, parallel.MAX_THREADS + 1])
def test_bad_thread_counts_are_named(bad):
    X, y = _problem()
    with pytest.raises(ValueError, match="threads"):
        kernels.train(X, y, threads=bad, **BASE)


@pytest.mark.parametrize("case", ["sgd-minibatch", "adam-clip", "momentum-decay-shuffled"])
def test_blas_products_in_parts_match_the_reference_and_the_interpreted_engine(
        monkeypatch, case, first_layer):
    """Every product through BLAS: each part's, and the first layer's shares summed over
    the parts (into the parameters themselves with plain sgd) or its per-part gradients."""
    monkeypatch.setattr(knobs, "BLAS_MIN", 1)
    X, y = _problem()
    got = _train(X, y, **CASES[case])
    want = ref.train(X, y, validation=(X[:9], y[:9]), **{**BASE, **CASES[case]})
    np.testing.assert_allclose(got.errors, want.errors, rtol=1e-12, atol=1e-14)
    for key in ("weights", "biases"):
        for a, b in zip(got.params[key], want.params[key]):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    _assert_same_bits(got, _train(X, y, engine="python", **CASES[case]))


def test_a_network_without_hidden_layers_splits_too():
    X, y = _problem()
    kw = dict(BASE, layers=[4, 3], batch_mode="minibatch", batch_size=7)
    got = kernels.train(X, y, threads=2, **kw)
    want = ref.train(X, y, **kw)
    np.testing.assert_allclose(got.errors, want.errors, rtol=1e-12, atol=1e-14)

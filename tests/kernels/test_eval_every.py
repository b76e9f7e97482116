"""``eval_every`` (API.md section 1, History): the whole-set evaluation runs only at epochs
0, k, 2k, ... and the last one; the history holds those rows, numbered by
``epochs_evaluated``. Checked against the independent reference (tests/reference.py) and
against the same run with eval_every 1: the same rows at those epochs, the same parameters."""

import numpy as np
import pytest

import kernels
import kernels.knobs
from tests import reference as ref
from tests.kernels.test_optimizers import TOL, assert_same_params, plateau_problem

BATCH_MODES = [("sgd", True), ("minibatch", True), ("full", True), ("full", False)]


def problem():
    """A 3-class problem with validation rows (the plateau tests' own)."""
    X, y, base = plateau_problem()
    return X, y, dict(base, optimizer="adam", learning_rate=0.05, batch_size=5, seed=3)


def assert_rows_of(every, full):
    """``every``'s history rows are ``full``'s (an eval_every 1 run) at its epochs."""
    ep = every.epochs_evaluated
    assert ep.dtype == np.int64 and list(ep) == sorted(set(ep.tolist()))
    for name in ("errors", "accuracy", "val_errors", "val_accuracy"):
        a, b = getattr(every, name), getattr(full, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(a, b[ep], err_msg=name)


def assert_matches_reference(res, want, dtype):
    np.testing.assert_array_equal(res.epochs_evaluated, want.epochs_evaluated)
    for name in ("errors", "accuracy", "val_errors", "val_accuracy"):
        np.testing.assert_allclose(getattr(res, name), getattr(want, name), **TOL[dtype])
    for key in ("weights", "biases"):
        for a, b in zip(res.params[key], want.params[key]):
            np.testing.assert_allclose(a, b, **TOL[dtype])
    assert (res.epochs_done, res.diverged, res.stop_reason, res.best_epoch) == (
        want.epochs_done, want.diverged, want.stop_reason, want.best_epoch)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_mode,shuffle", BATCH_MODES)
def test_evaluated_rows_are_those_of_every_epoch(batch_mode, shuffle, dtype):
    X, y, base = problem()
    kw = dict(base, batch_mode=batch_mode, shuffle=shuffle, epochs=11, dtype=dtype)
    full = kernels.train(X, y, **kw)
    every = kernels.train(X, y, eval_every=4, **kw)
    assert list(every.epochs_evaluated) == [0, 4, 8, 11]
    assert list(full.epochs_evaluated) == list(range(12))
    assert_rows_of(every, full)
    assert_same_params(every.params, full.params)
    assert every.epochs_done == 11 and not every.diverged
    assert_matches_reference(every, ref.train(X, y, eval_every=4, **kw), dtype)


@pytest.mark.parametrize("k,expected", [(1, list(range(6))), (5, [0, 5]), (6, [0, 5]),
                                         (2**70, [0, 5]), (3, [0, 3, 5])])
def test_schedule_includes_zero_and_the_last_epoch(k, expected):
    X, y, base = problem()
    res = kernels.train(X, y, epochs=5, eval_every=k, **base)
    assert list(res.epochs_evaluated) == expected
    assert len(res.errors) == len(res.val_errors) == len(expected)


def test_no_epochs_evaluates_epoch_zero():
    X, y, base = problem()
    res = kernels.train(X, y, epochs=0, eval_every=3, **base)
    assert list(res.epochs_evaluated) == [0] and res.epochs_done == 0


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_bad_eval_every_names_the_argument(bad):
    X, y, base = problem()
    with pytest.raises(ValueError, match=r"^eval_every: "):
        kernels.train(X, y, epochs=3, eval_every=bad, **base)


@pytest.mark.parametrize("batch_mode,shuffle", BATCH_MODES)
def test_chunks_callbacks_and_checkpoints_do_not_change_the_numbers(batch_mode, shuffle,
                                                                 monkeypatch):
    """One epoch per chunk: every Progress reports its evaluated epochs once, in order, and a
    checkpoint off the schedule adds its own row (the rows of the schedule stay the same)."""
    X, y, base = problem()
    kw = dict(base, batch_mode=batch_mode, shuffle=shuffle, epochs=10, eval_every=3)
    whole = kernels.train(X, y, **kw)
    monkeypatch.setattr(kernels.knobs, "CHUNK_SECONDS", 0.0)
    seen = []
    res = kernels.train(X, y, callback=seen.append, checkpoints=[5], **kw)
    reported = np.concatenate([p.epochs_evaluated for p in seen])
    assert list(reported) == list(res.epochs_evaluated) == [0, 3, 5, 6, 9, 10]
    errors = np.concatenate([p.errors for p in seen])
    np.testing.assert_array_equal(errors, res.errors)
    at_5 = [p for p in seen if p.epochs_done == 5]
    assert at_5 and at_5[0].epochs_evaluated[-1] == 5  # the checkpoint sees its own numbers
    assert_rows_of(res, kernels.train(X, y, **dict(kw, eval_every=1)))
    keep = np.isin(res.epochs_evaluated, whole.epochs_evaluated)
    np.testing.assert_array_equal(res.errors[keep], whole.errors)
    assert_same_params(res.params, whole.params)


@pytest.mark.parametrize("batch_mode,shuffle", BATCH_MODES)
def test_a_stop_evaluates_the_last_epoch_run(batch_mode, shuffle, monkeypatch):
    X, y, base = problem()
    kw = dict(base, batch_mode=batch_mode, shuffle=shuffle, epochs=20, eval_every=4)
    monkeypatch.setattr(kernels.knobs, "CHUNK_SECONDS", 0.0)
    res = kernels.train(X, y, callback=lambda p: p.epochs_done >= 6, **kw)
    assert res.stopped and res.epochs_done == 6
    assert list(res.epochs_evaluated) == [0, 4, 6]
    assert_rows_of(res, kernels.train(X, y, **dict(kw, epochs=20, eval_every=1)))
    assert_same_params(res.params, kernels.train(X, y, **dict(kw, epochs=6)).params)


PLATEAU_CASES = [("val_error", 2, 0.0, 3), ("val_error", 4, 0.001, 2), ("error", 2, 0.02, 3),
                 ("error", 5, 0.005, 4)]


@pytest.mark.parametrize("batch_mode,shuffle",
                         [("minibatch", True), ("full", False), ("full", True), ("sgd", False)])
@pytest.mark.parametrize("restore_best", [True, False])
@pytest.mark.parametrize("metric,patience,min_delta,k", PLATEAU_CASES)
def test_plateau_is_judged_at_evaluations(metric, patience, min_delta, k, restore_best, batch_mode,
                                          shuffle):
    """Patience counts epochs; the rule is applied at the evaluated epochs only, so the run
    stops at the first evaluated epoch ``patience`` or more epochs after the best one."""
    X, y, base = plateau_problem()
    stop = {"metric": metric, "patience": patience, "min_delta": min_delta,
            "restore_best": restore_best}
    kw = dict(base, optimizer="adam", learning_rate=0.05, batch_mode=batch_mode, batch_size=5,
              shuffle=shuffle, seed=3, epochs=150, eval_every=k, stop_on_plateau=stop)
    res, want = kernels.train(X, y, **kw), ref.train(X, y, **kw)
    assert want.stop_reason == "plateau" and want.epochs_done < 150
    assert_matches_reference(res, want, "float64")
    assert res.epochs_done % k == 0 and res.best_epoch % k == 0
    assert res.epochs_done - res.best_epoch >= patience
    assert res.epochs_done - res.best_epoch < patience + k
    full = kernels.train(X, y, **dict(kw, eval_every=1, stop_on_plateau=None, epochs=150))
    assert_rows_of(res, full)
    at = kernels.train(X, y, **dict(kw, stop_on_plateau=None,
                                     epochs=res.best_epoch if restore_best else res.epochs_done))
    assert_same_params(res.params, at.params)


@pytest.mark.parametrize("batch_mode,shuffle", BATCH_MODES)
def test_divergence_is_found_at_the_next_evaluation(batch_mode, shuffle):
    X, y, base = problem()
    kw = dict(base, optimizer="sgd", learning_rate=1e6, loss="mse", batch_mode=batch_mode,
              shuffle=shuffle, epochs=40, activation="relu", output_activation="linear")
    full = kernels.train(X, y, **kw)
    assert full.diverged
    res = kernels.train(X, y, eval_every=7, **kw)
    want = ref.train(X, y, eval_every=7, **kw)
    assert res.diverged and want.diverged
    assert res.epochs_done == want.epochs_done == 7 * -(-full.epochs_done // 7)
    np.testing.assert_array_equal(res.epochs_evaluated, want.epochs_evaluated)
    assert not np.isfinite(res.errors[-1]) and np.isfinite(res.errors[:-1]).all()

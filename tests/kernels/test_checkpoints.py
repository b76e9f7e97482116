"""kernels.train(checkpoints=...): chunks end exactly at the given epochs, results unchanged."""

import numpy as np
import pytest

import kernels
import kernels.knobs

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
Y = np.array([0, 1, 1, 0])
CHECKPOINTS = [10, 30, 90, 270]


@pytest.mark.parametrize("batch_mode, shuffle", [("full", False), ("full", True),
                                                 ("minibatch", True), ("sgd", False)])
def test_chunks_end_at_checkpoints_and_history_is_unchanged(batch_mode, shuffle):
    ends, rows = [], []

    def callback(progress):
        ends.append(progress.first_epoch + len(progress.errors) - 1)
        rows.extend(progress.errors)
        return False

    spec = dict(layers=[2, 4, 1], epochs=300, batch_mode=batch_mode, batch_size=2,
                shuffle=shuffle)
    result = kernels.train(X, Y, callback=callback, checkpoints=CHECKPOINTS, **spec)
    plain = kernels.train(X, Y, **spec)
    assert set(CHECKPOINTS) <= set(ends)
    assert np.array_equal(result.errors, plain.errors)
    assert np.array_equal(rows, plain.errors[:len(rows)])


def test_a_callback_can_stop_exactly_at_a_checkpoint():
    result = kernels.train(X, Y, layers=[2, 4, 1], epochs=300, batch_mode="full",
                           shuffle=False, checkpoints=[30],
                           callback=lambda p: p.first_epoch + len(p.errors) - 1 >= 30)
    assert result.stopped and result.epochs_done == 30 and len(result.errors) == 31


@pytest.mark.parametrize("bad", [["a"], [0], 5])
def test_bad_checkpoints_are_a_value_error(bad):
    with pytest.raises(ValueError, match="checkpoints"):
        kernels.train(X, Y, layers=[2, 4, 1], epochs=5, checkpoints=bad)


@pytest.mark.parametrize("metric", ["error", "val_error"])
@pytest.mark.parametrize("batch_mode, shuffle", [("full", False), ("minibatch", True)])
def test_plateau_stop_is_the_same_with_checkpoints_and_one_epoch_chunks(metric, batch_mode,
                                                                       shuffle, monkeypatch):
    """Full batches in order record an epoch's error in the next step's forward pass; the
    plateau rule must judge each epoch once, with that epoch's parameters, however the
    epochs are split into chunks."""
    rng = np.random.default_rng(3)
    Xt, yt = rng.normal(size=(40, 2)), rng.integers(0, 2, 40)
    spec = dict(layers=[2, 6, 1], epochs=400, batch_mode=batch_mode, batch_size=8,
                shuffle=shuffle, learning_rate=2.0, optimizer="momentum",
                validation=(Xt[:10], yt[:10]),
                stop_on_plateau=dict(metric=metric, patience=3, min_delta=1e-4))
    plain = kernels.train(Xt, yt, **spec)
    assert plain.stop_reason == "plateau" and plain.epochs_done < 400
    checkpoints = [plain.epochs_done - 1, plain.epochs_done, plain.best_epoch + 1]
    monkeypatch.setattr(kernels.knobs, "CHUNK_SECONDS", 0.0)
    for kw in (dict(checkpoints=checkpoints, callback=lambda p: False), {}):
        split = kernels.train(Xt, yt, **spec, **kw)
        assert (split.epochs_done, split.stop_reason, split.best_epoch) == (
            plain.epochs_done, plain.stop_reason, plain.best_epoch)
        assert np.array_equal(split.errors, plain.errors)
        assert np.array_equal(split.val_errors, plain.val_errors)
        for key in ("weights", "biases"):
            for a, b in zip(split.params[key], plain.params[key]):
                assert np.array_equal(a, b)

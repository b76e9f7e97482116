"""kernels.train(checkpoints=...): chunks end exactly at the given epochs, results unchanged."""

import numpy as np
import pytest

import kernels

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

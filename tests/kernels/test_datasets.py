"""Tests of kernels.datasets: the built-in datasets."""

import numpy as np
import pytest
import sklearn.datasets

from kernels.datasets import BUILTIN_DATASETS, dataset_info, load_dataset

GENERATED = ("xor", "circles", "moons", "spirals")
SHIPPED = ("iris", "digits")

# name -> (n_samples, n_features, n_classes) with default arguments
EXPECTED_SHAPES = {
    "xor": (4, 2, 2),
    "circles": (200, 2, 2),
    "moons": (200, 2, 2),
    "spirals": (300, 2, 3),
    "iris": (150, 4, 3),
    "digits": (1797, 64, 10),
}


def test_builtin_names():
    assert BUILTIN_DATASETS == ("xor", "circles", "moons", "spirals", "iris", "digits")
    assert set(EXPECTED_SHAPES) == set(BUILTIN_DATASETS)


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_shapes_dtypes_and_labels(name):
    n, d, k = EXPECTED_SHAPES[name]
    X, y = load_dataset(name)
    assert X.shape == (n, d)
    assert X.dtype == np.float64
    assert X.flags.c_contiguous
    assert X.flags.writeable
    assert np.all(np.isfinite(X))
    assert y.shape == (n,)
    assert y.dtype == np.int64
    assert set(np.unique(y).tolist()) == set(range(k))


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_dataset_info_matches_data(name):
    info = dataset_info(name)
    X, y = load_dataset(name)
    assert info["name"] == name
    assert info["n_samples"] == X.shape[0]
    assert info["n_features"] == X.shape[1]
    assert info["n_classes"] == len(np.unique(y))
    assert isinstance(info["description"], str) and info["description"]
    assert info["generated"] == (name in GENERATED)
    info["n_samples"] = -1  # a fresh dict each call
    assert dataset_info(name)["n_samples"] == X.shape[0]


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_same_seed_is_bit_identical(name):
    X1, y1 = load_dataset(name, seed=7)
    X2, y2 = load_dataset(name, seed=7)
    assert X1.tobytes() == X2.tobytes()
    assert y1.tobytes() == y2.tobytes()


@pytest.mark.parametrize("name", ["circles", "moons", "spirals"])
def test_different_seeds_differ(name):
    X0, y0 = load_dataset(name, seed=0)
    X1, y1 = load_dataset(name, seed=1)
    assert not np.array_equal(X0, X1)
    assert not np.array_equal(y0, y1)  # shuffled differently


def test_xor_noise_depends_on_seed():
    X0, y0 = load_dataset("xor", seed=0, noise=0.1)
    X1, y1 = load_dataset("xor", seed=1, noise=0.1)
    assert not np.array_equal(X0, X1)
    assert np.array_equal(y0, y1)
    assert np.max(np.abs(X0 - load_dataset("xor")[0])) < 1.0


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_ignore_seed(name):
    X0, y0 = load_dataset(name, seed=0)
    X1, y1 = load_dataset(name, seed=123)
    assert np.array_equal(X0, X1) and np.array_equal(y0, y1)


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_returned_arrays_are_independent_copies(name):
    X, y = load_dataset(name)
    X[...] = -5.0
    y[...] = -5
    X2, y2 = load_dataset(name)
    assert not np.any(X2 == -5.0)
    assert not np.any(y2 == -5)


def test_xor_is_the_truth_table():
    X, y = load_dataset("xor")
    np.testing.assert_array_equal(X, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1, 1, 0])
    np.testing.assert_array_equal(y, np.logical_xor(X[:, 0], X[:, 1]).astype(np.int64))
    X0, _ = load_dataset("xor", noise=0.0, seed=5)
    np.testing.assert_array_equal(X0, X)
    Xn, yn = load_dataset("xor", n_samples=4)
    np.testing.assert_array_equal(Xn, X)


def test_circles_radius_separates_classes():
    X, y = load_dataset("circles", noise=0.0)
    r = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(r[y == 0], 1.0)
    np.testing.assert_allclose(r[y == 1], 0.5)
    assert np.sum(y == 0) == np.sum(y == 1) == 100
    # default noise: the classes still separate by radius (almost surely)
    X, y = load_dataset("circles")
    r = np.hypot(X[:, 0], X[:, 1])
    assert r[y == 1].max() < r[y == 0].min()
    # both classes are centred on the origin: no straight line separates them
    for c in (0, 1):
        assert np.all(np.abs(X[y == c].mean(axis=0)) < 0.1)


def test_moons_shape_and_not_linearly_trivial():
    X, y = load_dataset("moons", noise=0.0)
    upper, lower = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0)
    assert upper[:, 1].min() >= -1e-12 and lower[:, 1].max() <= 0.5 + 1e-12
    # interleaving: each moon's x range overlaps the other's centre
    assert upper[:, 0].max() > 1.0 - 1e-12 and lower[:, 0].min() < 1e-12
    # least-squares linear classifier does not reach 100%
    Xn, yn = load_dataset("moons")
    A = np.column_stack([Xn, np.ones(len(Xn))])
    w, *_ = np.linalg.lstsq(A, 2.0 * yn - 1.0, rcond=None)
    acc = np.mean((A @ w > 0) == (yn == 1))
    assert 0.7 < acc < 1.0


def test_spirals_classes_and_radius():
    X, y = load_dataset("spirals", noise=0.0)
    assert np.bincount(y).tolist() == [100, 100, 100]
    r = np.hypot(X[:, 0], X[:, 1])
    assert r.max() <= 1.0 + 1e-12 and r.min() >= 0.0
    X, y = load_dataset("spirals", n_samples=31)
    assert np.bincount(y).tolist() == [11, 10, 10]


def test_generated_are_shuffled():
    for name in ("circles", "moons", "spirals"):
        _, y = load_dataset(name)
        # classes are mixed: not sorted, and the first 20 contain more than one class
        assert np.any(np.diff(y) < 0)
        assert len(np.unique(y[:20])) > 1


@pytest.mark.parametrize("name", ["circles", "moons", "spirals"])
@pytest.mark.parametrize("n", [3, 7, 50, 201])
def test_n_samples(name, n):
    X, y = load_dataset(name, n_samples=n, seed=3)
    assert X.shape == (n, 2) and y.shape == (n,)
    counts = np.bincount(y)
    assert counts.max() - counts.min() <= 1


def test_noise_scales_spread():
    X0, y0 = load_dataset("circles", noise=0.0)
    X1, y1 = load_dataset("circles", noise=0.3)
    r0 = np.hypot(X0[:, 0], X0[:, 1])
    r1 = np.hypot(X1[:, 0], X1[:, 1])
    assert np.std(r1[y1 == 0]) > np.std(r0[y0 == 0]) + 0.1


def test_digits_raw_pixels():
    X, y = load_dataset("digits")
    assert X.min() == 0.0 and X.max() == 16.0
    np.testing.assert_array_equal(X, np.round(X))
    assert np.bincount(y).min() >= 170


def test_iris_values():
    X, y = load_dataset("iris")
    assert np.bincount(y).tolist() == [50, 50, 50]
    np.testing.assert_array_equal(X[0], [5.1, 3.5, 1.4, 0.2])
    np.testing.assert_array_equal(X[-1], [5.9, 3.0, 5.1, 1.8])


def test_shipped_equal_scikit_learn_copies():
    for name, loader in (("iris", sklearn.datasets.load_iris),
                         ("digits", sklearn.datasets.load_digits)):
        ref = loader()
        X, y = load_dataset(name)
        np.testing.assert_array_equal(X, ref.data)
        np.testing.assert_array_equal(y, ref.target)


# ----------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("bad", ["foo", "XOR", "", None, 3])
def test_unknown_name(bad):
    with pytest.raises(ValueError, match=r"^name: unknown dataset .*; expected one of "):
        load_dataset(bad)
    with pytest.raises(ValueError, match=r"^name: "):
        dataset_info(bad)


def test_unknown_name_message():
    with pytest.raises(ValueError) as exc:
        load_dataset("foo")
    msg = str(exc.value)
    assert msg.startswith("name: unknown dataset 'foo'; expected one of ")
    for name in BUILTIN_DATASETS:
        assert repr(name) in msg


@pytest.mark.parametrize("name, n", [
    ("circles", 0), ("circles", -5), ("circles", 1), ("moons", 1), ("spirals", 2),
    ("circles", 2.5), ("moons", "100"), ("spirals", True), ("circles", 100.0),
    ("xor", 8), ("xor", 0), ("iris", 150), ("digits", 10),
])
def test_bad_n_samples(name, n):
    with pytest.raises(ValueError, match=r"^n_samples: "):
        load_dataset(name, n_samples=n)


@pytest.mark.parametrize("name, noise", [
    ("circles", -0.1), ("moons", float("nan")), ("spirals", float("inf")), ("xor", "0.1"),
    ("iris", 0.1), ("digits", 0.0),
])
def test_bad_noise(name, noise):
    with pytest.raises(ValueError, match=r"^noise: "):
        load_dataset(name, noise=noise)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None, True])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=r"^seed: "):
        load_dataset("moons", seed=seed)


def test_numpy_integer_arguments_accepted():
    X, y = load_dataset("moons", seed=np.int64(2), n_samples=np.int32(10), noise=np.float32(0.0))
    X2, y2 = load_dataset("moons", seed=2, n_samples=10, noise=0.0)
    assert X.tobytes() == X2.tobytes() and y.tobytes() == y2.tobytes()


def test_does_not_import_sklearn_at_run_time():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, kernels.datasets as d\n"
        "for n in d.BUILTIN_DATASETS: d.load_dataset(n)\n"
        "assert not any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)

"""Built-in datasets of Descent.

Four small synthetic problems are generated with numpy (``xor``, ``circles``,
``moons``, ``spirals``) and two real ones are read from compressed ``.npz``
files shipped in ``kernels/data/`` (``iris``, ``digits``; see the README there for
their sources and licences). Nothing is downloaded and scikit-learn is not used
at run time.

Every loader returns ``(X, y)``: ``X`` a C-contiguous float64 array of shape
``(n, d)`` and ``y`` a 1-D int64 array of class labels ``0..n_classes-1``. The
same name, seed and arguments always give bit-identical arrays.
"""

from __future__ import annotations

import functools
import math
import numbers
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["BUILTIN_DATASETS", "load_dataset", "dataset_info"]

BUILTIN_DATASETS: tuple[str, ...] = ("xor", "circles", "moons", "spirals", "iris", "digits")

# name -> (default n_samples, default noise); only for the generated datasets.
# xor has a fixed size (n_samples is rejected) and no noise by default.
_GENERATED_DEFAULTS: dict[str, tuple[int | None, float | None]] = {
    "xor": (None, None),
    "circles": (200, 0.05),
    "moons": (200, 0.1),
    "spirals": (300, 0.2),
}

_INFO: dict[str, dict] = {
    "xor": {
        "n_samples": 4,
        "n_features": 2,
        "n_classes": 2,
        "description": "The XOR truth table: points (0,0), (0,1), (1,0), (1,1) with labels "
        "0, 1, 1, 0. Fixed size; optional Gaussian noise on the coordinates.",
    },
    "circles": {
        "n_samples": 200,
        "n_features": 2,
        "n_classes": 2,
        "description": "Two concentric circles (radius 1 -> class 0, radius 0.5 -> class 1) "
        "with Gaussian noise of standard deviation 0.05 by default.",
    },
    "moons": {
        "n_samples": 200,
        "n_features": 2,
        "n_classes": 2,
        "description": "Two interleaving half circles (upper moon class 0, lower moon "
        "class 1) with Gaussian noise of standard deviation 0.1 by default.",
    },
    "spirals": {
        "n_samples": 300,
        "n_features": 2,
        "n_classes": 3,
        "description": "Three interleaved spiral arms (CS231n spiral), one class per arm; "
        "Gaussian noise of standard deviation 0.2 on the angle by default.",
    },
    "iris": {
        "n_samples": 150,
        "n_features": 4,
        "n_classes": 3,
        "description": "Fisher's Iris (UCI): sepal length/width and petal length/width in "
        "cm; classes setosa, versicolor, virginica (scikit-learn's copy).",
    },
    "digits": {
        "n_samples": 1797,
        "n_features": 64,
        "n_classes": 10,
        "description": "Optical recognition of handwritten digits (UCI): 8x8 images "
        "flattened row by row, raw pixel counts 0..16 as float; classes 0..9 "
        "(scikit-learn's copy).",
    },
}


def _check_name(name) -> str:
    if not isinstance(name, str) or name not in BUILTIN_DATASETS:
        expected = ", ".join(repr(n) for n in BUILTIN_DATASETS)
        raise ValueError(f"name: unknown dataset {name!r}; expected one of {expected}")
    return name


def dataset_info(name: str) -> dict:
    """Return a new dict describing dataset ``name``.

    Keys: ``name``, ``n_samples`` (the default size for generated datasets),
    ``n_features``, ``n_classes``, ``generated`` (True when made by a seeded
    generator) and ``description``. Raises ``ValueError`` for an unknown name.
    """
    name = _check_name(name)
    info = {"name": name, **_INFO[name], "generated": name in _GENERATED_DEFAULTS}
    if name in _GENERATED_DEFAULTS:
        info["default_noise"] = _GENERATED_DEFAULTS[name][1]
    return info


def load_dataset(name: str, *, seed: int = 0, n_samples: int | None = None,
                 noise: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(X, y)`` for built-in dataset ``name``.

    ``X`` is a C-contiguous float64 array of shape ``(n, d)``, ``y`` a 1-D int64
    array of class labels. ``seed`` (an int >= 0) drives
    ``numpy.random.default_rng`` for the generated datasets; the same arguments
    give bit-identical arrays. ``n_samples`` and ``noise`` (``None``: the
    dataset's default) apply to the generated datasets only:

    - ``xor``: always the 4 truth-table points in the order (0,0), (0,1), (1,0),
      (1,1); ``n_samples`` is rejected (unless 4); ``noise`` (default none) adds
      Gaussian jitter with that standard deviation.
    - ``circles``/``moons``: ``n_samples >= 2`` (default 200), split as evenly as
      possible with the extra sample in class 1; shuffled by the same rng.
    - ``spirals``: ``n_samples >= 3`` (default 300), classes sizes differ by at
      most one; shuffled by the same rng.
    - ``iris``/``digits``: fixed data in the published order; passing
      ``n_samples`` or ``noise`` raises ``ValueError``.

    Bad arguments raise ``ValueError`` whose message starts with the argument's
    name.
    """
    name = _check_name(name)
    seed = _check_seed(seed)

    if name in ("iris", "digits"):
        if n_samples is not None:
            raise ValueError(f"n_samples: must be None for the fixed dataset {name!r}; "
                             f"got {n_samples!r}")
        if noise is not None:
            raise ValueError(f"noise: must be None for the fixed dataset {name!r}; "
                             f"got {noise!r}")
        X, y = _load_shipped(name)
        return X.copy(), y.copy()

    default_n, default_noise = _GENERATED_DEFAULTS[name]
    noise = default_noise if noise is None else _check_noise(noise)

    if name == "xor":
        if n_samples is not None and _check_n_samples(n_samples, 1) != 4:
            raise ValueError(f"n_samples: xor has exactly 4 points; got {n_samples!r}")
        X, y = _xor(seed, noise)
    else:
        min_n = 3 if name == "spirals" else 2
        n = default_n if n_samples is None else _check_n_samples(n_samples, min_n)
        rng = np.random.default_rng(seed)
        if name == "circles":
            X, y = _circles(rng, n, noise)
        elif name == "moons":
            X, y = _moons(rng, n, noise)
        else:
            X, y = _spirals(rng, n, noise)
        order = rng.permutation(n)
        X, y = X[order], y[order]
    return np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(y, dtype=np.int64)


# ----------------------------------------------------------------------------- checks


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: must be an integer >= 0; got {seed!r}")
    return int(seed)


def _check_n_samples(n_samples, minimum: int) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
        raise ValueError(f"n_samples: must be an integer or None; got {n_samples!r}")
    if n_samples < minimum:
        raise ValueError(f"n_samples: must be >= {minimum}; got {n_samples!r}")
    return int(n_samples)


def _check_noise(noise) -> float:
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise ValueError(f"noise: must be a real number >= 0 or None; got {noise!r}")
    value = float(noise)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"noise: must be finite and >= 0; got {noise!r}")
    return value


# ------------------------------------------------------------------------- generators


def _xor(seed: int, noise: float | None):
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    if noise:
        X = X + np.random.default_rng(seed).normal(0.0, noise, X.shape)
    return X, y


def _circles(rng: np.random.Generator, n: int, noise: float):
    """Like sklearn's make_circles(factor=0.5): outer circle class 0, inner class 1."""
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, 2.0 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0.0, 2.0 * np.pi, n_in, endpoint=False)
    X = np.concatenate([
        np.column_stack([np.cos(t_out), np.sin(t_out)]),
        0.5 * np.column_stack([np.cos(t_in), np.sin(t_in)]),
    ])
    y = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    if noise:
        X = X + rng.normal(0.0, noise, X.shape)
    return X, y


def _moons(rng: np.random.Generator, n: int, noise: float):
    """Like sklearn's make_moons: upper moon class 0, lower (shifted) moon class 1."""
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, np.pi, n_out)
    t_in = np.linspace(0.0, np.pi, n_in)
    X = np.concatenate([
        np.column_stack([np.cos(t_out), np.sin(t_out)]),
        np.column_stack([1.0 - np.cos(t_in), 0.5 - np.sin(t_in)]),
    ])
    y = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    if noise:
        X = X + rng.normal(0.0, noise, X.shape)
    return X, y


def _spirals(rng: np.random.Generator, n: int, noise: float, n_classes: int = 3):
    """The CS231n spiral: arm k has radius 0..1 and angle 4k..4(k+1) plus noise."""
    Xs, ys = [], []
    for k in range(n_classes):
        m = n // n_classes + (1 if k < n % n_classes else 0)
        r = np.linspace(0.0, 1.0, m)
        t = np.linspace(4.0 * k, 4.0 * (k + 1), m)
        if noise:
            t = t + rng.normal(0.0, noise, m)
        Xs.append(np.column_stack([r * np.sin(t), r * np.cos(t)]))
        ys.append(np.full(m, k, dtype=np.int64))
    return np.concatenate(Xs), np.concatenate(ys)


# ----------------------------------------------------------------------- shipped data


def _data_dir():
    if __package__:
        try:
            return resources.files(__package__) / "data"
        except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual imports
            pass
    return Path(__file__).resolve().parent / "data"


@functools.lru_cache(maxsize=None)
def _load_shipped(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Read kernels/data/<name>.npz once; the cached arrays are read-only."""
    with (_data_dir() / f"{name}.npz").open("rb") as fh:
        with np.load(fh, allow_pickle=False) as npz:
            X = np.ascontiguousarray(npz["X"], dtype=np.float64)
            y = np.ascontiguousarray(npz["y"], dtype=np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y

"""Datasets: which one a name or id means to a user, uploads checked and stored, and a
dataset's summary."""

import csv
import io

import numpy as np
from sqlalchemy.exc import IntegrityError

import kernels
from service.errors import Conflict, Invalid, NotFound
from service.store import Dataset
from service.store import datasets as store_datasets

# Largest id the datasets table (INTEGER) can hold; larger ids name no dataset.
MAX_DATASET_ID = 2**31 - 1
# The datasets every user can name before anyone stored them.
BUILTIN_NAMES = tuple(kernels.BUILTIN_DATASETS)


def resolve_dataset(session, ref, owner: str, create_builtin: bool = True):
    """A dataset of ``owner`` or a public one (built-in), by id or name; the owner's own
    name shadows a public one. Another user's dataset is None, like a missing one. A
    built-in is stored the first time it is named. Every use case that names a dataset goes
    through here."""
    if (isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit())) \
            and not 0 < int(ref) <= MAX_DATASET_ID:
        return None
    dataset = store_datasets.find_dataset(session, ref, owner=owner)
    if dataset is None and create_builtin and ref in kernels.BUILTIN_DATASETS:
        X, y = kernels.load_dataset(ref)
        dataset = store_datasets.add_dataset_once(session, ref, X, y, builtin=True)
        session.commit()
    return dataset


def visible_dataset(session, ref, owner: str) -> Dataset:
    """The dataset ``ref`` (id or name) as ``owner`` sees it (resolve_dataset); NotFound
    for another user's dataset, the same as for a missing one."""
    dataset = resolve_dataset(session, ref, owner)
    if dataset is None:
        raise NotFound(f"no dataset {ref!r}")
    return dataset


def add_dataset(session, name: str, X, y, owner: str, limits) -> Dataset:
    """Store an upload of ``owner`` under ``name`` once its arrays pass ``checked_arrays``;
    Conflict ("name_taken") when the owner has a dataset of that name or it is a built-in's.
    Commits."""
    X, y = checked_arrays(X, y, limits)
    # Names are per user; a stored public dataset's name may be taken (and shadowed).
    if name in kernels.BUILTIN_DATASETS or store_datasets.find_own_dataset(session, name, owner):
        raise _name_taken(name)
    try:
        dataset = store_datasets.add_dataset(session, name, X, y, owner=owner)
        session.commit()
    except IntegrityError:  # uploaded by someone else since the check above
        session.rollback()
        raise _name_taken(name) from None
    return dataset


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a dataset named {name!r} exists", {"name": "already taken"},
                    code="name_taken")


def summary(dataset: Dataset) -> dict:
    """Per-feature mean, standard deviation, minimum and maximum of X, and the samples per
    class of a labelled dataset."""
    X, y = store_datasets.dataset_arrays(dataset)
    stats = {"X_mean": X.mean(axis=0).tolist(), "X_std": X.std(axis=0).tolist(),
             "X_min": X.min(axis=0).tolist(), "X_max": X.max(axis=0).tolist()}
    if dataset.target_kind == "labels":
        stats["class_counts"] = np.bincount(y).tolist()
    return stats


# ------------------------------------------------------------------------- uploads


def _bad(field: str, message: str) -> Invalid:
    return Invalid({field: message})


def checked_arrays(X, y, limits) -> tuple[np.ndarray, np.ndarray]:
    """X as 2-D float64 and y as int labels or floats, within the rows and columns of
    ``limits``; Invalid naming X or y (NaN, infinities, ragged rows, non-numbers, labels out
    of range, empty data, different lengths)."""
    if isinstance(X, np.ndarray) and X.dtype.kind not in "biuf":
        raise _bad("X", f"expected numbers, got an array of {X.dtype}")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise _bad("X", "rows must all have the same number of numbers") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise _bad("X", "expected a non-empty 2-D array (rows of features)")
    if X.shape[0] > limits.max_samples:
        raise _bad("X", f"{X.shape[0]} rows; the limit is {limits.max_samples}")
    if X.shape[1] > limits.max_features:
        raise _bad("X", f"{X.shape[1]} columns; the limit is {limits.max_features}")
    if not np.isfinite(X).all():
        raise _bad("X", "contains NaN or infinity")
    try:
        y = np.asarray(y)
    except (TypeError, ValueError):  # ragged
        y = np.empty(0, dtype=object)
    if y.dtype == object or y.ndim not in (1, 2):
        raise _bad("y", "expected a list of numbers (labels or values) or of rows")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if y.dtype.kind not in "iuf":
        raise _bad("y", f"expected numbers, got {y.dtype}")
    if y.shape[0] != X.shape[0]:
        raise _bad("y", f"has {y.shape[0]} rows but X has {X.shape[0]}")
    if y.ndim == 2 and not 0 < y.shape[1] <= limits.max_width:
        raise _bad("y", f"target rows need 1 to {limits.max_width} values")
    if y.dtype.kind in "iu":
        if y.ndim != 1:
            y = y.astype(np.float64)
        elif y.min() < 0:
            raise _bad("y", "class labels must be >= 0")
        elif y.max() >= limits.max_width:
            # n_classes outputs: a label no network within the limits can have.
            raise _bad("y", f"class labels must be below {limits.max_width} (the widest "
                            f"layer allowed); got {y.max()}")
        else:
            y = y.astype(np.int64)
    if y.dtype.kind == "f":
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise _bad("y", "contains NaN or infinity")
    return np.ascontiguousarray(X), np.ascontiguousarray(y)


def parse_csv(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of numbers, the last column being y (a header row is skipped)."""
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline=""))
                if row and any(c.strip() for c in row)]
    except csv.Error as exc:  # a stray carriage return or NUL, an unclosed quote
        raise Invalid({"file": f"not a CSV file: {exc}"}) from None
    if rows:
        try:
            [float(c) for c in rows[0]]
        except ValueError:
            rows = rows[1:]  # header
    if not rows:
        raise Invalid({"file": "no data rows"})
    try:
        table = np.array([[float(c) for c in row] for row in rows])
    except ValueError as exc:
        raise Invalid({"file": f"not a table of numbers: {exc}"}) from None
    if table.ndim != 2 or table.shape[1] < 2:
        raise Invalid({"file": "expected at least two columns (features..., target)"})
    y = table[:, -1]
    # Whole numbers are class labels (not infinities, nor ones too large for int64).
    if np.isfinite(y).all() and np.all(y == np.round(y)) and np.abs(y).max() < 2**53:
        y = y.astype(np.int64)
    return table[:, :-1], y


def parse_npz(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Arrays X and y of an NPZ file."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if "X" not in npz.files or "y" not in npz.files:
                raise Invalid({"file": "an NPZ upload needs arrays named X and y"})
            return npz["X"], npz["y"]
    except Invalid:
        raise
    except Exception as exc:
        raise Invalid({"file": f"not a readable NPZ file: {exc}"}) from None

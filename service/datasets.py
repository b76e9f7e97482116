"""Datasets: which one a name or id means to a user, uploads checked and stored, and a
dataset's summary."""

import array
import csv
import io

import numpy as np
from sqlalchemy.exc import IntegrityError

import kernels
from service import npzheaders
from service.errors import Conflict, Invalid, NotFound
from service.quotas import check_quotas
from service.store import Dataset
from service.store import datasets as store_datasets

# Largest id the datasets table (INTEGER) can hold; larger ids name no dataset.
MAX_DATASET_ID = 2**31 - 1
# The datasets every user can name before anyone stored them.
BUILTIN_NAMES = tuple(kernels.BUILTIN_DATASETS)


def _plausible_id(ref) -> bool:
    """False for an id (an int or a string of ASCII digits) no dataset can have; True for
    names and ids in range. Long digit strings are refused by length before ``int()``, which
    raises past 4300 digits."""
    if isinstance(ref, str) and ref.isascii() and ref.isdigit():
        return len(ref) <= len(str(MAX_DATASET_ID)) and 0 < int(ref) <= MAX_DATASET_ID
    if isinstance(ref, int):
        return 0 < ref <= MAX_DATASET_ID
    return True


def resolve_dataset(session, ref, owner: str, create_builtin: bool = True):
    """A dataset of ``owner`` or a public one (built-in), by id or name; the owner's own
    name shadows a public one. Another user's dataset is None, like a missing one. A
    built-in is stored the first time it is named. Every use case that names a dataset goes
    through here."""
    if not _plausible_id(ref):
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
        check_quotas(session, owner, limits)  # the upload, flushed, counts
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


# Characters a CSV row may have per column it may hold: room for any float's repr, spaces
# and quotes. A longer row is refused before the csv module splits it.
MAX_CSV_CELL_CHARS = 64


def parse_csv(stream, limits) -> tuple[np.ndarray, np.ndarray]:
    """Rows of numbers of the binary ``stream``, the last column being y (a header row is
    skipped), read one row at a time: refused (X) at the first row past
    ``limits.max_samples`` or past ``limits.max_features`` + 1 columns, before the rest is
    read."""
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
    try:
        return _csv_table(text, limits)
    finally:
        text.detach()  # the caller owns the stream


def _csv_table(text, limits) -> tuple[np.ndarray, np.ndarray]:
    reader = csv.reader(_bounded_lines(text, limits.max_features + 1))
    values = array.array("d")  # 8 bytes a number, where a list of floats costs 32
    n_rows = n_columns = 0
    first = True
    try:
        for row in reader:
            if n_columns == 0 or len(row) != n_columns:  # no row yet, a blank or a ragged one
                if not any(c.strip() for c in row):
                    continue
                if n_columns == 0:
                    if first and not _numbers(row):  # a header
                        first = False
                        continue
                    n_columns = _columns(row, limits)
                else:
                    raise Invalid({"file": f"line {reader.line_num} has {len(row)} values; "
                                           f"the first row has {n_columns}"})
            if n_rows == limits.max_samples and any(c.strip() for c in row):
                raise _bad("X", f"more than {n_rows} rows; the limit is {limits.max_samples}")
            try:
                # (a failing row is blank or refused: a blank one fails at its first value,
                # before anything of it is added)
                values.extend(map(float, row))
            except ValueError as exc:
                if not any(c.strip() for c in row):
                    continue
                raise Invalid({"file": f"not a table of numbers: {exc} (line "
                                       f"{reader.line_num})"}) from None
            n_rows += 1
    except csv.Error as exc:  # a stray carriage return or NUL, an unclosed quote
        raise Invalid({"file": f"not a CSV file: {exc}"}) from None
    if n_rows == 0:
        raise Invalid({"file": "no data rows"})
    table = np.frombuffer(values, dtype=np.float64).reshape(n_rows, n_columns)
    y = table[:, -1]
    # Whole numbers are class labels (not infinities, nor ones too large for int64).
    if np.isfinite(y).all() and np.all(y == np.round(y)) and np.abs(y).max() < 2**53:
        y = y.astype(np.int64)
    return table[:, :-1], y


def _columns(row: list, limits) -> int:
    """The columns of the first data row; Invalid when they are too few or too many."""
    if len(row) < 2:
        raise Invalid({"file": "expected at least two columns (features..., target)"})
    if len(row) - 1 > limits.max_features:
        raise _bad("X", f"{len(row) - 1} columns; the limit is {limits.max_features}")
    return len(row)


def _numbers(row: list) -> bool:
    """Whether every value of ``row`` is a number (else it is a header)."""
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


def _bounded_lines(text, max_columns: int):
    """The lines of ``text``, refusing one longer than MAX_CSV_CELL_CHARS per column of
    ``max_columns`` before it is read whole (the csv module would hold each of its values as
    a string)."""
    max_chars = MAX_CSV_CELL_CHARS * max_columns
    readline = text.readline
    while line := readline(max_chars + 2):  # + a line break of up to two characters
        if len(line) > max_chars and len(line.rstrip("\r\n")) > max_chars:
            raise Invalid({"file": f"a line is longer than {max_chars} characters "
                                   f"({MAX_CSV_CELL_CHARS} a column, for at most "
                                   f"{max_columns} columns)"})
        yield line


def parse_npz(stream, limits) -> tuple[np.ndarray, np.ndarray]:
    """Arrays X and y of the NPZ file in the seekable binary ``stream``, their shapes and
    dtypes checked against ``limits`` from their .npy headers before either is unpacked
    (``service.npzheaders``)."""
    with npzheaders.open_npz(stream) as archive:
        X = npzheaders.array_header(archive, "X")
        y = npzheaders.array_header(archive, "y")
        check_npz_headers(X, y, limits)
        return npzheaders.read_array(archive, X), npzheaders.read_array(archive, y)


def check_npz_headers(X, y, limits) -> None:
    """The checks of ``checked_arrays`` that shapes and dtypes alone decide, on the headers
    of X and y, and their size unpacked (as 8-byte numbers at least, what they become)
    within ``limits.max_upload_bytes``."""
    if X.dtype.kind not in "biuf":
        raise _bad("X", f"expected numbers, got an array of {X.dtype}")
    if len(X.shape) != 2 or 0 in X.shape:
        raise _bad("X", "expected a non-empty 2-D array (rows of features)")
    if X.shape[0] > limits.max_samples:
        raise _bad("X", f"{X.shape[0]} rows; the limit is {limits.max_samples}")
    if X.shape[1] > limits.max_features:
        raise _bad("X", f"{X.shape[1]} columns; the limit is {limits.max_features}")
    if y.dtype.kind not in "biuf":
        raise _bad("y", f"expected numbers, got an array of {y.dtype}")
    if len(y.shape) not in (1, 2):
        raise _bad("y", "expected a list of numbers (labels or values) or of rows")
    if y.shape[0] != X.shape[0]:
        raise _bad("y", f"has {y.shape[0]} rows but X has {X.shape[0]}")
    if len(y.shape) == 2 and not 0 < y.shape[1] <= limits.max_width:
        raise _bad("y", f"target rows need 1 to {limits.max_width} values")
    unpacked = sum(a.count * max(a.dtype.itemsize, 8) for a in (X, y))
    if unpacked > limits.max_upload_bytes:
        raise Invalid({"file": f"X and y unpack to {unpacked} bytes (as 8-byte numbers); the "
                               f"limit is {limits.max_upload_bytes} "
                               f"(DESCENT_MAX_UPLOAD_BYTES)"})


def delete_dataset(session, ref, owner: str) -> None:
    """Delete ``owner``'s dataset ``ref`` (id or name), which frees its bytes from their
    quota; commits. NotFound as for any use of a dataset; Conflict "builtin_dataset" for a
    built-in (everyone's), "in_use" naming how many runs refer to it (delete them first)."""
    dataset = resolve_dataset(session, ref, owner, create_builtin=False)
    if dataset is None and ref not in BUILTIN_NAMES:
        raise NotFound(f"no dataset {ref!r}")
    if dataset is None or dataset.owner is None:
        raise Conflict(f"dataset {ref!r} is built in and shared by every user; it cannot be "
                       "deleted", code="builtin_dataset")
    label = f"dataset {dataset.name!r} (id {dataset.id})"
    used = store_datasets.runs_using(session, dataset.id)
    if used:
        raise Conflict(f"{label} is used by {used} run{'s' if used != 1 else ''}; delete "
                       f"{'them' if used != 1 else 'it'} first",
                       {"runs": f"{used} run{'s use' if used != 1 else ' uses'} this dataset"},
                       code="in_use")
    try:
        store_datasets.delete_dataset(session, dataset.id)
        session.commit()
    except IntegrityError:  # a run of it was stored since the count
        session.rollback()
        raise Conflict(f"{label} is used by a run submitted just now; delete it first",
                       code="in_use") from None

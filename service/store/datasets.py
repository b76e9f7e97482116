"""Stored datasets: X and y with their shape, kind of target and content hash."""

from typing import Optional

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .arrays import content_hash, from_npz, to_npz
from .models import Dataset


def describe_targets(y: np.ndarray) -> tuple[str, int, Optional[int]]:
    """(target_kind, n_targets, n_classes) of a target array."""
    if y.ndim == 2:
        return "matrix", int(y.shape[1]), None
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return "labels", 1, int(y.max()) + 1 if y.size else 0
    return "values", 1, None


def add_dataset(session: Session, name: str, X: np.ndarray, y: np.ndarray,
                builtin: bool = False) -> Dataset:
    """Store a dataset under a new name (the caller commits)."""
    kind, n_targets, n_classes = describe_targets(y)
    dataset = Dataset(
        name=name,
        n_samples=int(X.shape[0]),
        n_features=int(X.shape[1]),
        target_kind=kind,
        n_targets=n_targets,
        n_classes=n_classes,
        content_hash=content_hash(X, y),
        builtin=builtin,
        data=to_npz(X=X, y=y),
    )
    session.add(dataset)
    session.flush()
    return dataset


def find_dataset(session: Session, ref) -> Optional[Dataset]:
    """A dataset by id (an int or a string of digits) or by name."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        return session.get(Dataset, int(ref))
    return session.scalar(select(Dataset).where(Dataset.name == ref))


def add_dataset_once(session: Session, name: str, X: np.ndarray, y: np.ndarray,
                     builtin: bool = False) -> Dataset:
    """Store a dataset unless one of that name exists (safe against a concurrent insert)."""
    existing = find_dataset(session, name)
    if existing is not None:
        return existing
    try:
        with session.begin_nested():
            return add_dataset(session, name, X, y, builtin=builtin)
    except IntegrityError:  # another process stored it first
        return find_dataset(session, name)


def dataset_arrays(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a stored dataset."""
    return dataset_arrays_from(dataset.data)


def dataset_arrays_from(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a stored dataset's ``data`` blob."""
    arrays = from_npz(data)
    return arrays["X"], arrays["y"]


def list_datasets(session: Session) -> list[Dataset]:
    """Every stored dataset, oldest first."""
    return list(session.scalars(select(Dataset).order_by(Dataset.id)))

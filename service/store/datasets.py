"""Stored datasets: X and y with their shape, kind of target and content hash."""

from typing import Optional

import numpy as np
from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .arrays import content_hash, from_npz, to_npz
from .models import Dataset, Run


def describe_targets(y: np.ndarray) -> tuple[str, int, Optional[int]]:
    """(target_kind, n_targets, n_classes) of a target array."""
    if y.ndim == 2:
        return "matrix", int(y.shape[1]), None
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return "labels", 1, int(y.max()) + 1 if y.size else 0
    return "values", 1, None


def max_abs(*arrays: np.ndarray) -> float:
    """The largest absolute value in ``arrays`` (without a copy of any of them)."""
    return max((max(float(a.max()), -float(a.min())) for a in arrays if a.size), default=0.0)


def add_dataset(session: Session, name: str, X: np.ndarray, y: np.ndarray,
                builtin: bool = False, owner: Optional[str] = None) -> Dataset:
    """Store a dataset under a name new to ``owner`` (None: a public, built-in dataset;
    the caller commits)."""
    kind, n_targets, n_classes = describe_targets(y)
    data = to_npz(X=X, y=y)
    dataset = Dataset(
        name=name,
        n_samples=int(X.shape[0]),
        n_features=int(X.shape[1]),
        target_kind=kind,
        n_targets=n_targets,
        n_classes=n_classes,
        content_hash=content_hash(X, y),
        builtin=builtin,
        owner=owner,
        data=data,
        n_bytes=len(data),
        max_abs=max_abs(X, y),
    )
    session.add(dataset)
    session.flush()
    return dataset


def visible_to(owner: Optional[str]):
    """WHERE clause of the datasets ``owner`` may use: their own and the public ones (no
    owner); only the public ones when ``owner`` is None."""
    public = Dataset.owner.is_(None)
    return public if owner is None else or_(Dataset.owner == owner, public)


def find_dataset(session: Session, ref, owner: Optional[str] = None) -> Optional[Dataset]:
    """A dataset visible to ``owner`` (see ``visible_to``) by id (an int or a string of
    digits) or by name; the owner's own dataset shadows a public one of the same name."""
    # (isascii: str.isdigit also accepts digits like '²' that int() rejects)
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
        dataset = session.get(Dataset, int(ref))
        return dataset if dataset is not None and dataset.owner in (None, owner) else None
    return session.scalar(select(Dataset).where(Dataset.name == ref, visible_to(owner))
                          .order_by(Dataset.owner.is_(None)).limit(1))


def find_own_dataset(session: Session, name: str, owner: Optional[str]) -> Optional[Dataset]:
    """``owner``'s own dataset called ``name`` (a public one when ``owner`` is None)."""
    mine = Dataset.owner.is_(None) if owner is None else Dataset.owner == owner
    return session.scalar(select(Dataset).where(Dataset.name == name, mine))


def add_dataset_once(session: Session, name: str, X: np.ndarray, y: np.ndarray,
                     builtin: bool = False) -> Dataset:
    """Store a public dataset unless one of that name exists (safe against a concurrent
    insert)."""
    existing = find_own_dataset(session, name, None)
    if existing is not None:
        return existing
    try:
        with session.begin_nested():
            return add_dataset(session, name, X, y, builtin=builtin)
    except IntegrityError:  # another process stored it first
        return find_own_dataset(session, name, None)


def dataset_arrays(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a stored dataset."""
    return dataset_arrays_from(dataset.data)


def dataset_arrays_from(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of a stored dataset's ``data`` blob."""
    arrays = from_npz(data)
    return arrays["X"], arrays["y"]


def list_datasets(session: Session, owner: Optional[str] = None) -> list[Dataset]:
    """The stored datasets visible to ``owner`` (see ``visible_to``), oldest first."""
    return list(session.scalars(select(Dataset).where(visible_to(owner)).order_by(Dataset.id)))


def runs_using(session: Session, dataset_id: int) -> int:
    """How many runs (anyone's, sweep cells included) refer to the dataset."""
    return session.scalar(select(func.count()).select_from(Run)
                          .where(Run.dataset_id == dataset_id))


def delete_dataset(session: Session, dataset_id: int) -> None:
    """Delete a dataset no run refers to (the caller commits; a run stored meanwhile makes
    the delete or its commit raise IntegrityError: runs.dataset_id is a foreign key)."""
    session.execute(delete(Dataset).where(Dataset.id == dataset_id))

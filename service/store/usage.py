"""What a user's work and data occupy in the store: the bytes a run may store (reserved when
it is submitted, settled to what it stored when it ends), each user's sums that the quotas
compare with their limits, and the lock that keeps two submits from counting at once."""

import zlib
from typing import Optional

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from .models import Dataset, Run

ACTIVE = ("queued", "running")
# One history row (an epoch) with its primary-key entry: 116 bytes measured on PostgreSQL
# 16 (pg_total_relation_size over 200,000 rows with every metric), 73 on SQLite.
HISTORY_ROW_BYTES = 120
# One array of an uncompressed NPZ (params_to_npz) besides its data: the .npy header and the
# zip entry's headers (242 bytes measured for W1).
NPZ_ARRAY_BYTES = 256
# The key space of the per-user advisory locks on PostgreSQL (the first of its two keys).
QUOTA_LOCK_CLASS = 0x7155


def param_count(layers) -> int:
    """Weights and biases of a network of ``layers`` sizes."""
    return sum(a * b + b for a, b in zip(layers[:-1], layers[1:]))


def param_bytes(layers, dtype: str) -> int:
    """Bytes a run stores for its initial and final parameters (two NPZ blobs of W and B per
    layer, in the run's dtype)."""
    per_blob = (param_count(layers) * np.dtype(dtype).itemsize
                + 2 * (len(layers) - 1) * NPZ_ARRAY_BYTES)
    return 2 * per_blob


def history_rows(epochs: int, eval_every: int = 1) -> int:
    """The most history rows a run of ``epochs`` stores: epoch 0, then every ``eval_every``-th
    epoch and the last one; with ``eval_every`` > 1 also a row at each rung of successive
    halving (at most one per doubling of the epochs) and one where a cancel stopped it."""
    if eval_every <= 1:
        return epochs + 1
    return min(epochs + 1, epochs // eval_every + 3 + epochs.bit_length())


def history_bytes(epochs: int, eval_every: int = 1) -> int:
    """Bytes of a run's history at most (``history_rows``)."""
    return history_rows(epochs, eval_every) * HISTORY_ROW_BYTES


def run_bytes(spec: dict) -> int:
    """The most a run of ``spec`` stores: its parameters and its history (float64 when the
    spec names no dtype)."""
    return (param_bytes(spec["layers"], spec.get("dtype", "float64"))
            + history_bytes(spec["epochs"], spec.get("eval_every", 1)))


def settled_bytes(params: Optional[dict], history_rows_stored: int) -> int:
    """What a run that ended stored: its parameter blobs (``{which: (dtype, bytes)}``) and
    ``history_rows_stored`` history rows."""
    return (sum(len(data) for _, data in (params or {}).values())
            + history_rows_stored * HISTORY_ROW_BYTES)


def lock_owner(session: Session, owner: str) -> None:
    """Serialise quota checks of ``owner`` until this transaction ends. On PostgreSQL a
    transaction-level advisory lock on the user's name: a second submit waits here and then
    counts what the first one committed. SQLite needs nothing: every transaction begins
    IMMEDIATE (service.store.db), so writers already take turns."""
    if session.bind.dialect.name == "postgresql":
        key = zlib.crc32(owner.encode()) - 2**31  # a signed int4
        session.execute(text("SELECT pg_advisory_xact_lock(:cls, :key)"),
                        {"cls": QUOTA_LOCK_CLASS, "key": key})


def active_runs(session: Session, owner: str) -> int:
    """``owner``'s runs queued or running (a sweep's waiting cells included)."""
    return session.scalar(select(func.count()).select_from(Run)
                          .where(Run.owner == owner, Run.status.in_(ACTIVE)))


def stored_bytes(session: Session, owner: str) -> int:
    """Bytes ``owner`` stores or has reserved: their datasets, and every run's parameters
    and history (reserved while it may still train, what it stored once it ended, nothing
    once cancelled before it started). The runs' sum is read from the index on (owner,
    status, stored_bytes)."""
    runs = session.scalar(select(func.coalesce(func.sum(Run.stored_bytes), 0))
                          .where(Run.owner == owner))
    data = session.scalar(select(func.coalesce(func.sum(Dataset.n_bytes), 0))
                          .where(Dataset.owner == owner))
    return int(runs) + int(data)

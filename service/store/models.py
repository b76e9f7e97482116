"""SQLAlchemy models: datasets, runs, their per-epoch history and their parameters."""

import os
from datetime import datetime, timedelta, timezone
from typing import Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names, so migrations name the same things on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RUN_STATES = ("queued", "running", "succeeded", "failed", "diverged", "cancelled", "stopped_early")
FINAL_STATES = ("succeeded", "failed", "diverged", "cancelled", "stopped_early")


# TEST ONLY: shifts this process's wall clock (``utcnow``) by this many seconds, to show
# that a host whose clock is off changes nothing the reaper judges, since those times are
# the database's (service.store.clock; tests/workers/test_clock_skew.py). Never set it in a
# deployment.
CLOCK_OFFSET = timedelta(seconds=float(os.environ.get("DESCENT_TEST_CLOCK_OFFSET_SECONDS")
                                       or 0))


def utcnow() -> datetime:
    """This host's current time, timezone-aware in UTC (for record only: what decides
    whether a worker is alive is written and judged on the database's clock)."""
    return datetime.now(timezone.utc) + CLOCK_OFFSET


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Dataset(Base):
    """Training data: X and y as one NPZ blob, with its shape and a content hash."""

    __tablename__ = "datasets"
    __table_args__ = (
        # Names are per owner; built-in datasets have no owner and are everyone's.
        UniqueConstraint("owner", "name", name="uq_datasets_owner_name"),
        # NULLs are distinct in a unique constraint: built-in names need their own index.
        Index("uq_datasets_public_name", "name", unique=True,
              sqlite_where=text("owner IS NULL"), postgresql_where=text("owner IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    owner: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    n_samples: Mapped[int] = mapped_column(Integer)
    n_features: Mapped[int] = mapped_column(Integer)
    # "labels" (1-D integer classes), "values" (1-D floats) or "matrix" (2-D floats)
    target_kind: Mapped[str] = mapped_column(String(16))
    n_targets: Mapped[int] = mapped_column(Integer)  # columns of a matrix target, else 1
    n_classes: Mapped[Optional[int]] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Bytes of ``data`` (what the dataset costs its owner's quota).
    n_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The largest |value| of X and y (a float32 run needs it within float32's range);
    # NULL only for data no one could read when the column was added.
    max_abs: Mapped[Optional[float]] = mapped_column(Float)
    # Deferred: loaded on first access, not with every run that refers to the dataset.
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# Run columns with an (column, id) index for sorting and range filters (GET /runs).
RUN_QUERY_INDEXES = ("created_at", "finished_at", "learning_rate", "batch_size", "epochs",
                     "final_error", "best_error", "final_accuracy", "best_epoch")
# The optimizers a run may name (kernels.OPTIMIZERS; the store imports nothing of kernels).
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
# Why a run ended before its last epoch although nothing went wrong (Run.stop_reason).
STOP_REASONS = ("plateau",)


class Run(Base):
    """One training job: its spec, state and summary of results."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_status_id", "status", "id"),
        Index("ix_runs_dataset_id_id", "dataset_id", "id"),
        # Keyset pages of GET /runs sorted by these columns (ties broken by id), and range
        # filters on them; see RUN_QUERY_INDEXES (migration 0002).
        *(Index(f"ix_runs_{column}_id", column, "id") for column in RUN_QUERY_INDEXES),
        Index("ix_runs_owner_id", "owner", "id"),
        # The reaper's scans: running runs by heartbeat, queued runs never sent.
        Index("ix_runs_status_heartbeat_at", "status", "heartbeat_at"),
        # The per-user quotas, from the index alone: a user's active runs, and the sum of
        # their runs' stored bytes.
        Index("ix_runs_owner_status_stored_bytes", "owner", "status", "stored_bytes"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    name: Mapped[Optional[str]] = mapped_column(String(200))
    spec: Mapped[dict] = mapped_column(JSON)
    # JSONB on PostgreSQL: tag equality is containment (@>), which the planner estimates
    # from the column's statistics (GET /runs picks the sort index when it should).
    tags: Mapped[dict] = mapped_column(JSON().with_variant(JSONB(), "postgresql"),
                                       default=dict)
    # The user whose token created the run (NULL: created before tokens existed).
    owner: Mapped[Optional[str]] = mapped_column(String(200))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    sweep_id: Mapped[Optional[int]] = mapped_column(
        ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # Spec fields people filter and sort on, copied out of the JSON.
    learning_rate: Mapped[float] = mapped_column(Float)
    batch_mode: Mapped[str] = mapped_column(String(16))
    # "sgd" for runs stored before optimizers existed (migration 0006).
    optimizer: Mapped[str] = mapped_column(String(16), default="sgd", server_default="sgd")
    batch_size: Mapped[int] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    # When the run's task message was last handed to the broker (NULL: never, e.g. a sweep
    # cell waiting for a slot, or a send that failed); the reaper sends runs left unsent.
    enqueued_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    worker: Mapped[Optional[str]] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error_message: Mapped[Optional[str]] = mapped_column(Text)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    final_error: Mapped[Optional[float]] = mapped_column(Float)
    best_error: Mapped[Optional[float]] = mapped_column(Float)
    # The epoch of best_error; with stop_on_plateau, the epoch whose plateau metric was best
    # (the one restore_best keeps the parameters of).
    best_epoch: Mapped[Optional[int]] = mapped_column(Integer)
    # "plateau" when stop_on_plateau ended the run before its last epoch, else NULL.
    stop_reason: Mapped[Optional[str]] = mapped_column(String(16))
    final_accuracy: Mapped[Optional[float]] = mapped_column(Float)
    final_val_error: Mapped[Optional[float]] = mapped_column(Float)
    # The bytes of parameters and history the run may store (service.store.usage), reserved
    # when it is submitted and settled to what it stored when it ends.
    stored_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Where the run trained (workers.environment), written by the worker that claims it;
    # deferred: read by the pages of one run, not by every list of runs.
    environment: Mapped[Optional[dict]] = mapped_column(JSON, deferred=True)
    # The run this one reruns (same spec, seed and dataset); NULL once that run is deleted.
    rerun_of: Mapped[Optional[int]] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("runs.id", ondelete="SET NULL"), index=True)

    dataset: Mapped[Dataset] = relationship(lazy="joined")


class Epoch(Base):
    """One row of a run's history; non-finite errors are stored as NULL."""

    __tablename__ = "epochs"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    error: Mapped[Optional[float]] = mapped_column(Float)
    accuracy: Mapped[Optional[float]] = mapped_column(Float)
    val_error: Mapped[Optional[float]] = mapped_column(Float)
    val_accuracy: Mapped[Optional[float]] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)


class Params(Base):
    """A run's initial or final parameters as an NPZ blob (W1, B1, W2, B2, ...)."""

    __tablename__ = "params"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    which: Mapped[str] = mapped_column(String(8), primary_key=True)  # "initial" | "final"
    dtype: Mapped[str] = mapped_column(String(8))
    data: Mapped[bytes] = mapped_column(LargeBinary)


SWEEP_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class Sweep(Base):
    """A hyperparameter sweep: a base run spec and a search space, expanded into runs."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[Optional[str]] = mapped_column(String(200))
    owner: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    base: Mapped[dict] = mapped_column(JSON)
    space: Mapped[dict] = mapped_column(JSON)
    kind: Mapped[str] = mapped_column(String(8))  # "grid" | "random"
    trials: Mapped[Optional[int]] = mapped_column(Integer)
    seed: Mapped[Optional[int]] = mapped_column(BigInteger)
    max_concurrency: Mapped[Optional[int]] = mapped_column(Integer)
    early_stopping: Mapped[Optional[dict]] = mapped_column(JSON)
    metric: Mapped[str] = mapped_column(String(16), default="error")
    status: Mapped[str] = mapped_column(String(16), default="queued")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))


class SweepCell(Base):
    """One configuration of a sweep and its run. (sweep_id, config_hash) is unique, so a
    retried creation never stores a configuration twice. A cell's run waits in state
    ``queued`` with ``dispatched`` false until a concurrency slot sends it to the broker."""

    __tablename__ = "sweep_cells"
    __table_args__ = (
        UniqueConstraint("sweep_id", "config_hash", name="uq_sweep_cells_sweep_id_config_hash"),
        Index("ix_sweep_cells_sweep_id_dispatched_position", "sweep_id", "dispatched",
              "position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    config_hash: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict] = mapped_column(JSON)
    run_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("runs.id", ondelete="CASCADE"), unique=True)
    dispatched: Mapped[bool] = mapped_column(Boolean, default=False)


class SweepRung(Base):
    """A run's metric when it reached a successive-halving rung of its sweep."""

    __tablename__ = "sweep_rungs"

    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"),
                                          primary_key=True)
    rung: Mapped[int] = mapped_column(Integer, primary_key=True)  # the epoch
    run_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    value: Mapped[Optional[float]] = mapped_column(Float)  # NULL when not finite
    promoted: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """An API token of a user. Only the SHA-256 of the token is stored; ``prefix`` (its
    first characters) lets people tell their tokens apart."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(200), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[Optional[str]] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))


class IdempotencyKey(Base):
    """The first response to a POST carrying an ``Idempotency-Key``: a retry with the same
    key (same user, same endpoint) gets the same resource back and queues nothing new."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("owner", "endpoint", "key", name="uq_idempotency_keys_owner_endpoint_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(64))  # e.g. "POST /runs"
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of the request body
    resource_id: Mapped[Optional[int]] = mapped_column(BigInteger)
    status_code: Mapped[Optional[int]] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

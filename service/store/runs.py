"""Queries and state changes of runs, their history and parameters."""

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from .models import FINAL_STATES, RUN_STATES, Epoch, Params, Run, utcnow

# Columns GET /runs may sort by.
ORDERABLE = ("id", "created_at", "learning_rate", "batch_size", "epochs", "final_error",
             "best_error", "epochs_done")


def create_run(session: Session, spec: dict, dataset_id: int, name=None, tags=None,
               sweep_id=None) -> Run:
    """Store a queued run for a validated, complete spec (the caller commits)."""
    run = Run(
        name=name,
        spec=spec,
        tags=tags or {},
        dataset_id=dataset_id,
        sweep_id=sweep_id,
        status="queued",
        learning_rate=spec["learning_rate"],
        batch_mode=spec["batch_mode"],
        batch_size=spec["batch_size"],
        epochs=spec["epochs"],
        seed=spec["seed"],
    )
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, run_id: int) -> Optional[Run]:
    """A run by id, or None."""
    return session.get(Run, run_id)


# ----------------------------------------------------------------------------- listing


@dataclass
class RunQuery:
    """Filters, order and page of GET /runs."""

    statuses: Sequence[str] = ()
    dataset_id: Optional[int] = None
    sweep_id: Optional[int] = None
    tags: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)  # column -> (min or None, max or None)
    order_by: str = "id"
    descending: bool = True
    limit: int = 50
    cursor: Optional[str] = None


def encode_cursor(values: list) -> str:
    """An opaque page token."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(token: str) -> list:
    """The values behind a page token; ValueError when it is not one of ours."""
    try:
        padded = token + "=" * (-len(token) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except Exception:
        raise ValueError("cursor: not a valid page token") from None
    if not isinstance(values, list) or len(values) != 3:
        raise ValueError("cursor: not a valid page token")
    return values


def _sort_value(run: Run, column: str):
    value = getattr(run, column)
    return value.isoformat() if hasattr(value, "isoformat") else value


def list_runs(session: Session, query: RunQuery) -> tuple[list[Run], Optional[str]]:
    """One page of runs and the token of the next page (None on the last page).

    Keyset pagination on (order column, id): pages stay stable while new runs arrive.
    Runs whose order column is NULL come last in either direction.
    """
    column = getattr(Run, query.order_by)
    stmt = select(Run)
    if query.statuses:
        stmt = stmt.where(Run.status.in_(query.statuses))
    if query.dataset_id is not None:
        stmt = stmt.where(Run.dataset_id == query.dataset_id)
    if query.sweep_id is not None:
        stmt = stmt.where(Run.sweep_id == query.sweep_id)
    for key, value in query.tags.items():
        stmt = stmt.where(func.json_extract(Run.tags, f"$.{key}") == value
                          if session.bind.dialect.name == "sqlite"
                          else Run.tags[key].as_string() == value)
    for name, (low, high) in query.ranges.items():
        col = getattr(Run, name)
        if low is not None:
            stmt = stmt.where(col >= low)
        if high is not None:
            stmt = stmt.where(col <= high)
    if query.cursor:
        is_null, value, last_id = decode_cursor(query.cursor)
        if query.order_by == "created_at" and value is not None:
            from datetime import datetime
            value = datetime.fromisoformat(value)
        id_after = Run.id < last_id if query.descending else Run.id > last_id
        if is_null:
            stmt = stmt.where(and_(column.is_(None), id_after))
        else:
            beyond = column < value if query.descending else column > value
            stmt = stmt.where(or_(beyond, and_(column == value, id_after), column.is_(None)))
    direction = (lambda c: c.desc()) if query.descending else (lambda c: c.asc())
    stmt = stmt.order_by(column.is_(None), direction(column), direction(Run.id))
    rows = list(session.scalars(stmt.limit(query.limit + 1)))
    page, more = rows[:query.limit], len(rows) > query.limit
    next_cursor = None
    if more and page:
        last = page[-1]
        value = _sort_value(last, query.order_by)
        next_cursor = encode_cursor([value is None, value, last.id])
    return page, next_cursor


# ------------------------------------------------------------------------ worker's side


def claim_run(session: Session, run_id: int, worker: str) -> Optional[Run]:
    """Mark a queued (or redelivered running) run as running by ``worker`` and clear any
    history of an earlier attempt. Returns None when the run should not train (gone,
    finished, or cancelled). Commits."""
    now = utcnow()
    claimed = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status.in_(("queued", "running")),
               Run.cancel_requested.is_(False))
        .values(status="running", worker=worker, attempts=Run.attempts + 1,
                started_at=now, heartbeat_at=now, epochs_done=0, final_error=None,
                best_error=None, best_epoch=None, final_accuracy=None, final_val_error=None,
                error_message=None)
    ).rowcount
    if not claimed:
        run = session.get(Run, run_id)
        if run is not None and run.status == "queued" and run.cancel_requested:
            finish_run(session, run_id, "cancelled")
        session.commit()
        return None
    session.execute(delete(Epoch).where(Epoch.run_id == run_id))
    session.execute(delete(Params).where(Params.run_id == run_id))
    session.commit()
    return session.get(Run, run_id, populate_existing=True)


def _finite(value):
    return None if value is None or not math.isfinite(value) else float(value)


def record_progress(session: Session, run_id: int, rows: list[dict], summary: dict) -> bool:
    """Append history rows and update the run's summary (epochs_done, final/best error...).
    Returns True when a cancel was requested. Commits."""
    if rows:
        for row in rows:
            for key in ("error", "accuracy", "val_error", "val_accuracy"):
                row[key] = _finite(row.get(key))
        session.execute(Epoch.__table__.insert(), rows)
    values = {key: (_finite(value) if isinstance(value, float) else value)
              for key, value in summary.items()}
    values["heartbeat_at"] = utcnow()
    session.execute(update(Run).where(Run.id == run_id).values(**values))
    cancel = session.scalar(select(Run.cancel_requested).where(Run.id == run_id))
    session.commit()
    return bool(cancel)


def store_params(session: Session, run_id: int, which: str, dtype: str, data: bytes) -> None:
    """Store a run's initial or final parameters (the caller commits)."""
    session.merge(Params(run_id=run_id, which=which, dtype=dtype, data=data))


def finish_run(session: Session, run_id: int, status: str, error_message=None) -> None:
    """Put a run in a final state (the caller commits)."""
    assert status in FINAL_STATES
    session.execute(
        update(Run).where(Run.id == run_id)
        .values(status=status, finished_at=utcnow(), error_message=error_message)
    )


# ------------------------------------------------------------------------ client's side


def request_cancel(session: Session, run_id: int) -> Optional[Run]:
    """Cancel a run: a queued one ends now, a running one at its next chunk. Returns the
    run (unchanged if already final) or None if there is none. Commits."""
    run = session.get(Run, run_id)
    if run is None:
        return None
    if run.status == "queued":
        session.execute(update(Run).where(Run.id == run_id, Run.status == "queued")
                        .values(cancel_requested=True, status="cancelled", finished_at=utcnow()))
    elif run.status == "running":
        session.execute(update(Run).where(Run.id == run_id).values(cancel_requested=True))
    session.commit()
    return session.get(Run, run_id, populate_existing=True)


def history(session: Session, run_id: int) -> list[Epoch]:
    """A run's history rows in epoch order."""
    return list(session.scalars(select(Epoch).where(Epoch.run_id == run_id).order_by(Epoch.epoch)))


def get_params(session: Session, run_id: int, which: str) -> Optional[Params]:
    """A run's stored initial or final parameters, or None."""
    return session.get(Params, (run_id, which))

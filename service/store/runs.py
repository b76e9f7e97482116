"""Queries and state changes of runs, their history and parameters."""

import base64
import functools
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Optional, Sequence, Union

from sqlalchemy import (String, and_, bindparam, case, cast, delete, func, literal, or_,
                        select, tuple_, update)
from sqlalchemy.orm import Session

from .clock import db_ago, db_now
from .models import (FINAL_STATES, RUN_STATES, Dataset, Epoch, Params, Run, Sweep,
                     SweepCell, SweepRung)
from .history import spread_positions
from .usage import HISTORY_ROW_BYTES, run_bytes, settled_bytes
from .where import tag_column, tag_equals

# Columns GET /runs may sort by (each way; ties broken by id, NULLs last either way).
ORDERABLE = ("id", "created_at", "started_at", "finished_at", "learning_rate", "batch_size",
             "epochs", "seed", "epochs_done", "final_error", "best_error", "best_epoch",
             "final_accuracy", "final_val_error", "sweep_id", "batch_mode", "optimizer",
             "stop_reason", "name", "status", "dataset")
TIME_ORDERABLE = ("created_at", "started_at", "finished_at")
# Sorted as text in the database's collation; so is ``tag.KEY`` (any key).
TEXT_ORDERABLE = ("batch_mode", "optimizer", "stop_reason", "name", "status", "dataset")
TAG_ORDER_PREFIX = "tag."


def is_orderable(order_by: str) -> bool:
    """Whether GET /runs can sort by ``order_by`` (a column name or ``tag.KEY``)."""
    return order_by in ORDERABLE or (order_by.startswith(TAG_ORDER_PREFIX)
                                     and 0 < len(order_by) - len(TAG_ORDER_PREFIX) <= 100)


def is_text_order(order_by: str) -> bool:
    """Whether ``order_by`` sorts text (so page tokens carry strings)."""
    return order_by in TEXT_ORDERABLE or order_by.startswith(TAG_ORDER_PREFIX)


def sort_column(order_by: str, dialect: str):
    """The SQL expression GET /runs sorts by for ``order_by``."""
    if order_by.startswith(TAG_ORDER_PREFIX):
        return tag_column(order_by[len(TAG_ORDER_PREFIX):], dialect)
    if order_by == "dataset":
        return Dataset.name
    return getattr(Run, order_by)

def create_run(session: Session, spec: dict, dataset_id: int, name=None, tags=None,
               sweep_id=None, owner: Optional[str] = None,
               rerun_of: Optional[int] = None) -> Run:
    """Store a queued run of ``owner`` for a validated, complete spec (the caller commits);
    ``rerun_of``: the run it repeats."""
    run = new_run(spec, dataset_id, name=name, tags=tags, sweep_id=sweep_id, owner=owner)
    run.rerun_of = rerun_of
    session.add(run)
    session.flush()
    return run


def new_run(spec: dict, dataset_id: int, name=None, tags=None, sweep_id=None,
            owner: Optional[str] = None) -> Run:
    """A queued Run row for a validated, complete spec, not yet added to a session."""
    return Run(**new_run_values(spec, dataset_id, name, tags, sweep_id, owner),
               environment=None)  # (set: a deferred column never read back for a new run)


def new_run_values(spec: dict, dataset_id: int, name=None, tags=None, sweep_id=None,
                   owner: Optional[str] = None) -> dict:
    """The column values of a queued run (``new_run``'s), for a bulk INSERT of many."""
    return dict(
        owner=owner,
        name=name,
        spec=spec,
        tags=tags or {},
        dataset_id=dataset_id,
        sweep_id=sweep_id,
        status="queued",
        learning_rate=spec["learning_rate"],
        batch_mode=spec["batch_mode"],
        optimizer=spec.get("optimizer", "sgd"),
        batch_size=spec["batch_size"],
        epochs=spec["epochs"],
        seed=spec["seed"],
        stored_bytes=run_bytes(spec),  # reserved until the run ends (see complete_run)
    )


def get_run(session: Session, run_id: int) -> Optional[Run]:
    """A run by id, or None."""
    return session.get(Run, run_id)


def latest_rerun(session: Session, run_id: int, owner: Optional[str]) -> Optional[Run]:
    """The newest rerun of run ``run_id`` that ``owner`` owns, or None."""
    return session.scalar(select(Run).where(Run.rerun_of == run_id, Run.owner == owner)
                          .order_by(Run.id.desc()).limit(1))


# ----------------------------------------------------------------------------- listing


@dataclass
class RunQuery:
    """Filters, order and page of GET /runs."""

    statuses: Sequence[str] = ()
    optimizers: Sequence[str] = ()
    stop_reasons: Sequence[str] = ()  # "plateau", or "none" for runs without one
    dataset_id: Optional[int] = None
    sweep_id: Optional[int] = None
    tags: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)  # column -> (min or None, max or None)
    order_by: str = "id"
    descending: bool = True
    limit: int = 50
    cursor: Optional[str] = None
    where: object = None  # a SQLAlchemy clause (see where.compile_where), ANDed with the rest
    owner: Optional[str] = None  # only this user's runs (None: everyone's, for internal use)


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


def _sort_value(run: Run, order_by: str):
    if order_by.startswith(TAG_ORDER_PREFIX):
        return (run.tags or {}).get(order_by[len(TAG_ORDER_PREFIX):])
    value = run.dataset.name if order_by == "dataset" else getattr(run, order_by)
    return value.isoformat() if hasattr(value, "isoformat") else value


def cursor_value(column: str, value):
    """A page token's sort value as the column compares it."""
    if value is not None and column in TIME_ORDERABLE:
        return datetime.fromisoformat(value)
    return value


def list_runs(session: Session, query: RunQuery) -> tuple[list[Run], Optional[str]]:
    """One page of runs and the token of the next page (None on the last page).

    Keyset pagination on (order column, id): pages stay stable while new runs arrive.
    Runs whose order column is NULL come last in either direction. Each page is read with
    at most two queries that an index on (column, id) serves directly: the runs with a value
    (``(column, id) > (last value, last id)`` in order), then, once those run out, the runs
    without one (by id). Never touches the history.
    """
    column = sort_column(query.order_by, session.bind.dialect.name)
    by_id = query.order_by == "id"
    stmt = select(Run)
    if query.order_by == "dataset":
        stmt = stmt.join(Dataset, Dataset.id == Run.dataset_id)
    if query.owner is not None:  # ANDed with every other filter, the where expression too
        stmt = stmt.where(Run.owner == query.owner)
    if query.statuses:
        stmt = stmt.where(Run.status.in_(query.statuses))
    if query.optimizers:
        stmt = stmt.where(Run.optimizer.in_(query.optimizers))
    if query.stop_reasons:
        reasons = [r for r in query.stop_reasons if r != "none"]
        stmt = stmt.where(or_(Run.stop_reason.in_(reasons), Run.stop_reason.is_(None))
                          if "none" in query.stop_reasons else Run.stop_reason.in_(reasons))
    if query.dataset_id is not None:
        stmt = stmt.where(Run.dataset_id == query.dataset_id)
    if query.sweep_id is not None:
        stmt = stmt.where(Run.sweep_id == query.sweep_id)
    for key, value in query.tags.items():
        stmt = stmt.where(tag_equals(key, value, session.bind.dialect.name))
    for name, (low, high) in query.ranges.items():
        col = getattr(Run, name)
        if low is not None:
            stmt = stmt.where(col >= low)
        if high is not None:
            stmt = stmt.where(col <= high)
    if query.where is not None:
        stmt = stmt.where(query.where)
    is_null, value, last_id = (decode_cursor(query.cursor) if query.cursor
                               else (False, None, None))
    value = cursor_value(query.order_by, value)
    later = (lambda a, b: a < b) if query.descending else (lambda a, b: a > b)
    direction = (lambda c: c.desc()) if query.descending else (lambda c: c.asc())
    want = query.limit + 1
    rows: list[Run] = []
    if not is_null:
        present = stmt if by_id else stmt.where(column.is_not(None))
        if last_id is not None:
            present = present.where(later(Run.id, last_id) if by_id else
                                    later(tuple_(column, Run.id), tuple_(value, last_id)))
        order = (direction(Run.id),) if by_id else (direction(column), direction(Run.id))
        rows = list(session.scalars(present.order_by(*order).limit(want)))
    if len(rows) < want and not by_id:
        absent = stmt.where(column.is_(None))
        if is_null and last_id is not None:
            absent = absent.where(later(Run.id, last_id))
        rows += list(session.scalars(absent.order_by(direction(Run.id))
                                     .limit(want - len(rows))))
    page, more = rows[:query.limit], len(rows) > query.limit
    next_cursor = None
    if more and page:
        last = page[-1]
        value = _sort_value(last, query.order_by)
        next_cursor = encode_cursor([value is None, value, last.id])
    return page, next_cursor


def downsample(rows: list, max_points: int, error=lambda row: row.error) -> list:
    """At most ``max_points`` (>= 3) of ``rows`` (in epoch order), evenly spread, always with
    the first, the last and the best (lowest error; the first of equals) row."""
    n = len(rows)
    if n <= max_points:
        return list(rows)
    errors = [(error(row), i) for i, row in enumerate(rows) if error(row) is not None]
    best = min(errors)[1] if errors else 0
    return [rows[i] for i in spread_positions(n, best, max_points)]


# ------------------------------------------------------------------------ worker's side


# For the worker's writes, made in short sessions that hold no other copy of the run: the
# ORM need not look for objects to update (which took a millisecond or two per run).
UNSYNCHRONIZED = {"synchronize_session": False}


class LostRun(Exception):
    """The run is no longer this attempt's to write: it was claimed again by another
    delivery of its task (a redelivery after a lost worker or a broker timeout), or deleted."""


class ClaimContext(NamedTuple):
    """What a worker reads of a run before claiming it: the run's fields that never change
    (its spec, dataset, sweep), its dataset's identity, its sweep's early stopping rule,
    and its claim count when read."""

    spec: dict
    attempts: int
    dataset_id: int
    dataset_name: str
    content_hash: str
    sweep_id: Optional[int]
    early_stopping: Optional[dict]
    metric: Optional[str]
    dataset_rows: int


# The statements a worker runs for every run (its claim and its end) are built once, with
# bound parameters: building an UPDATE of a dozen columns per call cost about a millisecond
# (bench/run_overhead.py), as much as the database took to run it.
# They are Core statements (on the tables, not the mapped classes) where no ORM object is
# wanted: the ORM's handling of a statement cost another quarter of a millisecond.
_RUNS, _DATASETS, _SWEEPS = Run.__table__.c, Dataset.__table__.c, Sweep.__table__.c
_CLAIM_CONTEXT = (
    select(_RUNS.spec, _RUNS.attempts, _DATASETS.id, _DATASETS.name, _DATASETS.content_hash,
           _RUNS.sweep_id, _SWEEPS.early_stopping, _SWEEPS.metric, _DATASETS.n_samples)
    .select_from(Run.__table__.join(Dataset.__table__, _DATASETS.id == _RUNS.dataset_id)
                 .outerjoin(Sweep.__table__, _SWEEPS.id == _RUNS.sweep_id))
    .where(_RUNS.id == bindparam("run_id")))


def claim_context(session: Session, run_id: int) -> Optional[ClaimContext]:
    """The run's ClaimContext in one query, or None when there is no such run."""
    row = session.execute(_CLAIM_CONTEXT, {"run_id": run_id}).first()
    return None if row is None else ClaimContext(*row)


def dataset_data(session: Session, dataset_id: int) -> Optional[bytes]:
    """A stored dataset's compressed arrays."""
    return session.scalar(select(Dataset.data).where(Dataset.id == dataset_id))


class Claimed(NamedTuple):
    """What ``claim_run(..., entity=False)`` returns of the claimed run."""

    attempts: int
    sweep_id: Optional[int]


@functools.cache
def _claim_statement(match_attempts: bool, limit_attempts: bool, entity: bool):
    """claim_run's UPDATE (see there), by which conditions it has and what it returns."""
    now = db_now()
    c = Run if entity else _RUNS
    where = [c.id == bindparam("run_id"), c.status.in_(bindparam("states", expanding=True)),
             c.cancel_requested.is_(False)]
    if match_attempts:
        where.append(c.attempts == bindparam("attempts"))
    if limit_attempts:
        where.append(c.attempts < bindparam("max_attempts"))
    return (update(Run if entity else Run.__table__).where(*where)
            .values(status="running", worker=bindparam("worker"), attempts=c.attempts + 1,
                    started_at=now, heartbeat_at=now, finished_at=None, epochs_done=0,
                    final_error=None, best_error=None, best_epoch=None, final_accuracy=None,
                    final_val_error=None, stop_reason=None, error_message=None,
                    environment=bindparam("environment"))
            .returning(*((Run,) if entity else (c.attempts, c.sweep_id))))


def claim_run(session: Session, run_id: int, worker: str, attempts: Optional[int] = None,
              states: Sequence[str] = ("queued", "running"),
              max_attempts: Optional[int] = None, before_commit=None,
              environment: Optional[dict] = None, exhausted: bool = True,
              entity: bool = True) -> Union[Run, Claimed, None]:
    """Mark a run in one of ``states`` (queued, or running under a lost worker) as running
    by ``worker``, and clear the history and parameters of an earlier attempt. Returns None
    when the run should not train (gone, finished, cancelled, or, with ``attempts``, claimed
    again since the caller saw it with that many attempts); a run whose cancel was
    requested ends ``cancelled`` here. Commits.

    The returned run's ``attempts`` identifies this claim: pass it as ``attempt`` to
    ``record_progress``, ``complete_run`` and ``finish_run``, which then refuse to write
    (LostRun / False) once a later claim of the same run has taken over, so two deliveries
    of one task never interleave their history.

    With ``max_attempts``, a run already claimed that many times is not trained again: it
    ends ``failed`` with "worker lost (N attempts)" (the deliveries before died with it).
    ``before_commit(session, run)``, if given, reads more in the claim's transaction (what
    the worker needs to train), saving a transaction of its own. ``environment``, if given,
    is recorded by the claim itself (workers.environment; a new claim replaces it).
    ``exhausted=False``: the caller has just read the run with fewer than ``max_attempts``
    claims (claim_context, in this transaction), so the statement that fails an exhausted
    run is skipped; the claim itself still requires fewer, so a claim in between only
    makes this one find no run.

    Its times (started_at, heartbeat_at) are the database's clock (service.store.clock), as
    are every heartbeat and final time below: staleness is judged on that one clock.

    ``entity=False`` returns only a Claimed (attempts, sweep_id), not the Run: what a
    worker needs, without building an ORM object of every column.
    """
    now = db_now()
    if max_attempts is not None and exhausted:
        where = [Run.id == run_id, Run.status.in_(states), Run.cancel_requested.is_(False),
                 Run.attempts >= max_attempts]
        if attempts is not None:
            where.append(Run.attempts == attempts)
        session.execute(
            update(Run).where(*where)
            .values(status="failed", finished_at=now, error_message=worker_lost_message()),
            execution_options=UNSYNCHRONIZED)
    params = {"run_id": run_id, "states": list(states), "worker": worker,
              "environment": environment}
    if attempts is not None:
        params["attempts"] = attempts
    if max_attempts is not None:
        params["max_attempts"] = max_attempts
    result = session.execute(
        _claim_statement(attempts is not None, max_attempts is not None, entity), params,
        execution_options={**UNSYNCHRONIZED, "populate_existing": True})
    run = result.scalar() if entity else result.first()
    if run is None:
        # A cancel requested before this delivery (possibly while a lost worker trained
        # it) ends the run now; its history so far is kept.
        session.execute(
            update(Run)
            .where(Run.id == run_id, Run.status.in_(("queued", "running")),
                   Run.cancel_requested.is_(True))
            .values(status="cancelled", finished_at=now,
                    # a queued run never started: it stored nothing; a running one stored
                    # its history so far (parameters are written only when a run completes)
                    stored_bytes=case((Run.status == "queued", 0), else_=(
                        select(func.count()).select_from(Epoch)
                        .where(Epoch.run_id == Run.id).scalar_subquery() * HISTORY_ROW_BYTES)))
        )
        session.commit()
        return None
    if run.attempts > 1:  # an earlier attempt may have left rows behind
        session.execute(delete(Epoch).where(Epoch.run_id == run_id))
        session.execute(delete(Params).where(Params.run_id == run_id))
    if before_commit is not None:
        before_commit(session, run)
    session.commit()
    return run


def worker_lost_message():
    """SQL for the error of a run given up after its workers died: "worker lost (N attempts)"."""
    return (literal("worker lost (", String) + cast(Run.attempts, String)
            + literal(" attempts)", String))


def beat(session: Session, run_id: int, attempt: int) -> bool:
    """Refresh the heartbeat of a run still running under claim ``attempt`` to the
    database's now; returns False when it no longer is (the caller stops beating). Commits."""
    beating = session.execute(
        update(Run).where(_owned(run_id, attempt)).values(heartbeat_at=db_now()),
        execution_options=UNSYNCHRONIZED).rowcount
    session.commit()
    return bool(beating)


def heartbeat_fresh(session: Session, run_id: int, stale_seconds: float) -> bool:
    """Whether run ``run_id``'s heartbeat is younger than ``stale_seconds`` by the
    database's clock (the clock that wrote it), whatever this host's clock says."""
    return bool(session.scalar(select(Run.heartbeat_at >= db_ago(stale_seconds))
                               .where(Run.id == run_id)))


def mark_enqueued(session: Session, run_ids: Sequence[int]) -> None:
    """Record that the tasks of ``run_ids`` were handed to the broker. Commits."""
    if run_ids:
        session.execute(update(Run).where(Run.id.in_(list(run_ids)))
                        .values(enqueued_at=db_now()), execution_options=UNSYNCHRONIZED)
        session.commit()


def _finite(value):
    return None if value is None or not math.isfinite(value) else float(value)


def _summary_values(summary: dict) -> dict:
    """Run columns from a summary, with non-finite floats as NULL."""
    return {key: (_finite(value) if isinstance(value, float) else value)
            for key, value in summary.items()}


def _insert_history(session: Session, rows: list[dict],
                    replacing: Optional[int] = None) -> None:
    """Insert history rows, with non-finite metrics as NULL; given ``replacing`` (the run's
    id), its stored rows from the first of ``rows`` on are deleted first."""
    if rows and replacing is not None:
        session.execute(delete(Epoch).where(Epoch.run_id == replacing,
                                            Epoch.epoch >= rows[0]["epoch"]))
    if rows:
        for row in rows:
            for key in ("error", "accuracy", "val_error", "val_accuracy"):
                row[key] = _finite(row.get(key))
        session.execute(Epoch.__table__.insert(), rows)


def _owned(run_id: int, attempt: Optional[int]):
    """WHERE clause of writes by claim ``attempt`` (any running attempt when None)."""
    clause = and_(Run.id == run_id, Run.status == "running")
    return clause if attempt is None else and_(clause, Run.attempts == attempt)


def record_progress(session: Session, run_id: int, rows: list[dict], summary: dict,
                    attempt: Optional[int] = None, rewrite: bool = False) -> bool:
    """Append history rows and update the run's summary (epochs_done, final/best error...).
    Returns True when a cancel was requested. Raises LostRun (writing nothing) when the run
    is no longer running under claim ``attempt``. Commits. ``rewrite``: some of ``rows``
    may be stored already (a write whose connection was lost before its COMMIT was
    answered, tried again): they replace what is there.

    The run row is updated before the rows are inserted: on PostgreSQL that update takes the
    row lock a competing ``claim_run`` needs, so a claim either sees these rows (and deletes
    them) or this write sees the claim (and raises)."""
    values = _summary_values(summary)
    values["heartbeat_at"] = db_now()
    cancel = session.execute(
        update(Run).where(_owned(run_id, attempt)).values(**values)
        .returning(Run.cancel_requested),
        execution_options=UNSYNCHRONIZED,
    ).scalar()
    if cancel is None:
        session.rollback()
        raise LostRun(f"run {run_id} is no longer running under attempt {attempt}")
    _insert_history(session, rows, run_id if rewrite else None)
    session.commit()
    return bool(cancel)


def complete_run(session: Session, run_id: int, attempt: Optional[int], rows: list[dict],
                 summary: dict, status: str, error_message: Optional[str] = None,
                 params: Optional[dict] = None, before_commit=None,
                 rewrite: bool = False) -> None:
    """Finish a run in one transaction: its last history rows, summary, final state and
    parameters (``{which: (dtype, npz bytes)}``). Raises LostRun (writing nothing) when the
    run is no longer running under claim ``attempt``. ``before_commit(session)``, if given,
    writes more in the same transaction (a sweep dispatching its next cell). ``rewrite`` as
    for ``record_progress``. Commits."""
    assert status in FINAL_STATES
    values = _summary_values(summary)
    values.update(status=status, error_message=error_message)
    # What it stored replaces what was reserved (see _complete_statement).
    settle = None if "epochs_done" not in values else "before" if rewrite and rows else "all"
    params_in = {f"v_{name}": value for name, value in values.items()}
    params_in.update(run_id=run_id, attempt=attempt, rows_written=len(rows),
                     param_bytes=settled_bytes(params, 0),
                     first_epoch=rows[0]["epoch"] if rows else None)
    owned = session.execute(
        _complete_statement(tuple(values), settle, attempt is not None), params_in,
        execution_options=UNSYNCHRONIZED,
    ).scalar()
    if owned is None:
        session.rollback()
        raise LostRun(f"run {run_id} is no longer running under attempt {attempt}")
    _insert_history(session, rows, run_id if rewrite else None)
    if params:
        # A claim clears an earlier attempt's parameters, so these are new rows.
        session.execute(Params.__table__.insert(), [
            {"run_id": run_id, "which": which, "dtype": dtype, "data": data}
            for which, (dtype, data) in params.items()])
    if before_commit is not None:
        before_commit(session)
    session.commit()


@functools.cache
def _complete_statement(columns: tuple, settle: Optional[str], match_attempt: bool):
    """complete_run's UPDATE of the run row: ``columns`` from the parameters ``v_<name>``,
    finished_at and heartbeat_at the database's now, and with ``settle`` its stored_bytes.

    stored_bytes is then what the run stored: its history rows (those stored before plus
    the ``rows_written`` this transaction writes; ``settle`` "before": only the stored ones
    before ``first_epoch`` count, the rest being replaced, else "all") and ``param_bytes``
    of parameters. Only this claim writes the run's history, so the count cannot change
    under it. One UPDATE of the run row, not a second one after the inserts: on PostgreSQL
    a second update of a row this transaction already updated fires the runs -> sweeps
    foreign key check, which takes a KEY SHARE lock on the run's sweep row; two workers
    ending runs of one sweep then both held it and deadlocked asking for the sweep row FOR
    UPDATE (``store.sweeps.run_ended``)."""
    now = db_now()
    values = {name: bindparam(f"v_{name}") for name in columns}
    values.update(finished_at=now, heartbeat_at=now)
    if settle is not None:
        epochs = Epoch.__table__.c
        kept = select(func.count()).select_from(Epoch.__table__).where(
            epochs.run_id == bindparam("run_id"))
        if settle == "before":
            kept = kept.where(epochs.epoch < bindparam("first_epoch"))
        values["stored_bytes"] = ((kept.scalar_subquery() + bindparam("rows_written"))
                                  * HISTORY_ROW_BYTES + bindparam("param_bytes"))
    where = [_RUNS.id == bindparam("run_id"), _RUNS.status == "running"]
    if match_attempt:
        where.append(_RUNS.attempts == bindparam("attempt"))
    return update(Run.__table__).where(*where).values(**values).returning(_RUNS.id)


def store_params(session: Session, run_id: int, which: str, dtype: str, data: bytes) -> None:
    """Store a run's initial or final parameters (the caller commits)."""
    session.merge(Params(run_id=run_id, which=which, dtype=dtype, data=data))


def finish_run(session: Session, run_id: int, status: str, error_message=None,
               attempt: Optional[int] = None) -> bool:
    """Put a run in a final state (the caller commits). With ``attempt``, only a run still
    running under that claim changes; returns whether the run changed."""
    assert status in FINAL_STATES
    where = Run.id == run_id if attempt is None else _owned(run_id, attempt)
    return bool(session.execute(
        update(Run).where(where)
        .values(status=status, finished_at=db_now(), error_message=error_message)
    ).rowcount)


# ------------------------------------------------------------------------ client's side


def request_cancel(session: Session, run_id: int) -> Optional[Run]:
    """Cancel a run: a queued one ends now, a running one at its next chunk. Returns the
    run (unchanged if already final) or None if there is none. Commits.

    Both updates are conditional on the state they change, so a worker claiming the run
    between them cannot lose the request: a run claimed before the first is caught by the
    second, and a claim refuses a run whose cancel is already requested."""
    if session.get(Run, run_id) is None:
        return None
    cancel_runs(session, Run.id == run_id)
    session.commit()
    return session.get(Run, run_id, populate_existing=True)


def cancel_runs(session: Session, which) -> None:
    """Cancel the runs matching ``which``: queued ones end ``cancelled`` now, running ones
    get ``cancel_requested`` and stop at their next chunk (the caller commits)."""
    session.execute(update(Run).where(which, Run.status == "queued")
                    .values(cancel_requested=True, status="cancelled", finished_at=db_now(),
                            stored_bytes=0))  # never started: stored nothing
    session.execute(update(Run).where(which, Run.status == "running")
                    .values(cancel_requested=True))


def history(session: Session, run_id: int) -> list[Epoch]:
    """A run's history rows in epoch order."""
    return list(session.scalars(select(Epoch).where(Epoch.run_id == run_id).order_by(Epoch.epoch)))


def get_params(session: Session, run_id: int, which: str) -> Optional[Params]:
    """A run's stored initial or final parameters, or None."""
    return session.get(Params, (run_id, which))


def delete_run(session: Session, run_id: int) -> bool:
    """Delete a final run with its history, parameters and sweep cell and rungs; returns
    whether it was deleted (False: gone, or not final any more). The caller commits.

    The children are deleted by hand, not left to ON DELETE CASCADE: a SQLite connection
    opened without ``PRAGMA foreign_keys`` would keep them."""
    final = select(Run.id).where(Run.id == run_id, Run.status.in_(FINAL_STATES))
    if session.scalar(final) is None:
        return False
    for child in (Epoch, Params, SweepRung, SweepCell):
        session.execute(delete(child).where(child.run_id == run_id))
    # Its reruns stay, unlinked (as ON DELETE SET NULL would, on any connection).
    session.execute(update(Run).where(Run.rerun_of == run_id).values(rerun_of=None))
    deleted = session.execute(delete(Run).where(Run.id == run_id,
                                                Run.status.in_(FINAL_STATES)))
    return bool(deleted.rowcount)

"""Sweeps: their cells (one run per configuration), concurrency slots, states, rungs.

A sweep's runs are created up front, all in state ``queued``; a cell's ``dispatched`` flag
says whether its run has been sent to the broker. ``fill_slots`` dispatches waiting cells
while fewer than ``max_concurrency`` of the sweep's dispatched runs are queued or running;
the API calls it when the sweep is created and the worker in the transaction that ends a
sweep's run, so the limit is kept by the database, whoever sends the tasks."""

import hashlib
import json
from typing import Optional

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import FINAL_STATES, Run, Sweep, SweepCell, SweepRung, utcnow
from .runs import cancel_runs, create_run, new_run_values

ACTIVE = ("queued", "running")
# Sweeps whose cells a sampler proposes one slot at a time (service.store.search).
MODEL_BASED = ("tpe", "cmaes")


def config_hash(config: dict) -> str:
    """The sha256 of a configuration's canonical JSON: its key within its sweep."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def create_sweep(session: Session, **fields) -> Sweep:
    """Store a sweep row (the caller commits)."""
    sweep = Sweep(status="queued", **fields)
    session.add(sweep)
    session.flush()
    return sweep


def get_sweep(session: Session, sweep_id: int) -> Optional[Sweep]:
    return session.get(Sweep, sweep_id)


def list_sweeps(session: Session, limit: int = 50, before: Optional[int] = None,
                owner: Optional[str] = None) -> list[Sweep]:
    """Sweeps newest first (only ``owner``'s when given), below id ``before``."""
    stmt = select(Sweep).order_by(Sweep.id.desc()).limit(limit)
    if owner is not None:
        stmt = stmt.where(Sweep.owner == owner)
    if before is not None:
        stmt = stmt.where(Sweep.id < before)
    return list(session.scalars(stmt))


def create_cell(session: Session, sweep_id: int, position: int, config: dict, config_hash: str,
                spec: dict, dataset_id: int, name=None, tags=None) -> Optional[int]:
    """Store one configuration of a sweep with its (waiting) run; returns the run id, or None
    when the sweep already has this configuration: the unique key (sweep_id, config_hash)
    makes a retried creation or a redelivered dispatch a no-op. The run belongs to the
    sweep's owner, whoever creates it. The caller commits."""
    exists = session.scalar(select(SweepCell.run_id).where(
        SweepCell.sweep_id == sweep_id, SweepCell.config_hash == config_hash))
    if exists is not None:
        return None
    try:
        with session.begin_nested():
            run = create_run(session, spec, dataset_id, name=name, tags=tags,
                             sweep_id=sweep_id, owner=session.get(Sweep, sweep_id).owner)
            session.add(SweepCell(sweep_id=sweep_id, position=position, config=config,
                                  config_hash=config_hash, run_id=run.id, dispatched=False))
            session.flush()
    except IntegrityError:  # a concurrent creation stored it first
        return None
    return run.id


def create_cells(session: Session, sweep_id: int, cells: list[dict],
                 dispatched: bool = False) -> list[int]:
    """``create_cell`` for many configurations at once (each a dict of its keyword
    arguments: position, config, config_hash, spec, dataset_id, name, tags), in a few
    statements instead of a few per cell; returns the run ids of the cells stored, in the
    order of ``cells``. ``dispatched``: the cells are stored as dispatched (their runs are
    enqueued by the caller) instead of waiting for ``fill_slots``. Should a concurrent
    creation store some first, falls back to one cell at a time. The caller commits."""
    hashes = [c["config_hash"] for c in cells]
    existing = set(session.scalars(select(SweepCell.config_hash).where(
        SweepCell.sweep_id == sweep_id, SweepCell.config_hash.in_(hashes))))
    todo = [c for c in cells if c["config_hash"] not in existing]
    if not todo:
        return []
    owner = session.get(Sweep, sweep_id).owner
    try:
        with session.begin_nested():
            # Bulk INSERTs (one statement each, with the new ids returned in order): the
            # unit of work took about half a millisecond per row of a large sweep.
            ids = list(session.scalars(
                insert(Run).returning(Run.id, sort_by_parameter_order=True),
                [new_run_values(c["spec"], c["dataset_id"], name=c.get("name"),
                                tags=c.get("tags"), sweep_id=sweep_id, owner=owner)
                 for c in todo]))
            session.execute(insert(SweepCell), [
                {"sweep_id": sweep_id, "position": c["position"], "config": c["config"],
                 "config_hash": c["config_hash"], "run_id": run_id, "dispatched": dispatched}
                for c, run_id in zip(todo, ids)])
    except IntegrityError:  # a concurrent creation stored some of them first
        ids = [run_id for run_id in (create_cell(session, sweep_id, **c) for c in todo)
               if run_id is not None]
        if dispatched and ids:
            session.execute(update(SweepCell).where(SweepCell.run_id.in_(ids))
                            .values(dispatched=True))
    return ids


def cells(session: Session, sweep_id: int) -> list[tuple[SweepCell, Run]]:
    """A sweep's cells and runs in position order."""
    return [(cell, run) for cell, run in session.execute(
        select(SweepCell, Run).join(Run, Run.id == SweepCell.run_id)
        .where(SweepCell.sweep_id == sweep_id).order_by(SweepCell.position))]


def _lock_sweep(session: Session, sweep_id: int) -> Optional[Sweep]:
    """The sweep row, locked until the transaction ends on PostgreSQL (SQLite's BEGIN
    IMMEDIATE already serialises writers), so slot counts are never computed twice at once."""
    return session.execute(select(Sweep).where(Sweep.id == sweep_id).with_for_update(),
                           execution_options={"populate_existing": True}).scalar()


def _dispatches_nothing(sweep) -> bool:
    """Whether fill_slots has nothing to do for the sweep (a Sweep or a row of its columns
    cancel_requested, max_concurrency, kind, status): it is cancelled, or nothing waits."""
    # A sweep without a concurrency limit dispatches every cell it stores in the
    # transaction that creates it (status "queued" until a run starts).
    return sweep.cancel_requested or (sweep.max_concurrency is None
                                      and sweep.kind not in MODEL_BASED
                                      and sweep.status != "queued")


def fill_slots(session: Session, sweep_id: int, sweep: Optional[Sweep] = None) -> list[int]:
    """Mark waiting cells dispatched while fewer than ``max_concurrency`` dispatched runs of
    the sweep are queued or running; returns their run ids, to enqueue after the caller
    commits. Nothing is dispatched for a cancelled sweep. ``sweep``: the row as this
    transaction already locked it (see ``_lock_sweep``)."""
    sweep = sweep if sweep is not None else _lock_sweep(session, sweep_id)
    if sweep is None or _dispatches_nothing(sweep):
        return []
    waiting = (select(SweepCell).join(Run, Run.id == SweepCell.run_id)
               .where(SweepCell.sweep_id == sweep_id, SweepCell.dispatched.is_(False),
                      Run.status == "queued")
               .order_by(SweepCell.position))
    active = 0
    if sweep.max_concurrency is not None:
        active = session.scalar(
            select(func.count()).select_from(SweepCell).join(Run, Run.id == SweepCell.run_id)
            .where(SweepCell.sweep_id == sweep_id, SweepCell.dispatched.is_(True),
                   Run.status.in_(ACTIVE)))
        free = sweep.max_concurrency - active
        if free <= 0:
            return []
        waiting = waiting.limit(free)
    if session.bind.dialect.name == "postgresql":
        waiting = waiting.with_for_update(skip_locked=True, of=SweepCell)
    chosen = list(session.scalars(waiting))
    for cell in chosen:
        cell.dispatched = True
    session.flush()
    sent = [cell.run_id for cell in chosen]
    if sweep.kind in MODEL_BASED:
        free = (sweep.max_concurrency if sweep.max_concurrency is not None
                else sweep.trials or 0) - active - len(sent)
        sent += _propose_cells(session, sweep, free)
    return sent


def _propose_cells(session: Session, sweep: Sweep, free: int) -> list[int]:
    """Store up to ``free`` cells a model-based sweep's sampler proposes, dispatched at once;
    their run ids. Exactly once per slot: the caller holds the sweep row locked, so a
    concurrent fill counts these cells before it asks (and (sweep_id, config_hash) is
    unique besides)."""
    if free <= 0:
        return []
    from . import search  # Optuna loads only where a model-based sweep fills a slot

    proposed = search.propose(session, sweep, free, config_hash)
    if not proposed:
        return []
    stored = search_settings(sweep)
    label = sweep.name or f"sweep {sweep.id}"
    return create_cells(session, sweep.id, [
        {**cell, "dataset_id": stored["dataset_id"], "name": f"{label} #{cell['position']}",
         "tags": stored["template"].get("tags")}
        for cell in proposed], dispatched=True)


def search_settings(sweep: Sweep) -> dict:
    """What a model-based sweep stores in its space column: {fields, objective, template,
    dataset_id, output_activations}."""
    return sweep.space


def counts(session: Session, sweep_id: int) -> dict:
    """{state: number of the sweep's runs in it}."""
    return {status: n for status, n in session.execute(
        select(Run.status, func.count()).where(Run.sweep_id == sweep_id)
        .group_by(Run.status))}


def is_active(session: Session, sweep_id: int) -> bool:
    """Whether any run of the sweep is queued or running."""
    return session.scalar(select(Run.id).where(Run.sweep_id == sweep_id,
                                               Run.status.in_(ACTIVE)).limit(1)) is not None


def derive_status(sweep: Sweep, by_state: dict) -> str:
    """queued (no run started), running, or once every run is final: cancelled (the sweep
    was cancelled), failed (some run failed), else succeeded (diverged and stopped_early
    runs are results of a sweep, not failures)."""
    total = sum(by_state.values())
    if not total:  # every run deleted (only a final sweep's can be): it stays as it ended
        return sweep.status
    active = by_state.get("queued", 0) + by_state.get("running", 0)
    if total and active == 0:
        if sweep.cancel_requested:
            return "cancelled"
        return "failed" if by_state.get("failed") else "succeeded"
    if sweep.cancel_requested:
        return "running" if by_state.get("running") else "cancelled"
    if active == by_state.get("queued", 0) and active == total:
        return "queued"
    return "running"


def update_status(session: Session, sweep_id: int,
                  sweep: Optional[Sweep] = None) -> Optional[Sweep]:
    """Store the sweep's state as derived from its runs (the caller commits). ``sweep``:
    the row as this transaction already read it."""
    if sweep is None:
        sweep = session.get(Sweep, sweep_id, populate_existing=True)
    if sweep is None:
        return None
    status = derive_status(sweep, counts(session, sweep_id))
    if status != sweep.status:
        for name, value in _status_values(status).items():
            setattr(sweep, name, value)
    session.flush()
    return sweep


def _status_values(status: str) -> dict:
    """The sweep's columns that change when it enters ``status``."""
    if status in ("succeeded", "failed", "cancelled"):
        return {"status": status, "finished_at": utcnow()}
    return {"status": status}


# run_ended's statements, built once (see store.runs: a worker runs them for every run).
_SWEEP_ROWS, _RUN_ROWS = Sweep.__table__.c, Run.__table__.c
_LOCK_SWEEP_ROW = (select(_SWEEP_ROWS.status, _SWEEP_ROWS.cancel_requested,
                          _SWEEP_ROWS.max_concurrency, _SWEEP_ROWS.kind)
                   .where(_SWEEP_ROWS.id == bindparam("sweep_id")).with_for_update())
_COUNTS = (select(_RUN_ROWS.status, func.count()).where(_RUN_ROWS.sweep_id == bindparam("sweep_id"))
           .group_by(_RUN_ROWS.status))


def run_ended(session: Session, sweep_id: int) -> list[int]:
    """What the transaction that ends one of the sweep's runs also does: dispatch the next
    waiting cells and update the sweep's state. Returns the run ids to enqueue after
    commit."""
    row = session.execute(_LOCK_SWEEP_ROW, {"sweep_id": sweep_id}).first()
    if row is None:
        return []
    if _dispatches_nothing(row):  # the usual case, without loading the sweep's ORM object
        status = derive_status(row, dict(session.execute(_COUNTS, {"sweep_id": sweep_id}).all()))
        if status != row.status:
            session.execute(update(Sweep.__table__).where(_SWEEP_ROWS.id == sweep_id)
                            .values(**_status_values(status)))
        return []
    sweep = _lock_sweep(session, sweep_id)  # locked already: the same row, as an object
    to_send = fill_slots(session, sweep_id, sweep)
    update_status(session, sweep_id, sweep)
    return to_send


def cancel_sweep(session: Session, sweep_id: int) -> Optional[Sweep]:
    """Cancel a sweep: its queued runs (dispatched or not) end ``cancelled`` now, its running
    ones at their next chunk, and no more cells are dispatched. Commits.

    Run rows are written before the sweep row, the order of a worker ending a run (its run,
    then the sweep's slots), so the two never wait on each other in a cycle."""
    if session.get(Sweep, sweep_id) is None:
        return None
    cancel_runs(session, Run.sweep_id == sweep_id)
    session.execute(update(Sweep).where(Sweep.id == sweep_id).values(cancel_requested=True))
    sweep = update_status(session, sweep_id)
    session.commit()
    session.refresh(sweep)
    return sweep


def delete_sweep(session: Session, sweep_id: int) -> None:
    """Remove a sweep, its cells and runs (when its first dispatch could not be queued).
    The caller commits."""
    from sqlalchemy import delete

    run_ids = select(SweepCell.run_id).where(SweepCell.sweep_id == sweep_id)
    ids = list(session.scalars(run_ids))
    session.execute(delete(SweepCell).where(SweepCell.sweep_id == sweep_id))
    if ids:
        session.execute(delete(Run).where(Run.id.in_(ids)))
    session.execute(delete(Sweep).where(Sweep.id == sweep_id))


# ----------------------------------------------------------------------- early stopping


def rungs(early_stopping: dict, epochs: int) -> list[int]:
    """The rung epochs below ``epochs``: min_epochs * reduction_factor**k."""
    rung, rf, out = early_stopping["min_epochs"], early_stopping["reduction_factor"], []
    while rung < epochs:
        out.append(rung)
        rung *= rf
    return out


def record_rung(session: Session, sweep_id: int, rung: int, run_id: int,
                value: Optional[float], reduction_factor: int) -> bool:
    """Record a run's metric at a rung and decide whether it continues (ASHA's rule, made
    deterministic for the first arrivals):

    with n runs recorded at the rung so far (this one included), the run continues if its
    value ranks within the best ceil(n / reduction_factor) of them (ties in its favour);
    a non-finite (NULL) value never continues unless it is the only one. So the first run
    at a rung always continues, and a later run must beat all but the best n/rf arrivals.
    A run that reaches the same rung again (a redelivered task) gets its recorded decision.
    Commits nothing; the caller commits."""
    import math

    previous = session.get(SweepRung, (sweep_id, rung, run_id))
    if previous is not None:
        return previous.promoted
    _lock_sweep(session, sweep_id)  # one decision at a time per sweep
    values = list(session.scalars(select(SweepRung.value).where(
        SweepRung.sweep_id == sweep_id, SweepRung.rung == rung)))
    n = len(values) + 1
    keep = math.ceil(n / reduction_factor)
    if value is None:
        promoted = n == 1
    else:
        better = sum(1 for v in values if v is not None and v < value)
        promoted = better < keep
    session.add(SweepRung(sweep_id=sweep_id, rung=rung, run_id=run_id, value=value,
                          promoted=promoted))
    session.flush()
    return promoted


__all__ = ["FINAL_STATES", "cancel_sweep", "cells", "counts", "create_cell", "create_cells",
           "create_sweep", "fill_slots", "is_active", "record_rung", "run_ended", "rungs",
           "update_status"]

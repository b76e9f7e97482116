"""What the dashboard reads, always limited to the logged-in user's resources."""

from flask import abort, g
from sqlalchemy import select

from service.api.context import db
from service.store import datasets as store_datasets
from service.store import runs as store_runs
from service.store import sweeps as store_sweeps
from service.store.models import Dataset, Epoch, Run, Sweep

MAX_RUN_ID = 2**63 - 1
MAX_INT32 = 2**31 - 1


def owned_run(run_id: int) -> Run:
    """The user's run, or a 404 (someone else's run does not exist for them)."""
    run = store_runs.get_run(db(), run_id) if run_id <= MAX_RUN_ID else None
    if run is None or run.owner != g.user:
        abort(404, f"run {run_id} does not exist")
    return run


def owned_sweep(sweep_id: int) -> Sweep:
    """The user's sweep, or a 404."""
    sweep = store_sweeps.get_sweep(db(), sweep_id) if sweep_id <= MAX_INT32 else None
    if sweep is None or sweep.owner != g.user:
        abort(404, f"sweep {sweep_id} does not exist")
    return sweep


def restrict_to_user(query: store_runs.RunQuery) -> store_runs.RunQuery:
    """The query limited to the user's runs."""
    assert g.user is not None  # owner None would mean everyone's runs
    query.owner = g.user
    return query


def user_sweeps(limit: int = 100) -> list[Sweep]:
    """The user's sweeps, newest first."""
    assert g.user is not None
    return store_sweeps.list_sweeps(db(), limit, owner=g.user)


def user_datasets() -> list[Dataset]:
    """The datasets the user uploaded, by name."""
    return sorted((d for d in store_datasets.list_datasets(db(), owner=g.user)
                   if d.owner == g.user), key=lambda d: d.name)


def dataset_choices() -> list[Dataset]:
    """Stored datasets the user may filter runs by: the built-ins and their own."""
    return [d for d in store_datasets.list_datasets(db(), owner=g.user)
            if d.owner == g.user or d.builtin]


def curve(run_id: int, max_points: int) -> list[dict]:
    """A run's history as chart points, at most ``max_points`` of them (the first, the
    last and the best always among them)."""
    rows = store_runs.downsample(store_runs.history(db(), run_id), max_points)
    return [{"epoch": r.epoch, "error": r.error, "val_error": r.val_error,
             "accuracy": r.accuracy} for r in rows]


def curves(run_ids: list[int], max_points: int) -> dict[int, list[dict]]:
    """Several runs' histories (one query), each downsampled like ``curve``."""
    by_run: dict[int, list] = {run_id: [] for run_id in run_ids}
    if run_ids:
        for row in db().scalars(select(Epoch).where(Epoch.run_id.in_(run_ids))
                                .order_by(Epoch.run_id, Epoch.epoch)):
            by_run[row.run_id].append(row)
    return {run_id: [{"epoch": r.epoch, "error": r.error}
                     for r in store_runs.downsample(rows, max_points)]
            for run_id, rows in by_run.items()}

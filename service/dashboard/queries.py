"""What the dashboard reads, always limited to the logged-in user's resources."""

from flask import abort, g
from sqlalchemy import select

from service.errors import NotFound
from service.runquery import parse_run_query
from service.runs import owned_run
from service.store import datasets as store_datasets
from service.store import runs as store_runs
from service.store import sweeps as store_sweeps
from service.store.models import Dataset, Epoch, Run, Sweep
from service.sweeps import owned_sweep
from service.web.context import db


def user() -> str:
    """The logged-in user (``login_required`` pages only: an owner of None would mean
    everyone's runs)."""
    assert g.user is not None
    return g.user


def user_run(run_id: int) -> Run:
    """The user's run, or a 404 (someone else's run does not exist for them)."""
    try:
        return owned_run(db(), run_id, user())
    except NotFound as exc:
        abort(404, exc.message)


def user_sweep(sweep_id: int) -> Sweep:
    """The user's sweep, or a 404."""
    try:
        return owned_sweep(db(), sweep_id, user())
    except NotFound as exc:
        abort(404, exc.message)


def user_run_query(args: dict) -> store_runs.RunQuery:
    """The runs filter (GET /runs parameters, loaded by RunListArgsSchema) over the user's
    runs; Invalid naming a bad parameter."""
    return parse_run_query(db(), args, user())


def user_sweeps(limit: int = 100) -> list[Sweep]:
    """The user's sweeps, newest first."""
    return store_sweeps.list_sweeps(db(), limit, owner=user())


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

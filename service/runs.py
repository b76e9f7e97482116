"""Runs: submit one (validate, store, enqueue or undo), find a user's run, cancel it, read its
parameters and predict with them."""

import logging
import math
from typing import Optional

import numpy as np

import kernels
from service.datasets import resolve_dataset
from service.errors import Conflict, Invalid, NotFound, NotReady, QueueDown
from service.queue import QueueUnavailable
from service.quotas import check_quotas
from service.runspec import (complete_spec, dataset_problems, limit_problems, validation_problems,
                             with_defaults)
from service.settings import redact_urls
from service.store import FINAL_STATES, Dataset, Run
from service.store import runs as store_runs
from service.store import sweeps as store_sweeps
from service.store import usage
from service.store.npzviews import params_views

log = logging.getLogger(__name__)

# Largest value a run id (BIGINT) column can hold.
MAX_RUN_ID = 2**63 - 1
# Values of the widest layer predict holds for one slice of its input rows.
PREDICT_CHUNK_VALUES = 1 << 20


def describe_run(run: Run, environment: bool = False) -> dict:
    """A run as the API shows it; with ``environment``, where it trained too (a column read
    on its own, left out of lists of runs)."""
    described = {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "spec": with_defaults(run.spec),
        "tags": run.tags,
        "dataset": {"id": run.dataset.id, "name": run.dataset.name},
        "sweep_id": run.sweep_id,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "epochs": run.epochs,
        "epochs_done": run.epochs_done,
        "final_error": run.final_error,
        "best_error": run.best_error,
        "best_epoch": run.best_epoch,
        "stop_reason": run.stop_reason,
        "final_accuracy": run.final_accuracy,
        "final_val_error": run.final_val_error,
        "worker": run.worker,
        "attempts": run.attempts,
        "cancel_requested": bool(run.cancel_requested),
        "error_message": run.error_message,
        "rerun_of": run.rerun_of,
    }
    if environment:
        described["environment"] = run.environment
    return described


def owned_run(session, run_id: int, owner: str) -> Run:
    """The run ``run_id`` of ``owner``. Every use of one run goes through here: another
    user's run is NotFound, the same as a missing one."""
    run = store_runs.get_run(session, run_id) if 0 <= run_id <= MAX_RUN_ID else None
    if run is None or run.owner != owner:
        raise NotFound(f"run {run_id} does not exist")
    return run


def submit_run(session, queue, limits, owner: str, fields: dict, dataset=None,
               rerun_of: Optional[int] = None) -> Run:
    """Validate a spec (fields loaded by RunSpecSchema) against its dataset and ``limits``,
    store it as ``owner``'s and enqueue it. Invalid, QuotaExceeded, or QueueDown (then nothing
    is kept). ``dataset``: the stored dataset to train on instead of the one the spec names
    (a rerun's), ``rerun_of``: the run it repeats."""
    spec = complete_spec(fields)
    if dataset is None:
        dataset = resolve_dataset(session, spec["dataset"], owner)
    if dataset is None:
        raise Invalid({"dataset": f"no dataset named {spec['dataset']!r}"})
    problems = dataset_problems(spec, dataset.n_features, dataset.target_kind,
                                dataset.n_targets, dataset.n_classes, dataset.max_abs)
    problems.update(validation_problems(spec, dataset.n_samples))
    for field, message in limit_problems(spec, dataset.n_samples, limits).items():
        problems[field] = f"{problems[field]}; {message}" if field in problems else message
    if problems:
        raise Invalid(problems)
    # Counted and stored in one transaction (the quota lock is held until its commit).
    check_quotas(session, owner, limits, runs=1, stored_bytes=usage.run_bytes(spec))
    run = store_runs.create_run(session, spec, dataset.id, name=spec.get("name"),
                                tags=spec.get("tags"), owner=owner, rerun_of=rerun_of)
    run.dataset = dataset  # the answer describes it: no query to load it again
    # Keep no orphan: a run nobody will ever train must not sit in "queued".
    enqueue_or_undo(session, queue, [run.id], lambda: session.delete(run), f"run {run.id}")
    return run


def rerun_run(session, queue, limits, owner: str, origin: Run) -> Run:
    """Queue ``origin``'s spec (seed included) again on the very dataset it trained on, as a
    new run of ``owner`` linked to it (``rerun_of``), through the checks and quotas of a
    submit. Conflict "dataset_gone" when that dataset is no longer there for ``owner``."""
    dataset = session.get(Dataset, origin.dataset_id)
    if dataset is None or dataset.owner not in (None, owner):
        raise Conflict(f"the dataset run {origin.id} trained on (id {origin.dataset_id}) was "
                       "deleted; it cannot be rerun", {"dataset": "deleted"},
                       code="dataset_gone")
    return submit_run(session, queue, limits, owner, dict(origin.spec), dataset=dataset,
                      rerun_of=origin.id)


def enqueue_or_undo(session, queue, run_ids, undo, label: str) -> None:
    """Commit what the session holds, send ``run_ids`` to the workers and mark them sent.
    When the broker cannot take them, ``undo()`` deletes what was stored (committed here)
    and QueueDown: a client never gets an id of work that will not run."""
    session.commit()
    try:
        queue.enqueue_runs(run_ids)
    except QueueUnavailable as exc:
        undo()
        session.commit()
        # The broker's error may quote its URL (and password): log it redacted, never answer it.
        log.warning("%s not queued, the broker is unreachable: %s", label,
                    redact_urls(str(exc)))
        raise QueueDown() from None
    # Sent: the reaper sends runs that never get this mark (an API that died just now).
    store_runs.mark_enqueued(session, run_ids)


def cancel_run(session, run: Run) -> Run:
    """Cancel queued or running work; Conflict ("already_finished") for a finished run."""
    if run.status not in ("queued", "running"):
        raise Conflict(f"run {run.id} is {run.status}", code="already_finished")
    return store_runs.request_cancel(session, run.id)


def stored_params(session, run: Run, which: str):
    """The run's stored ``which`` ("final" or "initial") parameters row; NotReady when it
    has none yet."""
    row = store_runs.get_params(session, run.id, which)
    if row is None:
        raise NotReady(f"run {run.id} has no {which} parameters yet (status {run.status})")
    return row


def predict(session, run: Run, inputs: list, limits) -> list:
    """Outputs of the run's trained network for ``inputs`` (rows of numbers), non-finite
    values as None; NotReady without final parameters, Invalid for rows of the wrong width
    or more rows x parameters than ``limits.max_predict_work``. Computed a bounded number of
    values at a time."""
    row = stored_params(session, run, "final")
    spec = run.spec
    widths = sorted({len(row) for row in inputs})
    if widths != [spec["layers"][0]]:
        raise Invalid({"inputs": f"every row must have {spec['layers'][0]} values (layers[0]),"
                                 f" got rows of {', '.join(map(str, widths))}"})
    params = params_views(row.data)
    n_params = sum(W.size + B.size for W, B in zip(params["weights"], params["biases"]))
    if len(inputs) * n_params > limits.max_predict_work:
        allowed = limits.max_predict_work // n_params
        raise Invalid({"inputs": f"{len(inputs)} rows x {n_params} parameters is over the "
                                 f"limit of {limits.max_predict_work} per request "
                                 "(DESCENT_MAX_PREDICT_WORK); " + (
                                     f"send at most {allowed} rows" if allowed else
                                     "this network is too big to predict with here")})
    chunk = max(1, PREDICT_CHUNK_VALUES // max(spec["layers"]))
    outputs = []
    for start in range(0, len(inputs), chunk):
        X = np.asarray(inputs[start:start + chunk], dtype=np.float64)
        out = kernels.predict(params, X, activation=spec["activation"],
                              output_activation=spec["output_activation"],
                              loss=spec["loss"], dtype=spec["dtype"])
        outputs += [[None if not math.isfinite(v) else float(v) for v in values]
                    for values in out.tolist()]
    return outputs


def delete_run(session, run: Run) -> None:
    """Delete a final run with its history and parameters, which frees what it counted
    against its owner's stored-bytes quota; commits. Conflict "not_finished" for a queued
    or running run (cancel it first), "sweep_active" for a cell of a sweep that still has
    queued or running runs (its early stopping compares the cells' results)."""
    if run.status not in FINAL_STATES:
        raise Conflict(f"run {run.id} is {run.status}; cancel it first, then delete it",
                       code="not_finished")
    if run.sweep_id is not None and store_sweeps.is_active(session, run.sweep_id):
        raise Conflict(f"run {run.id} belongs to sweep {run.sweep_id}, which has runs queued "
                       "or running; delete its runs once the sweep has ended",
                       code="sweep_active")
    if not store_runs.delete_run(session, run.id):
        session.rollback()
        raise NotFound(f"run {run.id} does not exist")
    session.commit()

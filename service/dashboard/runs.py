"""The runs table, a run's page, its downloads and network drawing, and its live curve."""

import json

from flask import Response, abort, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError
from sqlalchemy import select

from service import trainingview
from service.compiling import compiling_note, kernels_status
from service.errors import Conflict, DomainError, Invalid, NotFound, field_messages
from service.recent import Recent
from service.runquery import RunListArgsSchema, wrap_cursor
from service.runs import cancel_run as cancel  # (the view below is named cancel_run)
from service.runs import delete_run as remove  # (the view below is named delete_run)
from service.runs import rerun_run
from service.store import runs as store_runs
from service.store.arrays import params_from_npz
from service.store.models import FINAL_STATES, RUN_STATES, Params
from service.verify import run_verification
from service.web.context import db, queue, settings

from . import queries
from .auth import login_required
from .blueprint import bp
from .views import pretty_json

# Points of a run's curve: enough for a smooth line, few enough to poll every second.
RUN_CURVE_POINTS = 1000
PAGE_SIZES = (20, 50, 100, 200)


def _runs_form() -> dict:
    args = request.args
    return {"status": [s for s in args.getlist("status") if s],
            "dataset": args.get("dataset", ""), "where": args.get("where", ""),
            "order": args.get("order", "id"), "direction": args.get("direction", "desc"),
            "limit": args.get("limit", "50")}


def _query_args(form: dict) -> dict:
    """GET /api/v1/runs parameters of the filter form."""
    raw = {"order_by": ("-" if form["direction"] == "desc" else "") + form["order"],
           "limit": form["limit"]}
    if form["status"]:
        raw["status"] = ",".join(form["status"])
    if form["dataset"]:
        raw["dataset"] = form["dataset"]
    if form["where"].strip():
        raw["where"] = form["where"]
    if request.args.get("cursor"):
        raw["cursor"] = request.args["cursor"]
    return raw


# GET /runs parameter -> the filter form's field that shows its error.
_FORM_FIELD = {"order_by": "order", "limit": "limit", "status": "status",
               "dataset": "dataset", "where": "where", "cursor": "cursor"}


@bp.route("/")
@login_required
def runs():
    """The user's runs: filters, sorting and pages of GET /api/v1/runs."""
    form = _runs_form()
    errors, page, next_url = {}, [], None
    try:
        args = RunListArgsSchema().load(_query_args(form))
        query = queries.user_run_query(args)
        page, token = store_runs.list_runs(db(), query)
        if token is not None:
            next_url = url_for(".runs", **{k: v for k, v in form.items() if v},
                               cursor=wrap_cursor(query, token))
    except ValidationError as exc:
        errors = field_messages(exc.messages)
    except Invalid as exc:
        errors = exc.fields or {"where": exc.message}
    errors = {_FORM_FIELD.get(k, "where"): v for k, v in errors.items()}
    first_url = (url_for(".runs", **{k: v for k, v in form.items() if v})
                 if request.args.get("cursor") else None)
    return render_template("runs.html", form=form, errors=errors, runs=page,
                           next_url=next_url, first_url=first_url,
                           states=RUN_STATES, orderable=store_runs.ORDERABLE,
                           page_sizes=PAGE_SIZES, datasets=queries.dataset_choices()), \
        422 if errors else 200


def _params_available(run_id: int) -> set:
    return set(db().scalars(select(Params.which).where(Params.run_id == run_id)))


# How the run page names trainingview's rows (the others are capitalised).
_LABELS = {"lr schedule": "Learning-rate schedule", "plateau": "Stop on a plateau"}


def _facts(rows) -> list[tuple[str, str, str]]:
    """(element id suffix, label, text) of trainingview's (label, text) rows."""
    return [(label.replace(" ", "-"), _LABELS.get(label, label.capitalize()), text)
            for label, text in rows]


@bp.route("/runs/<int:run_id>")
@login_required
def run(run_id):
    """One run: state, spec, live error curve, network drawing, downloads."""
    run = queries.user_run(run_id)
    final = run.status in FINAL_STATES
    plateau = trainingview.plateau(run.spec)
    outcome = trainingview.outcome_rows(run.spec, run.status, run.epochs_done, run.epochs,
                                        run.stop_reason, run.best_epoch) if final else []
    return render_template(
        "run.html", run=run, final=final, params=_params_available(run_id),
        spec_json=pretty_json(run.spec), waiting=waiting_note(run.status, run.epochs_done),
        training=_facts(trainingview.training_rows(run.spec)), outcome=_facts(outcome),
        # best_epoch is the best error's epoch unless a plateau rule chose it (its metric,
        # its min_delta): then it is shown as the outcome's best epoch
        best_error_epoch=None if plateau else run.best_epoch,
        environment=run.environment, verdict=_verdict(run))


def _verdict(run):
    """The verdict on the run and its rerun (as GET /api/v1/runs/ID/verification), or None
    when it has no rerun and is none."""
    try:
        return run_verification(db(), run)
    except NotFound:
        return None


@bp.route("/runs/<int:run_id>/rerun", methods=["POST"])
@login_required
def rerun(run_id):
    """Queue the run again (same spec, seed and dataset), then show the new run."""
    run = queries.user_run(run_id)
    try:
        new = rerun_run(db(), queue(), settings().limits, queries.user(), run)
    except DomainError as exc:  # over a quota or a limit, dataset gone, broker down
        db().rollback()
        details = "; ".join(f"{k}: {v}" for k, v in exc.fields.items())
        flash(f"run {run_id} was not rerun: {exc.message}"
              + (f" ({details})" if details else ""), "error")
        return redirect(url_for(".run", run_id=run_id))
    flash(f"run {new.id} queued, a rerun of run {run_id}", "info")
    return redirect(url_for(".run", run_id=new.id))


@bp.route("/runs/<int:run_id>/cancel", methods=["POST"])
@login_required
def cancel_run(run_id):
    """Cancel a queued or running run."""
    run = queries.user_run(run_id)
    try:
        cancel(db(), run)
        flash(f"cancel requested for run {run_id}", "info")
    except Conflict:
        flash(f"run {run_id} is already {run.status}", "error")
    return redirect(url_for(".run", run_id=run_id))


@bp.route("/runs/<int:run_id>/delete", methods=["POST"])
@login_required
def delete_run(run_id):
    """Delete a finished run, then show the runs list."""
    run = queries.user_run(run_id)
    try:
        remove(db(), run)
    except Conflict as exc:
        flash(exc.message, "error")
        return redirect(url_for(".run", run_id=run_id))
    flash(f"run {run_id} deleted", "info")
    return redirect(url_for(".runs"))


@bp.route("/ui/runs/<int:run_id>/history.json")
@login_required
def run_history(run_id):
    """What the live curve polls: the run's state and its (downsampled) history."""
    run = queries.user_run(run_id)
    return {"id": run.id, "status": run.status, "final": run.status in FINAL_STATES,
            "epochs": run.epochs, "epochs_done": run.epochs_done,
            "final_error": run.final_error, "best_error": run.best_error,
            "best_epoch": run.best_epoch, "final_accuracy": run.final_accuracy,
            "waiting": waiting_note(run.status, run.epochs_done),
            "history": queries.curve(run_id, RUN_CURVE_POINTS)}


def waiting_note(status: str, epochs_done=None):
    """Why a run has not started training, when the workers are compiling the kernels (a
    queued run, or one a worker took that waits for the compile)."""
    if status == "queued" or (status == "running" and not epochs_done):
        return compiling_note(kernels_status())
    return None


@bp.route("/ui/runs/<int:run_id>/history.csv")
@login_required
def run_history_csv(run_id):
    """Every epoch of the run's history as CSV."""
    queries.user_run(run_id)
    lines = ["epoch,error,accuracy,val_error,val_accuracy,seconds"]
    for e in store_runs.history(db(), run_id):
        lines.append(",".join("" if v is None else repr(v) for v in
                              (e.epoch, e.error, e.accuracy, e.val_error, e.val_accuracy,
                               e.seconds)))
    return Response("\n".join(lines) + "\n", mimetype="text/csv", headers={
        "Content-Disposition": f"attachment; filename=run-{run_id}-history.csv"})


@bp.route("/ui/runs/<int:run_id>/params-<which>.<fmt>")
@login_required
def run_params(run_id, which, fmt):
    """The run's initial or final parameters, as NPZ (W1, B1, ...) or JSON."""
    queries.user_run(run_id)
    if which not in ("initial", "final") or fmt not in ("npz", "json"):
        abort(404)
    row = store_runs.get_params(db(), run_id, which)
    if row is None:
        abort(404, f"run {run_id} has no {which} parameters yet")
    name = f"run-{run_id}-{which}-params.{fmt}"
    if fmt == "npz":
        return Response(row.data, mimetype="application/octet-stream",
                        headers={"Content-Disposition": f"attachment; filename={name}"})
    params = params_from_npz(row.data)
    body = {"run_id": run_id, "which": which, "dtype": row.dtype,
            "weights": [W.tolist() for W in params["weights"]],
            "biases": [B.tolist() for B in params["biases"]]}
    return Response(json.dumps(body), mimetype="application/json",
                    headers={"Content-Disposition": f"attachment; filename={name}"})


_drawings = Recent(64)


@bp.route("/ui/runs/<int:run_id>/network.svg")
@login_required
def run_network(run_id):
    """The network drawn with its final (else initial) parameters."""
    from service.web import plots

    run = queries.user_run(run_id)
    which = "final" if "final" in _params_available(run_id) else "initial"
    # Stored parameters never change within one attempt, and drawing takes a second or so.
    key = (run_id, run.attempts, which)
    svg = _drawings.get(key)
    if svg is None:
        row = store_runs.get_params(db(), run_id, which)
        if row is None:
            abort(404, f"run {run_id} has no parameters yet")
        svg = plots.network_svg(params_from_npz(row.data),
                                activations=plots.layer_activations(run.spec),
                                title=f"run {run_id}: {run.spec['layers']}, {which} parameters")
        _drawings.put(key, svg)
    response = Response(svg, mimetype="image/svg+xml")
    if which == "final" and run.status in FINAL_STATES:
        response.headers["Cache-Control"] = "private, max-age=3600"
    return response

"""The sweeps list, a sweep's leaderboard and its overlaid curves."""

import json

from flask import flash, redirect, render_template, request, url_for

from service.store import sweeps as store_sweeps
from service.store.models import FINAL_STATES
from service.sweeps import METRICS, describe_sweep
from service.web.context import db

from . import queries
from .auth import login_required
from .blueprint import bp
from .views import pretty_json

SWEEP_CURVE_POINTS = 200
SWEEP_CURVES = 50  # the best runs of a bigger sweep are drawn


@bp.route("/sweeps")
@login_required
def sweeps():
    """The user's sweeps, newest first, with their state and run counts."""
    rows = [describe_sweep(db(), s, with_runs=False) for s in queries.user_sweeps()]
    return render_template("sweeps.html", sweeps=rows)


@bp.route("/sweeps/<int:sweep_id>")
@login_required
def sweep(sweep_id):
    """One sweep: its leaderboard by a metric, and every run's curve on one chart."""
    metric = request.args.get("metric", "final_error")
    if metric not in METRICS:
        metric = "final_error"
    order = request.args.get("order") if request.args.get("order") in ("asc", "desc") else None
    data = describe_sweep(db(), queries.user_sweep(sweep_id), metric, order)
    varied = sorted(data["space"] or {})
    runs = {run["id"]: run for run in data["runs"]}
    # How runs stopped on a plateau, when any run of the sweep has a plateau rule.
    plateau = any(run["spec"].get("stop_on_plateau") or run.get("stop_reason")
                  for run in data["runs"])
    return render_template("sweep.html", sweep=data, varied=varied, metric=metric,
                           metrics=METRICS, final=data["status"] in FINAL_STATES,
                           spec_json=pretty_json(data["base"]), runs=runs, plateau=plateau)


@bp.route("/sweeps/<int:sweep_id>/cancel", methods=["POST"])
@login_required
def cancel_sweep(sweep_id):
    """Cancel a sweep's queued and running runs."""
    queries.user_sweep(sweep_id)
    store_sweeps.cancel_sweep(db(), sweep_id)
    flash(f"cancel requested for sweep {sweep_id}", "info")
    return redirect(url_for(".sweep", sweep_id=sweep_id))


@bp.route("/ui/sweeps/<int:sweep_id>/curves.json")
@login_required
def sweep_curves(sweep_id):
    """What the overlaid curves poll: the sweep's state and its best runs' histories."""
    data = describe_sweep(db(), queries.user_sweep(sweep_id))
    ranked = [entry["run_id"] for entry in data["leaderboard"]]
    unranked = [r["id"] for r in data["runs"] if r["id"] not in set(ranked)]
    shown = (ranked + unranked)[:SWEEP_CURVES]
    by_id = {r["id"]: r for r in data["runs"]}
    histories = queries.curves(shown, SWEEP_CURVE_POINTS)
    return {"id": sweep_id, "status": data["status"],
            "final": data["status"] in FINAL_STATES, "total": data["total"],
            "runs": [{"id": run_id, "status": by_id[run_id]["status"],
                      "label": f"#{run_id} " + ", ".join(
                          f"{k}={json.dumps(v)}" for k, v in
                          sorted(by_id[run_id]["config"].items())),
                      "history": histories[run_id]} for run_id in sorted(shown)]}

"""The sweeps list, a sweep's leaderboard and its overlaid curves."""

import json

from flask import Response, abort, flash, redirect, render_template, request, url_for

from service import importance as sweep_importance
from service.errors import NotReady
from service.store import sweeps as store_sweeps
from service.store.models import FINAL_STATES
from service.sweeps import METRICS, describe_sweep
from service.web import plots_sweep
from service.web.context import db

from . import queries
from .auth import login_required
from .blueprint import bp
from .views import pretty_json

SWEEP_CURVE_POINTS = 200
SWEEP_CURVES = 50  # the best runs of a bigger sweep are drawn
SCATTERS = 12  # scatter plots on the page at most (a space has few fields)


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
    row = queries.user_sweep(sweep_id)
    data = describe_sweep(db(), row, metric, order)
    varied = sorted(data["space"] or {})
    runs = {run["id"]: run for run in data["runs"]}
    # How runs stopped on a plateau, when any run of the sweep has a plateau rule.
    plateau = any(run["spec"].get("stop_on_plateau") or run.get("stop_reason")
                  for run in data["runs"])
    return render_template("sweep.html", sweep=data, varied=varied, metric=metric,
                           metrics=METRICS, final=data["status"] in FINAL_STATES,
                           spec_json=pretty_json(data["base"]), runs=runs, plateau=plateau,
                           insights=_insights(row))


def _insights(row) -> dict:
    """What the page shows of what mattered: the importance ranked (or why there is none
    yet) and the fields that get a scatter plot."""
    points = sweep_importance.sweep_points(db(), row)
    out = {"runs": len(points.points), "metric": points.metric, "ranked": [], "note": None,
           "fields": [axis.name for axis in points.axes][:SCATTERS]}
    try:
        found = sweep_importance.importance(points)
    except NotReady as exc:
        out["note"] = exc.message
        return out
    out["ranked"] = sorted(found["importance"].items(), key=lambda kv: (-kv[1], kv[0]))
    return out


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


def _sweep_png(data: bytes, name: str) -> Response:
    return Response(data, mimetype="image/png",
                    headers={"Content-Disposition": f"inline; filename={name}",
                             "Cache-Control": "no-cache"})


@bp.route("/ui/sweeps/<int:sweep_id>/parallel.png")
@login_required
def sweep_parallel(sweep_id):
    """The parallel-coordinates chart of the sweep's succeeded runs."""
    points = sweep_importance.sweep_points(db(), queries.user_sweep(sweep_id))
    return _sweep_png(plots_sweep.parallel_png(points), f"sweep-{sweep_id}-parallel.png")


@bp.route("/ui/sweeps/<int:sweep_id>/scatter.png")
@login_required
def sweep_scatter(sweep_id):
    """The sweep's metric against one field (``field``, a field of its space)."""
    points = sweep_importance.sweep_points(db(), queries.user_sweep(sweep_id))
    name = request.args.get("field", "")
    if name not in points.fields:
        abort(404)
    return _sweep_png(plots_sweep.scatter_png(points, name), f"sweep-{sweep_id}-scatter.png")

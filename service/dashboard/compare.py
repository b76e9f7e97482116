"""Runs compared: /compare?runs=1,2,3 (curves on one chart, specs side by side with the
differences highlighted) and the JSON its chart polls."""

import json

from flask import abort, redirect, render_template, request, url_for

from service import compare
from service.errors import Invalid, NotFound
from service.store.models import FINAL_STATES
from service.web.context import db

from . import queries
from .auth import login_required
from .blueprint import bp

# Points of each curve on the chart (polled every second or so while a run trains).
COMPARE_CURVE_POINTS = 300


def _compared(max_points: int):
    """(ids, comparison) of the page's ``runs`` parameter; Invalid for bad ids, a 404 page
    for a run that is missing or someone else's."""
    ids = compare.parse_run_ids(request.args.getlist("runs"), "runs")
    try:
        return ids, compare.compare_runs(db(), queries.user(), ids, max_points)
    except NotFound as exc:
        abort(404, exc.message)


def _label(run: dict, differing: list) -> str:
    """``#ID`` and the values of the spec fields that differ, for the chart's legend."""
    values = ", ".join(f"{name}={json.dumps(_value(run['spec'], name))}"
                       for name in differing[:4])
    return f"#{run['id']}" + (f" {values}" if values else "")


def _value(spec: dict, dotted: str):
    for key in dotted.split("."):
        spec = spec.get(key) if isinstance(spec, dict) else None
    return spec


@bp.route("/compare")
@login_required
def compare_page():
    """2 to 10 of the user's runs: their curves on one chart, results and specs side by
    side, the spec fields that differ highlighted."""
    raw = request.args.getlist("runs")
    if len(raw) > 1:  # the runs table's checkboxes: one parameter each
        try:
            ids = compare.parse_run_ids(raw, "runs")
        except Invalid as exc:
            return _invalid(exc)
        return redirect(url_for(".compare_page", runs=",".join(map(str, ids))))
    try:
        ids, data = _compared(max_points=3)  # the chart fetches the curves
    except Invalid as exc:
        return _invalid(exc)
    runs = data["runs"]
    finals = [r["final_error"] for r in runs if r["final_error"] is not None]
    return render_template("compare.html", ids=ids, runs=runs, fields=data["fields"],
                           differing=data["differing"], best_final=min(finals, default=None),
                           final=all(r["status"] in FINAL_STATES for r in runs))


def _invalid(exc: Invalid):
    return render_template("compare.html", ids=[], runs=[], fields=[], differing=[],
                           error=exc.fields.get("runs", exc.message), final=True), 422


@bp.route("/ui/compare.json")
@login_required
def compare_curves():
    """What the compare page's chart polls: each run's state and downsampled curve."""
    try:
        _ids, data = _compared(COMPARE_CURVE_POINTS)
    except Invalid as exc:
        abort(422, exc.fields.get("runs", exc.message))
    runs = data["runs"]
    return {"final": all(r["status"] in FINAL_STATES for r in runs),
            "status": ",".join(r["status"] for r in runs),
            "runs": [{"id": r["id"], "status": r["status"],
                      "label": _label(r, data["differing"]), "history": r["history"]}
                     for r in runs]}

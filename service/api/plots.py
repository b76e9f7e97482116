"""Pictures: error curves of a run or a sweep (PNG) and a run's annotated network (SVG)."""

import marshmallow as ma
from flask import Response
from flask.views import MethodView
from marshmallow import fields, validate

from service import importance
from service.errors import Invalid, NotReady
from service.store import runs as store_runs
from service.store import sweeps as store_sweeps
from service.store.arrays import params_from_npz
from service.web import plots, plots_sweep
from service.web.context import db

from .parser import Blueprint
from .runs import user_run
from .sweeps import user_sweep

blp = Blueprint("plots", __name__, url_prefix="/api/v1", description="Plots of runs and sweeps")

PNG = {"type": "string", "format": "binary"}
SVG = {"type": "string"}
# Points per curve: plenty for a plot 800 pixels wide, and cheap for long runs.
RUN_POINTS = 2000
SWEEP_POINTS = 500
# More runs than this: no legend (it would cover the plot), colours still in sweep order.
MAX_LEGEND = 40


class PlotArgsSchema(ma.Schema):
    log = fields.Boolean(load_default=False, metadata={"description": "a log-scale y-axis"})
    metric = fields.String(load_default="error", validate=validate.OneOf(("error", "val_error")),
                           metadata={"description": "the training error, or the validation "
                                                    "error (runs with a validation_split)"})


class NetworkArgsSchema(ma.Schema):
    which = fields.String(validate=validate.OneOf(("final", "initial")),
                          metadata={"description": "default: the final parameters if the "
                                                   "run has them, else the initial ones"})


class ScatterArgsSchema(ma.Schema):
    field = fields.String(required=True, validate=validate.Length(min=1, max=200),
                          metadata={"description": "a field of the sweep's space, e.g. "
                                                   "learning_rate"})


def _curve(run, metric: str, label: str, max_points: int) -> plots.Curve:
    rows = store_runs.history(db(), run.id)
    rows = store_runs.downsample(rows, max_points, error=lambda row: getattr(row, metric))
    return plots.curve_of(rows, label, metric=metric, status=run.status)


def _png(data: bytes, name: str) -> Response:
    return Response(data, mimetype="image/png",
                    headers={"Content-Disposition": f"inline; filename={name}",
                             "Cache-Control": "no-cache"})


def sweep_curves(sweep_id: int, metric: str):
    """(curves, title) of a sweep's runs in the order of its cells, each labelled by the
    fields the sweep varies. NotFound for a sweep the caller cannot see."""
    sweep = user_sweep(sweep_id)
    cells = sorted(store_sweeps.cells(db(), sweep.id), key=lambda cr: cr[0].position)
    curves = [_curve(run, metric, plots.config_label(cell.config) or f"run {run.id}",
                     SWEEP_POINTS)
              for cell, run in cells]
    if len(curves) > MAX_LEGEND:
        for curve in curves:
            curve.label = "_" + curve.label  # matplotlib leaves these out of the legend
    title = f"sweep {sweep.id}" + (f": {sweep.name}" if sweep.name else "") \
        + f" ({len(curves)} runs)"
    return curves, title


@blp.route("/runs/<int:run_id>/plot.png")
class RunPlot(MethodView):
    @blp.arguments(PlotArgsSchema, location="query")
    @blp.response(200, PNG, content_type="image/png",
                  description="error per epoch; a diverged run's curve ends in an x marked "
                              "\"diverged\"; a run without epochs yet gives an empty plot")
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, run_id):
        """The run's error curve as a PNG image (metric=val_error: the validation error;
        log=true: a log-scale y-axis)."""
        run = user_run(run_id)
        curve = _curve(run, args["metric"], "", RUN_POINTS)
        title = f"run {run.id}" + (f": {run.name}" if run.name else "") + f" ({run.status})"
        return _png(plots.error_curves_png([curve], log=args["log"], metric=args["metric"],
                                           title=title), f"run-{run.id}.png")


@blp.route("/sweeps/<int:sweep_id>/plot.png")
class SweepPlot(MethodView):
    @blp.arguments(PlotArgsSchema, location="query")
    @blp.response(200, PNG, content_type="image/png",
                  description="one curve per run, labelled by the fields the sweep varies")
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, sweep_id):
        """The error curves of a sweep's runs in one PNG image, one line per run labelled
        by the sweep's varied fields (learning_rate=0.001, ...): for a learning-rate sweep,
        too small crawls, too large overshoots or diverges."""
        curves, title = sweep_curves(sweep_id, args["metric"])
        return _png(plots.error_curves_png(curves, log=args["log"], metric=args["metric"],
                                           title=title), f"sweep-{sweep_id}.png")


@blp.route("/runs/<int:run_id>/network.svg")
class RunNetwork(MethodView):
    @blp.arguments(NetworkArgsSchema, location="query")
    @blp.response(200, SVG, content_type="image/svg+xml",
                  description="the architecture with the tutorial's labels; edge colour: the "
                              "weight's sign (blue > 0, red < 0), width: its size")
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT",
                      description="the run has no parameters yet (queued), or not the asked ones")
    def get(self, args, run_id):
        """The run's network as an SVG image: inputs X, hidden h_i → h_o, outputs y_i → ŷ
        (per-layer labels for deeper networks), each edge coloured and sized by its trained
        weight; layers wider than 12 units are drawn elided."""
        run = user_run(run_id)
        which = args.get("which")
        row = None
        for candidate in ([which] if which else ["final", "initial"]):
            row = store_runs.get_params(db(), run.id, candidate)
            if row is not None:
                which = candidate
                break
        if row is None:
            raise NotReady(f"run {run.id} has no "
                           f"{which + ' ' if which else ''}parameters yet (status {run.status})")
        svg = plots.network_svg(params_from_npz(row.data),
                                activations=plots.layer_activations(run.spec),
                                title=f"run {run.id}: {run.spec['layers']}, {which} parameters")
        return Response(svg, mimetype="image/svg+xml",
                        headers={"Content-Disposition": f"inline; filename=run-{run.id}.svg",
                                 "Cache-Control": "no-cache"})


@blp.route("/sweeps/<int:sweep_id>/parallel.png")
class SweepParallel(MethodView):
    @blp.response(200, PNG, content_type="image/png",
                  description="an axis per varied field (log for loguniform fields, ordered "
                              "categories for choices) and the metric last; lines coloured "
                              "by the metric; a sweep without succeeded runs gives an empty "
                              "plot saying so")
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, sweep_id):
        """A parallel-coordinates chart of the sweep's succeeded runs as a PNG image: each
        run a line across its varied fields and its metric."""
        data = importance.sweep_points(db(), user_sweep(sweep_id))
        return _png(plots_sweep.parallel_png(data), f"sweep-{sweep_id}-parallel.png")


@blp.route("/sweeps/<int:sweep_id>/scatter.png")
class SweepScatter(MethodView):
    @blp.arguments(ScatterArgsSchema, location="query")
    @blp.response(200, PNG, content_type="image/png",
                  description="one point per succeeded run, the best circled")
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, sweep_id):
        """The sweep's metric against one field's value as a PNG image (field=learning_rate;
        a log x-axis for a loguniform field, the categories in order for a choice)."""
        data = importance.sweep_points(db(), user_sweep(sweep_id))
        if args["field"] not in data.fields:
            raise Invalid({"field": f"not a field of sweep {sweep_id}; its fields: "
                                    f"{', '.join(data.fields)}"})
        return _png(plots_sweep.scatter_png(data, args["field"]),
                    f"sweep-{sweep_id}-scatter.png")

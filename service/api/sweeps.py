"""/api/v1/sweeps: grid and random searches expanded into runs on the queue, and model-based
searches (tpe, cmaes) whose runs a sampler proposes as slots open."""

import marshmallow as ma
from flask import jsonify
from flask.views import MethodView
from marshmallow import RAISE, ValidationError, fields, validate

from service import importance, sweeps
from service.errors import Invalid
from service.runspec import INT32, StrictBoolean
from service.store import runs as store_runs
from service.store import sweeps as store_sweeps
from service.sweeps import METRICS, SEARCHES
from service.web.context import db, queue, settings

from .auth import require_user
from .idempotency import idempotent
from .parser import Blueprint
from .schemas import RunSchema, UtcDateTime

blp = Blueprint("sweeps", __name__, url_prefix="/api/v1/sweeps",
                description="Hyperparameter sweeps")


class EarlyStoppingSchema(ma.Schema):
    class Meta:
        unknown = RAISE

    min_epochs = fields.Integer(strict=True, required=True,
                                validate=validate.Range(min=1, max=INT32))
    reduction_factor = fields.Integer(strict=True, load_default=3,
                                      validate=validate.Range(min=2, max=100))


class SweepRequestSchema(ma.Schema):
    """A sweep: a base run spec and exactly one of ``grid``, ``random`` or (with ``search``
    tpe or cmaes) ``space``."""

    class Meta:
        unknown = RAISE

    base = fields.Dict(required=True, metadata={"description": "a run spec (API.md section 2)"})
    grid = fields.Dict(metadata={"description": "field: [values]; every combination is run",
                                 "example": {"learning_rate": [0.01, 0.1, 1.0]}})
    random = fields.Dict(metadata={
        "description": "field: {choice: [..]} | {uniform: [a, b]} | {loguniform: [a, b]} | "
                       "{int: [a, b]}; ``trials`` draws seeded by ``seed``"})
    search = fields.String(validate=validate.OneOf(SEARCHES), metadata={
        "description": "grid or random (also told by their keys), or a model-based search "
                       "with Optuna's samplers over ``space``: tpe (TPESampler(multivariate="
                       "True, constant_liar=True, seed=seed)) or cmaes (CmaEsSampler(seed=seed)"
                       "; choices drawn at random); each run is asked when a slot opens"})
    space = fields.Dict(metadata={
        "description": "with search tpe or cmaes: the space, in random's syntax",
        "example": {"learning_rate": {"loguniform": [0.001, 1.0]},
                    "layers": {"choice": [[2, 8, 3], [2, 16, 16, 3]]}}})
    trials = fields.Integer(strict=True, validate=validate.Range(min=1, max=1000),
                            metadata={"description": "random: draws; tpe/cmaes: the budget "
                                                     "of runs"})
    seed = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0))
    objective = fields.String(load_default="final", validate=validate.OneOf(("final", "best")),
                              metadata={"description": "tpe/cmaes: minimise the metric's "
                                        "final value or its best over the epochs"})
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    max_concurrency = fields.Integer(strict=True, load_default=None, allow_none=True,
                                     validate=validate.Range(min=1, max=INT32))
    early_stopping = fields.Nested(EarlyStoppingSchema, load_default=None, allow_none=True,
                                   metadata={"description": "successive halving: rungs at "
                                             "min_epochs * reduction_factor**k epochs"})
    metric = fields.String(load_default="error", validate=validate.OneOf(("error", "val_error")),
                           metadata={"description": "what early stopping compares, and what "
                                                    "a tpe/cmaes search minimises"})
    preview = StrictBoolean(load_default=False,
                            metadata={"description": "return the configurations only"})

    @ma.validates_schema
    def _one_space(self, data, **kwargs):
        search = data.get("search")
        if search in sweeps.SEARCHES[2:]:
            for other in ("grid", "random"):
                if other in data:
                    raise ValidationError(f"not with search {search}: give space", other)
            if "space" not in data:
                raise ValidationError(f"required with search {search}", "space")
            if "trials" not in data:
                raise ValidationError(f"required with search {search}", "trials")
            return
        if "space" in data:
            raise ValidationError("only with search tpe or cmaes", "space")
        if ("grid" in data) == ("random" in data):
            raise ValidationError("give exactly one of grid or random", "grid")
        if search is not None and search not in data:
            raise ValidationError(f"search {search} needs its space in {search}", "search")
        if "random" in data and "trials" not in data:
            raise ValidationError("required with random", "trials")


class ConfigurationSchema(ma.Schema):
    position = fields.Integer()
    config = fields.Dict(metadata={"description": "the varied fields"})
    spec = fields.Dict(metadata={"description": "the complete run spec"})


class PreviewSchema(ma.Schema):
    count = fields.Integer()
    configurations = fields.List(fields.Nested(ConfigurationSchema))


class LeaderboardEntrySchema(ma.Schema):
    rank = fields.Integer()
    run_id = fields.Integer()
    status = fields.String()
    config = fields.Dict()
    epochs_done = fields.Integer()
    final_error = fields.Float(allow_none=True)
    best_error = fields.Float(allow_none=True)
    final_val_error = fields.Float(allow_none=True)
    final_accuracy = fields.Float(allow_none=True)
    best_epoch = fields.Integer(allow_none=True)
    stop_reason = fields.String(allow_none=True, metadata={"enum": ["plateau", None]})


class SweepRunSchema(RunSchema):
    config = fields.Dict()
    dispatched = fields.Boolean()


class SweepSchema(ma.Schema):
    id = fields.Integer()
    name = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": ["queued", "running", "succeeded", "failed",
                                              "cancelled"]})
    kind = fields.String(metadata={"enum": list(SEARCHES)})
    base = fields.Dict()
    space = fields.Dict()
    trials = fields.Integer(allow_none=True, metadata={
        "description": "random: draws; tpe/cmaes: the budget (runs so far: total)"})
    objective = fields.String(allow_none=True, metadata={
        "enum": ["final", "best"], "description": "tpe/cmaes only"})
    seed = fields.Integer(allow_none=True)
    max_concurrency = fields.Integer(allow_none=True)
    early_stopping = fields.Dict(allow_none=True)
    metric = fields.String()
    created_at = UtcDateTime()
    finished_at = UtcDateTime(allow_none=True)
    total = fields.Integer()
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    runs = fields.List(fields.Nested(SweepRunSchema))
    leaderboard = fields.List(fields.Nested(LeaderboardEntrySchema))
    best = fields.Nested(LeaderboardEntrySchema, allow_none=True)


class SweepListSchema(ma.Schema):
    sweeps = fields.List(fields.Nested(SweepSchema))
    next_cursor = fields.String(allow_none=True, metadata={
        "description": "pass as cursor for the next page; null on the last page"})


class SweepArgsSchema(ma.Schema):
    metric = fields.String(load_default="final_error", validate=validate.OneOf(METRICS))
    order = fields.String(load_default=None, validate=validate.OneOf(("asc", "desc")),
                          metadata={"description": "default: desc for final_accuracy, "
                                                   "else asc"})


class SweepListArgsSchema(ma.Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.String(load_default=None, metadata={
        "description": "next_cursor of the previous page (pages stay stable while new "
                       "sweeps arrive)"})


def sweep_cursor(token: str) -> int:
    """The last sweep id of the previous page, from its page token; Invalid naming
    ``cursor`` when the token is not one of ours."""
    try:
        is_null, value, last_id = store_runs.decode_cursor(token)
    except ValueError:
        last_id = None
    if not isinstance(last_id, int) or isinstance(last_id, bool) or not 0 < last_id <= INT32:
        raise Invalid({"cursor": "not a valid page token; pass next_cursor of the previous "
                                 "page as it is"})
    return last_id


def preview(body: dict) -> dict:
    """The configurations of a sweep body, validated; nothing is stored or queued."""
    return sweeps.preview(sweeps.expand(db(), body, require_user(), settings().limits))


def user_sweep(sweep_id: int):
    """The sweep ``sweep_id`` of this request's user (NotFound for anyone else's)."""
    return sweeps.owned_sweep(db(), sweep_id, require_user())


def sweep_json(sweep, metric: str = "final_error", order=None, with_runs: bool = True) -> dict:
    """A sweep as the API shows it (``service.sweeps.describe_sweep``)."""
    return sweeps.describe_sweep(db(), sweep, metric, order, with_runs)


@blp.route("")
class Sweeps(MethodView):
    @blp.arguments(SweepRequestSchema)
    @blp.response(202, SweepSchema)
    @blp.alt_response(200, schema=PreviewSchema, description="the configurations, with "
                      "preview: true (nothing is stored or queued)", success=True)
    @blp.alt_response(429, response="TOO_MANY_REQUESTS_OR_QUOTA")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    @idempotent(blp, "POST /sweeps", lambda sweep_id: sweep_json(user_sweep(sweep_id)))
    def post(self, body):
        """Submit a sweep: validate every configuration, store one run per configuration,
        and queue them (at most max_concurrency at a time)."""
        if body["preview"]:
            response = jsonify(PreviewSchema().dump(preview(body)))
            response.status_code = 200
            return response
        return sweep_json(sweeps.create_sweep(db(), queue(), settings().limits, require_user(),
                                              body))

    @blp.arguments(SweepListArgsSchema, location="query")
    @blp.response(200, SweepListSchema)
    def get(self, args):
        """Sweeps, newest first, with their state and run counts; cursor paging."""
        before = sweep_cursor(args["cursor"]) if args["cursor"] else None
        found = store_sweeps.list_sweeps(db(), args["limit"] + 1, before=before,
                                         owner=require_user())
        page = found[:args["limit"]]
        more = len(found) > args["limit"]
        return {"sweeps": [sweep_json(s, with_runs=False) for s in page],
                "next_cursor": (store_runs.encode_cursor([False, None, page[-1].id])
                                if more else None)}


@blp.route("/preview")
class SweepPreview(MethodView):
    @blp.arguments(SweepRequestSchema)
    @blp.response(200, PreviewSchema)
    def post(self, body):
        """The configurations a sweep would run; nothing is stored or queued."""
        return preview(body)


@blp.route("/<int:sweep_id>")
class SweepById(MethodView):
    @blp.arguments(SweepArgsSchema, location="query")
    @blp.response(200, SweepSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, sweep_id):
        """A sweep: state, counts by run state, its runs and the leaderboard by a metric."""
        return sweep_json(user_sweep(sweep_id), args["metric"], args["order"])


@blp.route("/<int:sweep_id>/cancel")
class SweepCancel(MethodView):
    @blp.response(202, SweepSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, sweep_id):
        """Cancel a sweep: its queued runs end now, its running ones at their next chunk."""
        user_sweep(sweep_id)
        return sweep_json(store_sweeps.cancel_sweep(db(), sweep_id))


class ImportanceSchema(ma.Schema):
    metric = fields.String(metadata={"description": "what the runs are compared by: the "
                                     "sweep's metric, final (grid, random) or as its "
                                     "objective says (tpe, cmaes), e.g. final_error"})
    importance = fields.Dict(keys=fields.String(), values=fields.Float(), metadata={
        "description": "each varied field's share of the importance (they sum to 1, or are "
                       "all 0 when no field stands out)",
        "example": {"learning_rate": 0.8, "layers": 0.2}})
    runs = fields.Integer(metadata={"description": "the succeeded runs with a finite metric "
                                                   "the importance is computed over"})
    evaluator = fields.String(metadata={"description": "Optuna's evaluator used"})


@blp.route("/<int:sweep_id>/importance")
class SweepImportance(MethodView):
    @blp.response(200, ImportanceSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT", description="fewer than 2 succeeded runs "
                      "with a finite metric, or no field varies between them")
    def get(self, sweep_id):
        """Parameter importance over the sweep's succeeded runs (any kind of sweep), by
        Optuna's PedAnovaImportanceEvaluator on an in-memory study of those runs: which
        varied fields decide whether a run lands among the best."""
        return importance.importance(importance.sweep_points(db(), user_sweep(sweep_id)))

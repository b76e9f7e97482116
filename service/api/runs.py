"""/api/v1/runs: submit, list, inspect, cancel, delete and use training runs."""

import marshmallow as ma
from flask.views import MethodView
from marshmallow import fields

from service import runs, verify
from service.runquery import RunListArgsSchema, parse_run_query, wrap_cursor
from service.runspec import RunSpecSchema
from service.store import history as store_history
from service.store import runs as store_runs
from service.store.history import HISTORY_COLUMNS
from service.store.npzviews import params_views
from service.web.context import db, queue, settings

from . import downloads
from .auth import require_user
from .idempotency import idempotent
from .parser import Blueprint
from .schemas import (
    HistoryArgsSchema,
    HistorySchema,
    ParamsArgsSchema,
    ParamsSchema,
    PredictionSchema,
    PredictSchema,
    RunPageSchema,
    RunSchema,
)

blp = Blueprint("runs", __name__, url_prefix="/api/v1/runs", description="Training runs")


class DifferenceSchema(ma.Schema):
    field = fields.String(metadata={"description": "dotted path, e.g. blas.num_threads"})
    values = fields.List(fields.Raw(allow_none=True),
                         metadata={"description": "the first run's value, the second's"})


class DifferencesSchema(ma.Schema):
    identical = fields.Boolean(allow_none=True, metadata={
        "description": "null when an environment was not recorded for both runs"})
    recorded = fields.List(fields.Boolean())
    differences = fields.List(fields.Nested(DifferenceSchema))


class HistoryComparisonSchema(ma.Schema):
    identical = fields.Boolean()
    rows = fields.Integer(metadata={"description": "rows found identical before the first "
                                                   "difference (all rows when identical)"})
    first_difference = fields.Dict(allow_none=True, metadata={
        "description": "{epoch, field (error, accuracy, val_error, val_accuracy, or epoch "
                       "when one run has a row the other lacks), values}"})


class ParamsComparisonSchema(ma.Schema):
    identical = fields.Boolean()
    stored = fields.Raw(metadata={"description": "whether both stored them (a pair when "
                                                 "only one did)"})
    first_difference = fields.Dict(allow_none=True, metadata={
        "description": "{layer (from 1), array (W or B), index (row-major; null for a shape "
                       "or dtype mismatch), values, reason}"})


class VerdictSchema(ma.Schema):
    """Two runs compared bit for bit (GET /runs/{id}/verification, /compare/{other})."""

    runs = fields.List(fields.Integer())
    statuses = fields.List(fields.String())
    verdict = fields.String(metadata={"enum": ["pending", "bit-identical", "differs"]})
    summary = fields.String(metadata={"description": "the verdict in one line"})
    history = fields.Nested(HistoryComparisonSchema, allow_none=True)
    initial_params = fields.Nested(ParamsComparisonSchema, allow_none=True)
    final_params = fields.Nested(ParamsComparisonSchema, allow_none=True)
    environment = fields.Nested(DifferencesSchema)
    spec = fields.Nested(DifferencesSchema, metadata={"description": "fields of the specs "
                                                                     "that differ (not name "
                                                                     "or tags)"})


def user_run(run_id: int):
    """The run ``run_id`` of this request's user (NotFound for anyone else's)."""
    return runs.owned_run(db(), run_id, require_user())


def one_run(run) -> dict:
    """A run as every endpoint of one run answers it: with its environment (lists of runs
    leave that out)."""
    return runs.describe_run(run, environment=True)


@blp.route("")
class Runs(MethodView):
    @blp.arguments(RunSpecSchema)
    @blp.response(202, RunSchema)
    @blp.alt_response(400, response="BAD_REQUEST")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS_OR_QUOTA")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    @idempotent(blp, "POST /runs", lambda run_id: one_run(user_run(run_id)))
    def post(self, fields):
        """Submit a training run: validate, store, enqueue."""
        run = runs.submit_run(db(), queue(), settings().limits, require_user(), fields)
        return one_run(run)

    @blp.arguments(RunListArgsSchema, location="query")
    @blp.response(200, RunPageSchema)
    def get(self, args):
        """Query run history, newest first by default, one page at a time.

        Filters: status (comma-separated states), dataset (name or id), sweep_id,
        tag.KEY=VALUE, FIELD_min / FIELD_max ranges (inclusive) and a where= expression
        with and, or, not and parentheses; all are ANDed. Pass
        next_cursor back as cursor for the next page; pages stay stable while new runs
        arrive."""
        query = parse_run_query(db(), args, require_user())
        page, next_cursor = store_runs.list_runs(db(), query)
        return {"runs": [runs.describe_run(run) for run in page],
                "next_cursor": wrap_cursor(query, next_cursor)}


@blp.route("/<int:run_id>")
class RunById(MethodView):
    @blp.response(200, RunSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, run_id):
        """One run: spec, state, timestamps, progress, summary of results and where it
        trained (``environment``)."""
        return one_run(user_run(run_id))

    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, run_id):
        """Delete a finished run with its history and parameters (freeing their bytes from
        the per-user quota). A queued or running run is 409 not_finished (cancel it first);
        a run of a sweep that still has queued or running runs is 409 sweep_active."""
        runs.delete_run(db(), user_run(run_id))
        return "", 204


@blp.route("/<int:run_id>/history")
class RunHistory(MethodView):
    @blp.arguments(HistoryArgsSchema, location="query")
    @blp.response(200, HistorySchema)
    @blp.alt_response(200, description="CSV when format=csv", schema={"type": "string"},
                      content_type="text/csv", success=True)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, run_id):
        """Per-epoch history: error, accuracy and validation error where recorded;
        max_points=N keeps at most N evenly spread epochs (always the first, the last and
        the best)."""
        user_run(run_id)
        positions = (None if args.get("max_points") is None
                     else store_history.history_spread(db(), run_id, args["max_points"]))
        pages = history_pages(run_id, positions)
        if args["format"] == "csv":
            return downloads.stream(downloads.history_csv(pages, HISTORY_COLUMNS), "text/csv",
                                    f"run-{run_id}-history.csv", with_context=True)
        return downloads.stream(downloads.history_json(run_id, pages, HISTORY_COLUMNS),
                                "application/json", with_context=True)


def history_pages(run_id: int, positions):
    """The run's history pages, read while the body is written: with the session that
    ``db()`` opens then (the view's own was closed when it returned), which the request's
    teardown closes once the last page is written."""
    yield from store_history.history_pages(db(), run_id, positions)


@blp.route("/<int:run_id>/params")
class RunParams(MethodView):
    @blp.arguments(ParamsArgsSchema, location="query")
    @blp.response(200, ParamsSchema)
    @blp.alt_response(200, description="NPZ (W1, B1, W2, B2, ...) when format=npz",
                      schema={"type": "string", "format": "binary"},
                      content_type="application/octet-stream", success=True)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def get(self, args, run_id):
        """Final parameters, or the initial ones with which=initial; JSON or NPZ."""
        # Every check that can fail comes first: once streaming, the status is sent.
        row = runs.stored_params(db(), user_run(run_id), args["which"])
        if args["format"] == "npz":  # the stored NPZ as it is
            return downloads.stream(downloads.binary_chunks(row.data),
                                    "application/octet-stream",
                                    f"run-{run_id}-{args['which']}-params.npz")
        params = params_views(row.data)
        return downloads.stream(
            downloads.params_json(run_id, args["which"], row.dtype, params), "application/json")


@blp.route("/<int:run_id>/cancel")
class RunCancel(MethodView):
    @blp.response(202, RunSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, run_id):
        """Cancel queued or running work; a finished run is left as it is (409)."""
        return one_run(runs.cancel_run(db(), user_run(run_id)))


@blp.route("/<int:run_id>/predict")
class RunPredict(MethodView):
    @blp.arguments(PredictSchema)
    @blp.response(200, PredictionSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, body, run_id):
        """Outputs of the trained network for the given input rows."""
        outputs = runs.predict(db(), user_run(run_id), body["inputs"], settings().limits)
        return {"run_id": run_id, "outputs": outputs}


@blp.route("/<int:run_id>/rerun")
class RunRerun(MethodView):
    @blp.response(202, RunSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
    @blp.alt_response(429, response="TOO_MANY_REQUESTS_OR_QUOTA")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self, run_id):
        """Queue the run again: the same spec and seed on the same stored dataset, as a new
        run (``rerun_of`` names the original) checked and counted like a submit. 409
        dataset_gone when that dataset was deleted."""
        run = runs.rerun_run(db(), queue(), settings().limits, require_user(),
                             user_run(run_id))
        return one_run(run)


@blp.route("/<int:run_id>/verification")
class RunVerification(MethodView):
    @blp.response(200, VerdictSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, run_id):
        """The verdict on a rerun and its original (for a run that is a rerun), else on the
        run and its newest rerun: "pending" until both are final, then "bit-identical" or
        where the history and the parameters first differ, and which environment fields
        differ. 404 for a run that has no rerun and is none."""
        return verify.run_verification(db(), user_run(run_id))


@blp.route("/<int:run_id>/compare/<int:other_id>")
class RunComparison(MethodView):
    @blp.response(200, VerdictSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, run_id, other_id):
        """Two of your runs compared as GET /runs/{id}/verification compares a run and its
        rerun (their specs too)."""
        return verify.compare_runs(db(), user_run(run_id), user_run(other_id))

"""/api/v1/runs/compare: 2 to 10 runs side by side (specs, differences, curves)."""

import marshmallow as ma
from flask.views import MethodView
from marshmallow import fields, validate

from service import compare
from service.web.context import db

from .auth import require_user
from .parser import Blueprint
from .schemas import RunSchema

blp = Blueprint("compare", __name__, url_prefix="/api/v1/runs",
                description="Training runs compared")


class CompareArgsSchema(ma.Schema):
    ids = fields.String(required=True, validate=validate.Length(max=1000), metadata={
        "description": f"{compare.MIN_RUNS} to {compare.MAX_RUNS} distinct run ids, "
                       "separated by commas", "example": "3,4,7"})
    max_points = fields.Integer(load_default=compare.CURVE_POINTS, validate=validate.Range(
        min=3, max=compare.MAX_CURVE_POINTS), metadata={
        "description": "at most this many epochs of each run's history, evenly spread, "
                       "always with the first, the last and the best"})


class CurvePointSchema(ma.Schema):
    epoch = fields.Integer()
    error = fields.Float(allow_none=True)
    val_error = fields.Float(allow_none=True)


class ComparedRunSchema(RunSchema):
    history = fields.List(fields.Nested(CurvePointSchema))


class FieldRowSchema(ma.Schema):
    field = fields.String(metadata={"description": "dotted path of a spec field, e.g. "
                                                   "optimizer.name"})
    values = fields.List(fields.Raw(allow_none=True),
                         metadata={"description": "each run's value (null where it has none)"})
    differs = fields.Boolean()


class ComparisonSchema(ma.Schema):
    runs = fields.List(fields.Nested(ComparedRunSchema))
    fields_ = fields.List(fields.Nested(FieldRowSchema), data_key="fields", attribute="fields",
                          metadata={
        "description": "every spec field of any of the runs but name and tags, by name"})
    differing = fields.List(fields.String(), metadata={
        "description": "the fields whose values are not all the same"})


@blp.route("/compare")
class RunsComparison(MethodView):
    @blp.arguments(CompareArgsSchema, location="query")
    @blp.response(200, ComparisonSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args):
        """Runs side by side: each run (as GET /runs lists it) with its error curve
        downsampled to max_points, every spec field with each run's value, and the fields
        that differ. 422 naming ids unless they are 2 to 10 distinct run ids; 404 when one
        is missing or not yours."""
        ids = compare.parse_run_ids([args["ids"]], "ids")
        return compare.compare_runs(db(), require_user(), ids, args["max_points"])

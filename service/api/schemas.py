"""Request and response schemas of the runs endpoints: one set feeds validation and the
OpenAPI document. (The run spec's own schema is ``service.runspec.RunSpecSchema``; the run
query's, ``service.runquery.RunListArgsSchema``.)"""

from datetime import timezone

import marshmallow as ma
from marshmallow import RAISE, fields, validate

from service.runspec import StrictFloat


class UtcDateTime(fields.DateTime):
    """A timestamp in ISO 8601 with its UTC offset (SQLite hands back naive UTC datetimes)."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return super()._serialize(value, attr, obj, **kwargs)


class DatasetSummarySchema(ma.Schema):
    id = fields.Integer()
    name = fields.String()


class RunSchema(ma.Schema):
    """A run as GET /runs/{id} shows it."""

    id = fields.Integer()
    name = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": ["queued", "running", "succeeded", "failed",
                                              "diverged", "cancelled", "stopped_early"]})
    spec = fields.Dict()
    tags = fields.Dict()
    dataset = fields.Nested(DatasetSummarySchema)
    sweep_id = fields.Integer(allow_none=True)
    created_at = UtcDateTime()
    started_at = UtcDateTime(allow_none=True)
    finished_at = UtcDateTime(allow_none=True)
    epochs = fields.Integer()
    epochs_done = fields.Integer()
    final_error = fields.Float(allow_none=True)
    best_error = fields.Float(allow_none=True)
    best_epoch = fields.Integer(allow_none=True, metadata={"description": (
        "the epoch of best_error; with stop_on_plateau, the epoch whose plateau metric was "
        "best (restore_best keeps its parameters)")})
    stop_reason = fields.String(allow_none=True, metadata={
        "enum": ["plateau", None], "description": "plateau: stop_on_plateau ended the run "
                                                  "(succeeded) before its last epoch"})
    final_accuracy = fields.Float(allow_none=True)
    final_val_error = fields.Float(allow_none=True)
    worker = fields.String(allow_none=True)
    attempts = fields.Integer()
    cancel_requested = fields.Boolean(metadata={"description": "a cancel was asked for; a "
                                                               "running run stops at its next "
                                                               "chunk"})
    error_message = fields.String(allow_none=True)
    rerun_of = fields.Integer(allow_none=True, metadata={
        "description": "the run this one reruns (POST /runs/{id}/rerun)"})
    environment = fields.Dict(allow_none=True, metadata={
        "description": "endpoints of one run (not lists): where it trained, as its worker "
                       "recorded it (descent version and commit, python, numpy, numba, "
                       "llvmlite, scipy; blas: internal_api, version, architecture (core "
                       "type), threading_layer, num_threads, library; cpu: model, machine, "
                       "flags; dtype; dataset: id, name, content_hash); null before a worker "
                       "claims it"})


class RunPageSchema(ma.Schema):
    runs = fields.List(fields.Nested(RunSchema))
    next_cursor = fields.String(allow_none=True)


class HistoryArgsSchema(ma.Schema):
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "csv")))
    max_points = fields.Integer(validate=validate.Range(min=3), metadata={"description": (
        "at most this many epochs, evenly spread, always with the first, the last and the "
        "best (lowest error) one")})


class EpochSchema(ma.Schema):
    epoch = fields.Integer()
    error = fields.Float(allow_none=True)
    accuracy = fields.Float(allow_none=True)
    val_error = fields.Float(allow_none=True)
    val_accuracy = fields.Float(allow_none=True)
    seconds = fields.Float()


class HistorySchema(ma.Schema):
    run_id = fields.Integer()
    history = fields.List(fields.Nested(EpochSchema))


class ParamsArgsSchema(ma.Schema):
    which = fields.String(load_default="final", validate=validate.OneOf(("final", "initial")))
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "npz")))


class ParamsSchema(ma.Schema):
    run_id = fields.Integer()
    which = fields.String()
    dtype = fields.String()
    weights = fields.List(fields.List(fields.List(fields.Float())))
    biases = fields.List(fields.List(fields.Float()))


class PredictSchema(ma.Schema):
    class Meta:
        unknown = RAISE

    inputs = fields.List(fields.List(StrictFloat(), validate=validate.Length(min=1)),
                         required=True, validate=validate.Length(min=1, max=100_000))


class PredictionSchema(ma.Schema):
    run_id = fields.Integer()
    outputs = fields.List(fields.List(fields.Float()))

"""Request and response schemas: one set feeds validation and the OpenAPI document."""

from datetime import timezone

import marshmallow as ma
from marshmallow import RAISE, ValidationError, fields, validate, validates_schema

import kernels
from service.runspec import RUN_DEFAULTS, complete_spec, numeric_problems
from service.store.runs import ORDERABLE, RUN_STATES, is_orderable

ACTIVATION_NAMES = tuple(kernels.HIDDEN_ACTIVATIONS)
OUTPUT_ACTIVATION_NAMES = tuple(kernels.OUTPUT_ACTIVATIONS)
# Sizes, batch sizes and epochs are INTEGER columns or int64 arrays: bound them before anything
# converts them (the configured limits, usually far lower, are checked afterwards).
INT32 = 2**31 - 1


class UtcDateTime(fields.DateTime):
    """A timestamp in ISO 8601 with its UTC offset (SQLite hands back naive UTC datetimes)."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return super()._serialize(value, attr, obj, **kwargs)


class StrictFloat(fields.Float):
    """A JSON number (an integer or a float), never a string or a boolean; finite unless
    ``allow_nan``."""

    def _validated(self, value):
        if isinstance(value, (str, bytes)):
            raise self.make_error("invalid")
        return super()._validated(value)


class StrictBoolean(fields.Boolean):
    """JSON true or false only (not 1, 0 or strings)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class DatasetRef(fields.Field):
    """A dataset name or numeric id."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError("expected a dataset name or id")
        if isinstance(value, str) and not value.strip():
            raise ValidationError("must not be empty")
        return value


class Activation(fields.Field):
    """An activation name, or a list with one name per hidden layer."""

    def _deserialize(self, value, attr, data, **kwargs):
        names = value if isinstance(value, list) else [value]
        for name in names:
            if name not in ACTIVATION_NAMES:
                raise ValidationError(
                    f"unknown {name!r}; expected one of {', '.join(ACTIVATION_NAMES)}"
                    + (" (softmax is output-only)" if name == "softmax" else ""))
        return value


class RunSpecSchema(ma.Schema):
    """The run spec of API.md section 2; unknown fields are rejected."""

    class Meta:
        unknown = RAISE

    dataset = DatasetRef(required=True, metadata={"description": "dataset name or id",
                                                  "example": "xor"})
    layers = fields.List(fields.Integer(strict=True, validate=validate.Range(min=1, max=INT32)),
                         required=True, validate=validate.Length(min=2),
                         metadata={"example": [2, 8, 1]})
    activation = Activation(load_default=RUN_DEFAULTS["activation"],
                            metadata={"description": "hidden activation, or one per hidden layer",
                                      "enum": list(ACTIVATION_NAMES)})
    output_activation = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(OUTPUT_ACTIVATION_NAMES),
        metadata={"description": "default: softmax for cross_entropy with several outputs, "
                                 "else sigmoid"})
    loss = fields.String(load_default=RUN_DEFAULTS["loss"],
                         validate=validate.OneOf(tuple(kernels.LOSSES)))
    learning_rate = StrictFloat(load_default=RUN_DEFAULTS["learning_rate"],
                                validate=validate.Range(min=0, min_inclusive=False))
    batch_mode = fields.String(load_default=RUN_DEFAULTS["batch_mode"],
                               validate=validate.OneOf(kernels.BATCH_MODES))
    batch_size = fields.Integer(strict=True, load_default=RUN_DEFAULTS["batch_size"],
                                validate=validate.Range(min=1, max=INT32))
    epochs = fields.Integer(strict=True, load_default=RUN_DEFAULTS["epochs"],
                            validate=validate.Range(min=0, max=INT32))
    seed = fields.Integer(strict=True, load_default=RUN_DEFAULTS["seed"],
                          validate=validate.Range(min=0, max=2**63 - 1))
    shuffle = StrictBoolean(load_default=RUN_DEFAULTS["shuffle"])
    init = fields.String(load_default=RUN_DEFAULTS["init"], validate=validate.OneOf(kernels.INITS))
    dtype = fields.String(load_default=RUN_DEFAULTS["dtype"],
                          validate=validate.OneOf(kernels.DTYPES))
    validation_split = StrictFloat(load_default=0.0,
                                  validate=validate.Range(min=0, max=1, max_inclusive=False))
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    tags = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)),
                       values=fields.String(validate=validate.Length(max=500)),
                       load_default=dict)

    @validates_schema(skip_on_field_errors=True)
    def _numeric_contract(self, data, **kwargs):
        problems = numeric_problems(complete_spec(data))
        if problems:
            raise ValidationError({name: [message] for name, message in problems.items()})


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
    best_epoch = fields.Integer(allow_none=True)
    final_accuracy = fields.Float(allow_none=True)
    final_val_error = fields.Float(allow_none=True)
    worker = fields.String(allow_none=True)
    attempts = fields.Integer()
    cancel_requested = fields.Boolean(metadata={"description": "a cancel was asked for; a "
                                                               "running run stops at its next "
                                                               "chunk"})
    error_message = fields.String(allow_none=True)


class RunPageSchema(ma.Schema):
    runs = fields.List(fields.Nested(RunSchema))
    next_cursor = fields.String(allow_none=True)


# Run columns GET /runs filters by range, with FIELD_min and FIELD_max (both inclusive).
RANGE_FIELDS = ("learning_rate", "batch_size", "epochs", "epochs_done", "final_error",
                "best_error", "final_accuracy")


def validate_order_by(value: str) -> None:
    """order_by is a sortable field or tag.KEY, optionally with '-' first."""
    if not is_orderable(value[1:] if value.startswith("-") else value):
        raise ValidationError(f"not a sortable field: one of {', '.join(ORDERABLE)} or "
                              "tag.KEY, with '-' first for descending")


class _RunListArgs(ma.Schema):
    class Meta:
        unknown = ma.INCLUDE  # tag.KEY parameters; anything else is rejected by the view

    status = fields.String(metadata={"description": "one state or several, comma-separated: "
                                                    + ", ".join(RUN_STATES)})
    dataset = fields.String(metadata={"description": "dataset name or id"})
    sweep_id = fields.Integer()
    where = fields.String(metadata={"description": (
        "a filter expression, ANDed with the other filters: comparisons (= != < <= > >=), "
        "`in (...)`, `not in (...)`, `not`, `and`, `or` and parentheses over status, "
        "dataset, sweep_id, name, batch_mode, tag.KEY, id, learning_rate, batch_size, "
        "epochs, seed, epochs_done, final_error, best_error, best_epoch, final_accuracy, "
        "final_val_error, created_at, started_at, finished_at; times quoted (ISO 8601), "
        "strings quoted or bare words, `= null` for a missing value, "
        "e.g. `status in (succeeded, diverged) and (learning_rate >= 0.1 or "
        "tag.team = \"vision\") and created_at >= \"2026-11-01\"`. A malformed one is a "
        "422 naming the character offset and what was expected.")})
    order_by = fields.String(
        load_default="-id",
        validate=validate_order_by,
        metadata={"description": "a field (" + ", ".join(ORDERABLE) + ", or tag.KEY), "
                                 "'-' first for descending; text sorts in the database's "
                                 "collation; runs without a value come last either way; "
                                 "ties are broken by id"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.String(metadata={"description": "next_cursor of the previous page (made "
                                                    "for the same order_by)"})


# Query parameters of GET /runs: the above, FIELD_min / FIELD_max for each range field, and
# tag.KEY=VALUE (runs whose tag KEY is VALUE; several are ANDed).
RunListArgsSchema = type("RunListArgsSchema", (_RunListArgs,), {
    f"{name}_{bound}": fields.Float(metadata={"description": f"runs with {name} {op} this"})
    for name in RANGE_FIELDS for bound, op in (("min", ">="), ("max", "<="))
})


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

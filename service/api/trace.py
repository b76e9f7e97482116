"""/api/v1/trace: one backpropagation step of one sample, in the tutorial's notation
(computed by ``service.trace``, from the kernels training runs on)."""

import math

import marshmallow as ma
from flask.views import MethodView
from marshmallow import RAISE, ValidationError, fields, validate

from service import trace
from service.runspec import (
    DTYPES,
    INIT_NAMES,
    LOSS_NAMES,
    StrictFloat,
    activation_field,
    output_activation_field,
)

from .parser import Blueprint

blp = Blueprint("trace", __name__, url_prefix="/api/v1/trace",
                description="One backpropagation step, for teaching")

# A teaching tool: small networks only.
MAX_UNITS = 64
MAX_LAYERS = 6  # sizes, inputs and outputs included


class Target(fields.Field):
    """An integer class label, or a list of numbers (one per output)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise ValidationError("expected an integer class label or a list of numbers")
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationError("must be finite")
            return value
        if isinstance(value, list) and value and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            if not all(math.isfinite(v) for v in value):
                raise ValidationError("must be finite")
            if len(value) > MAX_UNITS:
                raise ValidationError(f"at most {MAX_UNITS} values")
            return [float(v) for v in value]
        raise ValidationError("expected an integer class label or a non-empty list of numbers")


class TraceRequestSchema(ma.Schema):
    """A small network, one input-label pair and optionally its parameters."""

    class Meta:
        unknown = RAISE

    layers = fields.List(fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_UNITS)),
                         required=True, validate=validate.Length(min=2, max=MAX_LAYERS),
                         metadata={"example": [2, 2, 2],
                                   "description": f"at most {MAX_LAYERS} sizes of at most "
                                                  f"{MAX_UNITS} units"})
    activation = activation_field("sigmoid")
    output_activation = output_activation_field()
    loss = fields.String(load_default="mse", validate=validate.OneOf(LOSS_NAMES))
    learning_rate = StrictFloat(load_default=0.1,
                                validate=validate.Range(min=0, min_inclusive=False))
    init = fields.String(load_default="uniform", validate=validate.OneOf(INIT_NAMES))
    seed = fields.Integer(strict=True, load_default=0,
                          validate=validate.Range(min=0, max=2**63 - 1))
    dtype = fields.String(load_default="float64", validate=validate.OneOf(DTYPES))
    x = fields.List(StrictFloat(), required=True,
                    validate=validate.Length(min=1, max=MAX_UNITS),
                    metadata={"description": "one input row X (layers[0] numbers)",
                              "example": [0.05, 0.1]})
    y = Target(required=True, metadata={
        "description": "the label: an integer class, or layers[-1] numbers",
        "anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}],
        "example": [0.01, 0.99]})
    params = fields.Dict(
        keys=fields.String(), values=fields.Raw(), load_default=None, allow_none=True,
        metadata={"description": "the parameters to start from, {\"W1\": [[...]], \"B1\": "
                                 "[...], ...} with W of shape (n_out, n_in); default: drawn "
                                 "by init from seed, as training does"})


class TraceSchema(ma.Schema):
    """One SGD step of one sample, named as in the tutorial."""

    spec = fields.Dict(metadata={"description": "the network and step, defaults filled in"})
    layers = fields.List(fields.Dict(), metadata={
        "description": "per layer of weights: its parameters' names, the names of its "
                       "pre-activation and activation, and its activation function"})
    forward = fields.Dict(metadata={
        "description": "X, then each layer's pre-activation and activation: h_i, h_o, y_i, "
                       "ŷ (h1_i, h1_o, h2_i, ... for deeper networks)"})
    y = fields.List(fields.Float(), metadata={"description": "the target row E compares ŷ with"})
    E = fields.Float(allow_none=True, metadata={"description": "the error of this sample"})
    gradients = fields.Dict(metadata={"description": "dE/dW1, dE/dB1, ... per layer"})
    params = fields.Dict(metadata={"description": "the parameters before the step: W1, B1, ..."})
    updated = fields.Dict(metadata={
        "description": "the parameters after W <- W - learning_rate * dE/dW (same for B)"})


@blp.route("")
class Trace(MethodView):
    @blp.arguments(TraceRequestSchema)
    @blp.response(200, TraceSchema)
    @blp.alt_response(400, response="BAD_REQUEST")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    def post(self, body):
        """One training step of one sample, layer by layer: X, h_i, h_o, y_i, ŷ, E,
        dE/dW and dE/dB of every layer, and the parameters after the step (the same
        kernels as training; nothing is stored)."""
        return trace.trace(body)

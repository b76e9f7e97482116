"""/api/v1/trace: one backpropagation step of one sample, in the tutorial's notation.

The numbers come from kernels.trace_step, i.e. from the kernels training runs on.
"""

import math
import re

import marshmallow as ma
import numpy as np
from flask.views import MethodView
from marshmallow import RAISE, ValidationError, fields, validate

import kernels

from .errors import ApiError
from .parser import Blueprint
from .schemas import ACTIVATION_NAMES, OUTPUT_ACTIVATION_NAMES, Activation, StrictFloat

blp = Blueprint("trace", __name__, url_prefix="/api/v1/trace",
                description="One backpropagation step, for teaching")

# A teaching tool: small networks only.
MAX_UNITS = 64
MAX_LAYERS = 6  # sizes, inputs and outputs included
PARAM_KEY = re.compile(r"^([WB])([1-9][0-9]*)$")


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
    activation = Activation(load_default="sigmoid",
                            metadata={"description": "hidden activation, or one per hidden layer",
                                      "enum": list(ACTIVATION_NAMES)})
    output_activation = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(OUTPUT_ACTIVATION_NAMES),
        metadata={"description": "default: softmax for cross_entropy with several outputs, "
                                 "else sigmoid"})
    loss = fields.String(load_default="mse", validate=validate.OneOf(tuple(kernels.LOSSES)))
    learning_rate = StrictFloat(load_default=0.1,
                                validate=validate.Range(min=0, min_inclusive=False))
    init = fields.String(load_default="uniform", validate=validate.OneOf(kernels.INITS))
    seed = fields.Integer(strict=True, load_default=0,
                          validate=validate.Range(min=0, max=2**63 - 1))
    dtype = fields.String(load_default="float64", validate=validate.OneOf(kernels.DTYPES))
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


def _json(array):
    """Nested lists of floats, with non-finite values as null."""
    values = np.asarray(array, dtype=np.float64).tolist()
    if isinstance(values, float):
        return values if math.isfinite(values) else None
    return [_json(v) for v in values] if values and isinstance(values[0], list) \
        else [v if math.isfinite(v) else None for v in values]


def _named(params: dict) -> dict:
    out = {}
    for k, (W, B) in enumerate(zip(params["weights"], params["biases"]), start=1):
        out[f"W{k}"] = _json(W)
        out[f"B{k}"] = _json(B)
    return out


def _all_numbers(value) -> bool:
    """Whether ``value`` is a JSON number or nested lists of them (no strings, booleans)."""
    if isinstance(value, list):
        return all(_all_numbers(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_params(given: dict, layers: list[int]) -> dict:
    """{"W1", "B1", ...} (or {"weights", "biases"}) as the kernels' layout; ApiError 422
    naming ``params.KEY`` for a missing, unknown or misshapen entry."""
    n = len(layers) - 1
    if set(given) == {"weights", "biases"}:
        lists = [key for key in ("weights", "biases") if not isinstance(given[key], list)]
        if lists:
            raise ApiError(422, "validation_error", "invalid params",
                           {f"params.{key}": "expected a list" for key in lists})
        given = {f"{kind}{k + 1}": value for kind, key in (("W", "weights"), ("B", "biases"))
                 for k, value in enumerate(given[key])}
    problems = {}
    for key in given:
        match = PARAM_KEY.match(key)
        if not match or int(match.group(2)) > n:
            problems[f"params.{key}"] = f"unknown; expected W1..W{n} and B1..B{n}"
    out = {"weights": [], "biases": []}
    for k in range(1, n + 1):
        for kind, shape in (("W", (layers[k], layers[k - 1])), ("B", (layers[k],))):
            key = f"{kind}{k}"
            if key not in given:
                problems[f"params.{key}"] = "missing"
                continue
            try:
                if not _all_numbers(given[key]):
                    raise TypeError
                value = np.asarray(given[key], dtype=np.float64)
            except (TypeError, ValueError):
                problems[f"params.{key}"] = "expected (nested lists of) numbers"
                continue
            if value.shape != shape:
                problems[f"params.{key}"] = (f"expected shape {list(shape)}, got "
                                             f"{list(value.shape)}")
            elif not np.isfinite(value).all():
                problems[f"params.{key}"] = "must be finite"
            else:
                out["weights" if kind == "W" else "biases"].append(value)
    if problems:
        raise ApiError(422, "validation_error", f"invalid {', '.join(sorted(problems))}",
                       problems)
    return out


# Where a kernel argument's ValueError belongs in the request.
KERNEL_FIELDS = {"X": "x", "y": "y", "layers": "layers", "activation": "activation",
                 "output_activation": "output_activation", "loss": "loss",
                 "learning_rate": "learning_rate", "params": "params", "seed": "seed",
                 "init": "init", "dtype": "dtype"}


def trace_json(body: dict) -> dict:
    """The trace of a validated request body."""
    layers = body["layers"]
    problems = {}
    if len(body["x"]) != layers[0]:
        problems["x"] = f"expected {layers[0]} values (layers[0]), got {len(body['x'])}"
    if isinstance(body["y"], list) and len(body["y"]) != layers[-1]:
        problems["y"] = f"expected {layers[-1]} values (layers[-1]), got {len(body['y'])}"
    if problems:
        raise ApiError(422, "validation_error", f"invalid {', '.join(sorted(problems))}",
                       problems)
    params = parse_params(body["params"], layers) if body.get("params") else None
    spec = {name: body[name] for name in ("layers", "activation", "output_activation", "loss",
                                          "learning_rate", "init", "seed", "dtype")}
    if spec["output_activation"] is None:
        spec["output_activation"] = kernels.default_output_activation(spec["loss"], layers[-1])
    try:
        step = kernels.trace_step(body["x"], body["y"], params=params, **spec)
    except ValueError as exc:
        name, _, message = str(exc).partition(": ")
        field = KERNEL_FIELDS.get(name, "body")
        raise ApiError(422, "validation_error", f"invalid {field}",
                       {field: message or str(exc)}) from None
    symbols = kernels.layer_symbols(len(layers) - 1)
    forward = {"X": _json(step.x)}
    gradients = {}
    described = []
    for k, ((pre, post), z, a) in enumerate(zip(symbols, step.pre_activations,
                                                step.activations), start=1):
        forward[pre] = _json(z)
        forward[post] = _json(a)
        gradients[f"dE/dW{k}"] = _json(step.gradients["weights"][k - 1])
        gradients[f"dE/dB{k}"] = _json(step.gradients["biases"][k - 1])
        described.append({"layer": k, "weights": f"W{k}", "biases": f"B{k}",
                          "pre_activation": pre, "activation": post,
                          "function": step.activations_used[k - 1],
                          "shape": [layers[k], layers[k - 1]]})
    return {"spec": spec, "layers": described, "forward": forward, "y": _json(step.target),
            "E": step.error if math.isfinite(step.error) else None, "gradients": gradients,
            "params": _named(step.params), "updated": _named(step.updated)}


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
        return trace_json(body)

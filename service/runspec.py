"""The run spec: its schema, defaults, the numeric rules that kernels themselves enforce, and
the checks against a dataset's shape and the configured limits."""

import math

import marshmallow as ma
import numpy as np
from marshmallow import RAISE, ValidationError, fields, validate, validates_schema

import kernels
from kernels import names as kernel_names
from kernels.validation import check_network, check_training
from service.store import usage
from service.text import text_problem

# The largest finite float32 (3.4028235e38): data beyond it becomes infinite in a float32 run.
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Every field of a run spec but `dataset` and `layers` has a default. (The optimizer's own
# parameters have theirs in OPTIMIZER_DEFAULTS: only those of the chosen optimizer apply.)
RUN_DEFAULTS = {
    **{name: value for name, value in kernels.DEFAULTS.items()},
    "validation_split": 0.0,
    "optimizer": "sgd",
    "weight_decay": 0.0,
    "clip_norm": None,
    "lr_schedule": {"kind": "constant"},
    "stop_on_plateau": None,
    "eval_every": 1,
    "threads": 1,
}
# Fields added after runs were first stored, with the value every run stored before them
# trained with (a worker's default BLAS threads, DESCENT_WORKER_THREADS, is 1).
LATER_FIELDS = ("eval_every", "threads")
# The parameters of each optimizer (API.md section 1b) and their defaults.
OPTIMIZER_PARAMS = {
    "sgd": (),
    "momentum": ("momentum",),
    "nesterov": ("momentum",),
    "adam": ("beta1", "beta2", "eps"),
    "adamw": ("beta1", "beta2", "eps"),
}
OPTIMIZER_DEFAULTS = {"momentum": 0.9, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
# The keys of each learning-rate schedule, (required, {optional: default}), and the
# plateau rule's defaults: the kernels'.
SCHEDULE_KEYS = kernel_names.SCHEDULE_KEYS
PLATEAU_DEFAULTS = kernel_names.PLATEAU_DEFAULTS
# The spec fields kernels.train takes besides the network's and KERNEL_FIELDS': a spec
# stored before they existed has none of them, and trains with kernels.train's defaults.
OPTIMIZER_FIELDS = ("optimizer", "momentum", "beta1", "beta2", "eps", "weight_decay",
                    "clip_norm", "lr_schedule", "stop_on_plateau")


def complete_spec(fields: dict) -> dict:
    """The spec with every default filled in and output_activation resolved: the parameters
    of its optimizer (and none of another's), its schedule's and plateau rule's keys."""
    spec = {**RUN_DEFAULTS, **{k: v for k, v in fields.items() if v is not None or k == "name"}}
    if spec.get("output_activation") is None:
        spec["output_activation"] = kernels.default_output_activation(
            spec["loss"], spec["layers"][-1])
    applies = OPTIMIZER_PARAMS.get(spec["optimizer"], ())
    for name, default in OPTIMIZER_DEFAULTS.items():
        if name in applies:
            spec.setdefault(name, default)
        else:
            spec.pop(name, None)
    spec["lr_schedule"] = complete_schedule(spec["lr_schedule"])
    if spec["stop_on_plateau"] is not None:
        spec["stop_on_plateau"] = {**PLATEAU_DEFAULTS, **spec["stop_on_plateau"]}
    return spec


def complete_schedule(schedule: dict) -> dict:
    """A learning-rate schedule with its kind's defaults filled in."""
    kind = schedule.get("kind", "constant")
    _, optional = SCHEDULE_KEYS.get(kind, ((), {}))
    return {"kind": kind, **optional, **{k: v for k, v in schedule.items() if k != "kind"}}


def with_defaults(spec: dict) -> dict:
    """A stored spec as it trains: one stored before the optimizer fields (or eval_every and
    threads) existed gets their defaults (plain gradient descent, evaluated every epoch,
    what it trained with)."""
    missing = {name: RUN_DEFAULTS[name] for name in LATER_FIELDS if name not in spec}
    if "optimizer" not in spec:
        missing.update({name: RUN_DEFAULTS[name] for name in OPTIMIZER_FIELDS
                        if name in RUN_DEFAULTS})
    return {**spec, **missing} if missing else spec


def numeric_problems(spec: dict) -> dict:
    """{field: message} for what kernels would reject in a complete spec (empty if none)."""
    problems = {}
    for check, args in (
        (check_network, (spec["layers"], spec["activation"], spec["output_activation"],
                         spec["loss"], spec["dtype"])),
        (check_training, (spec["learning_rate"], spec["batch_mode"], spec["batch_size"],
                          spec["epochs"], spec["seed"], spec["shuffle"], spec["init"])),
    ):
        try:
            check(*args)
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            problems[field] = message
    return problems


def dataset_problems(spec: dict, n_features: int, target_kind: str, n_targets: int,
                     n_classes, max_abs=None) -> dict:
    """{field: message} when the dataset's shape does not fit the spec's layers, or its
    values (largest magnitude ``max_abs``) do not fit the spec's dtype."""
    problems = {}
    if spec["dtype"] == "float32" and max_abs is not None and max_abs > FLOAT32_MAX:
        problems["dtype"] = (f"dataset {spec['dataset']!r} holds values up to {max_abs:.6g}, "
                             f"beyond float32's range (+-{FLOAT32_MAX:.8g}); use float64")
    layers = spec["layers"]
    if n_features != layers[0]:
        problems["layers"] = (f"layers[0] is {layers[0]} but dataset {spec['dataset']!r} has "
                              f"{n_features} features")
    n_out = layers[-1]
    if target_kind == "matrix" and n_targets != n_out:
        problems["layers"] = (f"layers[-1] is {n_out} but dataset {spec['dataset']!r} has "
                              f"{n_targets} target columns")
    elif target_kind == "values" and n_out != 1:
        problems["layers"] = (f"dataset {spec['dataset']!r} has one target column; "
                              "layers[-1] must be 1")
    elif target_kind == "labels":
        if n_out == 1 and (n_classes or 0) > 2:
            problems["layers"] = (f"dataset {spec['dataset']!r} has {n_classes} classes; "
                                  "one output only fits 0/1 labels")
        elif n_out > 1 and (n_classes or 0) > n_out:
            problems["layers"] = (f"dataset {spec['dataset']!r} has {n_classes} classes but "
                                  f"layers[-1] is {n_out}")
    return problems


def validation_problems(spec: dict, n_samples: int) -> dict:
    """{field: message} when a plateau on val_error would have no validation rows: the
    split takes floor(n_samples * validation_split) rows (workers.execute)."""
    plateau = spec.get("stop_on_plateau")
    if plateau is None or plateau.get("metric") != "val_error":
        return {}
    split = spec.get("validation_split", 0.0)
    if split > 0 and math.floor(n_samples * split) == 0:
        return {"stop_on_plateau.metric": (
            f"val_error needs validation rows, but validation_split {split} of "
            f"{n_samples} samples is none (floor(n * split) = 0); raise the split, or use "
            "metric error")}
    return {}


def limit_problems(spec: dict, n_samples: int, limits) -> dict:
    """{field: message} for a spec over the size ``limits`` (a settings.Limits): its
    network's size, the parameter bytes it stores, and its work (parameters x samples x
    epochs, about a sixth of the floating-point operations training costs)."""
    problems = {}
    layers = spec["layers"]
    n_params = usage.param_count(layers)
    n_bytes = usage.param_bytes(layers, spec["dtype"])
    if len(layers) > limits.max_layers:
        problems["layers"] = f"at most {limits.max_layers} layers"
    elif max(layers) > limits.max_width:
        problems["layers"] = f"layers wider than {limits.max_width} are over the limit"
    elif n_params > limits.max_params:
        problems["layers"] = f"{n_params} parameters; the limit is {limits.max_params}"
    elif n_bytes > limits.max_param_bytes:
        problems["layers"] = (f"{n_params} {spec['dtype']} parameters store {n_bytes} bytes "
                              "(initial and final); the limit on parameter bytes per run "
                              f"(DESCENT_MAX_PARAM_BYTES) is {limits.max_param_bytes}")
    work = n_params * n_samples * spec["epochs"]
    if spec["epochs"] > limits.max_epochs:
        problems["epochs"] = f"at most {limits.max_epochs}"
    elif "layers" not in problems and work > limits.max_work:
        problems["epochs"] = (f"{n_params} parameters x {n_samples} samples x "
                              f"{spec['epochs']} epochs is {work}; the limit on parameters x "
                              f"samples x epochs (DESCENT_MAX_WORK) is {limits.max_work}")
    if n_samples > limits.max_samples:
        problems["dataset"] = f"{n_samples} samples; the limit is {limits.max_samples}"
    threads = spec.get("threads", 1)
    if threads > limits.max_threads:
        problems["threads"] = (f"at most {limits.max_threads} (the BLAS threads a worker lets "
                               "one run use, DESCENT_MAX_THREADS)")
    return problems


# ------------------------------------------------------------------------- the schema

# The names a spec may use: the kernels' own.
ACTIVATION_NAMES = tuple(kernels.HIDDEN_ACTIVATIONS)
OUTPUT_ACTIVATION_NAMES = tuple(kernels.OUTPUT_ACTIVATIONS)
LOSS_NAMES = tuple(kernels.LOSSES)
BATCH_MODES = tuple(kernels.BATCH_MODES)
INIT_NAMES = tuple(kernels.INITS)
DTYPES = tuple(kernels.DTYPES)
OPTIMIZER_NAMES = tuple(kernels.OPTIMIZERS)
SCHEDULE_KINDS = tuple(kernels.LR_SCHEDULES)
PLATEAU_METRICS = tuple(kernel_names.PLATEAU_METRICS)
# Upper bounds of fields that have no natural one (a finite value is all the kernels need).
MAX_WEIGHT_DECAY = 1e3
MAX_EPS = 1e3
# Sizes, batch sizes and epochs are INTEGER columns or int64 arrays: bound them before anything
# converts them (the configured limits, usually far lower, are checked afterwards).
INT32 = 2**31 - 1


def storable_text(value: str) -> None:
    """Validator: text every store can keep (no NUL, no lone surrogate: ``service.text``)."""
    problem = text_problem(value)
    if problem:
        raise ValidationError(problem)


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


def activation_field(default) -> Activation:
    """The spec's ``activation`` field (one name, or one per hidden layer)."""
    return Activation(load_default=default,
                      metadata={"description": "hidden activation, or one per hidden layer",
                                "enum": list(ACTIVATION_NAMES)})


def output_activation_field() -> fields.String:
    """The spec's ``output_activation`` field (None: chosen from the loss)."""
    return fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(OUTPUT_ACTIVATION_NAMES),
        metadata={"description": "default: softmax for cross_entropy with several outputs, "
                                 "else sigmoid"})


class NestedObject(fields.Nested):
    """A nested object; anything but a JSON object is a message about the field itself
    (not about its ``_schema``)."""

    def _deserialize(self, value, attr, data, partial=None, **kwargs):
        if not isinstance(value, dict):
            raise ValidationError(f"expected an object with {', '.join(self.schema.fields)}")
        return super()._deserialize(value, attr, data, partial=partial, **kwargs)


def _fraction(name: str, description: str) -> StrictFloat:
    """A coefficient in [0, 1) (momentum, beta1, beta2). It applies to some optimizers only,
    so no default is loaded here (``complete_spec`` fills it in); the document shows it."""
    return StrictFloat(validate=validate.Range(min=0, max=1, max_inclusive=False),
                       metadata={"description": description,
                                 "default": OPTIMIZER_DEFAULTS[name]})


class LrScheduleSchema(ma.Schema):
    """A learning-rate schedule (API.md section 1b): ``kind`` and the keys of that kind."""

    class Meta:
        unknown = RAISE

    kind = fields.String(required=True, validate=validate.OneOf(SCHEDULE_KINDS))
    step_size = fields.Integer(strict=True, validate=validate.Range(min=1, max=INT32),
                               metadata={"description": "step: epochs per step (required)"})
    gamma = StrictFloat(validate=validate.Range(min=0, max=1, min_inclusive=False),
                        metadata={"description": "step: factor per step (default 0.1); "
                                                 "exponential: factor per epoch (required)"})
    lr_min = StrictFloat(validate=validate.Range(min=0),
                         metadata={"description": "cosine: the rate it decays toward, below "
                                                  "learning_rate (default 0)"})

    @validates_schema(skip_on_field_errors=False)
    def _keys_of_kind(self, data, **kwargs):
        if "kind" not in data:  # missing or bad: its own message says so
            return
        required, optional = SCHEDULE_KEYS[data["kind"]]
        problems = {name: [f"does not apply to kind {data['kind']!r}"]
                    for name in data if name != "kind" and name not in required + tuple(optional)}
        problems.update({name: [f"required with kind {data['kind']!r}"]
                         for name in required if name not in data})
        if problems:
            raise ValidationError(problems)


class StopOnPlateauSchema(ma.Schema):
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience``
    epochs in a row (API.md section 1b)."""

    class Meta:
        unknown = RAISE

    metric = fields.String(validate=validate.OneOf(PLATEAU_METRICS),
                           metadata={"description": "val_error needs a validation_split "
                                                    "above 0",
                                     "default": PLATEAU_DEFAULTS["metric"]})
    patience = fields.Integer(strict=True, validate=validate.Range(min=1, max=INT32),
                              metadata={"description": "epochs in a row without improvement",
                                        "default": PLATEAU_DEFAULTS["patience"]})
    min_delta = StrictFloat(validate=validate.Range(min=0),
                            metadata={"description": "an improvement is a drop of more "
                                                     "than this",
                                      "default": PLATEAU_DEFAULTS["min_delta"]})
    restore_best = StrictBoolean(metadata={"description": "final parameters from the best "
                                                          "epoch",
                                           "default": PLATEAU_DEFAULTS["restore_best"]})


class RunSpecSchema(ma.Schema):
    """The run spec of API.md section 2; unknown fields are rejected."""

    class Meta:
        unknown = RAISE

    dataset = DatasetRef(required=True, metadata={"description": "dataset name or id",
                                                  "example": "xor"})
    layers = fields.List(fields.Integer(strict=True, validate=validate.Range(min=1, max=INT32)),
                         required=True, validate=validate.Length(min=2),
                         metadata={"example": [2, 8, 1]})
    activation = activation_field(RUN_DEFAULTS["activation"])
    output_activation = output_activation_field()
    loss = fields.String(load_default=RUN_DEFAULTS["loss"],
                         validate=validate.OneOf(LOSS_NAMES))
    learning_rate = StrictFloat(load_default=RUN_DEFAULTS["learning_rate"],
                                validate=validate.Range(min=0, min_inclusive=False))
    batch_mode = fields.String(load_default=RUN_DEFAULTS["batch_mode"],
                               validate=validate.OneOf(BATCH_MODES))
    batch_size = fields.Integer(strict=True, load_default=RUN_DEFAULTS["batch_size"],
                                validate=validate.Range(min=1, max=INT32))
    epochs = fields.Integer(strict=True, load_default=RUN_DEFAULTS["epochs"],
                            validate=validate.Range(min=0, max=INT32))
    seed = fields.Integer(strict=True, load_default=RUN_DEFAULTS["seed"],
                          validate=validate.Range(min=0, max=2**63 - 1))
    shuffle = StrictBoolean(load_default=RUN_DEFAULTS["shuffle"])
    init = fields.String(load_default=RUN_DEFAULTS["init"], validate=validate.OneOf(INIT_NAMES))
    dtype = fields.String(load_default=RUN_DEFAULTS["dtype"],
                          validate=validate.OneOf(DTYPES))
    validation_split = StrictFloat(load_default=0.0,
                                  validate=validate.Range(min=0, max=1, max_inclusive=False))
    name = fields.String(load_default=None, allow_none=True,
                         validate=[validate.Length(max=200), storable_text])
    tags = fields.Dict(keys=fields.String(validate=[validate.Length(min=1, max=100),
                                                    storable_text]),
                       values=fields.String(validate=[validate.Length(max=500), storable_text]),
                       load_default=dict)
    # Optimizers, schedules, clipping and stopping on a plateau (API.md section 1b).
    optimizer = fields.String(load_default=RUN_DEFAULTS["optimizer"],
                              validate=validate.OneOf(OPTIMIZER_NAMES))
    momentum = _fraction("momentum", "momentum and nesterov only")
    beta1 = _fraction("beta1", "adam and adamw only")
    beta2 = _fraction("beta2", "adam and adamw only")
    eps = StrictFloat(validate=validate.Range(min=0, max=MAX_EPS, min_inclusive=False),
                      metadata={"description": "adam and adamw only",
                                "default": OPTIMIZER_DEFAULTS["eps"]})
    weight_decay = StrictFloat(load_default=RUN_DEFAULTS["weight_decay"],
                               validate=validate.Range(min=0, max=MAX_WEIGHT_DECAY),
                               metadata={"description": "on weights only; decoupled for "
                                                        "adamw, else added to the gradient"})
    clip_norm = StrictFloat(load_default=None, allow_none=True,
                            validate=validate.Range(min=0, min_inclusive=False),
                            metadata={"description": "largest L2 norm of a batch's gradients "
                                                     "(null: no clipping)"})
    lr_schedule = NestedObject(LrScheduleSchema, load_default=None, allow_none=True,
                               metadata={"description": "the learning rate per epoch (null: "
                                                        "constant)",
                                         "default": RUN_DEFAULTS["lr_schedule"]})
    stop_on_plateau = NestedObject(StopOnPlateauSchema, load_default=None, allow_none=True,
                                   metadata={"description": "null: train every epoch"})
    eval_every = fields.Integer(
        strict=True, load_default=RUN_DEFAULTS["eval_every"],
        validate=validate.Range(min=1, max=INT32),
        metadata={"description": "evaluate the whole training set (and validation rows) "
                                 "every k epochs and at the last: the history holds epochs "
                                 "0, k, 2k, ... and the last; at most max(epochs, 1)"})
    threads = fields.Integer(
        strict=True, load_default=RUN_DEFAULTS["threads"],
        validate=validate.Range(min=1, max=INT32),
        metadata={"description": "threads the run trains with (large batches split in that "
                                 "many parts on as many cores, else BLAS threads), at most "
                                 "the workers' cap (DESCENT_MAX_THREADS, default the "
                                 "machine's cores); "
                                 "part of the recorded environment: bit-identical reruns "
                                 "need the same count"})

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _optimizer_fields(self, data, original, **kwargs):
        """Parameters given for another optimizer, a cosine lr_min not below the learning
        rate, a plateau on val_error without validation rows: each names its field."""
        problems = {}
        given = original if isinstance(original, dict) else {}

        def loaded(name):  # not given, or given and valid (a bad value has its own message)
            return name in data or name not in given

        optimizer = data.get("optimizer", RUN_DEFAULTS["optimizer"])
        if loaded("optimizer"):
            applies = OPTIMIZER_PARAMS[optimizer]
            for name in OPTIMIZER_DEFAULTS:
                if name in data and name not in applies:
                    users = [o for o, p in OPTIMIZER_PARAMS.items() if name in p]
                    problems[name] = [f"does not apply to optimizer {optimizer!r} (only to "
                                      f"{' and '.join(users)})"]
        schedule = data.get("lr_schedule") or {}
        lr = data.get("learning_rate")
        if schedule.get("kind") == "cosine" and lr is not None \
                and schedule.get("lr_min", 0.0) >= lr:
            problems["lr_schedule"] = {"lr_min": [f"must be below learning_rate ({lr})"]}
        plateau = data.get("stop_on_plateau")
        if plateau is not None and loaded("validation_split") \
                and data.get("validation_split", 0.0) == 0 \
                and plateau.get("metric", PLATEAU_DEFAULTS["metric"]) == "val_error":
            problems["stop_on_plateau"] = {"metric": [
                "val_error" + ("" if "metric" in plateau else " (the default)")
                + " needs a validation_split above 0; set one, or use metric error"]}
        every, epochs = data.get("eval_every"), data.get("epochs", RUN_DEFAULTS["epochs"])
        if every is not None and loaded("epochs") and every > max(epochs, 1):
            problems["eval_every"] = [f"must be at most epochs ({epochs}) (or 1 with 0 "
                                      "epochs); epochs itself is always evaluated"]
        if problems:
            raise ValidationError(problems)

    @validates_schema(skip_on_field_errors=True)
    def _numeric_contract(self, data, **kwargs):
        problems = numeric_problems(complete_spec(data))
        if problems:
            raise ValidationError({name: [message] for name, message in problems.items()})

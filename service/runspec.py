"""The run spec: defaults, and the numeric rules that kernels themselves enforce."""

import kernels
from kernels.validation import check_network, check_training

# Every field of a run spec but `dataset` and `layers` has a default.
RUN_DEFAULTS = {
    **{name: value for name, value in kernels.DEFAULTS.items()},
    "validation_split": 0.0,
}


def complete_spec(fields: dict) -> dict:
    """The spec with every default filled in and output_activation resolved."""
    spec = {**RUN_DEFAULTS, **{k: v for k, v in fields.items() if v is not None or k == "name"}}
    if spec.get("output_activation") is None:
        spec["output_activation"] = kernels.default_output_activation(
            spec["loss"], spec["layers"][-1])
    return spec


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
                     n_classes) -> dict:
    """{field: message} when the dataset's shape does not fit the spec's layers."""
    problems = {}
    layers = spec["layers"]
    if n_features != layers[0]:
        problems["layers"] = (f"layers[0] is {layers[0]} but dataset {spec['dataset']!r} has "
                              f"{n_features} features")
    n_out = layers[-1]
    if target_kind == "matrix" and n_targets != n_out:
        problems["layers"] = (f"layers[-1] is {n_out} but dataset {spec['dataset']!r} has "
                              f"{n_targets} target columns")
    elif target_kind == "values" and n_out != 1:
        problems["layers"] = f"dataset {spec['dataset']!r} has one target column; layers[-1] must be 1"
    elif target_kind == "labels":
        if n_out == 1 and (n_classes or 0) > 2:
            problems["layers"] = (f"dataset {spec['dataset']!r} has {n_classes} classes; "
                                  "one output only fits 0/1 labels")
        elif n_out > 1 and (n_classes or 0) > n_out:
            problems["layers"] = (f"dataset {spec['dataset']!r} has {n_classes} classes but "
                                  f"layers[-1] is {n_out}")
    return problems

"""The submit form: its fields, their defaults, and form text turned into a run spec."""

import re

from service.runspec import OPTIMIZER_PARAMS, PLATEAU_DEFAULTS, RUN_DEFAULTS
from service.trainingview import SCHEDULE_PARAMS

FIELDS = ("dataset", "layers", "activation", "loss", "learning_rate", "batch_mode",
          "batch_size", "epochs", "seed", "validation_split", "eval_every", "threads", "name",
          # the optimizer (API.md section 1b) and the parameters of each one
          "optimizer", "momentum", "beta1", "beta2", "eps", "weight_decay", "clip_norm",
          # the learning-rate schedule: its kind, then the fields of the kinds
          "lr_schedule", "step_size", "gamma", "lr_min",
          # stopping on a plateau: off or its metric, then its settings
          "stop_on_plateau", "patience", "min_delta", "restore_best")
OPTIMIZERS = tuple(OPTIMIZER_PARAMS)
SCHEDULES = tuple(SCHEDULE_PARAMS)
PLATEAU_CHOICES = (("off", "off"), ("val_error", "on val_error"), ("error", "on error"))
# The form fields of nested spec fields: lr_schedule.gamma is shown under "gamma".
NESTED = {"lr_schedule": {"step_size": "step_size", "gamma": "gamma", "lr_min": "lr_min"},
          "stop_on_plateau": {"patience": "patience", "min_delta": "min_delta",
                              "restore_best": "restore_best"}}
INTEGER_FIELDS = ("step_size", "patience", "eval_every", "threads")


def defaults() -> dict:
    """The form's initial values: examples/xor.json, which trains in a few seconds, with
    plain gradient descent; the other optimizers' fields hold the spec's defaults."""
    return {"dataset": "xor", "layers": "2, 8, 1", "activation": "sigmoid", "loss": "mse",
            "learning_rate": "2.0", "batch_mode": "full",
            "batch_size": str(RUN_DEFAULTS["batch_size"]), "epochs": "3000",
            "seed": str(RUN_DEFAULTS["seed"]), "validation_split": "0",
            "eval_every": str(RUN_DEFAULTS["eval_every"]),
            "threads": str(RUN_DEFAULTS["threads"]), "name": "",
            "optimizer": "sgd", "momentum": "0.9", "beta1": "0.9", "beta2": "0.999",
            "eps": "1e-08", "weight_decay": "0", "clip_norm": "",
            "lr_schedule": "constant", "step_size": "1000", "gamma": "0.1", "lr_min": "0",
            "stop_on_plateau": "off", "patience": str(PLATEAU_DEFAULTS["patience"]),
            "min_delta": "0", "restore_best": "on"}


def _number(text: str, kind):
    text = text.strip()
    if kind is int:
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValueError("a whole number")
        if len(text.lstrip("+-")) > 20:  # beyond any field's range, and int() has a limit
            raise ValueError("a whole number of at most 20 digits")
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise ValueError("a number, like 0.5 or 1e-3") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("a finite number")
    return value


def _optional_numbers(form: dict, names, fields: dict, problems: dict) -> None:
    """Each of ``names`` typed into the form as a number into ``fields``; a blank one is
    left out (the spec's default applies)."""
    for name in names:
        text = form.get(name, "").strip()
        if not text:
            continue
        try:
            fields[name] = _number(text, int if name in INTEGER_FIELDS else float)
        except ValueError as exc:
            problems[name] = f"must be {exc}"


def spec_from_form(form: dict) -> tuple[dict, dict]:
    """(fields of a run spec, {field: message}) from the submitted form's text. Only the
    text's shape is checked here; the values go through the run spec's own validation, as
    POST /api/v1/runs does. The fields of optimizers, schedules and plateau settings not
    chosen are ignored (the page hides them; without script they are still there)."""
    fields, problems = {}, {}
    for name in ("dataset", "activation", "loss", "batch_mode"):
        fields[name] = form.get(name, "").strip()
    text = form.get("layers", "").strip().strip("[]")
    parts = [p for p in re.split(r"[\s,]+", text) if p]
    try:
        fields["layers"] = [_number(p, int) for p in parts]
        if not parts:
            raise ValueError
    except ValueError:
        problems["layers"] = "whole numbers separated by commas, like 2, 8, 1"
    for name, kind in (("learning_rate", float), ("batch_size", int), ("epochs", int),
                       ("seed", int)):
        try:
            fields[name] = _number(form.get(name, ""), kind)
        except ValueError as exc:
            problems[name] = f"must be {exc}"
    name = form.get("name", "").strip()
    if name:
        fields["name"] = name
    _optional_numbers(form, ("validation_split", "weight_decay", "clip_norm", "eval_every",
                             "threads"), fields, problems)
    optimizer = form.get("optimizer", "").strip() or "sgd"
    fields["optimizer"] = optimizer
    _optional_numbers(form, OPTIMIZER_PARAMS.get(optimizer, ()), fields, problems)
    kind = form.get("lr_schedule", "").strip() or "constant"
    schedule = {"kind": kind}
    _optional_numbers(form, SCHEDULE_PARAMS.get(kind, ()), schedule, problems)
    fields["lr_schedule"] = schedule
    metric = form.get("stop_on_plateau", "").strip()
    if metric and metric != "off":
        plateau = {"metric": metric, "restore_best": bool(form.get("restore_best"))}
        _optional_numbers(form, ("patience", "min_delta"), plateau, problems)
        fields["stop_on_plateau"] = plateau
    return fields, problems


def field_of(path: str) -> str:
    """The form field an error path belongs to: ``layers[0]`` -> ``layers``,
    ``lr_schedule.gamma`` -> ``gamma``, ``stop_on_plateau.metric`` -> ``stop_on_plateau``."""
    top, _, rest = path.partition(".")
    top = re.split(r"\[", top, maxsplit=1)[0]
    inner = re.split(r"[.\[]", rest, maxsplit=1)[0]
    return NESTED.get(top, {}).get(inner, top)

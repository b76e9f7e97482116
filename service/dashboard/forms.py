"""The submit form: its fields, their defaults, and form text turned into a run spec."""

import re

from service.runspec import RUN_DEFAULTS

FIELDS = ("dataset", "layers", "activation", "loss", "learning_rate", "batch_mode",
          "batch_size", "epochs", "seed", "name")


def defaults() -> dict:
    """The form's initial values: examples/xor.json, which trains in a few seconds."""
    return {"dataset": "xor", "layers": "2, 8, 1", "activation": "sigmoid", "loss": "mse",
            "learning_rate": "2.0", "batch_mode": "full",
            "batch_size": str(RUN_DEFAULTS["batch_size"]), "epochs": "3000",
            "seed": str(RUN_DEFAULTS["seed"]), "name": ""}


def _number(text: str, kind):
    text = text.strip()
    if kind is int:
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValueError("a whole number")
        if len(text.lstrip("+-")) > 20:  # beyond any field's range, and int() has a limit
            raise ValueError("a whole number of at most 20 digits")
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise ValueError("a number, like 0.5 or 1e-3") from None


def spec_from_form(form: dict) -> tuple[dict, dict]:
    """(fields of a run spec, {field: message}) from the submitted form's text. Only the
    text's shape is checked here; the values go through the run spec's own validation, as
    POST /api/v1/runs does."""
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
    return fields, problems


def field_of(path: str) -> str:
    """The form field an error path belongs to: ``layers[0]`` -> ``layers``."""
    return re.split(r"[.\[]", path, maxsplit=1)[0]

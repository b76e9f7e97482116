"""Reading what the user gives on the command line: spec files with ``--set`` overrides,
and ``KEY=VALUE`` options."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from service.cli.output import EXIT_INVALID, fail

# A --set value starting with one of these is meant as JSON: if it does not parse, it is a
# mistake to report, not a string to send.
JSON_OPENERS = ("{", "[", '"')


def parse_pairs(pairs, option: str) -> dict:
    """``KEY=VALUE`` strings as a dict; a UsageError naming ``option`` otherwise."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{option} expects KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


def _no_constant(name: str):
    raise ValueError(name)  # NaN and Infinity are not JSON: the text stays a string


def parse_value(key: str, text: str, option: str = "--set"):
    """A ``--set`` value: JSON if it parses as JSON (numbers, true/false/null, objects,
    lists, quoted strings), else the text itself; a UsageError when it looks like JSON
    (starts with ``{``, ``[`` or ``"``) but is not."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:  # json.JSONDecodeError, or NaN/Infinity
        if text.lstrip().startswith(JSON_OPENERS):
            raise click.UsageError(
                f"{option} {key}: {text!r} is not valid JSON "
                f"({getattr(exc, 'msg', exc)} at character {getattr(exc, 'pos', 0) + 1}); "
                "quote it for your shell, e.g. "
                "-s 'lr_schedule={\"kind\": \"step\", \"step_size\": 10}'") from None
        return text  # a bare string such as --set activation=tanh


def apply_override(spec: dict, key: str, value, option: str = "--set") -> None:
    """Set ``key`` in ``spec`` to ``value``; a dotted key (``lr_schedule.kind``) sets a field
    of a nested object, creating the object when it is missing or null."""
    parts = key.split(".")
    if not all(parts):
        raise click.UsageError(f"{option} {key}: empty field name in a dotted key")
    target = spec
    for depth, part in enumerate(parts[:-1]):
        inner = target.get(part)
        if inner is None:
            inner = target[part] = {}
        elif not isinstance(inner, dict):
            where = ".".join(parts[:depth + 1])
            raise click.UsageError(
                f"{option} {key}: {where} is {json.dumps(inner)}, not an object; set it "
                f"whole instead, e.g. -s '{where}=...'")
        target = inner
    target[parts[-1]] = value


def apply_overrides(spec: dict, overrides, option: str = "--set") -> dict:
    """``spec`` with each ``FIELD=VALUE`` of ``overrides`` applied in order (see
    ``parse_value`` and ``apply_override``)."""
    for pair in overrides:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{option} expects FIELD=VALUE, got {pair!r}")
        apply_override(spec, key, parse_value(key, text, option), option)
    return spec


def load_spec(path: str, overrides) -> dict:
    """The run spec in ``path`` (``-`` for stdin) with ``--set`` overrides applied."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_INVALID)
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON: {exc}", EXIT_INVALID)
    if not isinstance(spec, dict):
        fail(f"{path} must hold a JSON object (the run spec)", EXIT_INVALID)
    return apply_overrides(spec, overrides)

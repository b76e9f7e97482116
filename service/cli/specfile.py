"""Reading what the user gives on the command line: spec files with ``--set`` overrides,
and ``KEY=VALUE`` options."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from service.cli.output import EXIT_INVALID, fail


def parse_pairs(pairs, option: str) -> dict:
    """``KEY=VALUE`` strings as a dict; a UsageError naming ``option`` otherwise."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{option} expects KEY=VALUE, got {pair!r}")
        result[key] = value
    return result


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
    for key, value in parse_pairs(overrides, "--set").items():
        try:
            spec[key] = json.loads(value)
        except json.JSONDecodeError:
            spec[key] = value  # a bare string such as --set activation=tanh
    return spec

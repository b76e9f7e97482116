"""Runs compared side by side: 2 to 10 of one user's runs, their specs field by field with
the fields that differ named, their results, and their error curves downsampled for one chart
(GET /api/v1/runs/compare, the dashboard's /compare page, ``descent compare``).

Bounded cost: at most MAX_RUNS runs, each history read a page at a time
(``store.history.history_pages``) and cut to at most ``max_points`` rows."""

import json

from service.errors import Invalid
from service.runs import MAX_RUN_ID, describe_run, owned_run
from service.store.history import HISTORY_COLUMNS, history_pages, history_spread

MIN_RUNS, MAX_RUNS = 2, 10
# Points per curve: the default, and the most a caller may ask for.
CURVE_POINTS, MAX_CURVE_POINTS = 500, 2000
# Spec fields that label a run rather than say how it trains (shown, never a difference).
LABELS = ("name", "tags")
CURVE_COLUMNS = ("epoch", "error", "val_error")


def parse_run_ids(values, field: str) -> list[int]:
    """The run ids of ``values`` (strings, each one id or ids separated by commas) in their
    order; Invalid naming ``field`` unless they are 2 to 10 distinct whole numbers."""
    parts = [p.strip() for value in values for p in str(value).split(",")]
    parts = [p for p in parts if p]
    if not MIN_RUNS <= len(parts) <= MAX_RUNS:  # first: the checks below are per id
        raise Invalid({field: f"give {MIN_RUNS} to {MAX_RUNS} run ids separated by commas "
                              f"(got {len(parts)})"})
    ids = []
    for part in parts:
        # (the length first: int() refuses strings of over 4300 digits)
        if (not part.isascii() or not part.isdigit() or len(part) > len(str(MAX_RUN_ID))
                or int(part) > MAX_RUN_ID):
            shown = part if len(part) <= 24 else part[:24] + "..."
            raise Invalid({field: f"{shown!r} is not a run id (a whole number from 0)"})
        if int(part) in ids:
            raise Invalid({field: f"run {int(part)} is listed twice"})
        ids.append(int(part))
    return ids


def _flatten(value, prefix: str = "") -> dict:
    """{dotted path: value} of nested dicts' leaves (lists and empty dicts are leaves)."""
    if isinstance(value, dict) and value:
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def spec_fields(specs: list[dict]) -> list[dict]:
    """One row per spec field of any of ``specs`` (dotted paths for nested ones, labels
    left out): {field, values (one per spec, None where a spec lacks it), differs}."""
    flat = [_flatten({k: v for k, v in (spec or {}).items() if k not in LABELS})
            for spec in specs]
    rows = []
    for field in sorted(set().union(*flat)):
        values = [f.get(field) for f in flat]
        seen = {json.dumps(v, sort_keys=True) if field in f else "<missing>"
                for v, f in zip(values, flat)}
        rows.append({"field": field, "values": values, "differs": len(seen) > 1})
    return rows


def curve(session, run_id: int, max_points: int) -> list[dict]:
    """The run's history as chart points ({epoch, error, val_error}), at most ``max_points``
    of them (always the first, the last and the best)."""
    positions = history_spread(session, run_id, max_points)
    index = [HISTORY_COLUMNS.index(name) for name in CURVE_COLUMNS]
    return [{name: row[i] for name, i in zip(CURVE_COLUMNS, index)}
            for page in history_pages(session, run_id, positions) for row in page]


def compare_runs(session, owner: str, run_ids: list[int],
                 max_points: int = CURVE_POINTS) -> dict:
    """``owner``'s runs ``run_ids`` side by side: each described as GET /runs/{id} lists it
    with its curve (``history``), the spec fields of any of them with the values of each
    (``fields``), and the names of those that differ (``differing``). NotFound for a run
    that is missing or someone else's."""
    runs = [owned_run(session, run_id, owner) for run_id in run_ids]
    described = [describe_run(run) for run in runs]  # before reading histories ends reads
    fields = spec_fields([d["spec"] for d in described])
    for entry in described:
        entry["history"] = curve(session, entry["id"], max_points)
    return {"runs": described, "fields": fields,
            "differing": [row["field"] for row in fields if row["differs"]]}

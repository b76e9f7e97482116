"""Did two runs train bit for bit alike? The verdict on a run and its rerun (or any two runs
of one user): their history, initial and final parameters compared bit for bit, and the
differences of their specs and of the environments they trained in.

Bounded cost: the histories are read a page at a time (``store.history.history_pages``),
and the stored parameters of each run (``initial`` then ``final``, each at most
DESCENT_MAX_PARAM_BYTES, the limit on a run's parameter bytes) are compared CHUNK values at
a time. A verdict on two long final runs never changes, so the last few are kept in this
process."""

import math
import struct
from itertools import zip_longest
from typing import Optional

import numpy as np
from sqlalchemy import select

from service.errors import NotFound
from service.recent import Recent
from service.runspec import with_defaults
from service.store import FINAL_STATES, Params, Run
from service.store import runs as store_runs
from service.store.history import HISTORY_COLUMNS, history_pages
from service.store.npzviews import params_views

# History values compared (not ``seconds``: wall time differs between any two runs).
COMPARED_COLUMNS = tuple(c for c in HISTORY_COLUMNS if c not in ("epoch", "seconds"))
# Spec fields that label a run rather than say how it trains.
LABELS = ("name", "tags")
# Parameter values compared at once.
CHUNK = 1 << 16
# Verdicts on final runs of this many epochs between them are kept (comparing them reads
# tens of history pages); smaller ones are cheaper to compare again than to keep.
CACHED_FROM_EPOCHS = 20_000
_DOUBLE = struct.Struct("<d")


def run_verification(session, run: Run) -> dict:
    """The verdict on ``run`` and its origin when it is a rerun, else on ``run`` and its
    newest rerun; NotFound when it is neither."""
    if run.rerun_of is not None:
        origin = store_runs.get_run(session, run.rerun_of)
        if origin is not None and origin.owner == run.owner:
            return compare_runs(session, origin, run)
    rerun = store_runs.latest_rerun(session, run.id, run.owner)
    if rerun is None:
        raise NotFound(f"run {run.id} has no rerun and is no rerun; rerun it first "
                       f"(POST /runs/{run.id}/rerun or `descent verify {run.id}`)")
    return compare_runs(session, run, rerun)


def compare_runs(session, a: Run, b: Run) -> dict:
    """The verdict on runs ``a`` and ``b`` (see VerdictSchema in service.api.schemas):
    "pending" until both are final, then "bit-identical" or "differs" with the first epoch
    and the first parameter where they differ, and which environment fields differ."""
    verdict = {"runs": [a.id, b.id], "statuses": [a.status, b.status],
               "spec": _spec_differences(a.spec, b.spec),
               "environment": environment_differences(a.environment, b.environment)}
    if a.status not in FINAL_STATES or b.status not in FINAL_STATES:
        return {**verdict, "verdict": "pending", "history": None, "initial_params": None,
                "final_params": None,
                "summary": "waiting for both runs to finish "
                           f"({a.status}, {b.status})"}
    key = (a.id, a.attempts, a.finished_at, b.id, b.attempts, b.finished_at)
    compared = _verdicts.get(key)
    if compared is None:
        compared = {"history": compare_history(session, a.id, b.id),
                    **{f"{which}_params": compare_params(session, a.id, b.id, which)
                       for which in ("initial", "final")}}
        if (a.epochs_done or 0) + (b.epochs_done or 0) >= CACHED_FROM_EPOCHS:
            _verdicts.put(key, compared)
    verdict.update(compared)
    same = (a.status == b.status and verdict["history"]["identical"]
            and verdict["initial_params"]["identical"] and verdict["final_params"]["identical"])
    verdict["verdict"] = "bit-identical" if same else "differs"
    verdict["summary"] = summary(verdict)
    return verdict


def summary(verdict: dict) -> str:
    """One line for people: "bit-identical" or where the two runs first differ, and whether
    their environments differ."""
    if verdict["verdict"] == "pending":
        return verdict.get("summary", "pending")
    parts = []
    if verdict["verdict"] == "bit-identical":
        parts.append("bit-identical")
    else:
        a, b = verdict["statuses"]
        if a != b:
            parts.append(f"ended {a} and {b}")
        first = verdict["history"]["first_difference"]
        if first is not None:
            parts.append(f"history differs first at epoch {first['epoch']} ({first['field']})")
        for which in ("initial", "final"):
            first = verdict[f"{which}_params"]["first_difference"]
            if first is not None:
                parts.append(f"{which} parameters differ first at {parameter_name(first)}")
    env = verdict["environment"]
    if env["identical"] is None:
        parts.append("environment not recorded for both runs")
    elif env["identical"]:
        parts.append("same environment")
    else:
        parts.append("environment differs in "
                     + ", ".join(d["field"] for d in env["differences"]))
    if not verdict["spec"]["identical"]:
        parts.append("specs differ in " + ", ".join(d["field"] for d in
                                                    verdict["spec"]["differences"]))
    return "; ".join(parts)


def parameter_name(difference: dict) -> str:
    """``layer 2 W[3, 0]`` for a parameter difference (or what is missing or mismatched)."""
    if difference.get("index") is None:
        return f"layer {difference['layer']} {difference['array']} ({difference['reason']})"
    return (f"layer {difference['layer']} {difference['array']}"
            f"[{', '.join(map(str, difference['index']))}]")


# ----------------------------------------------------------------------------- history


def _bits(value) -> Optional[bytes]:
    return None if value is None else _DOUBLE.pack(value)


def compare_history(session, a_id: int, b_id: int) -> dict:
    """Both histories row by row, bit for bit (every recorded metric, not the seconds), a
    page of each at a time: the first epoch where they differ, with the field and both
    values."""
    rows = 0
    columns = [HISTORY_COLUMNS.index(name) for name in ("epoch", *COMPARED_COLUMNS)]
    for page_a, page_b in zip_longest(history_pages(session, a_id),
                                      history_pages(session, b_id), fillvalue=[]):
        if len(page_a) == len(page_b):  # the usual case, whole pages at once (NULL: NaN)
            bits = [np.array([tuple(row) for row in page], dtype=np.float64)[:, columns]
                    .view(np.uint64) for page in (page_a, page_b)]
            if np.array_equal(bits[0], bits[1]):
                rows += len(page_a)
                continue
        found, position = _first_row_difference(page_a, page_b)
        return {"identical": False, "rows": rows + position, "first_difference": found}
    return {"identical": True, "rows": rows, "first_difference": None}


def _first_row_difference(page_a: list, page_b: list) -> tuple[dict, int]:
    """(difference, its position in the pages) of two pages known to differ."""
    index = {name: i for i, name in enumerate(HISTORY_COLUMNS)}
    for position, (row_a, row_b) in enumerate(zip_longest(page_a, page_b)):
        if row_a is None or row_b is None or row_a[0] != row_b[0]:
            epochs = [None if row is None else row[0] for row in (row_a, row_b)]
            first = min(e for e in epochs if e is not None)
            # field "epoch": a row only one run has; values: whether each has it
            return {"epoch": first, "field": "epoch",
                    "values": [epoch == first for epoch in epochs]}, position
        for name in COMPARED_COLUMNS:
            x, y = row_a[index[name]], row_b[index[name]]
            if _bits(x) != _bits(y):
                return {"epoch": row_a[0], "field": name, "values": [x, y]}, position
    raise AssertionError("pages said to differ are the same")


# -------------------------------------------------------------------------- parameters


def _stored(session, run_id: int, which: str):
    """(dtype, NPZ bytes) of a run's stored parameters, or None (not kept in the session)."""
    row = session.execute(select(Params.dtype, Params.data)
                          .where(Params.run_id == run_id, Params.which == which)).first()
    session.commit()  # ends the read, as history_pages does
    return None if row is None else (row[0], row[1])


def compare_params(session, a_id: int, b_id: int, which: str) -> dict:
    """The runs' stored ``which`` parameters bit for bit, layer by layer, W before B: the
    first that differs (layer from 1, array, index and both values), a shape or dtype that
    differs, or parameters only one run stored."""
    stored = [_stored(session, a_id, which), _stored(session, b_id, which)]
    if stored[0] is None and stored[1] is None:
        return {"identical": True, "stored": False, "first_difference": None}
    if stored[0] is None or stored[1] is None:
        return {"identical": False, "stored": [s is not None for s in stored],
                "first_difference": {"layer": None, "array": None, "index": None,
                                     "reason": "stored by one run only", "values": None}}
    views = [params_views(data) for _, data in stored]
    layers = [len(v["weights"]) for v in views]
    for layer in range(max(layers)):
        for array, key in (("W", "weights"), ("B", "biases")):
            if layer >= min(layers):
                return _mismatch(layer, array, f"{layers[0]} and {layers[1]} layers")
            first = first_difference(views[0][key][layer], views[1][key][layer])
            if first is not None:
                return {"identical": False, "stored": True,
                        "first_difference": {"layer": layer + 1, "array": array, **first}}
    return {"identical": True, "stored": True, "first_difference": None}


def _mismatch(layer: int, array: str, reason: str) -> dict:
    return {"identical": False, "stored": True, "first_difference": {
        "layer": layer + 1, "array": array, "index": None, "reason": reason, "values": None}}


def first_difference(x: np.ndarray, y: np.ndarray) -> Optional[dict]:
    """The first position (row-major) where two arrays' bits differ, with both values; a
    shape or dtype that differs; None when they are bit-identical."""
    if x.shape != y.shape or x.dtype != y.dtype:
        return {"index": None, "values": None,
                "reason": f"{x.dtype}{list(x.shape)} and {y.dtype}{list(y.shape)}"}
    flat_x, flat_y = x.reshape(-1), y.reshape(-1)
    if x.dtype.kind == "f":  # bits, not values: -0.0 is not 0.0, a NaN equals its own bits
        unsigned = np.dtype(f"u{x.dtype.itemsize}")
        flat_x, flat_y = flat_x.view(unsigned), flat_y.view(unsigned)
    for start in range(0, flat_x.size, CHUNK):
        differ = np.flatnonzero(flat_x[start:start + CHUNK] != flat_y[start:start + CHUNK])
        if differ.size:
            position = start + int(differ[0])
            index = [int(i) for i in np.unravel_index(position, x.shape)]
            values = [_number(x[tuple(index)]), _number(y[tuple(index)])]
            return {"index": index, "values": values, "reason": "values differ"}
    return None


def _number(value):
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------- spec, environment


def _flatten(value, prefix: str = "") -> dict:
    """{dotted path: value} of nested dicts' leaves (an empty dict is a leaf)."""
    if isinstance(value, dict) and value:
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def _differences(a: dict, b: dict) -> list:
    """[{field, values: [a's, b's]}] for each dotted field whose values differ (a field one
    side lacks shows as None there)."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    return [{"field": field, "values": [flat_a.get(field), flat_b.get(field)]}
            for field in sorted(set(flat_a) | set(flat_b))
            if field not in flat_a or field not in flat_b or flat_a[field] != flat_b[field]]


def environment_differences(a: Optional[dict], b: Optional[dict]) -> dict:
    """Which fields of two runs' environments differ (dotted paths such as
    ``blas.num_threads``); ``identical`` None when either run has none recorded."""
    if a is None or b is None:
        return {"identical": None, "recorded": [a is not None, b is not None],
                "differences": []}
    differences = _differences(a, b)
    return {"identical": not differences, "recorded": [True, True],
            "differences": differences}


def _spec_differences(a: dict, b: dict) -> dict:
    # As the specs train: a field added since one was stored has the value it trained with.
    strip = lambda spec: {k: v for k, v in with_defaults(spec or {}).items()  # noqa: E731
                          if k not in LABELS}
    differences = _differences(strip(a), strip(b))
    return {"identical": not differences, "differences": differences}


_verdicts = Recent(256)

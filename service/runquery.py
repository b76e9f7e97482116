"""The run query: GET /runs' parameters (also the dashboard's filters), parsed into the
store's RunQuery, and the opaque cursors of its pages."""

import base64
import json
import math
from datetime import datetime

import marshmallow as ma
from marshmallow import ValidationError, fields, validate

from service.datasets import resolve_dataset
from service.errors import Invalid
from service.runs import MAX_RUN_ID
from service.store import runs as store_runs
from service.store.models import OPTIMIZERS, STOP_REASONS
from service.store.runs import ORDERABLE, RUN_STATES, is_orderable
from service.store.where import WhereError, compile_where

# Largest value a sweep id (INTEGER) column can hold.
MAX_INT32 = 2**31 - 1
BAD_CURSOR = "not a valid page token; pass next_cursor of the previous page as it is"


# Run columns GET /runs filters by range, with FIELD_min and FIELD_max (both inclusive).
RANGE_FIELDS = ("learning_rate", "batch_size", "epochs", "epochs_done", "final_error",
                "best_error", "final_accuracy")


def validate_order_by(value: str) -> None:
    """order_by is a sortable field or tag.KEY, optionally with '-' first."""
    if not is_orderable(value[1:] if value.startswith("-") else value):
        raise ValidationError(f"not a sortable field: one of {', '.join(ORDERABLE)} or "
                              "tag.KEY, with '-' first for descending")


class _RunListArgs(ma.Schema):
    class Meta:
        unknown = ma.INCLUDE  # tag.KEY parameters; anything else is rejected by the view

    status = fields.String(metadata={"description": "one state or several, comma-separated: "
                                                    + ", ".join(RUN_STATES)})
    optimizer = fields.String(metadata={"description": "one optimizer or several, "
                                                       "comma-separated: " + ", ".join(OPTIMIZERS)})
    stop_reason = fields.String(metadata={"description": "runs that stopped for this reason: "
                                                         + ", ".join(STOP_REASONS) + ", or none "
                                                         "(comma-separated)"})
    dataset = fields.String(metadata={"description": "dataset name or id"})
    sweep_id = fields.Integer()
    where = fields.String(metadata={"description": (
        "a filter expression, ANDed with the other filters: comparisons (= != < <= > >=), "
        "`in (...)`, `not in (...)`, `not`, `and`, `or` and parentheses over status, "
        "dataset, sweep_id, name, batch_mode, optimizer, stop_reason, tag.KEY, id, "
        "learning_rate, batch_size, "
        "epochs, seed, epochs_done, final_error, best_error, best_epoch, final_accuracy, "
        "final_val_error, created_at, started_at, finished_at; times quoted (ISO 8601), "
        "strings quoted or bare words, `= null` for a missing value, "
        "e.g. `status in (succeeded, diverged) and (learning_rate >= 0.1 or "
        "tag.team = \"vision\") and created_at >= \"2026-11-01\"`. A malformed one is a "
        "422 naming the character offset and what was expected.")})
    order_by = fields.String(
        load_default="-id",
        validate=validate_order_by,
        metadata={"description": "a field (" + ", ".join(ORDERABLE) + ", or tag.KEY), "
                                 "'-' first for descending; text sorts in the database's "
                                 "collation; runs without a value come last either way; "
                                 "ties are broken by id"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.String(metadata={"description": "next_cursor of the previous page (made "
                                                    "for the same order_by)"})


# Query parameters of GET /runs: the above, FIELD_min / FIELD_max for each range field, and
# tag.KEY=VALUE (runs whose tag KEY is VALUE; several are ANDed).
RunListArgsSchema = type("RunListArgsSchema", (_RunListArgs,), {
    f"{name}_{bound}": fields.Float(metadata={"description": f"runs with {name} {op} this"})
    for name in RANGE_FIELDS for bound, op in (("min", ">="), ("max", "<="))
})


def order_key(query: store_runs.RunQuery) -> str:
    """The order a query's pages follow, as order_by gives it ("-final_error")."""
    return ("-" if query.descending else "") + query.order_by


def wrap_cursor(query: store_runs.RunQuery, token):
    """The store's page token bound to the order it was made for (opaque to clients)."""
    if token is None:
        return None
    return _b64(json.dumps([order_key(query), *store_runs.decode_cursor(token)]))


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def unwrap_cursor(query: store_runs.RunQuery, cursor: str) -> str:
    """The store's page token behind a cursor of ours; Invalid naming ``cursor`` when it is
    not one of ours or was made for another order_by."""
    def bad(message=BAD_CURSOR):
        return Invalid({"cursor": message})

    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except Exception:
        raise bad() from None
    if not isinstance(values, list) or len(values) != 4:
        raise bad()
    order, is_null, value, last_id = values
    if order != order_key(query):
        raise bad(f"made for order_by={order}, not {order_key(query)}"
                  if isinstance(order, str) else BAD_CURSOR)
    if not isinstance(is_null, bool) or isinstance(last_id, bool) \
            or not isinstance(last_id, int) or not 0 <= last_id <= MAX_RUN_ID:
        raise bad()
    if is_null:
        ok = value is None and query.order_by != "id"
    elif query.order_by in store_runs.TIME_ORDERABLE:
        try:
            datetime.fromisoformat(value)
            ok = True
        except (TypeError, ValueError):
            ok = False
    elif store_runs.is_text_order(query.order_by):
        ok = isinstance(value, str) and len(value) <= 500
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value) and abs(value) <= MAX_RUN_ID
    if not ok:
        raise bad()
    return store_runs.encode_cursor([is_null, value, last_id])


def parse_run_query(session, args: dict, owner: str) -> store_runs.RunQuery:
    """Query parameters (loaded by RunListArgsSchema) as a RunQuery over ``owner``'s runs;
    Invalid naming a bad parameter."""
    problems = {}
    query = store_runs.RunQuery(limit=args["limit"], owner=owner)
    if args.get("status"):
        statuses = [s.strip() for s in args["status"].split(",") if s.strip()]
        unknown = [s for s in statuses if s not in store_runs.RUN_STATES]
        if unknown:
            problems["status"] = f"unknown state(s) {', '.join(unknown)}"
        query.statuses = statuses
    for name, known_values, attribute in (("optimizer", OPTIMIZERS, "optimizers"),
                                          ("stop_reason", STOP_REASONS + ("none",),
                                           "stop_reasons")):
        if args.get(name):
            values = [v.strip() for v in args[name].split(",") if v.strip()]
            unknown = [v for v in values if v not in known_values]
            if unknown:
                problems[name] = (f"unknown {', '.join(unknown)}; expected one of "
                                  f"{', '.join(known_values)}")
            setattr(query, attribute, values)
    if args.get("dataset"):
        dataset = resolve_dataset(session, args["dataset"], owner, create_builtin=False)
        query.dataset_id = dataset.id if dataset is not None else -1
    if args.get("sweep_id") is not None:
        # An id no sweep can have matches nothing (rather than overflowing the column).
        query.sweep_id = args["sweep_id"] if 0 <= args["sweep_id"] <= MAX_INT32 else -1
    query.descending = args["order_by"].startswith("-")
    query.order_by = args["order_by"].lstrip("-")
    for name in RANGE_FIELDS:
        low, high = args.get(f"{name}_min"), args.get(f"{name}_max")
        if low is not None or high is not None:
            query.ranges[name] = (low, high)
    known = set(RunListArgsSchema().fields)
    for key, value in args.items():
        if key.startswith("tag.") and len(key) > 4:
            query.tags[key[4:]] = value
        elif key not in known:
            problems[key] = "unknown query parameter"
    if args.get("where") is not None:
        try:
            query.where = compile_where(args["where"], session.bind.dialect.name)
        except WhereError as exc:
            problems["where"] = str(exc)
    if problems:
        raise Invalid(problems)
    if args.get("cursor"):
        query.cursor = unwrap_cursor(query, args["cursor"])
    return query

"""/api/v1/runs: submit, list, inspect, cancel and use training runs."""

import base64
import csv
import io
import json
import logging
import math
from datetime import datetime

import numpy as np
from flask import Response
from flask.views import MethodView

import kernels
from service.settings import redact_urls
from service.queue import QueueUnavailable
from service.runspec import complete_spec, dataset_problems
from service.store import Run
from service.store import runs as store_runs
from service.store.arrays import params_from_npz
from service.store.where import WhereError, compile_where

from .auth import require_user
from .context import db, queue, settings
from .datasets import resolve_dataset
from .errors import ApiError
from .idempotency import idempotent
from .parser import Blueprint
from .schemas import (
    RANGE_FIELDS,
    HistoryArgsSchema,
    HistorySchema,
    ParamsArgsSchema,
    ParamsSchema,
    PredictionSchema,
    PredictSchema,
    RunListArgsSchema,
    RunPageSchema,
    RunSchema,
    RunSpecSchema,
)

blp = Blueprint("runs", __name__, url_prefix="/api/v1/runs", description="Training runs")
log = logging.getLogger(__name__)

# Largest value a run id (BIGINT) or a sweep id (INTEGER) column can hold.
MAX_RUN_ID = 2**63 - 1
MAX_INT32 = 2**31 - 1
BAD_CURSOR = "not a valid page token; pass next_cursor of the previous page as it is"


def run_json(run: Run) -> dict:
    """A run as the API shows it."""
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "spec": run.spec,
        "tags": run.tags,
        "dataset": {"id": run.dataset.id, "name": run.dataset.name},
        "sweep_id": run.sweep_id,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "epochs": run.epochs,
        "epochs_done": run.epochs_done,
        "final_error": run.final_error,
        "best_error": run.best_error,
        "best_epoch": run.best_epoch,
        "final_accuracy": run.final_accuracy,
        "final_val_error": run.final_val_error,
        "worker": run.worker,
        "attempts": run.attempts,
        "cancel_requested": bool(run.cancel_requested),
        "error_message": run.error_message,
    }


def get_run_or_404(run_id: int) -> Run:
    """The run ``run_id`` of this request's user. Every route that reads or changes one run
    goes through here: another user's run is a 404, the same as a missing one."""
    user = require_user()
    run = store_runs.get_run(db(), run_id) if 0 <= run_id <= MAX_RUN_ID else None
    if run is None or run.owner != user:
        raise ApiError(404, "not_found", f"run {run_id} does not exist")
    return run


def check_limits(spec: dict, n_samples: int) -> dict:
    """{field: message} for a spec over the configured size limits."""
    limits = settings().limits
    problems = {}
    layers = spec["layers"]
    n_params = sum(a * b + b for a, b in zip(layers[:-1], layers[1:]))
    if len(layers) > limits.max_layers:
        problems["layers"] = f"at most {limits.max_layers} layers"
    elif max(layers) > limits.max_width:
        problems["layers"] = f"layers wider than {limits.max_width} are over the limit"
    elif n_params > limits.max_params:
        problems["layers"] = f"{n_params} parameters; the limit is {limits.max_params}"
    if spec["epochs"] > limits.max_epochs:
        problems["epochs"] = f"at most {limits.max_epochs}"
    elif spec["epochs"] * n_samples > limits.max_work:
        problems["epochs"] = (f"{spec['epochs']} epochs x {n_samples} samples is "
                              f"{spec['epochs'] * n_samples}; the limit on epochs x samples "
                              f"is {limits.max_work}")
    if n_samples > limits.max_samples:
        problems["dataset"] = f"{n_samples} samples; the limit is {limits.max_samples}"
    return problems


def submit_run(fields: dict, sweep_id=None) -> Run:
    """Validate a spec against its dataset and the limits, store it and enqueue it.
    Raises ApiError (422, or 503 when the queue is down; then nothing is kept)."""
    session = db()
    user = require_user()
    spec = complete_spec(fields)
    dataset = resolve_dataset(session, spec["dataset"])
    if dataset is None:
        raise ApiError(422, "validation_error", "invalid dataset",
                       {"dataset": f"no dataset named {spec['dataset']!r}"})
    problems = dataset_problems(spec, dataset.n_features, dataset.target_kind,
                                dataset.n_targets, dataset.n_classes)
    for field, message in check_limits(spec, dataset.n_samples).items():
        problems[field] = f"{problems[field]}; {message}" if field in problems else message
    if problems:
        raise ApiError(422, "validation_error", f"invalid {', '.join(sorted(problems))}",
                       problems)
    run = store_runs.create_run(session, spec, dataset.id, name=spec.get("name"),
                                tags=spec.get("tags"), sweep_id=sweep_id, owner=user)
    session.commit()
    try:
        queue().enqueue_run(run.id)
    except QueueUnavailable as exc:
        run_id = run.id
        # Keep no orphan: a run nobody will ever train must not sit in "queued".
        session.delete(run)
        session.commit()
        # The broker's error may quote its URL (and password): log it redacted, never answer it.
        log.warning("run %s not queued, the broker is unreachable: %s", run_id,
                    redact_urls(str(exc)))
        raise ApiError(503, "queue_unavailable",
                       "the broker is unreachable; nothing was queued") from None
    # Sent: the reaper sends runs that never get this mark (an API that died just now).
    store_runs.mark_enqueued(session, [run.id])
    return run


@blp.route("")
class Runs(MethodView):
    @blp.arguments(RunSpecSchema)
    @blp.response(202, RunSchema)
    @blp.alt_response(400, response="BAD_REQUEST")
    @blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    @idempotent(blp, "POST /runs", lambda run_id: run_json(get_run_or_404(run_id)))
    def post(self, fields):
        """Submit a training run: validate, store, enqueue."""
        return run_json(submit_run(fields))

    @blp.arguments(RunListArgsSchema, location="query")
    @blp.response(200, RunPageSchema)
    def get(self, args):
        """Query run history, newest first by default, one page at a time.

        Filters: status (comma-separated states), dataset (name or id), sweep_id,
        tag.KEY=VALUE, FIELD_min / FIELD_max ranges (inclusive) and a where= expression
        with and, or, not and parentheses; all are ANDed. Pass
        next_cursor back as cursor for the next page; pages stay stable while new runs
        arrive."""
        query = parse_run_query(args)
        page, next_cursor = store_runs.list_runs(db(), query)
        return {"runs": [run_json(run) for run in page],
                "next_cursor": wrap_cursor(query, next_cursor)}


def order_key(query: store_runs.RunQuery) -> str:
    return ("-" if query.descending else "") + query.order_by


def wrap_cursor(query: store_runs.RunQuery, token):
    """The store's page token bound to the order it was made for (opaque to clients)."""
    if token is None:
        return None
    return _b64(json.dumps([order_key(query), *store_runs.decode_cursor(token)]))


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def unwrap_cursor(query: store_runs.RunQuery, cursor: str) -> str:
    """The store's page token behind a cursor of ours; ApiError 422 naming ``cursor`` when
    it is not one of ours or was made for another order_by."""
    def bad(message=BAD_CURSOR):
        return ApiError(422, "validation_error", "invalid cursor", {"cursor": message})

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


def parse_run_query(args: dict) -> store_runs.RunQuery:
    """GET /runs query parameters as a RunQuery; ApiError 422 naming a bad parameter."""
    problems = {}
    query = store_runs.RunQuery(limit=args["limit"], owner=require_user())
    if args.get("status"):
        statuses = [s.strip() for s in args["status"].split(",") if s.strip()]
        unknown = [s for s in statuses if s not in store_runs.RUN_STATES]
        if unknown:
            problems["status"] = f"unknown state(s) {', '.join(unknown)}"
        query.statuses = statuses
    if args.get("dataset"):
        dataset = resolve_dataset(db(), args["dataset"], create_builtin=False)
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
            query.where = compile_where(args["where"], db().bind.dialect.name)
        except WhereError as exc:
            problems["where"] = str(exc)
    if problems:
        raise ApiError(422, "validation_error", f"invalid {', '.join(sorted(problems))}",
                       problems)
    if args.get("cursor"):
        query.cursor = unwrap_cursor(query, args["cursor"])
    return query


@blp.route("/<int:run_id>")
class RunById(MethodView):
    @blp.response(200, RunSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, run_id):
        """One run: spec, state, timestamps, progress and summary of results."""
        return run_json(get_run_or_404(run_id))


@blp.route("/<int:run_id>/history")
class RunHistory(MethodView):
    @blp.arguments(HistoryArgsSchema, location="query")
    @blp.response(200, HistorySchema)
    @blp.alt_response(200, description="CSV when format=csv", schema={"type": "string"},
                      content_type="text/csv", success=True)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, run_id):
        """Per-epoch history: error, accuracy and validation error where recorded;
        max_points=N keeps at most N evenly spread epochs (always the first, the last and
        the best)."""
        get_run_or_404(run_id)
        epochs = store_runs.history(db(), run_id)
        if args.get("max_points") is not None:
            epochs = store_runs.downsample(epochs, args["max_points"])
        rows = [{"epoch": e.epoch, "error": e.error, "accuracy": e.accuracy,
                 "val_error": e.val_error, "val_accuracy": e.val_accuracy,
                 "seconds": e.seconds} for e in epochs]
        if args["format"] == "csv":
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=["epoch", "error", "accuracy", "val_error",
                                                     "val_accuracy", "seconds"])
            writer.writeheader()
            writer.writerows(rows)
            return Response(out.getvalue(), mimetype="text/csv",
                            headers={"Content-Disposition":
                                     f"attachment; filename=run-{run_id}-history.csv"})
        return {"run_id": run_id, "history": rows}


def stored_params(run_id: int, which: str):
    """(dtype, params) of a run, or ApiError 409 when it has none yet."""
    run = get_run_or_404(run_id)
    row = store_runs.get_params(db(), run_id, which)
    if row is None:
        raise ApiError(409, "not_ready",
                       f"run {run_id} has no {which} parameters yet (status {run.status})")
    return run, row


@blp.route("/<int:run_id>/params")
class RunParams(MethodView):
    @blp.arguments(ParamsArgsSchema, location="query")
    @blp.response(200, ParamsSchema)
    @blp.alt_response(200, description="NPZ (W1, B1, W2, B2, ...) when format=npz",
                      schema={"type": "string", "format": "binary"},
                      content_type="application/octet-stream", success=True)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def get(self, args, run_id):
        """Final parameters, or the initial ones with which=initial; JSON or NPZ."""
        _, row = stored_params(run_id, args["which"])
        if args["format"] == "npz":
            return Response(row.data, mimetype="application/octet-stream",
                            headers={"Content-Disposition": "attachment; filename="
                                     f"run-{run_id}-{args['which']}-params.npz"})
        params = params_from_npz(row.data)
        return {"run_id": run_id, "which": args["which"], "dtype": row.dtype,
                "weights": [W.tolist() for W in params["weights"]],
                "biases": [B.tolist() for B in params["biases"]]}


@blp.route("/<int:run_id>/cancel")
class RunCancel(MethodView):
    @blp.response(202, RunSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, run_id):
        """Cancel queued or running work; a finished run is left as it is (409)."""
        run = get_run_or_404(run_id)
        if run.status not in ("queued", "running"):
            raise ApiError(409, "already_finished", f"run {run_id} is {run.status}")
        return run_json(store_runs.request_cancel(db(), run_id))


@blp.route("/<int:run_id>/predict")
class RunPredict(MethodView):
    @blp.arguments(PredictSchema)
    @blp.response(200, PredictionSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def post(self, body, run_id):
        """Outputs of the trained network for the given input rows."""
        run, row = stored_params(run_id, "final")
        spec = run.spec
        widths = sorted({len(row) for row in body["inputs"]})
        if widths != [spec["layers"][0]]:
            raise ApiError(422, "validation_error", "invalid inputs",
                           {"inputs": f"every row must have {spec['layers'][0]} values (layers[0]),"
                                      f" got rows of {', '.join(map(str, widths))}"})
        inputs = np.asarray(body["inputs"], dtype=np.float64)
        outputs = kernels.predict(params_from_npz(row.data), inputs,
                                  activation=spec["activation"],
                                  output_activation=spec["output_activation"],
                                  loss=spec["loss"], dtype=spec["dtype"])
        return {"run_id": run_id,
                "outputs": [[None if not math.isfinite(v) else float(v) for v in out]
                            for out in outputs.tolist()]}

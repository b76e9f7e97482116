"""/api/v1/sweeps: grid and random searches expanded into runs on the queue."""

import logging

import marshmallow as ma
from flask import jsonify
from flask.views import MethodView
from marshmallow import RAISE, ValidationError, fields, validate

from service import sweepspace
from service.settings import redact_urls
from service.queue import QueueUnavailable
from service.runspec import complete_spec, dataset_problems
from service.store import runs as store_runs
from service.store import sweeps as store_sweeps

from .auth import require_user
from .context import db, queue
from .datasets import resolve_dataset
from .errors import ApiError, flatten_messages
from .idempotency import idempotent
from .parser import Blueprint
from .runs import check_limits
from .schemas import INT32, RunSchema, RunSpecSchema, StrictBoolean, UtcDateTime

blp = Blueprint("sweeps", __name__, url_prefix="/api/v1/sweeps",
                description="Hyperparameter sweeps")
log = logging.getLogger(__name__)

METRICS = ("final_error", "best_error", "final_val_error", "final_accuracy")
RUN_FIELDS = [name for name in RunSpecSchema().fields if name not in ("name", "tags")]


class EarlyStoppingSchema(ma.Schema):
    class Meta:
        unknown = RAISE

    min_epochs = fields.Integer(strict=True, required=True,
                                validate=validate.Range(min=1, max=INT32))
    reduction_factor = fields.Integer(strict=True, load_default=3,
                                      validate=validate.Range(min=2, max=100))


class SweepRequestSchema(ma.Schema):
    """A sweep: a base run spec and exactly one of ``grid`` or ``random``."""

    class Meta:
        unknown = RAISE

    base = fields.Dict(required=True, metadata={"description": "a run spec (API.md section 2)"})
    grid = fields.Dict(metadata={"description": "field: [values]; every combination is run",
                                 "example": {"learning_rate": [0.01, 0.1, 1.0]}})
    random = fields.Dict(metadata={
        "description": "field: {choice: [..]} | {uniform: [a, b]} | {loguniform: [a, b]} | "
                       "{int: [a, b]}; ``trials`` draws seeded by ``seed``"})
    trials = fields.Integer(strict=True, validate=validate.Range(min=1, max=1000))
    seed = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0))
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    max_concurrency = fields.Integer(strict=True, load_default=None, allow_none=True,
                                     validate=validate.Range(min=1, max=INT32))
    early_stopping = fields.Nested(EarlyStoppingSchema, load_default=None, allow_none=True,
                                   metadata={"description": "successive halving: rungs at "
                                             "min_epochs * reduction_factor**k epochs"})
    metric = fields.String(load_default="error", validate=validate.OneOf(("error", "val_error")),
                           metadata={"description": "what early stopping compares"})
    preview = StrictBoolean(load_default=False,
                            metadata={"description": "return the configurations only"})

    @ma.validates_schema
    def _one_space(self, data, **kwargs):
        if ("grid" in data) == ("random" in data):
            raise ValidationError("give exactly one of grid or random", "grid")
        if "random" in data and "trials" not in data:
            raise ValidationError("required with random", "trials")


class ConfigurationSchema(ma.Schema):
    position = fields.Integer()
    config = fields.Dict(metadata={"description": "the varied fields"})
    spec = fields.Dict(metadata={"description": "the complete run spec"})


class PreviewSchema(ma.Schema):
    count = fields.Integer()
    configurations = fields.List(fields.Nested(ConfigurationSchema))


class LeaderboardEntrySchema(ma.Schema):
    rank = fields.Integer()
    run_id = fields.Integer()
    status = fields.String()
    config = fields.Dict()
    epochs_done = fields.Integer()
    final_error = fields.Float(allow_none=True)
    best_error = fields.Float(allow_none=True)
    final_val_error = fields.Float(allow_none=True)
    final_accuracy = fields.Float(allow_none=True)


class SweepRunSchema(RunSchema):
    config = fields.Dict()
    dispatched = fields.Boolean()


class SweepSchema(ma.Schema):
    id = fields.Integer()
    name = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": ["queued", "running", "succeeded", "failed",
                                              "cancelled"]})
    kind = fields.String(metadata={"enum": ["grid", "random"]})
    base = fields.Dict()
    space = fields.Dict()
    trials = fields.Integer(allow_none=True)
    seed = fields.Integer(allow_none=True)
    max_concurrency = fields.Integer(allow_none=True)
    early_stopping = fields.Dict(allow_none=True)
    metric = fields.String()
    created_at = UtcDateTime()
    finished_at = UtcDateTime(allow_none=True)
    total = fields.Integer()
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    runs = fields.List(fields.Nested(SweepRunSchema))
    leaderboard = fields.List(fields.Nested(LeaderboardEntrySchema))
    best = fields.Nested(LeaderboardEntrySchema, allow_none=True)


class SweepListSchema(ma.Schema):
    sweeps = fields.List(fields.Nested(SweepSchema))
    next_cursor = fields.String(allow_none=True, metadata={
        "description": "pass as cursor for the next page; null on the last page"})


class SweepArgsSchema(ma.Schema):
    metric = fields.String(load_default="final_error", validate=validate.OneOf(METRICS))
    order = fields.String(load_default=None, validate=validate.OneOf(("asc", "desc")),
                          metadata={"description": "default: desc for final_accuracy, "
                                                   "else asc"})


class SweepListArgsSchema(ma.Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.String(load_default=None, metadata={
        "description": "next_cursor of the previous page (pages stay stable while new "
                       "sweeps arrive)"})


def sweep_cursor(token: str) -> int:
    """The last sweep id of the previous page, from its page token; ApiError 422 naming
    ``cursor`` when the token is not one of ours."""
    try:
        is_null, value, last_id = store_runs.decode_cursor(token)
    except ValueError:
        last_id = None
    if not isinstance(last_id, int) or isinstance(last_id, bool) or not 0 < last_id <= INT32:
        raise _invalid({"cursor": "not a valid page token; pass next_cursor of the previous "
                                  "page as it is"})
    return last_id


# ------------------------------------------------------------------------- expansion


def _invalid(problems: dict):
    return ApiError(422, "validation_error", f"invalid {', '.join(sorted(problems))}", problems)


def expand(body: dict) -> list[dict]:
    """[{position, config, spec, dataset}] of a sweep body, every configuration validated
    like a run; ApiError 422 naming the field (``base.layers``, ``grid.learning_rate[2]``,
    ``random.epochs``) otherwise."""
    kind = "grid" if "grid" in body else "random"
    base = body["base"]
    problems = {}
    for name in (body[kind] or {}):
        if name not in RUN_FIELDS:
            problems[f"{kind}.{name}"] = "not a field of a run spec that a sweep can vary"
    if problems:
        raise _invalid(problems)
    try:
        configs = sweepspace.configurations(kind, body[kind], body.get("trials"),
                                            body.get("seed", 0))
    except sweepspace.SpaceError as exc:
        raise _invalid(exc.fields) from None
    if not configs:
        raise _invalid({kind: "no configurations"})
    session = db()
    datasets = {}
    out = []
    schema = RunSpecSchema()
    for position, config in enumerate(configs):
        merged = {**base, **config}
        try:
            fields_ = schema.load(merged)
        except ValidationError as exc:
            for name, message in flatten_messages(exc.messages).items():
                top = name.split(".")[0].split("[")[0]
                if top in config:
                    path = sweepspace.field_path(kind, top, position, body[kind], config)
                    where = "" if kind == "grid" else f" (trial {position}: {config[top]!r})"
                    problems.setdefault(path + name[len(top):], message + where)
                else:
                    problems.setdefault(f"base.{name}", message)
            continue
        spec = complete_spec(fields_)
        key = str(spec["dataset"])
        if key not in datasets:
            datasets[key] = resolve_dataset(session, spec["dataset"])
        dataset = datasets[key]
        if dataset is None:
            where = "dataset" if "dataset" in config else "base.dataset"
            problems.setdefault(where, f"no dataset named {spec['dataset']!r}")
            continue
        found = dataset_problems(spec, dataset.n_features, dataset.target_kind,
                                 dataset.n_targets, dataset.n_classes)
        found.update(check_limits(spec, dataset.n_samples))
        for name, message in found.items():
            path = (sweepspace.field_path(kind, name, position, body[kind], config)
                    if name in config else f"base.{name}")
            problems.setdefault(path, message)
        out.append({"position": position, "config": config, "spec": spec,
                    "dataset": dataset})
    if body.get("metric") == "val_error":
        without = [cell["position"] for cell in out if not cell["spec"].get("validation_split")]
        if without:
            problems["metric"] = ("val_error needs validation_split > 0 in every configuration; "
                                  f"{len(without)} have none (e.g. #{without[0]})")
    if problems:
        raise _invalid(problems)
    return out


def preview_json(cells: list[dict]) -> dict:
    return {"count": len(cells),
            "configurations": [{k: c[k] for k in ("position", "config", "spec")}
                               for c in cells]}


def enqueue(run_ids) -> None:
    client = queue()
    if hasattr(client, "enqueue_runs"):
        client.enqueue_runs(run_ids)
    else:  # a QUEUE that only has enqueue_run
        for run_id in run_ids:
            client.enqueue_run(run_id)
    store_runs.mark_enqueued(db(), run_ids)  # the reaper sends runs left unmarked


def create(body: dict):
    """Store a sweep with all its cells, dispatch the first ones, enqueue them."""
    expanded = expand(body)
    session = db()
    user = require_user()
    kind = "grid" if "grid" in body else "random"
    sweep = store_sweeps.create_sweep(
        session, owner=user, name=body.get("name"), base=body["base"], space=body[kind], kind=kind,
        trials=body.get("trials") if kind == "random" else None,
        seed=body.get("seed") if kind == "random" else None,
        max_concurrency=body.get("max_concurrency"), early_stopping=body.get("early_stopping"),
        metric=body["metric"])
    label = body.get("name") or f"sweep {sweep.id}"
    store_sweeps.create_cells(session, sweep.id, [
        {"position": cell["position"], "config": cell["config"],
         "config_hash": sweepspace.config_hash(cell["config"]), "spec": cell["spec"],
         "dataset_id": cell["dataset"].id,
         "name": cell["spec"].get("name") or f"{label} #{cell['position']}",
         "tags": cell["spec"].get("tags")}
        for cell in expanded])
    session.commit()
    to_send = store_sweeps.fill_slots(session, sweep.id)
    session.commit()
    try:
        enqueue(to_send)
    except QueueUnavailable as exc:
        sweep_id = sweep.id
        store_sweeps.delete_sweep(session, sweep_id)
        session.commit()
        # The broker's error may quote its URL (and password): log it redacted, never answer it.
        log.warning("sweep %s not queued, the broker is unreachable: %s", sweep_id,
                    redact_urls(str(exc)))
        raise ApiError(503, "queue_unavailable",
                       "the broker is unreachable; nothing was queued") from None
    return sweep


# ------------------------------------------------------------------------- views


def sweep_json(sweep, metric: str = "final_error", order=None, with_runs: bool = True) -> dict:
    session = db()
    rows = store_sweeps.cells(session, sweep.id)
    by_state = {}
    for _, run in rows:
        by_state[run.status] = by_state.get(run.status, 0) + 1
    out = {
        "id": sweep.id, "name": sweep.name,
        "status": store_sweeps.derive_status(sweep, by_state),
        "kind": sweep.kind, "base": sweep.base, "space": sweep.space, "trials": sweep.trials,
        "seed": sweep.seed, "max_concurrency": sweep.max_concurrency,
        "early_stopping": sweep.early_stopping, "metric": sweep.metric,
        "created_at": sweep.created_at, "finished_at": sweep.finished_at,
        "total": len(rows), "counts": by_state,
    }
    if not with_runs:
        return out
    from .runs import run_json

    out["runs"] = [{**run_json(run), "config": cell.config, "dispatched": cell.dispatched}
                   for cell, run in rows]
    descending = (order or ("desc" if metric == "final_accuracy" else "asc")) == "desc"
    ranked = [(cell, run) for cell, run in rows if getattr(run, metric) is not None]
    ranked.sort(key=lambda cr: (-getattr(cr[1], metric) if descending
                                else getattr(cr[1], metric), cr[1].id))
    out["leaderboard"] = [
        {"rank": i + 1, "run_id": run.id, "status": run.status, "config": cell.config,
         "epochs_done": run.epochs_done, "final_error": run.final_error,
         "best_error": run.best_error, "final_val_error": run.final_val_error,
         "final_accuracy": run.final_accuracy}
        for i, (cell, run) in enumerate(ranked)]
    out["best"] = out["leaderboard"][0] if out["leaderboard"] else None
    return out


def get_sweep_or_404(sweep_id: int):
    """The sweep ``sweep_id`` of this request's user. Every route that reads or changes one
    sweep goes through here: another user's sweep is a 404, the same as a missing one."""
    user = require_user()
    sweep = store_sweeps.get_sweep(db(), sweep_id) if 0 <= sweep_id <= INT32 else None
    if sweep is None or sweep.owner != user:
        raise ApiError(404, "not_found", f"sweep {sweep_id} does not exist")
    return sweep


@blp.route("")
class Sweeps(MethodView):
    @blp.arguments(SweepRequestSchema)
    @blp.response(202, SweepSchema)
    @blp.alt_response(200, schema=PreviewSchema, description="the configurations, with "
                      "preview: true (nothing is stored or queued)", success=True)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    @idempotent(blp, "POST /sweeps", lambda sweep_id: sweep_json(get_sweep_or_404(sweep_id)))
    def post(self, body):
        """Submit a sweep: validate every configuration, store one run per configuration,
        and queue them (at most max_concurrency at a time)."""
        if body["preview"]:
            response = jsonify(PreviewSchema().dump(preview_json(expand(body))))
            response.status_code = 200
            return response
        return sweep_json(create(body))

    @blp.arguments(SweepListArgsSchema, location="query")
    @blp.response(200, SweepListSchema)
    def get(self, args):
        """Sweeps, newest first, with their state and run counts; cursor paging."""
        before = sweep_cursor(args["cursor"]) if args["cursor"] else None
        sweeps = store_sweeps.list_sweeps(db(), args["limit"] + 1, before=before,
                                          owner=require_user())
        page = sweeps[:args["limit"]]
        more = len(sweeps) > args["limit"]
        return {"sweeps": [sweep_json(s, with_runs=False) for s in page],
                "next_cursor": (store_runs.encode_cursor([False, None, page[-1].id])
                                if more else None)}


@blp.route("/preview")
class SweepPreview(MethodView):
    @blp.arguments(SweepRequestSchema)
    @blp.response(200, PreviewSchema)
    def post(self, body):
        """The configurations a sweep would run; nothing is stored or queued."""
        return preview_json(expand(body))


@blp.route("/<int:sweep_id>")
class SweepById(MethodView):
    @blp.arguments(SweepArgsSchema, location="query")
    @blp.response(200, SweepSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, args, sweep_id):
        """A sweep: state, counts by run state, its runs and the leaderboard by a metric."""
        return sweep_json(get_sweep_or_404(sweep_id), args["metric"], args["order"])


@blp.route("/<int:sweep_id>/cancel")
class SweepCancel(MethodView):
    @blp.response(202, SweepSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, sweep_id):
        """Cancel a sweep: its queued runs end now, its running ones at their next chunk."""
        get_sweep_or_404(sweep_id)
        sweep = store_sweeps.cancel_sweep(db(), sweep_id)
        return sweep_json(sweep)

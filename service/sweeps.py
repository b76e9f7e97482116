"""Sweeps: a base spec and a grid or random space expanded into runs, each validated like a
run; stored with all their cells, the first ones enqueued (or everything undone), and shown
with a leaderboard. A model-based sweep (``search``: tpe or cmaes) stores no cells up front:
its space is validated through probes (every choice and bound, see
sweepspace.probes) and a sampler proposes each cell when a slot opens
(service.store.search)."""

import json

from marshmallow import ValidationError, fields

from service import sweepspace
from service.datasets import resolve_dataset
from service.errors import Invalid, NotFound, field_messages
from service.quotas import check_quotas
from service.runs import describe_run, enqueue_or_undo
from service.runspec import (INT32, RunSpecSchema, complete_spec, dataset_problems, limit_problems,
                             validation_problems)
from service.store import sweeps as store_sweeps
from service.store import usage
from service.store.models import Sweep

# What a leaderboard can rank by.
METRICS = ("final_error", "best_error", "final_val_error", "final_accuracy")
# What a sweep may vary: a run spec's fields but its name and tags, and one key of an object
# field by its dotted name (``lr_schedule.gamma``, ``stop_on_plateau.patience``).
RUN_FIELDS = [name for name in RunSpecSchema().fields if name not in ("name", "tags")]
NESTED_FIELDS = {name: list(field.schema.fields)
                 for name, field in RunSpecSchema().fields.items()
                 if isinstance(field, fields.Nested)}
VARIABLE_FIELDS = RUN_FIELDS + [f"{name}.{key}" for name, keys in NESTED_FIELDS.items()
                                for key in keys]


def varied_field(name: str, config: dict):
    """The varied field (a key of ``config``) an error about spec field ``name`` comes
    from (``lr_schedule.gamma`` for an error about it or about ``lr_schedule`` given whole
    and then varied in part, the longest match first), or None for the base."""
    matches = [key for key in config
               if name == key or name.startswith((key + ".", key + "["))]
    return max(matches, key=len) if matches else None


# What a sweep's "search" may be; grid and random are also told by their own keys.
SEARCHES = ("grid", "random", *sweepspace.MODEL_BASED)
# A model-based sweep without max_concurrency runs this many at a time: a sampler learns
# only from runs that have ended. More than MAX_MODEL_CONCURRENCY at once would be random
# search with extra steps (and the API asks the first ones in the request).
DEFAULT_MODEL_CONCURRENCY = 4
MAX_MODEL_CONCURRENCY = 64


def search_kind(body: dict) -> str:
    """grid, random, tpe or cmaes: the body's ``search``, else told by its space's key."""
    if body.get("search"):
        return body["search"]
    return "grid" if "grid" in body else "random"


def space_key(kind: str) -> str:
    """The body's key that holds a ``kind`` sweep's space."""
    return "space" if kind in sweepspace.MODEL_BASED else kind


def expand(session, body: dict, owner: str, limits) -> list[dict]:
    """[{position, config, spec, dataset}] of a sweep body (loaded by the API's
    SweepRequestSchema), every configuration validated like a run of ``owner``; Invalid
    naming the field (``base.layers``, ``grid.learning_rate[2]``, ``random.epochs``)
    otherwise."""
    kind = search_kind(body)
    key = space_key(kind)
    base = body["base"]
    problems = {}
    for name in (body[key] or {}):
        if name not in VARIABLE_FIELDS:
            parent = name.partition(".")[0]
            problems[f"{key}.{name}"] = (
                f"not a key of {parent}: one of {', '.join(NESTED_FIELDS[parent])}"
                if parent in NESTED_FIELDS else
                "not a field of a run spec that a sweep can vary")
        elif name == "dataset" and key == "space":
            problems[f"{key}.{name}"] = "a model-based search trains on one dataset (base.dataset)"
    if key == "space" and (body.get("max_concurrency") or 0) > MAX_MODEL_CONCURRENCY:
        problems["max_concurrency"] = (f"at most {MAX_MODEL_CONCURRENCY} with search {kind} "
                                       "(a sampler learns from runs that have ended)")
    if problems:
        raise Invalid(problems)
    try:
        configs = sweepspace.configurations(kind, body[key], body.get("trials"),
                                            body.get("seed", 0))
    except sweepspace.SpaceError as exc:
        raise Invalid(exc.fields) from None
    if not configs:
        raise Invalid({key: "no configurations"})
    datasets = {}
    out = []
    schema = RunSpecSchema()
    base_problems = {}  # base.FIELD: [message, first position, cells with it]
    for position, config in enumerate(configs):
        merged = sweepspace.apply_config(base, config)
        try:
            fields_ = schema.load(merged)
        except ValidationError as exc:
            for name, message in field_messages(exc.messages).items():
                varied = varied_field(name, config)
                if varied is not None:
                    path = sweepspace.field_path(kind, varied, position, body[key], config)
                    where = ("" if kind == "grid"
                             else f" (trial {position}: {config[varied]!r})")
                    problems.setdefault(path + name[len(varied):], message + where)
                    continue
                base_problems.setdefault(f"base.{name}", [message, position, 0])[2] += 1
            continue
        spec = complete_spec(fields_)
        ref = str(spec["dataset"])
        if ref not in datasets:
            datasets[ref] = resolve_dataset(session, spec["dataset"], owner)
        dataset = datasets[ref]
        if dataset is None:
            where = "dataset" if "dataset" in config else "base.dataset"
            problems.setdefault(where, f"no dataset named {spec['dataset']!r}")
            continue
        found = dataset_problems(spec, dataset.n_features, dataset.target_kind,
                                 dataset.n_targets, dataset.n_classes, dataset.max_abs)
        found.update(validation_problems(spec, dataset.n_samples))
        found.update(limit_problems(spec, dataset.n_samples, limits))
        for name, message in found.items():
            varied = varied_field(name, config)
            path = (sweepspace.field_path(kind, varied, position, body[key], config)
                    + name[len(varied):] if varied is not None else f"base.{name}")
            problems.setdefault(path, f"{message} ({_cell(position, config)})")
        out.append({"position": position, "config": config, "spec": spec,
                    "dataset": dataset})
    for path, (message, position, cells) in base_problems.items():
        # Not in every cell: a rule across fields that some configurations break (a plateau
        # on val_error where a varied validation_split is 0): name the first of them.
        problems.setdefault(path, message if cells == len(configs)
                            else f"{message} ({_cell(position, configs[position])})")
    if body.get("metric") == "val_error":
        without = [cell["position"] for cell in out if not cell["spec"].get("validation_split")]
        if without:
            problems["metric"] = ("val_error needs validation_split > 0 in every configuration; "
                                  f"{len(without)} have none (e.g. #{without[0]})")
    if problems:
        raise Invalid(problems)
    return out


def _cell(position: int, config: dict) -> str:
    """A configuration as an error message names it: its position and varied fields."""
    text = json.dumps(config, separators=(", ", ": "))
    return f"configuration #{position}: {text if len(text) <= 200 else text[:197] + '...'}"


def preview(cells: list[dict]) -> dict:
    """What a preview shows of expanded cells: their count and configurations."""
    return {"count": len(cells),
            "configurations": [{k: c[k] for k in ("position", "config", "spec")}
                               for c in cells]}


def create_sweep(session, queue, limits, owner: str, body: dict) -> Sweep:
    """Store ``owner``'s sweep with all its cells, dispatch the first ones and enqueue them;
    Invalid (see ``expand``), QuotaExceeded (its cells count as active runs, their bytes as
    reserved), or QueueDown (then nothing is kept)."""
    expanded = expand(session, body, owner, limits)
    kind = search_kind(body)
    if kind in sweepspace.MODEL_BASED:
        return _create_model_sweep(session, queue, limits, owner, body, kind, expanded)
    # Every cell is an active run at once, each with its bytes reserved; counted and stored
    # in one transaction (the quota lock is held until its commit).
    check_quotas(session, owner, limits, runs=len(expanded),
                 stored_bytes=sum(usage.run_bytes(cell["spec"]) for cell in expanded))
    sweep = store_sweeps.create_sweep(
        session, owner=owner, name=body.get("name"), base=body["base"], space=body[kind],
        kind=kind,
        trials=body.get("trials") if kind == "random" else None,
        seed=body.get("seed") if kind == "random" else None,
        max_concurrency=body.get("max_concurrency"), early_stopping=body.get("early_stopping"),
        metric=body["metric"])
    label = body.get("name") or f"sweep {sweep.id}"
    # Without a concurrency limit every cell is dispatched as it is stored, in this one
    # transaction; with one, fill_slots dispatches the first max_concurrency.
    unlimited = body.get("max_concurrency") is None
    ids = store_sweeps.create_cells(session, sweep.id, [
        {"position": cell["position"], "config": cell["config"],
         "config_hash": sweepspace.config_hash(cell["config"]), "spec": cell["spec"],
         "dataset_id": cell["dataset"].id,
         "name": cell["spec"].get("name") or f"{label} #{cell['position']}",
         "tags": cell["spec"].get("tags")}
        for cell in expanded], dispatched=unlimited)
    if unlimited:
        to_send = ids
    else:
        session.commit()
        to_send = store_sweeps.fill_slots(session, sweep.id)
    enqueue_or_undo(session, queue, to_send,
                    lambda: store_sweeps.delete_sweep(session, sweep.id), f"sweep {sweep.id}")
    return sweep


def _create_model_sweep(session, queue, limits, owner: str, body: dict, kind: str,
                        probes: list[dict]) -> Sweep:
    """Store a model-based sweep and its first cells (asked of its sampler), enqueue them.
    Its search settings live in its space column (store_sweeps.search_settings): the
    fields, the objective, the base completed (the template each asked configuration is
    set into), its dataset, and the output activation of each loss a space may choose."""
    concurrency = body.get("max_concurrency") or DEFAULT_MODEL_CONCURRENCY
    # At most max_concurrency runs are active at once, each at most the largest probe's
    # bytes: checked for the whole budget, since later runs are created by the workers.
    check_quotas(session, owner, limits, runs=min(concurrency, body["trials"]),
                 stored_bytes=body["trials"] * max(usage.run_bytes(cell["spec"])
                                                   for cell in probes))
    space = body["space"]
    template = probes[0]["spec"]
    output_activations = []
    if "loss" in space and body["base"].get("output_activation") is None:
        seen = {}
        for cell in probes:
            seen.setdefault(repr(cell["config"].get("loss")),
                            [cell["config"].get("loss"), cell["spec"]["output_activation"]])
        output_activations = list(seen.values())
    stored = {"fields": space, "objective": body["objective"], "template": template,
              "dataset_id": probes[0]["dataset"].id, "output_activations": output_activations}
    sweep = store_sweeps.create_sweep(
        session, owner=owner, name=body.get("name"), base=body["base"], space=stored,
        kind=kind, trials=body["trials"], seed=body.get("seed", 0),
        max_concurrency=concurrency, early_stopping=body.get("early_stopping"),
        metric=body["metric"])
    session.commit()
    to_send = store_sweeps.fill_slots(session, sweep.id)
    enqueue_or_undo(session, queue, to_send,
                    lambda: store_sweeps.delete_sweep(session, sweep.id), f"sweep {sweep.id}")
    return sweep


def describe_sweep(session, sweep: Sweep, metric: str = "final_error", order=None,
                   with_runs: bool = True) -> dict:
    """A sweep as the API shows it: its state and counts by run state and, ``with_runs``,
    its runs and the leaderboard by ``metric`` (``order`` "asc" or "desc"; default: desc for
    final_accuracy, else asc)."""
    rows = store_sweeps.cells(session, sweep.id)
    by_state = {}
    for _, run in rows:
        by_state[run.status] = by_state.get(run.status, 0) + 1
    out = {
        "id": sweep.id, "name": sweep.name,
        "status": store_sweeps.derive_status(sweep, by_state),
        "kind": sweep.kind, "base": sweep.base, "space": space_of(sweep),
        "trials": sweep.trials, "objective": objective_of(sweep), "seed": sweep.seed,
        "max_concurrency": sweep.max_concurrency,
        "early_stopping": sweep.early_stopping, "metric": sweep.metric,
        "created_at": sweep.created_at, "finished_at": sweep.finished_at,
        "total": len(rows), "counts": by_state,
    }
    if not with_runs:
        return out
    out["runs"] = [{**describe_run(run), "config": cell.config, "dispatched": cell.dispatched}
                   for cell, run in rows]
    descending = (order or ("desc" if metric == "final_accuracy" else "asc")) == "desc"
    ranked = [(cell, run) for cell, run in rows if getattr(run, metric) is not None]
    ranked.sort(key=lambda cr: (-getattr(cr[1], metric) if descending
                                else getattr(cr[1], metric), cr[1].id))
    out["leaderboard"] = [
        {"rank": i + 1, "run_id": run.id, "status": run.status, "config": cell.config,
         "epochs_done": run.epochs_done, "final_error": run.final_error,
         "best_error": run.best_error, "final_val_error": run.final_val_error,
         "final_accuracy": run.final_accuracy, "best_epoch": run.best_epoch,
         "stop_reason": run.stop_reason}
        for i, (cell, run) in enumerate(ranked)]
    out["best"] = out["leaderboard"][0] if out["leaderboard"] else None
    return out


def space_of(sweep: Sweep) -> dict:
    """The space a sweep was given (a model-based sweep stores it with its settings)."""
    if sweep.kind in sweepspace.MODEL_BASED:
        return store_sweeps.search_settings(sweep)["fields"]
    return sweep.space


def objective_of(sweep: Sweep):
    """A model-based sweep's objective (final or best), else None."""
    if sweep.kind in sweepspace.MODEL_BASED:
        return store_sweeps.search_settings(sweep)["objective"]
    return None


def owned_sweep(session, sweep_id: int, owner: str) -> Sweep:
    """The sweep ``sweep_id`` of ``owner``. Every use of one sweep goes through here:
    another user's sweep is NotFound, the same as a missing one."""
    sweep = store_sweeps.get_sweep(session, sweep_id) if 0 <= sweep_id <= INT32 else None
    if sweep is None or sweep.owner != owner:
        raise NotFound(f"sweep {sweep_id} does not exist")
    return sweep

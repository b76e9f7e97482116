"""What mattered in a sweep: its finished runs as points (the varied fields and the metric),
and the fields' importance by Optuna's PedAnovaImportanceEvaluator over an in-memory study
built from those points (numpy only; fANOVA and the mean-decrease-impurity evaluator need
scikit-learn, which is not a dependency).

Every kind of sweep is read the same way: grid, random, tpe and cmaes. A field's axis comes
from the sweep's space where it says (loguniform: a log axis; uniform/int: linear; choice: its
values as ordered categories); a grid field of numbers is numeric (log when its values are
positive and span at least two decades), any other grid field is categorical in the grid's
order. Only runs that succeeded with a finite metric count (a run stopped early has only a
partial one). Cost: one pass over the sweep's runs, at most its size (the trials bound)."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field

from service.errors import NotReady
from service.store import sweeps as store_sweeps
from service.store.models import Sweep
from service.store.search import metric_value

from .sweeps import objective_of, space_of

EVALUATOR = "PedAnovaImportanceEvaluator"
# A grid of positive numbers spanning this ratio (or more) is drawn on a log axis.
LOG_SPAN = 100.0


@dataclass
class Axis:
    """One varied field: ``scale`` is "log", "linear" or "category" (``categories``: its
    values in order); ``low``/``high`` the numeric range drawn."""

    name: str
    scale: str
    categories: list = field(default_factory=list)
    low: float | None = None
    high: float | None = None

    def position(self, value):
        """The value on this axis: the number itself, or its category's index."""
        if self.scale == "category":
            key = _key(value)
            return next(i for i, c in enumerate(self.categories) if _key(c) == key)
        return float(value)


@dataclass
class SweepPoints:
    """A sweep's succeeded runs with a finite metric: ``points`` is [(run_id, config,
    value)]; ``axes`` the varied fields (name order); ``metric`` e.g. final_error."""

    sweep_id: int
    title: str
    metric: str
    fields: list[str]
    axes: list[Axis]
    points: list[tuple[int, dict, float]]


def _key(value) -> str:
    return json.dumps(value, sort_keys=True)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _axis(name: str, spec, values: list) -> Axis:
    """The axis of a field from its space entry (a dict for random/tpe/cmaes, a list for a
    grid, None if unknown) and the values the runs had."""
    if isinstance(spec, dict) and len(spec) == 1:
        kind, args = next(iter(spec.items()))
        if kind in ("uniform", "loguniform", "int") and all(_is_number(v) for v in values):
            low = min([float(args[0])] + [float(v) for v in values])
            high = max([float(args[1])] + [float(v) for v in values])
            return Axis(name, "log" if kind == "loguniform" and low > 0 else "linear",
                        low=low, high=high)
        if kind == "choice":
            categories = list(args)
            known = {_key(c) for c in categories}
            categories += [v for v in _distinct(values) if _key(v) not in known]
            return Axis(name, "category", categories)
    if all(_is_number(v) for v in values):
        low, high = min(map(float, values)), max(map(float, values))
        log = low > 0 and high / low >= LOG_SPAN
        return Axis(name, "log" if log else "linear", low=low, high=high)
    ordered = list(spec) if isinstance(spec, list) else []
    known = {_key(c) for c in ordered}
    return Axis(name, "category", ordered + [v for v in _distinct(values)
                                             if _key(v) not in known])


def _distinct(values: list) -> list:
    seen, out = set(), []
    for value in values:
        if _key(value) not in seen:
            seen.add(_key(value))
            out.append(value)
    return out


def sweep_points(session, sweep: Sweep) -> SweepPoints:
    """The sweep's succeeded runs with their varied fields and metric (see the module)."""
    objective = objective_of(sweep) or "final"
    space = space_of(sweep) or {}
    points = []
    for cell, run in store_sweeps.cells(session, sweep.id):
        if run.status != "succeeded":
            continue
        value = metric_value(session, run, sweep.metric, objective)
        if value is not None:
            points.append((run.id, dict(cell.config), float(value)))
    names = sorted(set(space) | {n for _, config, _ in points for n in config})
    axes = []
    for name in names:
        values = [config[name] for _, config, _ in points if name in config]
        if len(values) == len(points) and len(_distinct(values)) > 1:
            axes.append(_axis(name, space.get(name), values))
    title = f"sweep {sweep.id}" + (f": {sweep.name}" if sweep.name else "")
    return SweepPoints(sweep.id, title, f"{objective}_{sweep.metric}", names, axes, points)


def importance(data: SweepPoints) -> dict:
    """{metric, importance: {field: share}, runs, evaluator}: each varied field's importance
    (normalised to sum to 1; all 0 when no field stands out). NotReady with fewer than 2
    runs or nothing varied."""
    if len(data.points) < 2:
        raise NotReady(f"sweep {data.sweep_id} has {len(data.points)} succeeded run"
                       f"{'' if len(data.points) == 1 else 's'} with a {data.metric}; "
                       "importance needs at least 2")
    if not data.axes:
        raise NotReady(f"no field varies between the succeeded runs of sweep "
                       f"{data.sweep_id}")
    import optuna

    dists = {}
    for axis in data.axes:
        if axis.scale == "category":
            dists[axis.name] = optuna.distributions.CategoricalDistribution(
                list(range(len(axis.categories))))
        else:
            dists[axis.name] = optuna.distributions.FloatDistribution(
                axis.low, axis.high, log=axis.scale == "log")
    trials = [optuna.trial.create_trial(
        params={axis.name: axis.position(config[axis.name]) for axis in data.axes},
        distributions=dists, value=value) for _, config, value in data.points]
    with warnings.catch_warnings():
        # "too few trials" and "experimental" warnings: the answer says how many runs.
        warnings.simplefilter("ignore")
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.create_study(direction="minimize")
        study.add_trials(trials)
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    shares = {name: float(found.get(name, 0.0)) for name in dists}
    shares = {name: (v if math.isfinite(v) else 0.0) for name, v in shares.items()}
    return {"metric": data.metric, "importance": shares, "runs": len(data.points),
            "evaluator": EVALUATOR}

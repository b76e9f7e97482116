"""Model-based sweeps (``tpe``, ``cmaes``): Optuna's samplers through ask-and-tell, with the
study rebuilt from the sweep's own cells and runs each time a slot opens.

Nothing of Optuna is stored: ``study_of`` builds an in-memory study from the rows (a
finished run told with its metric, a run in flight added as a RUNNING trial so the
sampler's constant liar keeps parallel asks apart, a run its sweep's successive halving
stopped told PRUNED with its metric at the epoch it stopped, a failed, diverged or
cancelled run told FAIL), and ``propose`` asks it for the next configurations. The
sampler is seeded with the sweep's seed and the trials are added in cell order, so a sweep
with ``max_concurrency: 1`` asks the same configurations in the same order every time.

It lives in the store because both sides fill slots: the API when a sweep is created, the
workers (and their reaper) in the transaction that ends a sweep's run."""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import TYPE_CHECKING, Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Epoch, Run, Sweep, SweepCell

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

KINDS = ("tpe", "cmaes")
# Asks per free slot before giving up on a configuration the sweep already has (a small
# discrete space runs out: the sweep then ends with fewer runs than its trials).
REDRAWS = 20
# Run states told to the sampler as a failed trial.
FAILED = ("failed", "diverged", "cancelled")



@functools.cache
def _optuna():
    """Optuna, imported on first use (it takes about a second: an API or a worker that never
    sees a model-based sweep does without), its logging limited to warnings."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(space: dict) -> dict:
    """Optuna's distribution for each field of a ``random``-syntax space. A choice becomes a
    categorical over the indices of its values (values may be lists, as layers are)."""
    optuna = _optuna()
    out = {}
    for name in sorted(space):
        kind, args = next(iter(space[name].items()))
        if kind == "choice":
            out[name] = optuna.distributions.CategoricalDistribution(list(range(len(args))))
        elif kind == "int":
            out[name] = optuna.distributions.IntDistribution(args[0], args[1])
        else:
            out[name] = optuna.distributions.FloatDistribution(
                float(args[0]), float(args[1]), log=kind == "loguniform")
    return out


def to_params(space: dict, config: dict) -> Optional[dict]:
    """A stored configuration as Optuna's parameters; None when a value is not in the space
    (the trial is then left out)."""
    params = {}
    for name in sorted(space):
        if name not in config:
            return None
        kind, args = next(iter(space[name].items()))
        value = config[name]
        if kind == "choice":
            index = next((i for i, v in enumerate(args)
                          if v == value and type(v) is type(value)), None)
            if index is None:
                return None
            params[name] = index
        else:
            params[name] = value
    return params


def to_config(space: dict, params: dict) -> dict:
    """Optuna's parameters as a configuration: field -> value, in name order."""
    config = {}
    for name in sorted(space):
        kind, args = next(iter(space[name].items()))
        value = params[name]
        config[name] = args[value] if kind == "choice" else (
            int(value) if kind == "int" else float(value))
    return config


def sampler(kind: str, seed: int):
    """The sampler of a ``kind`` sweep. TPE: multivariate (one joint model of the fields),
    with constant liar (runs in flight count as bad results, so parallel asks spread out)."""
    optuna = _optuna()
    if kind == "cmaes":
        # CMA-ES models numeric fields only; choices are drawn by its independent sampler.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(multivariate=True, constant_liar=True, seed=seed)


def metric_value(session: Session, run: Run, metric: str, objective: str) -> Optional[float]:
    """The value a run tells: its final or best ``error`` or ``val_error``; None when it has
    none (or it is not finite)."""
    if metric == "val_error":
        value = run.final_val_error if objective == "final" else session.scalar(
            select(func.min(Epoch.val_error)).where(Epoch.run_id == run.id))
    else:
        value = run.final_error if objective == "final" else run.best_error
    return value if value is not None and math.isfinite(value) else None


def trial_of(session: Session, run: Run, params: dict, dists: dict, metric: str,
             objective: str):
    """The frozen trial a run is to the sampler (see the module's docstring)."""
    optuna = _optuna()
    make = optuna.trial.create_trial
    State = optuna.trial.TrialState
    if run.status in ("queued", "running"):
        return make(params=params, distributions=dists, state=State.RUNNING)
    value = metric_value(session, run, metric, objective)
    if run.status in FAILED or value is None:
        return make(params=params, distributions=dists, state=State.FAIL)
    if run.status == "stopped_early":
        return make(params=params, distributions=dists, state=State.PRUNED,
                    intermediate_values={max(run.epochs_done, 0): value})
    return make(params=params, distributions=dists, value=value, state=State.COMPLETE)


def settings_of(sweep: Sweep) -> dict:
    """A model-based sweep's stored search settings: {fields, objective, template, ...}."""
    return sweep.space


def study_of(session: Session, sweep: Sweep) -> optuna.Study:
    """The sweep's in-memory study: every cell's run as a trial, in cell order."""
    stored = settings_of(sweep)
    space = stored["fields"]
    dists = distributions(space)
    study = _optuna().create_study(direction="minimize", sampler=sampler(sweep.kind, sweep.seed))
    rows = session.execute(select(SweepCell, Run).join(Run, Run.id == SweepCell.run_id)
                           .where(SweepCell.sweep_id == sweep.id)
                           .order_by(SweepCell.position)).all()
    trials = []
    for cell, run in rows:
        params = to_params(space, cell.config)
        if params is not None:
            trials.append(trial_of(session, run, params, dists, sweep.metric,
                                   stored["objective"]))
    study.add_trials(trials)
    return study


def merge(spec: dict, config: dict) -> dict:
    """A complete spec with a configuration's fields set; a dotted name (``a.b``) sets a
    field of a nested object."""
    out = json.loads(json.dumps(spec))
    for name, value in config.items():
        *parents, last = name.split(".")
        node = out
        for parent in parents:
            if not isinstance(node.get(parent), dict):
                node[parent] = {}
            node = node[parent]
        node[last] = value
    return out


def spec_of(stored: dict, config: dict) -> dict:
    """The complete spec of a configuration: the stored template (the base completed when
    the sweep was created) with the configuration's fields set, and the output activation
    of its loss when the base left it to the default."""
    spec = merge(stored["template"], config)
    if "loss" in config and stored.get("output_activations"):
        spec["output_activation"] = dict(
            (json.dumps(loss), act) for loss, act in stored["output_activations"]
        ).get(json.dumps(config["loss"]), spec.get("output_activation"))
    return spec


def ask(study: optuna.Study, space: dict, taken: set, hash_of) -> Optional[dict]:
    """The sampler's next configuration not in ``taken`` (config hashes), or None when
    REDRAWS asks gave only configurations the sweep already has. Each ask stays in the
    study as a running trial, so the next ask of this fill knows of it."""
    dists = distributions(space)
    for _ in range(REDRAWS):
        trial = study.ask(dists)
        config = to_config(space, trial.params)
        if hash_of(config) not in taken:
            return config
    return None


def propose(session: Session, sweep: Sweep, free: int, hash_of) -> list[dict]:
    """Up to ``free`` new configurations of a model-based sweep within its trials budget:
    [{position, config, config_hash, spec}]. The caller holds the sweep row locked."""
    created = session.scalar(select(func.count()).select_from(SweepCell)
                             .where(SweepCell.sweep_id == sweep.id)) or 0
    free = min(free, (sweep.trials or 0) - created)
    if free <= 0:
        return []
    stored = settings_of(sweep)
    study = study_of(session, sweep)
    taken = set(session.scalars(select(SweepCell.config_hash)
                                .where(SweepCell.sweep_id == sweep.id)))
    out = []
    for i in range(free):
        config = ask(study, stored["fields"], taken, hash_of)
        if config is None:
            log.info("sweep %s: no new configuration in %d asks", sweep.id, REDRAWS)
            break
        key = hash_of(config)
        taken.add(key)
        out.append({"position": created + i, "config": config, "config_hash": key,
                    "spec": spec_of(stored, config)})
    return out

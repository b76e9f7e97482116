"""How a run's optimizer settings read for people, shared by ``descent show`` and the
dashboard's run page: the optimizer with the parameters that apply to it, weight decay,
clipping, the learning-rate schedule and stopping on a plateau (API.md section 1b), and how a
finished run stopped."""

from __future__ import annotations

# The names of service.runspec, copied: the command line imports this module, and importing
# runspec would load the kernels (numba) into every `descent runs`. A test checks they agree.
OPTIMIZER_PARAMS = {"sgd": (), "momentum": ("momentum",), "nesterov": ("momentum",),
                    "adam": ("beta1", "beta2", "eps"), "adamw": ("beta1", "beta2", "eps")}
# The keys each schedule kind takes, required ones first (the others do not apply).
SCHEDULE_PARAMS = {"constant": (), "step": ("step_size", "gamma"), "exponential": ("gamma",),
                   "cosine": ("lr_min",)}
PLATEAU_DEFAULTS = {"metric": "val_error", "patience": 10, "min_delta": 0.0,
                    "restore_best": True}


def number(value) -> str:
    """A spec value as written: ``0.9``, ``1e-08``, ``10``; ``none`` for null."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _with_params(name: str, params, source: dict) -> str:
    shown = [f"{key} {number(source[key])}" for key in params if key in source]
    return f"{name} ({', '.join(shown)})" if shown else name


def optimizer_text(spec: dict) -> str:
    """``adam (beta1 0.9, beta2 0.999, eps 1e-08)``; plain ``sgd`` for a spec without an
    optimizer (one stored before optimizers existed trained with plain GD)."""
    name = spec.get("optimizer") or "sgd"
    return _with_params(name, OPTIMIZER_PARAMS.get(name, ()), spec)


def schedule_text(spec: dict) -> str:
    """``constant``, ``step (step_size 10, gamma 0.5)``, ``cosine (lr_min 0.0)``, ..."""
    schedule = spec.get("lr_schedule") or {"kind": "constant"}
    kind = schedule.get("kind", "constant")
    return _with_params(kind, SCHEDULE_PARAMS.get(kind, ()), schedule)


def plateau(spec: dict) -> dict | None:
    """The spec's ``stop_on_plateau`` with its defaults filled in, or None when off."""
    settings = spec.get("stop_on_plateau")
    return None if not settings else {**PLATEAU_DEFAULTS, **settings}


def plateau_text(spec: dict) -> str:
    """``off``, or when and on what training stops and which parameters it keeps."""
    settings = plateau(spec)
    if settings is None:
        return "off"
    delta = settings["min_delta"]
    improve = f"improving by more than {number(delta)}" if delta else "improving"
    keep = "restore the best epoch's parameters" if settings["restore_best"] \
        else "keep the last epoch's parameters"
    return (f"stop after {settings['patience']} epochs without {settings['metric']} "
            f"{improve}; {keep}")


def training_rows(spec: dict) -> list[tuple[str, str]]:
    """(label, text) rows of what a run trains with, beyond learning rate and batches
    (eval_every and threads only when not their defaults)."""
    return [("optimizer", optimizer_text(spec)),
            ("weight decay", number(spec.get("weight_decay", 0.0))),
            ("clip norm", number(spec.get("clip_norm"))),
            ("lr schedule", schedule_text(spec)),
            ("plateau", plateau_text(spec))] + [
        # eval_every and threads when not their defaults (every epoch, one thread)
        (label, text) for label, text, default in (
            ("evaluated", evaluation_text(spec), spec.get("eval_every", 1) == 1),
            ("Threads", number(spec.get("threads", 1)), spec.get("threads", 1) == 1))
        if not default]


def evaluation_text(spec: dict) -> str:
    """When the whole-set evaluation runs: ``every epoch``, or ``every 10 epochs and the
    last`` (eval_every; a spec stored before it had none evaluated every epoch)."""
    every = spec.get("eval_every", 1)
    return "every epoch" if every == 1 else f"every {every} epochs and the last"


def outcome_rows(spec: dict, status: str, epochs_done, epochs, stop_reason,
                 best_epoch) -> list[tuple[str, str]]:
    """(label, text) rows of how a finished run stopped: its ``stop_reason`` and, with
    stop_on_plateau set, its ``best_epoch``. Nothing for a run that is not finished or
    that had no plateau setting and no stop reason."""
    settings = plateau(spec)
    rows = []
    if stop_reason == "plateau":
        metric = settings["metric"] if settings else "the metric"
        patience = f" for {settings['patience']} epochs" if settings else ""
        rows.append(("stop reason", f"plateau: no {metric} improvement{patience}, stopped "
                                    f"after epoch {epochs_done} of {epochs}"))
    elif stop_reason:
        rows.append(("stop reason", str(stop_reason)))
    elif settings is not None and status == "succeeded":
        rows.append(("stop reason", f"none: no plateau, ran all {epochs} epochs"))
    if settings is not None and best_epoch is not None:
        # kernels.train restores them whenever it did not diverge, stopped or not
        kept = ", its parameters kept" if settings["restore_best"] and \
            status != "diverged" else ""
        delta = settings["min_delta"]
        why = (f"last to improve {settings['metric']} by more than {number(delta)}" if delta
               else f"lowest {settings['metric']}")
        rows.append(("best epoch", f"{best_epoch} ({why}{kept})"))
    return rows

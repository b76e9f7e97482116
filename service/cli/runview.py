"""How runs look on the terminal: one-line summaries, the detail of one run with a compact
history, and the table of ``descent runs``."""

from __future__ import annotations

from rich.markup import escape

from service.cli.output import (batch_text, compact_json, duration, fmt_number, fmt_time,
                                layers_text, styled_status)
from service.trainingview import outcome_rows, plateau, training_rows


def summary_line(run: dict) -> str:
    """One line about a finished (or current) run."""
    parts = [f"run {run['id']} {styled_status(run['status'])}",
             f"{run.get('epochs_done', 0)}/{run.get('epochs', 0)} epochs"]
    if run.get("final_error") is not None:
        parts.append(f"final error {fmt_number(run['final_error'], '.6g')}")
    if run.get("best_error") is not None:
        parts.append(f"best {fmt_number(run['best_error'], '.6g')}"
                     + _at_epoch(run))
    if run.get("stop_reason") == "plateau":
        parts.append(f"stopped on a plateau (best epoch {run.get('best_epoch')})")
    if run.get("final_accuracy") is not None:
        parts.append(f"accuracy {run['final_accuracy']:.3f}")
    if run.get("final_val_error") is not None:
        parts.append(f"val error {fmt_number(run['final_val_error'], '.6g')}")
    seconds = duration(run)
    if seconds is not None:
        parts.append(f"{seconds:.2f} s")
    return ", ".join(parts)


def _at_epoch(run: dict) -> str:
    """`` at epoch N`` for the best error, when ``best_epoch`` is that error's epoch: with
    stop_on_plateau it is the plateau rule's best epoch instead (by its metric and
    min_delta), shown on a line of its own."""
    if run.get("best_epoch") is None or plateau(run.get("spec") or {}):
        return ""
    return f" at epoch {run['best_epoch']}"


def print_outcome(out, run: dict) -> None:
    """How a followed run ended: its summary line and its error message, if any."""
    out.print(summary_line(run))
    if run.get("error_message"):
        out.print(f"[red]{escape(run['error_message'])}[/]", soft_wrap=True)


def milestone_epochs(history: list[dict], best_epoch) -> dict[int, str]:
    """{row index: label} for a compact history: first, 1, 10, 100, ..., best and last."""
    if not history:
        return {}
    epochs = [row["epoch"] for row in history]
    index = {epoch: i for i, epoch in enumerate(epochs)}
    picked = {0: "first"}
    power = 1
    while power < epochs[-1]:
        if power in index:
            picked.setdefault(index[power], "")
        power *= 10
    if best_epoch is not None and best_epoch in index:
        picked[index[best_epoch]] = "best"
    last = len(history) - 1
    picked[last] = "best, last" if picked.get(last) == "best" else "last"
    if picked.get(0) == "best":
        picked[0] = "first, best"
    return dict(sorted(picked.items()))


def history_table(history: list[dict], best_epoch, everything: bool):
    """A table of history rows: every epoch, or the milestones with their labels."""
    from rich.table import Table

    has = {key: any(row.get(key) is not None for row in history)
           for key in ("accuracy", "val_error", "val_accuracy")}
    table = Table(show_edge=False)
    table.add_column("epoch", justify="right")
    table.add_column("error", justify="right")
    for key in ("accuracy", "val_error", "val_accuracy"):
        if has[key]:
            table.add_column(key.replace("_", " "), justify="right")
    table.add_column("seconds", justify="right")
    if not everything:
        table.add_column("")
    rows = (dict.fromkeys(range(len(history)), "") if everything
            else milestone_epochs(history, best_epoch))
    for i, label in rows.items():
        row = history[i]
        cells = [str(row["epoch"]), fmt_number(row.get("error"), ".6g")]
        for key in ("accuracy", "val_error", "val_accuracy"):
            if has[key]:
                cells.append(fmt_number(row.get(key), ".4f" if "accuracy" in key else ".6g"))
        cells.append(fmt_number(row.get("seconds"), ".3f"))
        if not everything:
            cells.append(label)
        table.add_row(*cells)
    return table


def print_run(out, run: dict, history: list[dict] | None, everything: bool = False,
              with_spec: bool = True, verdict: dict | None = None) -> None:
    """A run's state, spec, environment (when ``run`` has one: GET /runs/{id}), the
    ``verdict`` on it and its rerun (if given) and (compact) history."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    spec = run.get("spec") or {}
    dataset = run.get("dataset") or {}
    rows = [
        ("run", f"{run['id']}" + (f"  {escape(run['name'])}" if run.get("name") else "")),
        ("status", styled_status(run["status"])),
        ("dataset", f"{escape(str(dataset.get('name')))} (id {dataset.get('id')})"),
        ("network", f"{layers_text(spec)}, {spec.get('activation')} -> "
                    f"{spec.get('output_activation')}, {spec.get('loss')}"),
        ("training", f"lr {spec.get('learning_rate')}, {batch_text(spec)}, "
                     f"seed {spec.get('seed')}, {spec.get('dtype')}"),
        *[(label, escape(text)) for label, text in training_rows(spec)],
        ("epochs", f"{run.get('epochs_done', 0)}/{run.get('epochs', 0)}"),
        *[(label, escape(text)) for label, text in outcome_rows(
            spec, run["status"], run.get("epochs_done", 0), run.get("epochs", 0),
            run.get("stop_reason"), run.get("best_epoch"))],
        ("final error", fmt_number(run.get("final_error"), ".6g")),
        ("best error", (fmt_number(run.get("best_error"), ".6g") + _at_epoch(run))
         if run.get("best_error") is not None else ""),
        ("accuracy", fmt_number(run.get("final_accuracy"), ".4f")),
        ("val error", fmt_number(run.get("final_val_error"), ".6g")),
        ("sweep", run.get("sweep_id")),
        ("rerun of", f"run {run['rerun_of']}" if run.get("rerun_of") is not None else ""),
        ("tags", escape(", ".join(f"{k}={v}" for k, v in (run.get("tags") or {}).items()))),
        ("created", fmt_time(run.get("created_at"))),
        ("started", fmt_time(run.get("started_at"))),
        ("finished", fmt_time(run.get("finished_at"))),
        ("worker", escape(f"{run.get('worker') or ''}")
                   + (f" (attempt {run['attempts']})" if (run.get("attempts") or 0) > 1 else "")),
        ("message", f"[red]{escape(run['error_message'])}[/]" if run.get("error_message")
         else ""),
    ]
    for key, value in rows:
        if value not in (None, ""):
            grid.add_row(key, str(value))
    out.print(grid)
    if with_spec:
        out.print()
        out.print("[bold]Spec[/] (save it to resubmit with `descent submit`):")
        out.print(compact_json(spec), markup=False, highlight=False, soft_wrap=True)
    if "environment" in run:
        out.print()
        print_environment(out, run["environment"])
    if verdict is not None:
        out.print()
        print_verdict(out, verdict)
    if history is not None:
        out.print()
        if history:
            if not everything:
                out.print("[bold]History[/]: first epoch, powers of ten, best, last "
                          "(--history for every epoch)")
            out.print(history_table(history, run.get("best_epoch"), everything))
        else:
            out.print("No history yet.")


def runs_table(found: list[dict]):
    """The table of ``descent runs``: one row a run."""
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for name, justify in (("id", "right"), ("name", "left"), ("status", "left"),
                          ("dataset", "left"), ("layers", "left"), ("optimizer", "left"),
                          ("lr", "right"), ("batch", "left"), ("epochs", "right"),
                          ("final error", "right"), ("best error", "right"),
                          ("created", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "name")
    for run in found:
        spec = run.get("spec") or {}
        table.add_row(
            str(run["id"]), escape(run.get("name") or ""), styled_status(run["status"]),
            escape(str((run.get("dataset") or {}).get("name") or "")), layers_text(spec),
            escape(str(spec.get("optimizer") or "sgd")),
            fmt_number(spec.get("learning_rate"), "g"), batch_text(spec),
            f"{run.get('epochs_done', 0)}/{run.get('epochs', 0)}",
            fmt_number(run.get("final_error")), fmt_number(run.get("best_error")),
            fmt_time(run.get("created_at")),
        )
    return table


def environment_rows(env: dict) -> list[tuple[str, str]]:
    """(label, text) lines of a run's environment (where it trained), for people."""
    descent = env.get("descent") or {}
    blas = env.get("blas") or {}
    cpu = env.get("cpu") or {}
    dataset = env.get("dataset") or {}
    flags = cpu.get("flags")
    flag_text = ("flags unknown" if flags is None else
                 " ".join(name if on else f"no-{name}" for name, on in flags.items()))
    versions = ", ".join(f"{name} {env.get(name)}"
                         for name in ("numpy", "numba", "llvmlite", "scipy"))
    return [
        ("descent", f"{descent.get('version')}" + (f" (commit {descent['commit']})"
                                                   if descent.get("commit") else "")),
        ("software", f"python {env.get('python')}, {versions}"),
        ("blas", "none found" if not blas else
         f"{blas.get('internal_api')} {blas.get('version')}, core type "
         f"{blas.get('architecture')}, {blas.get('num_threads')} thread(s), "
         f"{blas.get('threading_layer')} ({blas.get('library')})"),
        ("cpu", f"{cpu.get('model')} ({cpu.get('machine')}): {flag_text}"),
        ("dtype", str(env.get("dtype"))),
        ("dataset", f"{dataset.get('name')} (id {dataset.get('id')}), "
                    f"sha256 {dataset.get('content_hash')}"),
    ]


def print_environment(out, env: dict | None) -> None:
    """A run's environment as a grid (or a note that none is recorded yet)."""
    from rich.table import Table

    out.print("[bold]Environment[/] (where it trained):")
    if not env:
        out.print("  not recorded (the run has not been claimed by a worker, or trained "
                  "before Descent recorded environments)")
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, text in environment_rows(env):
        grid.add_row(f"  {label}", escape(text))
    out.print(grid)


def _values(values) -> str:
    return " vs ".join("-" if v is None else repr(v) for v in values or [])


def print_verdict(out, verdict: dict) -> None:
    """The verdict on two runs (GET /runs/{id}/verification or /compare/{other})."""
    a, b = verdict["runs"]
    styles = {"bit-identical": "bold green", "differs": "bold red", "pending": "yellow"}
    style = styles.get(verdict["verdict"], "bold")
    out.print(f"[bold]Verification[/] of run {a} against run {b}: "
              f"[{style}]{verdict['verdict']}[/]")
    out.print(f"  {escape(verdict['summary'])}", soft_wrap=True)
    history = verdict.get("history")
    if history is not None:
        first = history["first_difference"]
        out.print(f"  history: identical ({history['rows']} rows)" if first is None else
                  f"  history: first differs at epoch {first['epoch']} ({first['field']}): "
                  f"{escape(_values(first['values']))}")
    for which in ("initial", "final"):
        compared = verdict.get(f"{which}_params")
        if compared is None:
            continue
        first = compared["first_difference"]
        if first is None:
            text = "identical" if compared.get("stored") else "not stored by either run"
        elif first.get("index") is None:
            text = (f"differ: layer {first['layer']} {first['array']}: {first['reason']}"
                    if first.get("layer") else f"differ: {first['reason']}")
        else:
            text = (f"first differ at layer {first['layer']} {first['array']}"
                    f"[{', '.join(map(str, first['index']))}]: {_values(first['values'])}")
        out.print(f"  {which} parameters: {escape(text)}")
    env = verdict["environment"]
    if env["identical"] is None:
        out.print("  environment: not recorded for both runs")
    elif env["identical"]:
        out.print("  environment: the same")
    else:
        out.print("  environment differs:")
        for difference in env["differences"]:
            out.print(f"    {escape(difference['field'])}: "
                      f"{escape(_values(difference['values']))}", soft_wrap=True)
    for difference in verdict["spec"]["differences"]:
        out.print(f"  spec differs in {escape(difference['field'])}: "
                  f"{escape(_values(difference['values']))}", soft_wrap=True)

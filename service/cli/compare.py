"""``descent compare ID ID...``: runs side by side (GET /runs/compare): their results, then
their specs field by field with the fields that differ marked."""

from __future__ import annotations

import json

import click

from service.cli.clientcommand import ClientCommand, api_url_option, client_for
from service.cli.context import CONTEXT, pass_settings

# Differing rows start with this mark (and are yellow on a terminal).
MARK = "* "


def _spec_value(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _number(value) -> str:
    return "-" if value is None else format(value, ".4g")


def result_rows(runs: list[dict]) -> list[tuple]:
    """(label, one cell per run, note) rows of the runs' states and errors."""
    finals = [(r["final_error"], r["id"]) for r in runs if r["final_error"] is not None]
    best = min(finals)[1] if finals else None
    return [
        ("name", [r["name"] or "-" for r in runs], ""),
        ("status", [r["status"] for r in runs], ""),
        ("dataset", [r["dataset"]["name"] for r in runs], ""),
        ("epochs", [f"{r['epochs_done']}/{r['epochs']}" for r in runs], ""),
        ("final error", [_number(r["final_error"]) for r in runs],
         f"(lowest: #{best})" if best is not None and len(finals) > 1 else ""),
        ("best error", [_number(r["best_error"]) + ("" if r["best_epoch"] is None
                                                    else f"@{r['best_epoch']}")
                        for r in runs], ""),
        ("val error", [_number(r["final_val_error"]) for r in runs], ""),
        ("accuracy", [_number(r["final_accuracy"]) for r in runs], ""),
    ]


def render(comparison: dict) -> list[tuple[str, bool]]:
    """The lines to print, each with whether it is a marked (differing) row."""
    runs = comparison["runs"]
    results = result_rows(runs)
    specs = [(row["field"], [_spec_value(v) for v in row["values"]], row["differs"])
             for row in comparison["fields"]]
    labels = [label for label, _, _ in results] + [field for field, _, _ in specs]
    first = max(len(label) for label in labels) + 2
    cells = [cell for _, row, _ in results for cell in row] + \
            [cell for _, row, _ in specs for cell in row]
    width = max(max(len(c) for c in cells), 6) + 2

    def line(label: str, row: list, marked: bool = False, note: str = "") -> str:
        text = (MARK if marked else "  ") + label.ljust(first) + \
            "".join(cell.ljust(width) for cell in row)
        return (text + note).rstrip()

    out = [(line("", [f"#{r['id']}" for r in runs]), False)]
    out += [(line(label, row, note=note), False) for label, row, note in results]
    out += [("", False), ("spec", False)]
    out += [(line(field, row, differs), differs) for field, row, differs in specs]
    differing = comparison["differing"]
    out.append(("", False))
    if differing:
        out.append((f"{len(differing)} field{'s differ' if len(differing) != 1 else ' differs'}"
                    f": {', '.join(differing)} (marked {MARK.strip()})", False))
    else:
        out.append(("the specs are the same (apart from names and tags)", False))
    return out


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="Runs side by side: results, and specs with differences marked.")
@click.argument("run_ids", nargs=-1, required=True, type=int, metavar="ID ID...")
@click.option("--json", "as_json", is_flag=True,
              help="Print the comparison as JSON (GET /runs/compare's answer).")
@api_url_option
@pass_settings
def compare(settings, run_ids, as_json, api_url):
    """Compare 2 to 10 runs: their state, final and best errors (the lowest final error
    named), then every spec field with each run's value, the fields that differ marked
    with *. The dashboard shows the same at /compare?runs=ID,ID with their curves.

    \b
    Examples:
      descent compare 3 4
      descent compare 3 4 7 --json
    """
    client = client_for(settings, api_url)
    ids = ",".join(str(run_id) for run_id in run_ids)
    comparison = client.request("GET", "/runs/compare", params={"ids": ids, "max_points": 3})
    if as_json:
        click.echo(json.dumps(comparison, indent=2))
        return
    for text, marked in render(comparison):
        click.echo(click.style(text, fg="yellow") if marked else text)

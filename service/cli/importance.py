"""``descent importance SWEEP_ID``: which varied fields mattered in a sweep
(GET /sweeps/ID/importance), as a ranked table with bars."""

from __future__ import annotations

import json

import click

from service.cli.clientcommand import ClientCommand, api_url_option, client_for
from service.cli.context import CONTEXT, pass_settings

BAR_WIDTH = 30


def importance_lines(answer: dict) -> list[str]:
    """The answer of GET /sweeps/ID/importance as text lines: a header naming the metric,
    the runs and the evaluator, then one line per field, the most important first."""
    ranked = sorted(answer["importance"].items(), key=lambda kv: (-kv[1], kv[0]))
    width = max((len(name) for name, _ in ranked), default=5)
    lines = [f"importance for {answer['metric']} over {answer['runs']} succeeded runs "
             f"({answer['evaluator']})"]
    for name, share in ranked:
        bar = "█" * round(share * BAR_WIDTH)
        lines.append(f"  {name:<{width}}  {share:6.3f}  {bar}")
    return lines


@click.command(cls=ClientCommand, context_settings=CONTEXT,
               short_help="Which varied fields of a sweep mattered (parameter importance).")
@click.argument("sweep_id", type=int, metavar="SWEEP_ID")
@click.option("--json", "as_json", is_flag=True,
              help="Print GET /sweeps/ID/importance's answer as JSON.")
@api_url_option
@pass_settings
def importance(settings, sweep_id, as_json, api_url):
    """Parameter importance of a sweep's varied fields over its succeeded runs (Optuna's
    PedAnovaImportanceEvaluator; shares sum to 1). Needs at least 2 succeeded runs and a
    field that varies between them. The dashboard's sweep page shows the same, with a
    parallel-coordinates chart and a scatter per field.

    \b
    Examples:
      descent importance 3
      descent importance 3 --json
    """
    client = client_for(settings, api_url)
    answer = client.request("GET", f"/sweeps/{sweep_id}/importance")
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    for line in importance_lines(answer):
        click.echo(line)

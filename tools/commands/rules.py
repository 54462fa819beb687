"""`taskledger rules`: the saga's decision table (engine/rules.py), as data.

What it prints is what runs: the rows engine/saga.py looks up, with the triggers each fires on.
"""

from __future__ import annotations

import click
from rich.table import Table

from engine import rules
from tools.commands.common import console, emit_json, handle_errors, json_option, schema


def rules_json() -> dict:
    return {
        "schema": schema("rules"),
        "rules": [
            {
                "id": str(r.id),
                "matches": r.matches,
                "commands": list(r.commands),
                "reason": r.reason,
                "triggers": [rules.trigger_data(t) for t in r.triggers],
                "asked_by": None if r.asked_by is None else str(r.asked_by),
                "confirms": r.confirms,
                "if_rescheduled": (
                    str(rules.RULE_FOR[rules.Outcome.RESCHEDULED]) if r.if_rescheduled else None
                ),
                "counted_by_run": r.counted_by_run,
            }
            for r in rules.RULES.values()
        ],
        "commands": [
            {
                "kind": str(kind),
                "remote": info.remote,
                "idempotent": info.idempotent,
                "destructive": info.destructive,
                "why": info.why,
            }
            for kind, info in rules.COMMANDS.items()
        ],
        "drift_rules": [
            {"cell": cell.label, "mesos_says": str(says), "rule": str(rule_id)}
            for (cell, says), rule_id in rules.DRIFT_RULES.items()
        ],
        "effect_rules": [
            {"effect": str(effect), "cause": str(cause), "rule": str(rule_id)}
            for (effect, cause), rule_id in rules.EFFECT_RULES.items()
        ],
    }


@click.command("rules")
@click.option("--markdown", is_flag=True, help="print the tables as Markdown")
@json_option
@handle_errors
def rules_command(markdown: bool, as_json: bool) -> None:
    """Print the reconciliation saga's decision table: every rule, what it matches and the
    triggers the saga looks it up by, the commands it issues and why; then the command kinds."""
    if as_json:
        emit_json(rules_json())
        return
    if markdown:
        click.echo(rules.describe())
        return
    out = console()
    table = Table(title="decision table (engine/rules.py)", title_justify="left", show_lines=True)
    for name in ("rule", "matches", "fires on", "commands", "reason"):
        table.add_column(name)
    for r, (rule_id, matches, commands, reason) in zip(
        rules.RULES.values(), rules.as_rows(), strict=True
    ):
        table.add_row(rule_id, matches, rules.fires_on(r), commands, reason)
    out.print(table)
    kinds = Table(title="commands", title_justify="left")
    for name in ("command", "sent to Mesos", "idempotent", "destructive", "why"):
        kinds.add_column(name)
    yes_no = ("no", "yes")
    for kind, info in rules.COMMANDS.items():
        kinds.add_row(
            str(kind),
            yes_no[info.remote],
            yes_no[info.idempotent],
            yes_no[info.destructive],
            info.why,
        )
    out.print(kinds)
    lookup = Table(title="which rule a drift fires (cell, Mesos says)", title_justify="left")
    for name in ("cell (Mesos/scheduler)", "Mesos says", "rule"):
        lookup.add_column(name)
    for (cell, says), rule_id in rules.DRIFT_RULES.items():
        lookup.add_row(cell.label, str(says), str(rule_id))
    out.print(lookup)

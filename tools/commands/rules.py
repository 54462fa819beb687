"""`taskledger rules`: the saga's decision table (engine/rules.py), as data."""

from __future__ import annotations

import click
from rich.table import Table

from engine import rules
from tools.commands.common import console, emit_json, handle_errors, json_option, schema


def rules_json() -> dict:
    return {
        "schema": schema("rules"),
        "rules": [
            {"id": r.id, "matches": r.matches, "commands": list(r.commands), "reason": r.reason}
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
            {"cell": cell, "mesos_says": str(says), "rule": rule_id}
            for (cell, says), rule_id in rules.DRIFT_RULES.items()
        ],
    }


@click.command("rules")
@click.option("--markdown", is_flag=True, help="print the tables as Markdown")
@json_option
@handle_errors
def rules_command(markdown: bool, as_json: bool) -> None:
    """Print the reconciliation saga's decision table: every rule, what it matches, the
    commands it issues and why; then the command kinds."""
    if as_json:
        emit_json(rules_json())
        return
    if markdown:
        click.echo(rules.describe())
        return
    out = console()
    table = Table(title="decision table (engine/rules.py)", title_justify="left", show_lines=True)
    for name in ("rule", "matches", "commands", "reason"):
        table.add_column(name)
    for row in rules.as_rows():
        table.add_row(*row)
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
        lookup.add_row(cell, str(says), rule_id)
    out.print(lookup)

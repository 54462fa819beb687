"""`taskledger drift`: the disagreements now or as of a moment, by cell."""

from __future__ import annotations

from collections import defaultdict

import click
from rich.table import Table

from engine.drift_table import TABLE, FoundBy
from projections.drift_view import Drift
from tools.commands.common import (
    AsOf,
    CommandError,
    console,
    dash,
    emit_json,
    iso,
    open_readonly,
    read_options,
    resolve_as_of,
    schema,
    when,
)
from tools.readonly import ReadOnlyLedger

DISAGREEING = [cell.label for cell, found in TABLE.items() if found is not FoundBy.CONSISTENT]


def views_at(ledger: ReadOnlyLedger, at: AsOf):
    """The views as of `at` (the end of the log when --as-of was not given)."""
    return ledger.views if at.is_now else ledger.views_as_of(at.nid)


def by_cell(ledger: ReadOnlyLedger, drift: list[Drift]) -> list[dict]:
    """The disagreements grouped by cell (most tasks first), each task with its since-time."""
    groups: dict[str, list[Drift]] = defaultdict(list)
    for d in drift:
        groups[d.cell.label].append(d)
    cells = []
    for label, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        first = items[0]
        tasks = []
        for d in items:
            event = ledger.event_at(d.since)
            since_time = None if event is None else event.time
            tasks.append(
                {
                    "task_id": d.task_id,
                    "scheduler_state": d.scheduler_state,
                    "mesos_state": d.mesos_state,
                    "since": d.since,
                    "since_time": since_time,
                    "since_iso": iso(since_time),
                }
            )
        cells.append(
            {
                "cell": label,
                "mesos": str(first.cell.mesos),
                "scheduler": str(first.cell.scheduler),
                "found_by": str(first.found_by),
                "count": len(items),
                "tasks": tasks,
            }
        )
    return cells


@click.command("drift")
@click.option("--cell", help=f"only this cell (one of: {', '.join(DISAGREEING)})")
@click.option("--show", default=10, show_default=True, help="tasks listed per cell (table)")
@read_options
def drift_command(
    cell: str | None, show: int, log_path: str, as_of: str | None, as_json: bool
) -> None:
    """The disagreements between the scheduler and Mesos, by cell, with counts and tasks."""
    if cell is not None and cell not in DISAGREEING:
        raise CommandError(
            f"bad --cell {cell!r}: not a disagreeing cell ({', '.join(DISAGREEING)})"
        )
    with open_readonly(log_path) as ledger:
        at = resolve_as_of(ledger, as_of)
        drift = views_at(ledger, at).drift.drift()
        if cell is not None:
            drift = [d for d in drift if d.cell.label == cell]
        cells = by_cell(ledger, drift)
    if as_json:
        emit_json(
            {
                "schema": schema("drift"),
                "log": ledger.path,
                "as_of": at.as_json(),
                "total": len(drift),
                "cells": cells,
            }
        )
        return
    out = console()
    if not drift:
        out.print(f"no drift {at.label()}: the scheduler and Mesos agree on every task")
        return
    out.print(f"{len(drift)} task(s) in disagreement, {at.label()}")
    table = Table(title="drift by cell (Mesos / scheduler)", title_justify="left")
    for name, justify in (
        ("cell", "left"),
        ("found by", "left"),
        ("count", "right"),
        ("tasks (scheduler / Mesos, since)", "left"),
    ):
        table.add_column(name, justify=justify)
    for c in cells:
        lines = [
            f"{t['task_id']} ({dash(t['scheduler_state'])} / {dash(t['mesos_state'])}, "
            f"#{t['since']} {when(t['since_time'])})"
            for t in c["tasks"][:show]
        ]
        if c["count"] > show:
            lines.append(f"... and {c['count'] - show} more")
        table.add_row(c["cell"], c["found_by"], str(c["count"]), "\n".join(lines))
    out.print(table)

"""`taskledger drift`: the disagreements now or as of a moment, by cell, and apart from them
the launches in flight (tools/forensics/launches.py)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import click
from rich.table import Table

from engine.drift_table import TABLE, FoundBy
from engine.ledger_state import LedgerState
from projections.drift_view import Drift
from tools.commands.common import (
    AsOf,
    CommandError,
    RawJSON,
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
from tools.forensics.launches import split
from tools.forensics.times import JSON_NONFINITE
from tools.readonly import ReadOnlyLedger

DISAGREEING = [cell.label for cell, found in TABLE.items() if found is not FoundBy.CONSISTENT]
# The one cell a launch in flight sits in (Mesos absent, scheduler ASSIGNED: non-terminal).
LAUNCH_CELL = "absent/non-terminal"


def state_at(ledger: ReadOnlyLedger, at: AsOf) -> LedgerState:
    """The ledger state as of `at` (the end of the log when --as-of was not given)."""
    return ledger.state if at.is_now else ledger.state_as_of(at.nid)


def views_at(ledger: ReadOnlyLedger, at: AsOf):
    """The views as of `at` (the end of the log when --as-of was not given)."""
    return state_at(ledger, at).views


def since_times(ledger: ReadOnlyLedger, state: LedgerState, drift: Iterable[Drift]) -> dict:
    """The event time of each disagreement's `since` id. Most are the time of one view's
    record of the task (the event that moved it into its cell changed that view); the rest
    are read from the log by key, all in one read transaction."""
    scheduler, mesos = state.views.scheduler, state.views.mesos
    found: dict[int, float | None] = {}
    missing: set[int] = set()
    for d in drift:
        if d.since in found:
            continue
        for changed in (mesos.changed(d.task_id), scheduler.changed(d.task_id)):
            if changed is not None and changed[0] == d.since:
                found[d.since] = changed[1]
                break
        else:
            missing.add(d.since)
    for nid, event in ledger.events_at(missing).items():
        found[nid] = event.time
    return found


def task_json(d: Drift, times: dict) -> dict[str, Any]:
    since_time = times.get(d.since)
    return {
        "task_id": d.task_id,
        "scheduler_state": d.scheduler_state,
        "mesos_state": d.mesos_state,
        "since": d.since,
        "since_time": since_time,
        "since_iso": iso(since_time),
    }


def by_cell(drift: list[Drift]) -> list[tuple[str, list[Drift]]]:
    """The disagreements grouped by cell, most tasks first."""
    groups: dict[str, list[Drift]] = defaultdict(list)
    for d in drift:
        groups[d.cell.label].append(d)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


_TEXT = json.encoder.encode_basestring  # a str as JSON, non-ASCII kept (as emit_json)


_NONFINITE = {text: _TEXT(spelled) for text, spelled in JSON_NONFINITE.items()}


def _number(value: float | None) -> str:
    """A time as emit_json writes it (NaN and +-inf as strings)."""
    if value is None:
        return "null"
    text = repr(value)
    return _NONFINITE.get(text, text)


_ROW = (
    '{"task_id": %s, "scheduler_state": %s, "mesos_state": %s, "since": %d, '
    '"since_time": %s, "since_iso": %s}'
)
_STATES: dict[str | None, str] = {None: "null"}  # a state's JSON text (few distinct)


def _state(name: str | None) -> str:
    text = _STATES.get(name)
    if text is None:
        text = _STATES[name] = _TEXT(name)
    return text


def task_text(d: Drift, times: dict) -> RawJSON:
    """task_json(d, times) encoded, written directly: a drift may list 100,000 tasks, and
    building then encoding a dict for each was most of the command's time."""
    since_time = times.get(d.since)
    since_iso = iso(since_time)
    return RawJSON(
        _ROW
        % (
            _TEXT(d.task_id),
            _state(d.scheduler_state),
            _state(d.mesos_state),
            d.since,
            _number(since_time),
            "null" if since_iso is None else _TEXT(since_iso),
        )
    )


def cells_json(
    groups: list[tuple[str, list[Drift]]], times: dict, show: int | None, row: Any = task_json
) -> list:
    """The cells as JSON, each with its first `show` tasks (None: all) and their times, each
    task written by `row` (task_json, or task_text for the JSON document)."""
    cells = []
    for label, items in groups:
        first = items[0]
        cells.append(
            {
                "cell": label,
                "mesos": str(first.cell.mesos),
                "scheduler": str(first.cell.scheduler),
                "found_by": str(first.found_by),
                "count": len(items),
                "tasks": [row(d, times) for d in items[:show]],
            }
        )
    return cells


def _line(task: dict) -> str:
    return (
        f"{task['task_id']} ({dash(task['scheduler_state'])} / {dash(task['mesos_state'])}, "
        f"#{task['since']} {when(task['since_time'])})"
    )


def _shown(tasks: list[dict], count: int, show: int) -> str:
    lines = [_line(t) for t in tasks[:show]]
    if count > show:
        lines.append(f"... and {count - show} more")
    return "\n".join(lines)


@click.command("drift")
@click.option("--cell", help=f"only this cell (one of: {', '.join(DISAGREEING)})")
@click.option("--show", default=10, show_default=True, help="tasks listed per cell (table)")
@read_options
def drift_command(
    cell: str | None, show: int, log_path: str, as_of: str | None, as_json: bool
) -> None:
    """The disagreements between the scheduler and Mesos, by cell, with counts and tasks;
    launches in flight (launched, not yet heard of from Mesos) are shown apart."""
    if cell is not None and cell not in DISAGREEING:
        raise CommandError(
            f"bad --cell {cell!r}: not a disagreeing cell ({', '.join(DISAGREEING)})"
        )
    with open_readonly(log_path) as ledger:
        at = resolve_as_of(ledger, as_of)
        state = state_at(ledger, at)
        drift, flying = split(state, state.views.drift.drift())
        if cell is not None:
            drift = [d for d in drift if d.cell.label == cell]
            flying = flying if cell == LAUNCH_CELL else []
        groups = by_cell(drift)
        # The text lists `show` tasks a cell: only those need a time.
        listed = None if as_json else show
        shown = [d for _, items in groups for d in items[:listed]] + flying[:listed]
        times = since_times(ledger, state, shown)
    row = task_text if as_json else task_json
    cells = cells_json(groups, times, listed, row)
    launches = {"count": len(flying), "tasks": [row(d, times) for d in flying[:listed]]}
    if as_json:
        emit_json(
            {
                "schema": schema("drift"),
                "log": ledger.path,
                "as_of": at.as_json(),
                "total": len(drift),
                "cells": cells,
                "in_flight": launches,
            }
        )
        return
    out = console()
    if not drift:
        out.print(f"no drift {at.label()}: the scheduler and Mesos agree on every task")
    else:
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
            table.add_row(
                c["cell"], c["found_by"], str(c["count"]), _shown(c["tasks"], c["count"], show)
            )
        out.print(table)
    if flying:
        out.print(
            f"{len(flying)} launch(es) in flight (ASSIGNED, not yet heard of from Mesos; "
            "not drift):"
        )
        out.print(_shown(launches["tasks"], len(flying), show))

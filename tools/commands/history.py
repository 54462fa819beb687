"""`taskledger history TASK`: every event about a task, in order.

TASK may also be a job's instance across its generations (`web/120`): the events of every
generation, merged in log order, each naming its task.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import click
from rich.table import Table

from tools.commands.common import (
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
from tools.forensics import index as forensic_index
from tools.forensics.history import HistoryRow, history
from tools.readonly import ReadOnlyLedger


class Resolved(NamedTuple):
    """What a TASK argument names: one task, or an instance's generations (newest first)."""

    index: forensic_index.LogIndex
    tasks: list[str]
    instance: tuple[str, int] | None  # (job, instance) when TASK named an instance

    def instance_json(self) -> dict[str, Any] | None:
        if self.instance is None:
            return None
        return {"job": self.instance[0], "instance": self.instance[1], "tasks": self.tasks}


def as_instance(task: str) -> tuple[str, int] | None:
    """("web", 120) for "web/120"; None when TASK cannot name an instance."""
    job, _, number = task.rpartition("/")
    return (job, int(number)) if job and number.isascii() and number.isdigit() else None


def resolve_task(ledger: ReadOnlyLedger, upto: int, task: str) -> Resolved:
    """The index of one task's events up to `upto`; if no event names TASK but it is
    JOB/INSTANCE of created tasks, the index of all their generations. CommandError when
    neither."""
    index = forensic_index.build(ledger.events(1, upto), task=task)
    if index.knows(task):
        return Resolved(index, [task], None)
    instance = as_instance(task)
    generations = [] if instance is None else index.generations(*instance)
    if generations:
        full = forensic_index.build(ledger.events(1, upto), tasks=generations)
        return Resolved(full, generations, instance)
    where = "" if upto == ledger.last_id else f" up to notification id {upto}"
    hint = " (nor is it JOB/INSTANCE of a task created)" if instance is not None else ""
    raise CommandError(
        f"unknown task {task!r}: no event in log {ledger.path}{where} names it{hint}"
    )


def row_json(row: HistoryRow) -> dict:
    data = row._asdict()
    data["time_iso"] = iso(row.time)
    return data


def merged(found: Resolved) -> list[HistoryRow]:
    """Every event about the resolved tasks, in log order, each once (a RECONCILE may ask
    about several generations)."""
    rows: dict[int, HistoryRow] = {}
    for t in reversed(found.tasks):  # oldest generation first: its row is kept
        for r in history(found.index, t):
            rows.setdefault(r.id, r)
    return [rows[n] for n in sorted(rows)]


def leader_cell(epoch: int | None, replica: str | None) -> str:
    """Who wrote an event, for a table: "b @2" (replica b at epoch 2), "-" if no leader."""
    return "-" if epoch is None else f"{replica} @{epoch}"


@click.command("history")
@click.argument("task")
@read_options
def history_command(task: str, log_path: str, as_of: str | None, as_json: bool) -> None:
    """Every event about TASK in order: id, time, kind, source, state, reason, message, and
    the command or run it belongs to. TASK may be JOB/INSTANCE: all its generations."""
    with open_readonly(log_path) as ledger:
        moment = resolve_as_of(ledger, as_of)
        found = resolve_task(ledger, moment.nid, task)
        rows = merged(found)
        if as_json:
            emit_json(
                {
                    "schema": schema("history"),
                    "log": ledger.path,
                    "as_of": moment.as_json(),
                    "task": task,
                    "instance": found.instance_json(),
                    "events": [row_json(r) for r in rows],
                }
            )
            return
    out = console()
    title = f"history of {task}, {moment.label()}"
    if found.instance is not None:
        title += f" (generations, newest first: {', '.join(found.tasks)})"
    table = Table(title=title, title_justify="left")
    columns = [
        ("id", "right"),
        ("time (UTC)", "left"),
        ("kind", "left"),
        ("source", "left"),
        ("state", "left"),
        ("reason", "left"),
        ("message", "left"),
        ("command", "right"),
        ("run", "left"),
        ("scheduler after", "left"),
        ("detail", "left"),
    ]
    if found.instance is not None:
        columns.insert(1, ("task", "left"))
    # A replicated log's events name their writer; a log one process wrote shows no column.
    led = found.index.leaders
    if led:
        columns.append(("leader", "left"))
    for name, justify in columns:
        # fold: a long word (REASON_RECONCILIATION, an agent id) breaks across lines
        # instead of being cut to "REASON_REC…" on a narrow terminal.
        table.add_column(name, justify=justify, overflow="fold")
    for r in rows:
        cells = [
            str(r.id),
            when(r.time),
            r.kind,
            r.source,
            dash(r.state),
            dash(r.reason),
            dash(r.message),
            "-" if r.command is None else f"#{r.command}",
            dash(r.run),
            dash(r.scheduler_state),
            r.detail,
        ]
        if found.instance is not None:
            cells.insert(1, r.task)
        if led:
            cells.append(leader_cell(r.epoch, r.replica))
        table.add_row(*cells)
    out.print(table)

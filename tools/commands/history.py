"""`taskledger history TASK`: every event about a task, in order."""

from __future__ import annotations

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


def task_index(ledger: ReadOnlyLedger, upto: int, task: str) -> forensic_index.LogIndex:
    """The index of one task's events up to `upto`; CommandError if none mentions it."""
    index = forensic_index.build(ledger.events(1, upto), task=task)
    if not index.knows(task):
        where = "" if upto == ledger.last_id else f" up to notification id {upto}"
        raise CommandError(f"unknown task {task!r}: no event in log {ledger.path}{where} names it")
    return index


def row_json(row: HistoryRow) -> dict:
    data = row._asdict()
    data["time_iso"] = iso(row.time)
    return data


@click.command("history")
@click.argument("task")
@read_options
def history_command(task: str, log_path: str, as_of: str | None, as_json: bool) -> None:
    """Every event about TASK in order: id, time, kind, source, state, reason, message, and
    the command or run it belongs to."""
    with open_readonly(log_path) as ledger:
        moment = resolve_as_of(ledger, as_of)
        rows = history(task_index(ledger, moment.nid, task), task)
        if as_json:
            emit_json(
                {
                    "schema": schema("history"),
                    "log": ledger.path,
                    "as_of": moment.as_json(),
                    "task": task,
                    "events": [row_json(r) for r in rows],
                }
            )
            return
    out = console()
    table = Table(title=f"history of {task}, {moment.label()}", title_justify="left")
    for name, justify in (
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
    ):
        table.add_column(name, justify=justify, no_wrap=name in ("kind", "source", "state"))
    for r in rows:
        table.add_row(
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
        )
    out.print(table)

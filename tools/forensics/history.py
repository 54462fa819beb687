"""A task's history: every event about it, in log order, as rows a person can read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from engine.events import (
    CommandCancelled,
    CommandConfirmed,
    CommandDispatched,
    CommandFailed,
    CommandIssued,
    FrameworkDisconnected,
    FrameworkRegistered,
    FrameworkReregistered,
    KillOrdered,
    KillRequested,
    ReconciliationCompleted,
    ReconciliationRound,
    ReconciliationStarted,
    ReconciliationSuperseded,
    StatusUpdateReceived,
    TaskAssigned,
    TaskCreated,
    TaskMarkedLost,
)
from tools.forensics.index import COMMAND_STEPS, LogIndex


class HistoryRow(NamedTuple):
    """One event about a task."""

    id: int  # notification id
    time: float
    kind: str  # the event's topic
    source: str  # SOURCE_* for Mesos updates; "scheduler", "saga", "dispatcher", "master" or
    # "operator" otherwise
    state: str | None  # the Mesos state an update reports
    reason: str | None
    message: str | None
    agent: str | None
    command: int | None  # the command (id) the event issues, reports on, or confirms
    run: str | None  # the reconciliation run it belongs to
    scheduler_state: str | None  # the scheduler's state of the task right after the event
    mesos_state: str | None  # Mesos's latest state of the task right after the event
    detail: str  # a short description of the rest
    task: str | None = None  # the task it is about (the one asked for)
    # Who wrote it, in a replicated log (tools/forensics/leaders.py); None in a log one
    # process wrote.
    epoch: int | None = None
    replica: str | None = None


def source_of(event: Any) -> str:
    """Who says so: Mesos's source for updates, else the part of taskledger that decided."""
    kind = type(event)
    if kind is StatusUpdateReceived:
        return event.source or "-"
    if kind in (TaskCreated, TaskAssigned, KillRequested):
        return "scheduler"
    if kind in (CommandDispatched, CommandFailed):
        return "dispatcher"
    if kind in (FrameworkRegistered, FrameworkReregistered, FrameworkDisconnected):
        return "master"
    if kind is KillOrdered:
        return "operator"
    return "saga"


def _status(e: StatusUpdateReceived) -> str:
    parts = []
    if e.is_reconciliation_answer:
        parts.append("reconciliation answer")
    if e.healthy is not None:
        parts.append("healthy" if e.healthy else "unhealthy")
    if e.uuid is None and not e.is_reconciliation_answer:
        parts.append("no uuid")
    return ", ".join(parts)


def _issued(e: CommandIssued) -> str:
    what = f"{e.kind} by rule {e.rule}"
    if e.tasks is not None and e.task_id is None:
        what += f" ({len(e.tasks)} task(s) asked)" if e.tasks else " (implicit: all tasks)"
    if e.attempt > 1:
        what += f", attempt {e.attempt}"
    if e.retry_of is not None:
        what += f", retry of #{e.retry_of}"
    if e.evidence:
        what += ", evidence " + ", ".join(f"#{n}" for n in e.evidence)
    if e.dry_run:
        what += " (dry run)"
    return what


_DESCRIBE: dict[type, Callable[[Any], str]] = {
    TaskCreated: lambda e: f"created (job {e.job}, instance {e.instance})",
    TaskAssigned: lambda e: f"assigned to {e.agent_id}",
    KillRequested: lambda e: "the scheduler decided to kill it",
    KillOrdered: lambda e: (
        f"operator {e.operator} ordered it killed" + (f": {e.reason}" if e.reason else "")
    ),
    StatusUpdateReceived: _status,
    FrameworkRegistered: lambda e: f"framework {e.framework_id} registered with {e.master_id}",
    FrameworkReregistered: lambda e: f"framework {e.framework_id} re-registered",
    FrameworkDisconnected: lambda e: "disconnected from the master",
    ReconciliationStarted: lambda e: f"{e.kind} run {e.run_id} started ({e.trigger})",
    ReconciliationRound: lambda e: (
        f"run {e.run_id} round {e.round}: asked {e.asked}, answered {e.answered}, "
        f"remaining {e.remaining}"
    ),
    ReconciliationCompleted: lambda e: f"{e.kind} run {e.run_id} ended: {e.outcome}",
    ReconciliationSuperseded: lambda e: f"run {e.run_id} superseded by {e.by_run_id}",
    CommandIssued: _issued,
    CommandDispatched: lambda e: f"command #{e.command_id} dispatched",
    CommandFailed: lambda e: f"command #{e.command_id} failed to send: {e.error}",
    CommandConfirmed: lambda e: f"command #{e.command_id} confirmed: {e.outcome}",
    CommandCancelled: lambda e: f"command #{e.command_id} cancelled: {e.reason}",
    TaskMarkedLost: lambda e: f"marked LOST by rule {e.rule} (command #{e.command_id})",
}


def describe(event: Any) -> str:
    """A short description of an event (its kind's own fields)."""
    text = _DESCRIBE.get(type(event))
    return text(event) if text is not None else type(event).topic


def summary(event: Any) -> str:
    """A one-line account of an event, naming its task: for evidence lists."""
    kind = type(event)
    if kind is StatusUpdateReceived:
        text = f"{event.state} for {event.task_id}"
        if event.agent_id:
            text += f" on {event.agent_id}"
        if event.source:
            text += f" from {event.source}"
        if event.reason:
            text += f" ({event.reason})"
        return text
    task_id = getattr(event, "task_id", None)
    text = describe(event)
    return f"{task_id}: {text}" if task_id is not None and kind is not CommandIssued else text


def history(index: LogIndex, task_id: str) -> list[HistoryRow]:
    """Every event about the task, oldest first; [] if the log never mentions it."""
    rows = []
    for nid, event, scheduler_state, mesos_state in index.task_events.get(task_id, ()):
        kind = type(event)
        command = run = None
        if kind is CommandIssued:
            command, run = nid, event.run_id
        elif kind in COMMAND_STEPS:
            command = event.command_id
            run = index.run_of_command(command)
        elif kind is StatusUpdateReceived:
            command = index.confirms.get(nid)
            run = index.answers_run.get(nid)
            if run is None and command is not None:
                run = index.run_of_command(command)
        update = kind is StatusUpdateReceived
        writer = index.leaders.writer_of(nid)
        rows.append(
            HistoryRow(
                nid,
                event.time,
                kind.topic,
                source_of(event),
                event.state if update else None,
                event.reason if update else None,
                event.message if update else None,
                getattr(event, "agent_id", None),
                command,
                run,
                scheduler_state,
                mesos_state,
                describe(event),
                task_id,
                None if writer is None else writer.epoch,
                None if writer is None else writer.replica,
            )
        )
    return rows

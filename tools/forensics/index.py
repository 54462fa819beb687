"""One pass over the log that remembers what forensic questions need.

`build(events)` folds (notification id, event) pairs into a `LogIndex`: the reconciliation
runs, the commands with their dispatches and outcomes, every event about each task (with
the scheduler and Mesos states right after it), what each command found when it was issued,
and, when asked, the drift timeline by cell and how long each drift took to converge.

Pure: data in, data out (the caller reads the log). The views are evolved with the Ledger's
own `LedgerState.apply`, so "what the ledger believed" here is what the Ledger believed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine.drift_table import TABLE, Cell, FoundBy
from engine.events import (
    CommandCancelled,
    CommandConfirmed,
    CommandDispatched,
    CommandFailed,
    CommandIssued,
    ReconciliationCompleted,
    ReconciliationRound,
    ReconciliationStarted,
    ReconciliationSuperseded,
    StatusUpdateReceived,
    TaskMarkedLost,
)
from engine.ledger import LedgerState

# Events that report on a command: they name it by `command_id`.
COMMAND_STEPS: tuple[type, ...] = (
    CommandDispatched,
    CommandFailed,
    CommandConfirmed,
    CommandCancelled,
    TaskMarkedLost,
)
# The command kind whose `tasks` is a batch of questions, not an action on one task.
RECONCILE = "RECONCILE"


class Moment(NamedTuple):
    """One task as both views held it at one notification id."""

    id: int  # the notification id it is as of
    scheduler_state: str | None
    scheduler_time: float | None  # when the scheduler state was entered
    scheduler_agent: str | None
    mesos_state: str | None
    mesos_time: float | None  # when Mesos's latest state was recorded
    mesos_agent: str | None
    cell: str | None  # e.g. "non-terminal/terminal" (Mesos first)
    found_by: str | None  # "consistent", "explicit", "implicit"


class TaskEvent(NamedTuple):
    """An event about a task, with the two views' states for it right after it."""

    nid: int
    event: Any
    scheduler_state: str | None
    mesos_state: str | None


@dataclass
class Run:
    """A reconciliation run, from its start to its end (if it ended)."""

    run_id: str
    ordinal: int  # 1 for the first run in the log: "run #12"
    kind: str
    trigger: str
    nid: int
    time: float
    deadline: float
    rounds: list[tuple[int, ReconciliationRound]] = field(default_factory=list)
    end_nid: int | None = None
    end_time: float | None = None
    outcome: str | None = None  # "answered", "quiet", "limit", "superseded"; None: running
    completed: ReconciliationCompleted | None = None
    superseded_by: str | None = None
    commands: list[int] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        return None if self.end_time is None else self.end_time - self.time


@dataclass
class Command:
    """A command the saga issued, with what became of it."""

    nid: int  # its command id
    event: CommandIssued
    steps: list[tuple[int, Any]] = field(default_factory=list)
    outcome: str | None = None  # CommandConfirmed.outcome, "cancelled: <reason>", or None
    outcome_nid: int | None = None
    outcome_time: float | None = None
    found: Moment | None = None  # the task as the views held it when the command was issued

    @property
    def kind(self) -> str:
        return self.event.kind

    @property
    def rule(self) -> str:
        return self.event.rule

    @property
    def run_id(self) -> str | None:
        return self.event.run_id

    def tasks(self) -> tuple[str, ...]:
        if self.event.task_id is not None:
            return (self.event.task_id,)
        return tuple(self.event.tasks or ())

    @property
    def status(self) -> str:
        """ "confirmed", "cancelled", "dispatched", "failed" or "pending"."""
        if self.outcome_nid is not None:
            return "cancelled" if self.outcome.startswith("cancelled") else "confirmed"
        kinds = [type(e) for _, e in self.steps]
        if CommandDispatched in kinds:
            return "dispatched"
        if CommandFailed in kinds:
            return "failed"
        return "pending"


class DriftSample(NamedTuple):
    """The disagreements by cell right after a notification id that changed them."""

    nid: int
    time: float
    by_cell: dict[str, int]


@dataclass
class LogIndex:
    """What `build` remembers; see the module docstring."""

    state: LedgerState = field(default_factory=LedgerState)
    upto: int = 0  # the last notification id folded
    events: int = 0  # Ledger events folded
    by_topic: Counter[str] = field(default_factory=Counter)
    first_time: float | None = None
    last_time: float | None = None
    runs: dict[str, Run] = field(default_factory=dict)
    commands: dict[int, Command] = field(default_factory=dict)
    task_events: dict[str, list[TaskEvent]] = field(default_factory=dict)
    # nid of a status update -> the command it confirmed / the run it answered.
    confirms: dict[int, int] = field(default_factory=dict)
    answers_run: dict[int, str] = field(default_factory=dict)
    # with timeline=True only:
    drift_samples: list[DriftSample] = field(default_factory=list)
    converge_seconds: list[float] = field(default_factory=list)  # per ended drift episode
    ever_drifted: set[str] = field(default_factory=set)

    def knows(self, task_id: str) -> bool:
        return task_id in self.task_events

    def commands_about(self, task_id: str, *, asks: bool = False) -> list[Command]:
        """The commands that act on the task (and with asks=True, RECONCILE batches that
        asked about it), oldest first."""
        return [
            c
            for c in self.commands.values()
            if c.event.task_id == task_id or (asks and task_id in (c.event.tasks or ()))
        ]

    def run_of_command(self, command_id: int) -> str | None:
        command = self.commands.get(command_id)
        return None if command is None else command.run_id


def moment(state: LedgerState, nid: int, task_id: str) -> Moment:
    """The task as the state's views hold it."""
    views = state.views
    s = views.scheduler.record(task_id)
    m = views.mesos.record(task_id)
    cell = views.drift.cell(task_id)
    return Moment(
        nid,
        views.scheduler.get(task_id),
        None if s is None else s.time,
        None if s is None else s.agent_id,
        None if m is None else m.state,
        None if m is None else m.time,
        None if m is None else m.agent_id,
        None if cell is None else cell.label,
        None if cell is None else str(TABLE[cell]),
    )


def build(
    events: Iterable[tuple[int, Any]],
    *,
    task: str | None = None,
    timeline: bool = False,
    state: LedgerState | None = None,
) -> LogIndex:
    """Folds the events. With `task`, only that task's events are kept (runs and commands
    are always kept: they are few). With `timeline`, drift samples and convergence times
    are recorded too. `state` starts the fold from a state other than empty."""
    index = LogIndex(state=LedgerState() if state is None else state)
    st = index.state
    drift_view = st.views.drift
    counts: Counter[str] = Counter()
    opened: dict[str, float] = {}
    if timeline:
        for d in drift_view.drift():
            counts[d.cell.label] += 1
    active: dict[str, set[str] | None] = {}  # running run -> tasks it asked about (None: all)
    for nid, event in events:
        kind = type(event)
        index.events += 1
        index.by_topic[kind.topic] += 1
        if index.first_time is None:
            index.first_time = event.time
        index.last_time = event.time
        task_id = getattr(event, "task_id", None)
        if timeline and task_id is not None:
            before = _disagreeing(drift_view.cell(task_id))
            st.apply(nid, event)
            after = _disagreeing(drift_view.cell(task_id))
            if before != after:
                if before is not None:
                    counts[before.label] -= 1
                if after is not None:
                    counts[after.label] += 1
                    index.ever_drifted.add(task_id)
                index.drift_samples.append(
                    DriftSample(nid, event.time, {k: v for k, v in counts.items() if v})
                )
                if before is None:
                    opened[task_id] = event.time
                elif after is None and task_id in opened:
                    index.converge_seconds.append(event.time - opened.pop(task_id))
        else:
            st.apply(nid, event)
        index.upto = nid

        if kind is ReconciliationStarted:
            index.runs[event.run_id] = Run(
                event.run_id,
                len(index.runs) + 1,
                event.kind,
                event.trigger,
                nid,
                event.time,
                event.deadline,
            )
            active[event.run_id] = set() if event.kind == "explicit" else None
        elif kind is ReconciliationRound:
            run = index.runs.get(event.run_id)
            if run is not None:
                run.rounds.append((nid, event))
        elif kind is ReconciliationCompleted or kind is ReconciliationSuperseded:
            run = index.runs.get(event.run_id)
            if run is not None:
                run.end_nid, run.end_time = nid, event.time
                if kind is ReconciliationCompleted:
                    run.outcome, run.completed = event.outcome, event
                else:
                    run.outcome, run.superseded_by = "superseded", event.by_run_id
            active.pop(event.run_id, None)
        elif kind is CommandIssued:
            command = Command(nid, event)
            index.commands[nid] = command
            run = index.runs.get(event.run_id) if event.run_id is not None else None
            if run is not None:
                run.commands.append(nid)
            if event.kind == RECONCILE and event.run_id in active:
                asked = active[event.run_id]
                if asked is not None:
                    asked.update(event.tasks or ())
            for t in command.tasks():
                if task is None or t == task:
                    _add(index, t, nid, event)
            if event.task_id is not None and (task is None or event.task_id == task):
                command.found = moment(st, nid, event.task_id)
        elif kind in COMMAND_STEPS:
            command = index.commands.get(event.command_id)
            if command is None:
                continue
            command.steps.append((nid, event))
            if kind is CommandConfirmed:
                command.outcome, command.outcome_nid, command.outcome_time = (
                    event.outcome,
                    nid,
                    event.time,
                )
                if event.causation is not None:
                    index.confirms[event.causation] = event.command_id
            elif kind is CommandCancelled:
                command.outcome = f"cancelled: {event.reason}"
                command.outcome_nid, command.outcome_time = nid, event.time
            about = (task_id,) if task_id is not None else command.tasks()
            for t in about:
                if task is None or t == task:
                    _add(index, t, nid, event)
        elif task_id is not None and (task is None or task_id == task):
            _add(index, task_id, nid, event)
            if kind is StatusUpdateReceived and event.is_reconciliation_answer and active:
                index.answers_run[nid] = _answered_run(active, task_id)
    return index


def _disagreeing(cell: Cell | None) -> Cell | None:
    """The cell if it is one of disagreement, else None."""
    return None if cell is None or TABLE[cell] is FoundBy.CONSISTENT else cell


def _add(index: LogIndex, task_id: str, nid: int, event: Any) -> None:
    views = index.state.views
    row = TaskEvent(nid, event, views.scheduler.get(task_id), views.mesos.get(task_id))
    events = index.task_events.get(task_id)
    if events is None:
        index.task_events[task_id] = [row]
    else:
        events.append(row)


def _answered_run(active: dict[str, set[str] | None], task_id: str) -> str:
    """The running run a reconciliation answer belongs to: the newest that asked about
    the task, else the newest implicit one, else the newest."""
    runs = list(active.items())
    for run_id, asked in reversed(runs):
        if asked is not None and task_id in asked:
            return run_id
    for run_id, asked in reversed(runs):
        if asked is None:
            return run_id
    return runs[-1][0]

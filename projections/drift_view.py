"""The drift view: where each task sits in the reconciliation table, kept up to date.

The table (reference/reconciliation.md) is DATA below: rows are what Mesos holds, columns what
the scheduler holds; each cell is consistent or names the reconciliation that finds it.

How a task gets its row and column, and why:
- Mesos row: "absent" if Mesos never spoke of the task OR its latest answer is TASK_UNKNOWN
  (the master holds no state for it); "terminal" if Mesos's latest state is terminal
  (including the resurrectable TASK_LOST / TASK_GONE_BY_OPERATOR); else "non-terminal"
  (STAGING, STARTING, RUNNING, KILLING, UNREACHABLE).
- Scheduler column: "non-terminal" for the launched, live states (lifecycle.RECONCILED: what
  an explicit reconciliation asks about); "terminal" for lifecycle.TERMINAL; "absent" for a
  task the scheduler does not know, has DELETED, or has not launched yet (INIT, THROTTLED,
  PENDING): for those it claims nothing about the cluster, so Mesos knowing them is the
  drift (found by implicit reconciliation), and Mesos not knowing them is consistent.
- A task placed in a disagreeing cell records `since`: the notification id at which it
  entered THAT cell (moving to another disagreeing cell resets it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from engine.events import KillRequested, StatusUpdateReceived, TaskAssigned, TaskCreated
from engine.lifecycle import RECONCILED, TERMINAL, ScheduleStatus
from engine.mesos_states import BY_NAME as MESOS_STATES
from projections import mesos_view as _mesos
from projections import scheduler_view as _scheduler
from projections.mesos_view import MesosView
from projections.scheduler_view import SchedulerView


class Holds(StrEnum):
    """What one side holds for a task: a row or a column of the table."""

    NON_TERMINAL = "non-terminal"
    TERMINAL = "terminal"
    ABSENT = "absent"


class FoundBy(StrEnum):
    """Which reconciliation reveals a cell's disagreement (or that there is none)."""

    CONSISTENT = "consistent"
    EXPLICIT = "explicit"
    IMPLICIT = "implicit"


class Cell(NamedTuple):
    """A cell of the table: (what Mesos holds, what the scheduler holds)."""

    mesos: Holds
    scheduler: Holds

    @property
    def label(self) -> str:
        """E.g. "non-terminal/absent" (Mesos first)."""
        return f"{self.mesos}/{self.scheduler}"


H = Holds
# THE table: (Mesos holds, scheduler holds) -> who finds it.
TABLE: dict[Cell, FoundBy] = {
    Cell(H.NON_TERMINAL, H.NON_TERMINAL): FoundBy.CONSISTENT,
    Cell(H.NON_TERMINAL, H.TERMINAL): FoundBy.IMPLICIT,
    Cell(H.NON_TERMINAL, H.ABSENT): FoundBy.IMPLICIT,
    Cell(H.TERMINAL, H.NON_TERMINAL): FoundBy.EXPLICIT,
    Cell(H.TERMINAL, H.TERMINAL): FoundBy.CONSISTENT,
    Cell(H.TERMINAL, H.ABSENT): FoundBy.CONSISTENT,
    Cell(H.ABSENT, H.NON_TERMINAL): FoundBy.EXPLICIT,
    Cell(H.ABSENT, H.TERMINAL): FoundBy.CONSISTENT,
    Cell(H.ABSENT, H.ABSENT): FoundBy.CONSISTENT,
}

# State name -> row / column, as plain str keys (cheap lookups on the replay path).
MESOS_ROW: dict[str, Holds] = {
    name: H.ABSENT
    if not info.stored_by_master
    else (H.TERMINAL if info.terminal else H.NON_TERMINAL)
    for name, info in MESOS_STATES.items()
}
SCHEDULER_COLUMN: dict[str, Holds] = {
    state.value: H.NON_TERMINAL
    if state in RECONCILED
    else (H.TERMINAL if state in TERMINAL else H.ABSENT)
    for state in ScheduleStatus
}


# (Mesos state or None, scheduler state or None) -> the one shared Cell: one lookup per event,
# no Cell built per event.
_CELLS: dict[Cell, Cell] = {cell: cell for cell in TABLE}
_CELL_OF_STATES: dict[tuple[str | None, str | None], Cell] = {
    (mesos, scheduler): _CELLS[
        Cell(
            H.ABSENT if mesos is None else MESOS_ROW[mesos],
            H.ABSENT if scheduler is None else SCHEDULER_COLUMN[scheduler],
        )
    ]
    for mesos in [None, *MESOS_ROW]
    for scheduler in [None, *SCHEDULER_COLUMN]
}


class Drift(NamedTuple):
    """One current disagreement."""

    task_id: str
    cell: Cell
    found_by: FoundBy
    since: int  # notification id at which the task entered this cell
    scheduler_state: str | None
    mesos_state: str | None


def mesos_row(mesos: MesosView, task_id: str) -> Holds:
    """The row of the table the Mesos view puts `task_id` in."""
    task = mesos.tasks.get(task_id)
    return H.ABSENT if task is None else MESOS_ROW[task.state]


def scheduler_column(scheduler: SchedulerView, task_id: str) -> Holds:
    """The column of the table the scheduler view puts `task_id` in."""
    task = scheduler.tasks.get(task_id)
    return H.ABSENT if task is None else SCHEDULER_COLUMN[task.state]


@dataclass(slots=True)
class DriftView:
    """Each task known to either view -> (cell, since); the disagreeing ones kept apart."""

    scheduler: SchedulerView
    mesos: MesosView
    cells: dict[str, tuple[Cell, int]] = field(default_factory=dict)
    disagreements: dict[str, tuple[Cell, int]] = field(default_factory=dict)
    last_nid: int = 0

    def cell(self, task_id: str) -> Cell | None:
        """The task's cell, or None if neither view knows it."""
        entry = self.cells.get(task_id)
        return None if entry is None else entry[0]

    def drift(self) -> list[Drift]:
        """The current disagreements, oldest first (then by task id)."""
        out = [
            Drift(
                task_id,
                cell,
                TABLE[cell],
                since,
                self.scheduler.get(task_id),
                self.mesos.get(task_id),
            )
            for task_id, (cell, since) in self.disagreements.items()
        ]
        out.sort(key=lambda d: (d.since, d.task_id))
        return out

    def apply(self, notification_id: int, event: Any) -> DriftView:
        """evolve(self, notification_id, event); the two views must already include it."""
        return evolve(self, notification_id, event)


def _one_task(event: Any) -> tuple[str, ...]:
    return (event.task_id,)


# Which tasks an event can move between cells, by event type. Kinds not listed move none.
TASKS_TOUCHED: dict[type, Callable[[Any], tuple[str, ...]]] = {
    TaskCreated: _one_task,
    TaskAssigned: _one_task,
    KillRequested: _one_task,
    StatusUpdateReceived: _one_task,
}


def place(view: DriftView, task_id: str, notification_id: int) -> None:
    """Re-read the task's row and column from the two views and update its cell."""
    mesos_task = view.mesos.tasks.get(task_id)
    scheduler_task = view.scheduler.tasks.get(task_id)
    if mesos_task is None and scheduler_task is None:
        return
    cell = _CELL_OF_STATES[
        None if mesos_task is None else mesos_task.state,
        None if scheduler_task is None else scheduler_task.state,
    ]
    entry = view.cells.get(task_id)
    if entry is not None and entry[0] == cell:  # not `is`: snapshots hold copies
        return
    entry = (cell, notification_id)
    view.cells[task_id] = entry
    if TABLE[cell] is FoundBy.CONSISTENT:
        view.disagreements.pop(task_id, None)
    else:
        view.disagreements[task_id] = entry


def evolve(view: DriftView, notification_id: int, event: Any) -> DriftView:
    """Update the cells of the tasks `event` touched. Call after evolving the two views."""
    touched = TASKS_TOUCHED.get(type(event))
    if touched is not None:
        for task_id in touched(event):
            place(view, task_id, notification_id)
    view.last_nid = notification_id
    return view


class Views:
    """The three views, evolved together in the only valid order."""

    __slots__ = ("scheduler", "mesos", "drift")

    def __init__(self) -> None:
        self.scheduler = SchedulerView()
        self.mesos = MesosView()
        self.drift = DriftView(self.scheduler, self.mesos)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Views):
            return NotImplemented
        return self.drift == other.drift  # compares the two views it holds as well

    __hash__ = None  # type: ignore[assignment]  # mutable

    def apply(self, notification_id: int, event: Any) -> Views:
        """Evolve the scheduler view, the Mesos view, then the drift view."""
        _scheduler.evolve(self.scheduler, notification_id, event)
        _mesos.evolve(self.mesos, notification_id, event)
        evolve(self.drift, notification_id, event)
        return self

    @classmethod
    def rebuild(cls, history: Iterable[tuple[int, Any]]) -> Views:
        """The views built from scratch from (notification id, event) pairs."""
        views = cls()
        for nid, event in history:
            views.apply(nid, event)
        return views


def as_rows() -> list[tuple[str, str, str]]:
    """The table as (Mesos holds, scheduler holds, found by) rows."""
    return [(str(c.mesos), str(c.scheduler), str(found)) for c, found in TABLE.items()]


def describe() -> str:
    """The table as Markdown, in the layout of reconciliation.md."""
    columns = list(Holds)
    lines = [
        "| Mesos \\ scheduler | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for row in Holds:
        cells = [str(TABLE[Cell(row, col)]) for col in columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

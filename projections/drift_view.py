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

from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any, NamedTuple

from engine.events import (
    KillRequested,
    StatusUpdateReceived,
    TaskAssigned,
    TaskCreated,
    TaskMarkedLost,
)
from engine.lifecycle import RECONCILED, TERMINAL, ScheduleStatus
from engine.mesos_states import BY_NAME as MESOS_STATES
from projections import mesos_view as _mesos
from projections import scheduler_view as _scheduler
from projections.columns import cells
from projections.mesos_view import STATE_CODE as MESOS_CODE
from projections.mesos_view import MesosView
from projections.scheduler_view import TARGET_OF_MESOS, SchedulerView


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


# Cell code -> Cell (code 0: neither view knows the task), and whether it is a disagreement.
CELLS: tuple[Cell | None, ...] = (None, *TABLE)
CELL_CODE: dict[Cell, int] = {cell: code for code, cell in enumerate(CELLS) if cell is not None}
DISAGREES: tuple[bool, ...] = (False, *(TABLE[c] is not FoundBy.CONSISTENT for c in TABLE))


def _cell_code(mesos: str | None, scheduler: str | None) -> int:
    if mesos is None and scheduler is None:
        return 0
    return CELL_CODE[
        Cell(
            H.ABSENT if mesos is None else MESOS_ROW[mesos],
            H.ABSENT if scheduler is None else SCHEDULER_COLUMN[scheduler],
        )
    ]


# (Mesos state code * _SW + scheduler state code) -> cell code: one lookup per event.
_MESOS_STATES = _mesos.STATES
_SCHEDULER_STATES = _scheduler.STATES
_SW = len(_SCHEDULER_STATES)
CELL_AT: tuple[int, ...] = tuple(
    _cell_code(mesos, scheduler) for mesos in _MESOS_STATES for scheduler in _SCHEDULER_STATES
)


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
    state = mesos.get(task_id)
    return H.ABSENT if state is None else MESOS_ROW[state]


def scheduler_column(scheduler: SchedulerView, task_id: str) -> Holds:
    """The column of the table the scheduler view puts `task_id` in."""
    task = scheduler.record(task_id)
    return H.ABSENT if task is None else SCHEDULER_COLUMN[task.state]


# The columns (in snapshots by these names) and their array typecodes.
COLUMNS: dict[str, str] = {"cell": "B", "since": "q"}


class DriftView:
    """Each task known to either view -> (cell, since); the disagreeing ones kept apart.

    Columnar over the two views' shared TaskIndex: `cells` and `disagreements` are read-only
    Mappings task id -> (Cell, since)."""

    __slots__ = (
        "scheduler",
        "mesos",
        "index",
        "last_nid",
        "_count",
        "_disagree",
        "_cell",
        "_since",
        "_mesos_state",
        "_scheduler_state",
        "_cells",
        "_disagreements",
    )

    def __init__(
        self,
        scheduler: SchedulerView,
        mesos: MesosView,
        columns: dict[str, bytes] | None = None,
    ) -> None:
        if scheduler.index is not mesos.index:
            raise ValueError("the drift view needs a scheduler and a Mesos view on one TaskIndex")
        self.scheduler = scheduler
        self.mesos = mesos
        self.index = scheduler.index
        self.last_nid = 0
        data = columns or {}
        for name, typecode in COLUMNS.items():
            setattr(self, "_" + name, self.index.column(typecode, data.get(name)))
        n = len(self.index)
        self._count = n - self._cell[:n].count(0)
        self._disagree: set[str] = set()
        self._mesos_state = mesos._state
        self._scheduler_state = scheduler._state
        if columns:
            self._disagree.update(self._disagreeing())
        self._cells = _Cells(self)
        self._disagreements = _Disagreements(self)

    def _disagreeing(self) -> Iterator[str]:
        # Only on load: the task ids whose cell disagrees, found with bytes scans in C.
        marks = cells(self._cell, len(self.index)).translate(_DISAGREE_MARKS)
        if b"\x01" not in marks:
            return
        ids = list(self.index.rows)
        at = marks.find(b"\x01")
        while at >= 0:
            yield ids[at]
            at = marks.find(b"\x01", at + 1)

    # -- reading --------------------------------------------------------------------------------
    def cell(self, task_id: str) -> Cell | None:
        """The task's cell, or None if neither view knows it."""
        row = self.index.rows.get(task_id)
        return None if row is None else CELLS[self._cell[row]]

    def drift(self) -> list[Drift]:
        """The current disagreements, oldest first (then by task id)."""
        rows = self.index.rows
        out = []
        for task_id in self._disagree:
            row = rows[task_id]
            cell = CELLS[self._cell[row]]
            out.append(
                Drift(
                    task_id,
                    cell,  # type: ignore[arg-type]
                    TABLE[cell],  # type: ignore[index]
                    self._since[row],
                    self.scheduler.get(task_id),
                    self.mesos.get(task_id),
                )
            )
        out.sort(key=lambda d: (d.since, d.task_id))
        return out

    @property
    def cells(self) -> Mapping[str, tuple[Cell, int]]:
        """task id -> (cell, since) for every task either view knows (read-only)."""
        return self._cells

    @property
    def disagreements(self) -> Mapping[str, tuple[Cell, int]]:
        """task id -> (cell, since) for the tasks in a disagreeing cell (read-only)."""
        return self._disagreements

    def _entry(self, row: int) -> tuple[Cell, int]:
        return CELLS[self._cell[row]], self._since[row]  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DriftView):
            return NotImplemented
        return (
            self.last_nid == other.last_nid
            and self._disagree == other._disagree
            and self._count == other._count
            and all(other.cells.get(task_id) == entry for task_id, entry in self.cells.items())
            and self.scheduler == other.scheduler
            and self.mesos == other.mesos
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"DriftView({self._count} tasks, {len(self._disagree)} disagreements, "
            f"last_nid={self.last_nid})"
        )

    def apply(self, notification_id: int, event: Any) -> DriftView:
        """evolve(self, notification_id, event); the two views must already include it."""
        return evolve(self, notification_id, event)

    # -- the rule, on a row -----------------------------------------------------------------------
    def place(self, row: int, nid: int, task_id: str) -> None:
        """Re-read the row's states in the two views and update its cell."""
        cell = CELL_AT[self._mesos_state[row] * _SW + self._scheduler_state[row]]
        if cell != self._cell[row]:  # equal too when neither view knows the task (both 0)
            self.enter(row, cell, nid, task_id)

    def enter(self, row: int, cell: int, nid: int, task_id: str) -> None:
        """The task at `row` moved into `cell` (a code, not its current one) at `nid`."""
        if not self._cell[row]:
            self._count += 1
        self._cell[row] = cell
        self._since[row] = nid
        if DISAGREES[cell]:
            self._disagree.add(task_id)
        else:
            self._disagree.discard(task_id)

    # -- snapshots --------------------------------------------------------------------------------
    def columns(self) -> dict[str, bytes]:
        """The columns as bytes, one cell per row of the index (see projections.snapshots)."""
        n = len(self.index)
        return {name: cells(getattr(self, "_" + name), n) for name in COLUMNS}

    def put(self, task_id: str, cell: Cell, since: int) -> None:
        """Stores a task's cell (reading old snapshots)."""
        row = self.index.rows.get(task_id)
        if row is None:
            row = self.index.add(task_id)
        if not self._cell[row]:
            self._count += 1
        code = CELL_CODE[cell]
        self._cell[row] = code
        self._since[row] = since
        if DISAGREES[code]:
            self._disagree.add(task_id)
        else:
            self._disagree.discard(task_id)


# cell code -> 1 if it disagrees (a bytes.translate table).
_DISAGREE_MARKS = bytes(int(DISAGREES[code]) if code < len(DISAGREES) else 0 for code in range(256))


class _Cells(Mapping[str, tuple[Cell, int]]):
    """The read-only Mapping face of DriftView.cells."""

    __slots__ = ("_view",)

    def __init__(self, view: DriftView) -> None:
        self._view = view

    def __getitem__(self, task_id: str) -> tuple[Cell, int]:
        row = self._view.index.rows.get(task_id)
        if row is None or not self._view._cell[row]:
            raise KeyError(task_id)
        return self._view._entry(row)

    def __contains__(self, task_id: object) -> bool:
        row = self._view.index.rows.get(task_id)  # type: ignore[call-overload]
        return row is not None and self._view._cell[row] != 0

    def __iter__(self) -> Iterator[str]:
        cell = self._view._cell
        return (task_id for task_id, row in self._view.index.rows.items() if cell[row])

    def __len__(self) -> int:
        return self._view._count

    def items(self) -> Any:
        view = self._view
        cell, since = view._cell, view._since
        return [
            (task_id, (CELLS[cell[row]], since[row]))
            for task_id, row in view.index.rows.items()
            if cell[row]
        ]

    def __repr__(self) -> str:
        return f"<{len(self)} drift cells>"


class _Disagreements(Mapping[str, tuple[Cell, int]]):
    """The read-only Mapping face of DriftView.disagreements."""

    __slots__ = ("_view",)

    def __init__(self, view: DriftView) -> None:
        self._view = view

    def __getitem__(self, task_id: str) -> tuple[Cell, int]:
        if task_id not in self._view._disagree:
            raise KeyError(task_id)
        return self._view._entry(self._view.index.rows[task_id])

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._view._disagree

    def __iter__(self) -> Iterator[str]:
        # In row order (the order tasks first appeared in the log), not the set's order,
        # which depends on PYTHONHASHSEED: the saga decides in this order, and the same
        # log must make the same decisions in any process.
        view = self._view
        return iter(sorted(view._disagree, key=view.index.rows.__getitem__))

    def __len__(self) -> int:
        return len(self._view._disagree)

    def __repr__(self) -> str:
        return f"<{len(self)} disagreements>"


def _one_task(event: Any) -> tuple[str, ...]:
    return (event.task_id,)


# Which tasks an event can move between cells, by event type. Kinds not listed move none.
TASKS_TOUCHED: dict[type, Callable[[Any], tuple[str, ...]]] = {
    TaskCreated: _one_task,
    TaskAssigned: _one_task,
    KillRequested: _one_task,
    StatusUpdateReceived: _one_task,
    TaskMarkedLost: _one_task,
}


def place(view: DriftView, task_id: str, notification_id: int) -> None:
    """Re-read the task's row and column from the two views and update its cell."""
    row = view.index.rows.get(task_id)
    if row is not None:
        view.place(row, notification_id, task_id)


def evolve(view: DriftView, notification_id: int, event: Any) -> DriftView:
    """Update the cells of the tasks `event` touched. Call after evolving the two views."""
    touched = TASKS_TOUCHED.get(type(event))
    if touched is not None:
        for task_id in touched(event):
            place(view, task_id, notification_id)
    view.last_nid = notification_id
    return view


# Views.apply unpacks a status update positionally (the fastest read of a tuple), and so
# does the replay kernel (engine/replay.py): a schema change must update both, and this says
# so at import rather than misreading fields.
STATUS_FIELDS = (
    "time",
    "causation",
    "task_id",
    "state",
    "agent_id",
    "executor_id",
    "source",
    "reason",
    "message",
    "timestamp",
    "uuid",
    "healthy",
    "labels",
    "is_reconciliation_answer",
    "extra",
)
assert StatusUpdateReceived._fields == STATUS_FIELDS, (
    "StatusUpdateReceived changed: update the unpacking in Views.apply and engine/replay.py"
)


class Views:
    """The three views, evolved together in the only valid order, on one TaskIndex.

    The kinds that touch tasks take a fused path (below): the task's row is looked up once
    and handed to each view's own rule (MesosView.update, SchedulerView.move/create/assign,
    DriftView.place). Any other kind goes through the three `evolve` functions.
    """

    __slots__ = ("index", "scheduler", "mesos", "drift", "_states")

    def __init__(
        self,
        scheduler: SchedulerView | None = None,
        mesos: MesosView | None = None,
        drift: DriftView | None = None,
    ) -> None:
        """New empty views, or these three (on one TaskIndex; see projections.snapshots)."""
        if scheduler is None:
            scheduler = SchedulerView()
        self.index = scheduler.index
        self.scheduler = scheduler
        self.mesos = MesosView(self.index) if mesos is None else mesos
        self.drift = DriftView(scheduler, self.mesos) if drift is None else drift
        if self.mesos.index is not self.index or self.drift.index is not self.index:
            raise ValueError("the three views must share one TaskIndex")
        self._states = (self.mesos._state, self.scheduler._state)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Views):
            return NotImplemented
        return self.drift == other.drift  # compares the two views it holds as well

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Views({self.scheduler!r}, {self.mesos!r}, {self.drift!r})"

    def apply(self, notification_id: int, event: Any) -> Views:
        """Evolve the scheduler view, the Mesos view, then the drift view."""
        kind = type(event)
        scheduler, mesos, drift = self.scheduler, self.mesos, self.drift
        if kind is StatusUpdateReceived:  # most of a log: fused here, no further dispatch
            (
                time,
                _,
                task_id,
                state,
                agent_id,
                _,
                source,
                reason,
                _,
                timestamp,
                _,
                _,
                _,
                answer,
                _,
            ) = event
            row = self.index.rows.get(task_id)
            if row is None:
                row = self.index.add(task_id)
            # The drift cell is a function of the two states: compare it before and after
            # instead of reading the drift view's columns (fewer cache misses per event).
            mesos_states, scheduler_states = self._states
            before = CELL_AT[mesos_states[row] * _SW + scheduler_states[row]]
            mesos.update(
                row,
                notification_id,
                time,
                MESOS_CODE[state],
                source,
                reason,
                agent_id,
                timestamp,
                answer,
            )
            scheduler.move(row, notification_id, time, task_id, TARGET_OF_MESOS[state])
            after = CELL_AT[mesos_states[row] * _SW + scheduler_states[row]]
            if after != before:
                drift.enter(row, after, notification_id, task_id)
        else:
            fused = _FUSED.get(kind)
            if fused is None:
                _scheduler.evolve(scheduler, notification_id, event)
                _mesos.evolve(mesos, notification_id, event)
                evolve(drift, notification_id, event)
                return self
            fused(self, notification_id, event)
        scheduler.last_nid = mesos.last_nid = drift.last_nid = notification_id
        return self

    def _created(self, nid: int, event: TaskCreated) -> None:
        task_id = event.task_id
        row = self.scheduler.create(
            self.index.rows.get(task_id), nid, event.time, task_id, event.job, event.instance
        )
        self.drift.place(row, nid, task_id)  # type: ignore[arg-type]

    def _assigned(self, nid: int, event: TaskAssigned) -> None:
        task_id = event.task_id
        row = self.index.rows.get(task_id)
        self.scheduler.assign(row, nid, event.time, task_id, event.agent_id)
        if row is not None:
            self.drift.place(row, nid, task_id)

    def _moved(self, nid: int, event: Any) -> None:
        task_id = event.task_id
        row = self.index.rows.get(task_id)
        self.scheduler.move(row, nid, event.time, task_id, _MOVES_TO[type(event)])
        if row is not None:
            self.drift.place(row, nid, task_id)

    @classmethod
    def rebuild(cls, history: Iterable[tuple[int, Any]]) -> Views:
        """The views built from scratch from (notification id, event) pairs."""
        views = cls()
        for nid, event in history:
            views.apply(nid, event)
        return views


_MOVES_TO: dict[type, int] = {
    KillRequested: _scheduler.STATE_CODE["KILLING"],
    TaskMarkedLost: _scheduler.STATE_CODE["LOST"],
}
# Kinds with a fused path. Each must do exactly what the three evolve functions do.
_FUSED: dict[type, Callable[[Views, int, Any], None]] = {
    TaskCreated: Views._created,
    TaskAssigned: Views._assigned,
    KillRequested: Views._moved,
    TaskMarkedLost: Views._moved,
}


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

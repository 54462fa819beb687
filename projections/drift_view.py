"""The drift view: where each task sits in the reconciliation table, kept up to date.

The table itself (rows, columns, cells, who finds each) is engine/drift_table.py's. This view
files every task in its cell as the scheduler and Mesos views move it; a task placed in a
disagreeing cell records `since`: the notification id at which it entered THAT cell (moving to
another disagreeing cell resets it). The three views evolved together are projections/views.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

from engine.drift_table import (
    CELL_CODE,
    CELLS,
    DISAGREES,
    MESOS_ROW,
    SCHEDULER_COLUMN,
    TABLE,
    Cell,
    FoundBy,
    H,
)
from engine.events import (
    KillRequested,
    StatusUpdateReceived,
    TaskAssigned,
    TaskCreated,
    TaskMarkedLost,
)
from projections import mesos_view as _mesos
from projections import scheduler_view as _scheduler
from projections.columns import cells
from projections.mesos_view import MesosView
from projections.scheduler_view import SchedulerView


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

    def disagreement_counts(self) -> dict[Cell, int]:
        """Disagreeing cell -> how many tasks are in it now: one count of the cell column in
        C (bytes.count per cell), for gauges read every second at 100k tasks."""
        column = cells(self._cell, len(self.index))
        out = {}
        for code, disagrees in enumerate(DISAGREES):
            if disagrees:
                n = column.count(code)
                if n:
                    out[CELLS[code]] = n
        return out  # type: ignore[return-value]

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

"""The Mesos view: the latest thing Mesos told us about each task (a View: evolve only).

`evolve(view, notification_id, event) -> view` is pure and mutates the view in place.

How it reads updates, and why:
- Latest wins, whatever the source. A reconciliation answer (master, no uuid) IS the master's
  current state of the task, so it replaces what an agent said earlier.
- TASK_UNKNOWN is recorded like any answer (get() returns "TASK_UNKNOWN": the last thing
  Mesos said), but it means the master holds NO state for the task, so `holds(task)` is
  False and the drift table puts the task in the row "absent".
- One exception to "latest wins": once Mesos has said a FINAL state (terminal and not
  resurrectable: FINISHED, FAILED, KILLED, ERROR, DROPPED, GONE), a later update claiming the
  task is alive can only be an older update delivered late (agents re-send unacknowledged
  updates, and a reconciliation answer may overtake them). It is counted in `stale`, not
  applied. TASK_LOST and TASK_GONE_BY_OPERATOR are not final: an agent that re-registers
  brings its tasks back, so a later RUNNING is believed.
- An update without agent_id (master answers may omit it) keeps the agent already known.

Storage is columnar (projections/columns.py), like the scheduler view's: `record(task)`
builds a MesosTask on demand; `tasks` is a read-only Mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.events import (
    FrameworkDisconnected,
    FrameworkRegistered,
    FrameworkReregistered,
    StatusUpdateReceived,
)
from engine.mesos_states import ALIVE as _ALIVE  # updates that claim the task is alive
from engine.mesos_states import BY_NAME as MESOS_STATES
from engine.mesos_states import FINAL, NOT_STORED
from projections.columns import RowRecords, TaskIndex, cells


@dataclass(slots=True)
class MesosTask:
    """The latest Mesos state of one task, and where it came from."""

    state: str
    source: str | None
    reason: str | None
    agent_id: str | None
    timestamp: float | None  # Mesos's own timestamp of the update
    nid: int  # notification id of the update that set `state`
    time: float  # our time of that event
    is_reconciliation_answer: bool = False
    stale: int = 0  # late "alive" updates ignored after a final state
    stale_nid: int | None = None


# --- the code tables (data) ---------------------------------------------------------------------

# State code -> name; code 0: Mesos never spoke of the task.
STATES: tuple[str | None, ...] = (None, *MESOS_STATES)
STATE_CODE: dict[str, int] = {name: code for code, name in enumerate(STATES) if name is not None}
_W = len(STATES)
# (current code * _W + new code) -> whether the update is a stale "alive" after a final state.
STALE: tuple[bool, ...] = tuple(
    current in FINAL and new in _ALIVE for current in STATES for new in STATES
)
_NOT_STORED_CODES = frozenset(STATE_CODE[name] for name in NOT_STORED)

# Bits of the `flags` column.
RECONCILIATION_ANSWER = 1
HAS_TIMESTAMP = 2
_ANSWER_WITH_TIMESTAMP = RECONCILIATION_ANSWER | HAS_TIMESTAMP
_NOT_STALE = (0, None)

# The columns (in snapshots by these names) and their array typecodes.
COLUMNS: dict[str, str] = {
    "state": "B",
    "flags": "B",
    "source": "i",  # code in the index's Strings
    "reason": "i",  # code in the index's Strings
    "agent": "i",  # code in the index's Strings
    "timestamp": "d",  # 0.0 unless flags has HAS_TIMESTAMP
    "nid": "q",
    "time": "d",
}


class MesosView:
    """task id -> MesosTask (columns), plus the framework's connection facts."""

    __slots__ = (
        "index",
        "framework_id",
        "master_id",
        "connected",
        "last_nid",
        "_stale",
        "_count",
        "_state",
        "_flags",
        "_source",
        "_reason",
        "_agent",
        "_timestamp",
        "_nid",
        "_time",
        "_columns",
        "_codes",
        "_tasks",
    )

    def __init__(self, index: TaskIndex | None = None, columns: dict[str, bytes] | None = None):
        """A view over `index` (a new one if None), its columns empty or read from `columns`."""
        self.index = TaskIndex() if index is None else index
        self.framework_id: str | None = None
        self.master_id: str | None = None
        self.connected = False
        self.last_nid = 0
        # row -> (late alive updates ignored, nid of the latest): rare, so not a column.
        self._stale: dict[int, tuple[int, int]] = {}
        data = columns or {}
        for name, typecode in COLUMNS.items():
            setattr(self, "_" + name, self.index.column(typecode, data.get(name)))
        self._count = len(self.index) - self._state[: len(self.index)].count(0)
        # For the hot path: all columns in one load (they grow in place, never replaced).
        self._columns = tuple(getattr(self, "_" + name) for name in COLUMNS)
        self._codes = self.index.strings.codes
        self._tasks = RowRecords(self, "Mesos tasks")

    # -- reading --------------------------------------------------------------------------------
    def get(self, task_id: str) -> str | None:
        """The latest Mesos state name, e.g. "TASK_RUNNING" (or "TASK_UNKNOWN"); None if none."""
        row = self.index.rows.get(task_id)
        return None if row is None else STATES[self._state[row]]

    def record(self, task_id: str) -> MesosTask | None:
        """The full record, or None. A copy: changing it changes nothing in the view."""
        row = self.index.rows.get(task_id)
        if row is None or not self._state[row]:
            return None
        return self._record(row)

    def changed(self, task_id: str) -> tuple[int, float] | None:
        """(nid, time) of the update that set the task's latest state, or None: two columns
        read (record builds the whole record; a drift of 100,000 tasks asks this of each)."""
        row = self.index.rows.get(task_id)
        if row is None or not self._state[row]:
            return None
        return self._nid[row], self._time[row]

    def _record(self, row: int) -> MesosTask:
        states, flags, sources, reasons, agents, timestamps, nids, times = self._columns
        values = self.index.strings.values
        flag = flags[row]
        stale, stale_nid = self._stale.get(row, _NOT_STALE) if self._stale else _NOT_STALE
        return MesosTask(
            STATES[states[row]],  # type: ignore[arg-type]
            values[sources[row]],
            values[reasons[row]],
            values[agents[row]],
            timestamps[row] if flag & HAS_TIMESTAMP else None,
            nids[row],
            times[row],
            bool(flag & RECONCILIATION_ANSWER),
            stale,
            stale_nid,
        )

    def holds(self, task_id: str) -> bool:
        """Whether, as far as we know, the master holds a state for the task."""
        row = self.index.rows.get(task_id)
        return (
            row is not None
            and self._state[row] != 0
            and (self._state[row] not in _NOT_STORED_CODES)
        )

    @property
    def tasks(self) -> Mapping[str, MesosTask]:
        """task id -> MesosTask for every task Mesos spoke of (read-only)."""
        return self._tasks

    def __len__(self) -> int:
        return self._count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MesosView):
            return NotImplemented
        return (
            self.last_nid == other.last_nid
            and self.framework_id == other.framework_id
            and self.master_id == other.master_id
            and self.connected == other.connected
            and self._count == other._count
            and all(other.record(task_id) == task for task_id, task in self.tasks.items())
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"MesosView({self._count} tasks, last_nid={self.last_nid})"

    def apply(self, notification_id: int, event: Any) -> MesosView:
        """evolve(self, notification_id, event)."""
        return evolve(self, notification_id, event)

    # -- the rule, on a row -----------------------------------------------------------------------
    def update(
        self,
        row: int,
        nid: int,
        time: float,
        state: int,
        source: Any,
        reason: Any,
        agent_id: Any,
        timestamp: float | None,
        is_answer: bool,
    ) -> None:
        """A status update (state as a code) for the task at `row` (in the index)."""
        states, flags, sources, reasons, agents, timestamps, nids, times = self._columns
        current = states[row]
        if STALE[current * _W + state]:
            count, _ = self._stale.get(row, (0, 0))
            self._stale[row] = (count + 1, nid)
            return
        if not current:
            self._count += 1
        states[row] = state
        codes = self._codes
        code = codes.get(source)
        sources[row] = self.index.strings.code(source) if code is None else code
        code = codes.get(reason)
        reasons[row] = self.index.strings.code(reason) if code is None else code
        if agent_id is not None:
            code = codes.get(agent_id)
            agents[row] = self.index.strings.code(agent_id) if code is None else code
        if timestamp is None:
            flags[row] = RECONCILIATION_ANSWER if is_answer else 0
        else:
            timestamps[row] = timestamp
            flags[row] = _ANSWER_WITH_TIMESTAMP if is_answer else HAS_TIMESTAMP
        nids[row] = nid
        times[row] = time

    # -- snapshots --------------------------------------------------------------------------------
    def columns(self) -> dict[str, bytes]:
        """The columns as bytes, one cell per row of the index (see projections.snapshots)."""
        n = len(self.index)
        return {name: cells(getattr(self, "_" + name), n) for name in COLUMNS}

    def put(self, task_id: str, task: MesosTask) -> None:
        """Stores a whole record (reading old snapshots); the task must be new to the view."""
        row = self.index.rows.get(task_id)
        if row is None:
            row = self.index.add(task_id)
        elif self._state[row]:
            raise ValueError(f"task {task_id!r} is already in the Mesos view")
        code = self.index.strings.code
        self._state[row] = STATE_CODE[task.state]
        self._source[row] = code(task.source)
        self._reason[row] = code(task.reason)
        self._agent[row] = code(task.agent_id)
        flags = RECONCILIATION_ANSWER if task.is_reconciliation_answer else 0
        if task.timestamp is not None:
            self._timestamp[row] = task.timestamp
            flags |= HAS_TIMESTAMP
        self._flags[row] = flags
        self._nid[row] = task.nid
        self._time[row] = task.time
        if task.stale or task.stale_nid is not None:
            self._stale[row] = (task.stale, task.stale_nid)  # type: ignore[assignment]
        self._count += 1


# --- evolve: dispatch on the event's type ----------------------------------------------------


def _status_update(view: MesosView, nid: int, event: StatusUpdateReceived) -> None:
    rows = view.index.rows
    row = rows.get(event.task_id)
    if row is None:
        row = view.index.add(event.task_id)
    view.update(
        row,
        nid,
        event.time,
        STATE_CODE[event.state],
        event.source,
        event.reason,
        event.agent_id,
        event.timestamp,
        event.is_reconciliation_answer,
    )


def _subscribed(view: MesosView, nid: int, event: FrameworkRegistered) -> None:
    view.framework_id = event.framework_id
    view.master_id = event.master_id
    view.connected = True


def _disconnected(view: MesosView, nid: int, event: FrameworkDisconnected) -> None:
    view.connected = False


# Dispatch on the event's type; kinds not listed leave the view unchanged.
HANDLERS: dict[type, Callable[[MesosView, int, Any], None]] = {
    StatusUpdateReceived: _status_update,
    FrameworkRegistered: _subscribed,
    FrameworkReregistered: _subscribed,
    FrameworkDisconnected: _disconnected,
}


def evolve(view: MesosView, notification_id: int, event: Any) -> MesosView:
    """Apply one event (in place) and return the view."""
    handler = HANDLERS.get(type(event))
    if handler is not None:
        handler(view, notification_id, event)
    view.last_nid = notification_id
    return view


def rebuild(history: Iterable[tuple[int, Any]]) -> MesosView:
    """A view built from scratch from (notification id, event) pairs."""
    view = MesosView()
    for nid, event in history:
        evolve(view, nid, event)
    return view

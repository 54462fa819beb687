"""The scheduler view: what the scheduler believes about each task (a View: evolve only).

`evolve(view, notification_id, event) -> view` is pure: no I/O, no clock. For replay speed it
mutates the view in place and returns it. Scheduler facts move a task through
engine/lifecycle.py (TaskCreated -> PENDING, TaskAssigned -> ASSIGNED, KillRequested ->
KILLING); status updates through Aurora's Mesos mapping (engine/mesos_states.py) into the same
lifecycle. An illegal transition never changes the state; its classification is recorded.

Side effects: the view applies the two that are bookkeeping on the task record itself,
INCREMENT_FAILURES and DELETE (the record's state becomes DELETED, get() answers None; the
record stays for forensics). SAVE_STATE is implicit. KILL, RESCHEDULE and TRANSITION_TO_LOST
act on the cluster or create tasks: they are only recorded (`effects`), for the saga.

Storage is columnar (projections/columns.py): a row per task in a TaskIndex (shared with the
other views of a `Views`), states and side-effect tuples as small codes into the tables below,
strings as codes into the index's intern table. `record(task)` builds a SchedulerTask on
demand; `tasks` is a read-only Mapping over the tasks this view knows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from engine.events import (
    KillRequested,
    StatusUpdateReceived,
    TaskAssigned,
    TaskCreated,
    TaskMarkedLost,
)
from engine.lifecycle import Outcome, ScheduleStatus, SideEffect, transition
from engine.mesos_states import BY_NAME as MESOS_STATES
from projections.columns import RowRecords, TaskIndex, cells


@dataclass(slots=True)
class SchedulerTask:
    """One task as the scheduler sees it."""

    state: str
    job: str | None
    instance: int | None
    agent_id: str | None
    nid: int  # notification id of the last state change
    time: float  # event time of the last state change
    failures: int = 0
    previous: str | None = None  # the state before the last change (for UNLESS_WAS_KILLING)
    effects: tuple[SideEffect, ...] = ()  # side effects of the last change, in order


class IllegalReport(NamedTuple):
    """The latest illegal transition asked of a task (known to the scheduler or not)."""

    nid: int
    time: float
    current: str | None
    target: str
    classification: str
    side_effects: tuple[SideEffect, ...]


# --- the code tables (data) ---------------------------------------------------------------------

# State code -> name. Code 0: the view does not know the task (lifecycle's `current=None`).
STATES: tuple[str | None, ...] = (None, *(s.value for s in ScheduleStatus))
STATE_CODE: dict[str, int] = {name: code for code, name in enumerate(STATES) if name is not None}
_W = len(STATES)
_INIT, _PENDING = STATE_CODE["INIT"], STATE_CODE["PENDING"]
_ASSIGNED, _KILLING, _LOST = STATE_CODE["ASSIGNED"], STATE_CODE["KILLING"], STATE_CODE["LOST"]

# Mesos state name -> the scheduler state code it asks for (Aurora's mapping).
TARGET_OF_MESOS: dict[str, int] = {
    name: STATE_CODE[info.scheduler.value] for name, info in MESOS_STATES.items()
}


class Step(NamedTuple):
    """What `current -> target` does to a row: precomputed from engine.lifecycle."""

    allowed: bool
    state: int  # the new state code (DELETED when the effects include DELETE)
    effects: int  # code of the side-effect tuple (EFFECTS)
    failures: int  # 1 if INCREMENT_FAILURES
    classification: str
    side_effects: tuple[SideEffect, ...]


def _all_effects() -> tuple[tuple[SideEffect, ...], ...]:
    seen: dict[tuple[SideEffect, ...], None] = {(): None}
    for current in STATES:
        for target in STATES[1:]:
            for was_killing in (False, True):
                seen[transition(current, target, was_killing=was_killing).side_effects] = None
    return tuple(seen)


# Effects code -> the side-effect tuple (every tuple the lifecycle can return; code 0 is ()).
EFFECTS: tuple[tuple[SideEffect, ...], ...] = _all_effects()
EFFECTS_CODE: dict[tuple[SideEffect, ...], int] = {e: code for code, e in enumerate(EFFECTS)}
_CREATED_EFFECTS = EFFECTS_CODE[
    transition(ScheduleStatus.INIT, ScheduleStatus.PENDING).side_effects
]


def _step(current: int, target: int, was_killing: bool) -> Step | None:
    result = transition(STATES[current], STATES[target], was_killing=was_killing)
    if result.outcome is Outcome.NOOP:
        return None
    effects = result.side_effects
    return Step(
        result.allowed,
        STATE_CODE["DELETED"] if SideEffect.DELETE in effects else target,
        EFFECTS_CODE[effects],
        int(SideEffect.INCREMENT_FAILURES in effects),
        result.classification,
        effects,
    )


# (current code * _W + target code) -> Step, or None for a noop; one table for tasks whose
# previous state was KILLING (the UNLESS_WAS_KILLING condition), one for the rest.
_STEPS: tuple[list[Step | None], list[Step | None]] = tuple(  # type: ignore[assignment]
    [_step(c, t, was_killing) if t else None for c in range(_W) for t in range(_W)]
    for was_killing in (False, True)
)


# The columns (in snapshots by these names) and their array typecodes.
COLUMNS: dict[str, str] = {
    "state": "B",
    "previous": "B",
    "job": "i",  # code in the index's Strings
    "instance": "i",  # code in the index's Strings
    "agent": "i",  # code in the index's Strings
    "nid": "q",
    "time": "d",
    "failures": "I",
    "effects": "B",
}


class SchedulerView:
    """task id -> SchedulerTask (columns), plus the latest illegal report per task."""

    __slots__ = (
        "index",
        "illegal",
        "illegal_count",
        "last_nid",
        "_count",
        "_state",
        "_previous",
        "_job",
        "_instance",
        "_agent",
        "_nid",
        "_time",
        "_failures",
        "_effects",
        "_tasks",
        "_columns",
        "_values",
    )

    def __init__(self, index: TaskIndex | None = None, columns: dict[str, bytes] | None = None):
        """A view over `index` (a new one if None), its columns empty or read from `columns`."""
        self.index = TaskIndex() if index is None else index
        self.illegal: dict[str, IllegalReport] = {}
        self.illegal_count = 0
        self.last_nid = 0
        data = columns or {}
        for name, typecode in COLUMNS.items():
            setattr(self, "_" + name, self.index.column(typecode, data.get(name)))
        self._count = len(self.index) - self._state[: len(self.index)].count(0)
        self._tasks = RowRecords(self, "scheduler tasks")
        # For record(): all columns in one load (they grow in place, never replaced).
        self._columns = tuple(getattr(self, "_" + name) for name in COLUMNS)
        self._values = self.index.strings.values

    # -- reading --------------------------------------------------------------------------------
    def get(self, task_id: str) -> str | None:
        """The scheduler state name, e.g. "RUNNING"; None if unknown or deleted."""
        row = self.index.rows.get(task_id)
        if row is None:
            return None
        state = STATES[self._state[row]]
        return None if state == "DELETED" else state

    def record(self, task_id: str) -> SchedulerTask | None:
        """The full record (also for DELETED tasks), or None. A copy: changing it changes
        nothing in the view."""
        row = self.index.rows.get(task_id)
        if row is None or not self._state[row]:
            return None
        return self._record(row)

    def changed(self, task_id: str) -> tuple[int, float] | None:
        """(nid, time) of the task's last state change, or None: two columns read (record
        builds the whole record; a drift of 100,000 tasks asks this of each)."""
        row = self.index.rows.get(task_id)
        if row is None or not self._state[row]:
            return None
        return self._nid[row], self._time[row]

    def _record(self, row: int) -> SchedulerTask:
        state, previous, job, instance, agent, nid, time, failures, effects = self._columns
        values = self._values
        return SchedulerTask(
            STATES[state[row]],  # type: ignore[arg-type]
            values[job[row]],
            values[instance[row]],
            values[agent[row]],
            nid[row],
            time[row],
            failures[row],
            STATES[previous[row]],
            EFFECTS[effects[row]],
        )

    def moved_to(self, task_id: str, nid: int) -> tuple[str, tuple[SideEffect, ...]] | None:
        """(state, side effects) if the event at `nid` changed the task's state, else None:
        two column reads, for per-event readers such as the saga."""
        row = self.index.rows.get(task_id)
        if row is None or self._nid[row] != nid or not self._state[row]:
            return None
        return STATES[self._state[row]], EFFECTS[self._effects[row]]  # type: ignore[return-value]

    def state_counts(self) -> dict[str, int]:
        """State name -> how many tasks are in it now (DELETED included): one pass over the
        state column in C, for gauges read every second at 100k tasks."""
        counts = Counter(self._state[: len(self.index)])
        counts.pop(0, None)
        return {STATES[code]: n for code, n in counts.items()}  # type: ignore[misc]

    @property
    def tasks(self) -> Mapping[str, SchedulerTask]:
        """task id -> SchedulerTask for every task this view knows (read-only)."""
        return self._tasks

    def __len__(self) -> int:
        return self._count

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SchedulerView):
            return NotImplemented
        return (
            self.last_nid == other.last_nid
            and self.illegal_count == other.illegal_count
            and self.illegal == other.illegal
            and self._count == other._count
            and all(other.record(task_id) == task for task_id, task in self.tasks.items())
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"SchedulerView({self._count} tasks, {len(self.illegal)} illegal reports, "
            f"last_nid={self.last_nid})"
        )

    def apply(self, notification_id: int, event: Any) -> SchedulerView:
        """evolve(self, notification_id, event)."""
        return evolve(self, notification_id, event)

    # -- the rules, on a row ----------------------------------------------------------------------
    def move(self, row: int | None, nid: int, time: float, task_id: str, target: int) -> bool:
        """Ask the lifecycle for current -> target (a state code); True if the task moved.

        `row` is the task's row, or None if the index has none. An illegal ask is recorded
        in `illegal`; a noop changes nothing."""
        if row is None:
            current = 0
            step = _STEPS[0][target]
        else:
            states = self._state
            current = states[row]
            step = _STEPS[self._previous[row] == _KILLING][current * _W + target]
        if step is None:
            return False
        if step[0]:  # allowed; never for current == 0: the lifecycle knows no move from nothing
            self._previous[row] = current  # type: ignore[index]
            states[row] = step[1]  # type: ignore[index]
            self._nid[row] = nid  # type: ignore[index]
            self._time[row] = time  # type: ignore[index]
            self._effects[row] = step[2]  # type: ignore[index]
            if step[3]:
                self._failures[row] += 1  # type: ignore[index]
            return True
        self.illegal[task_id] = IllegalReport(
            nid, time, STATES[current], STATES[target], step.classification, step.side_effects
        )
        self.illegal_count += 1
        return False

    def create(
        self, row: int | None, nid: int, time: float, task_id: str, job: Any, instance: Any
    ) -> int | None:
        """TaskCreated: a new task in PENDING, or a duplicate (a noop or illegal); the row."""
        if row is not None and self._state[row]:
            self.move(row, nid, time, task_id, _PENDING)
            return row
        if row is None:
            row = self.index.add(task_id)
        code = self.index.strings.code
        # Aurora creates the task in INIT and moves it to PENDING at once.
        self._state[row] = _PENDING
        self._previous[row] = _INIT
        self._job[row] = code(job)
        self._instance[row] = code(instance)
        self._agent[row] = 0
        self._nid[row] = nid
        self._time[row] = time
        self._failures[row] = 0
        self._effects[row] = _CREATED_EFFECTS
        self._count += 1
        return row

    def assign(self, row: int | None, nid: int, time: float, task_id: str, agent_id: Any) -> None:
        """TaskAssigned: move to ASSIGNED; if it moved, remember the agent."""
        if self.move(row, nid, time, task_id, _ASSIGNED):
            self._agent[row] = self.index.strings.code(agent_id)  # type: ignore[index]

    # -- snapshots --------------------------------------------------------------------------------
    def columns(self) -> dict[str, bytes]:
        """The columns as bytes, one cell per row of the index (see projections.snapshots)."""
        n = len(self.index)
        return {name: cells(getattr(self, "_" + name), n) for name in COLUMNS}

    def put(self, task_id: str, task: SchedulerTask) -> None:
        """Stores a whole record (reading old snapshots); the task must be new to the view."""
        row = self.index.rows.get(task_id)
        if row is None:
            row = self.index.add(task_id)
        elif self._state[row]:
            raise ValueError(f"task {task_id!r} is already in the scheduler view")
        code = self.index.strings.code
        self._state[row] = STATE_CODE[task.state]
        self._previous[row] = 0 if task.previous is None else STATE_CODE[task.previous]
        self._job[row] = code(task.job)
        self._instance[row] = code(task.instance)
        self._agent[row] = code(task.agent_id)
        self._nid[row] = task.nid
        self._time[row] = task.time
        self._failures[row] = task.failures
        self._effects[row] = EFFECTS_CODE[tuple(task.effects)]
        self._count += 1


# --- evolve: dispatch on the event's type ----------------------------------------------------


def _task_created(view: SchedulerView, nid: int, event: TaskCreated) -> None:
    task_id = event.task_id
    view.create(view.index.rows.get(task_id), nid, event.time, task_id, event.job, event.instance)


def _task_assigned(view: SchedulerView, nid: int, event: TaskAssigned) -> None:
    task_id = event.task_id
    view.assign(view.index.rows.get(task_id), nid, event.time, task_id, event.agent_id)


def _kill_requested(view: SchedulerView, nid: int, event: KillRequested) -> None:
    task_id = event.task_id
    view.move(view.index.rows.get(task_id), nid, event.time, task_id, _KILLING)


def _status_update(view: SchedulerView, nid: int, event: StatusUpdateReceived) -> None:
    task_id = event.task_id
    view.move(view.index.rows.get(task_id), nid, event.time, task_id, TARGET_OF_MESOS[event.state])


def _marked_lost(view: SchedulerView, nid: int, event: TaskMarkedLost) -> None:
    # The scheduler's own verdict (a MARK_LOST command of the saga took effect).
    task_id = event.task_id
    view.move(view.index.rows.get(task_id), nid, event.time, task_id, _LOST)


# Dispatch on the event's type. Kinds not listed (framework events, future kinds) leave the
# view unchanged.
HANDLERS: dict[type, Callable[[SchedulerView, int, Any], None]] = {
    TaskCreated: _task_created,
    TaskAssigned: _task_assigned,
    KillRequested: _kill_requested,
    StatusUpdateReceived: _status_update,
    TaskMarkedLost: _marked_lost,
}


def evolve(view: SchedulerView, notification_id: int, event: Any) -> SchedulerView:
    """Apply one event (in place) and return the view."""
    handler = HANDLERS.get(type(event))
    if handler is not None:
        handler(view, notification_id, event)
    view.last_nid = notification_id
    return view


def rebuild(history: Iterable[tuple[int, Any]]) -> SchedulerView:
    """A view built from scratch from (notification id, event) pairs."""
    view = SchedulerView()
    for nid, event in history:
        evolve(view, nid, event)
    return view

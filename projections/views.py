"""The three views (scheduler, Mesos, drift) evolved together, in the only valid order.

Views.apply is the projections' hot path: live (the Ledger's committing thread), on replay
(engine/replay.py's Python path; the compiled kernel mirrors it) and for snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from engine.events import (
    KillRequested,
    StatusUpdateReceived,
    TaskAssigned,
    TaskCreated,
    TaskMarkedLost,
)
from projections import drift_view as _drift
from projections import mesos_view as _mesos
from projections import scheduler_view as _scheduler
from projections.drift_view import _SW, CELL_AT, DriftView
from projections.mesos_view import STATE_CODE as MESOS_CODE
from projections.mesos_view import MesosView
from projections.scheduler_view import TARGET_OF_MESOS, SchedulerView

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
                _drift.evolve(drift, notification_id, event)
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

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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine.events import KillRequested, StatusUpdateReceived, TaskAssigned, TaskCreated
from engine.lifecycle import Outcome, ScheduleStatus, SideEffect, transition
from engine.mesos_states import BY_NAME as MESOS_STATES

# Mesos state name -> scheduler state name, as plain str (cheap to hash on the replay path).
_MESOS_TO_SCHEDULER: dict[str, str] = {
    name: info.scheduler.value for name, info in MESOS_STATES.items()
}
_DELETED = ScheduleStatus.DELETED.value
_KILLING = ScheduleStatus.KILLING.value


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


@dataclass(slots=True)
class SchedulerView:
    """task id -> SchedulerTask, plus the latest illegal report per task."""

    tasks: dict[str, SchedulerTask] = field(default_factory=dict)
    illegal: dict[str, IllegalReport] = field(default_factory=dict)
    illegal_count: int = 0
    last_nid: int = 0

    def get(self, task_id: str) -> str | None:
        """The scheduler state name, e.g. "RUNNING"; None if unknown or deleted."""
        task = self.tasks.get(task_id)
        if task is None or task.state == _DELETED:
            return None
        return task.state

    def record(self, task_id: str) -> SchedulerTask | None:
        """The full record (also for DELETED tasks), or None."""
        return self.tasks.get(task_id)

    def apply(self, notification_id: int, event: Any) -> SchedulerView:
        """evolve(self, notification_id, event)."""
        return evolve(self, notification_id, event)


def _move(
    view: SchedulerView, nid: int, event: Any, task_id: str, target: str
) -> SchedulerTask | None:
    """Ask the lifecycle for current -> target; return the task if it moved."""
    task = view.tasks.get(task_id)
    current = None if task is None else task.state
    result = transition(current, target, was_killing=task is not None and task.previous == _KILLING)
    if result.allowed:
        task.previous = current
        task.state = _DELETED if SideEffect.DELETE in result.side_effects else target
        task.nid = nid
        task.time = event.time
        task.effects = result.side_effects
        if SideEffect.INCREMENT_FAILURES in result.side_effects:
            task.failures += 1
        return task
    if result.outcome is not Outcome.NOOP:
        view.illegal[task_id] = IllegalReport(
            nid, event.time, current, target, result.classification, result.side_effects
        )
        view.illegal_count += 1
    return None


def _task_created(view: SchedulerView, nid: int, event: TaskCreated) -> None:
    if event.task_id in view.tasks:
        _move(view, nid, event, event.task_id, "PENDING")  # a duplicate: noop or illegal
        return
    # Aurora creates the task in INIT and moves it to PENDING at once.
    result = transition(ScheduleStatus.INIT, ScheduleStatus.PENDING)
    view.tasks[event.task_id] = SchedulerTask(
        "PENDING", event.job, event.instance, None, nid, event.time, 0, "INIT", result.side_effects
    )


def _task_assigned(view: SchedulerView, nid: int, event: TaskAssigned) -> None:
    task = _move(view, nid, event, event.task_id, "ASSIGNED")
    if task is not None:
        task.agent_id = event.agent_id


def _kill_requested(view: SchedulerView, nid: int, event: KillRequested) -> None:
    _move(view, nid, event, event.task_id, "KILLING")


def _status_update(view: SchedulerView, nid: int, event: StatusUpdateReceived) -> None:
    _move(view, nid, event, event.task_id, _MESOS_TO_SCHEDULER[event.state])


# Dispatch on the event's type. Kinds not listed (framework events, future kinds) leave the
# view unchanged.
HANDLERS: dict[type, Callable[[SchedulerView, int, Any], None]] = {
    TaskCreated: _task_created,
    TaskAssigned: _task_assigned,
    KillRequested: _kill_requested,
    StatusUpdateReceived: _status_update,
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

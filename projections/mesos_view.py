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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.events import (
    FrameworkDisconnected,
    FrameworkRegistered,
    FrameworkReregistered,
    StatusUpdateReceived,
)
from engine.mesos_states import BY_NAME as MESOS_STATES
from engine.mesos_states import FINAL, NOT_STORED

# Updates that claim the task is alive (non-terminal and stored by the master).
_ALIVE: frozenset[str] = frozenset(
    name for name, info in MESOS_STATES.items() if not info.terminal and info.stored_by_master
)


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


@dataclass(slots=True)
class MesosView:
    """task id -> MesosTask, plus the framework's connection facts."""

    tasks: dict[str, MesosTask] = field(default_factory=dict)
    framework_id: str | None = None
    master_id: str | None = None
    connected: bool = False
    last_nid: int = 0

    def get(self, task_id: str) -> str | None:
        """The latest Mesos state name, e.g. "TASK_RUNNING" (or "TASK_UNKNOWN"); None if none."""
        task = self.tasks.get(task_id)
        return None if task is None else task.state

    def record(self, task_id: str) -> MesosTask | None:
        """The full record, or None."""
        return self.tasks.get(task_id)

    def holds(self, task_id: str) -> bool:
        """Whether, as far as we know, the master holds a state for the task."""
        task = self.tasks.get(task_id)
        return task is not None and task.state not in NOT_STORED

    def apply(self, notification_id: int, event: Any) -> MesosView:
        """evolve(self, notification_id, event)."""
        return evolve(self, notification_id, event)


def _status_update(view: MesosView, nid: int, event: StatusUpdateReceived) -> None:
    task = view.tasks.get(event.task_id)
    if task is None:
        view.tasks[event.task_id] = MesosTask(
            event.state,
            event.source,
            event.reason,
            event.agent_id,
            event.timestamp,
            nid,
            event.time,
            event.is_reconciliation_answer,
        )
        return
    if task.state in FINAL and event.state in _ALIVE:
        task.stale += 1
        task.stale_nid = nid
        return
    task.state = event.state
    task.source = event.source
    task.reason = event.reason
    if event.agent_id is not None:
        task.agent_id = event.agent_id
    task.timestamp = event.timestamp
    task.nid = nid
    task.time = event.time
    task.is_reconciliation_answer = event.is_reconciliation_answer


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

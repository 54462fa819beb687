"""Launches in flight: tasks the scheduler launched that Mesos has not spoken of yet.

A launched task is ASSIGNED for the scheduler and absent for Mesos until its first update
arrives: the drift table puts it in absent/non-terminal, the cell an explicit
reconciliation finds. During a launch of 200 tasks that is 200 "disagreements" that are
nothing but updates on their way, and they would drown the real drift. A launch is in
flight, not drift, while

- the scheduler holds the task ASSIGNED (launched, no update applied yet),
- Mesos has never spoken of it (no record in the Mesos view), and
- the saga has not asked about it as overdue (R-TRANSIENT-RECONCILE, after the transient
  timeout): from then on the log itself says the update is late, and it counts as drift.

The third point needs no clock: it reads the saga's own record of what it asked, so the
answer is the same for a live log, a replay and any --as-of. Pure: data in, data out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.drift_table import Cell, Holds
from engine.lifecycle import ScheduleStatus
from projections.drift_view import Drift

LAUNCHING = ScheduleStatus.ASSIGNED.value
# The drift cell a launch in flight sits in: absent for Mesos, non-terminal for the scheduler.
CELL = Cell(Holds.ABSENT, Holds.NON_TERMINAL)


def in_flight(state: Any, task_id: str) -> bool:
    """Whether `task_id` is a launch in flight in `state` (a LedgerState: views and saga)."""
    views = state.views
    return (
        views.scheduler.get(task_id) == LAUNCHING
        and views.mesos.record(task_id) is None
        and task_id not in state.saga.transient_asked
    )


def split(state: Any, drift: Iterable[Drift]) -> tuple[list[Drift], list[Drift]]:
    """The disagreements apart from the launches in flight: (drift, in flight)."""
    disagreeing: list[Drift] = []
    launching: list[Drift] = []
    for d in drift:
        # Only an ASSIGNED task Mesos never named can be in flight: test the cheap part first.
        if d.mesos_state is None and d.scheduler_state == LAUNCHING and in_flight(state, d.task_id):
            launching.append(d)
        else:
            disagreeing.append(d)
    return disagreeing, launching


def count(views: Any, saga: Any) -> int:
    """How many launches are in flight (for a gauge read every second): 0 at once when the
    scheduler holds no task ASSIGNED (one pass over its state column, in C); else one look
    per task the index holds."""
    if not views.scheduler.state_counts().get(LAUNCHING):
        return 0
    # in_flight's three tests, inlined: a call per task doubles the time (64 ms against 33 ms
    # at 100k tasks), and the gauges hold the views' read lock meanwhile.
    asked = saga.transient_asked
    scheduler, mesos = views.scheduler, views.mesos
    return sum(
        1
        for task_id in views.index.rows
        if task_id not in asked
        and scheduler.get(task_id) == LAUNCHING
        and mesos.record(task_id) is None
    )

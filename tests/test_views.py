"""The scheduler view and the Mesos view: scenarios and properties over random histories."""

from __future__ import annotations

import copy

import msgpack
from builders import status_event
from expected_tables import EXPECTED_MAPPING
from hypothesis import example, given, settings
from hypothesis import strategies as st
from view_histories import TASK_IDS, histories, number, run

from engine.events import (
    FrameworkDisconnected,
    FrameworkRegistered,
    FrameworkReregistered,
    KillRequested,
    StatusUpdateReceived,
    TaskAssigned,
    TaskCreated,
)
from engine.lifecycle import SideEffect, transition
from engine.wire import from_wire, to_wire, topic_of
from projections import mesos_view as mv
from projections import scheduler_view as sv
from projections.views import Views

# --- scheduler view scenarios -----------------------------------------------------------------


def test_happy_path():
    views = run(
        TaskCreated(0.0, None, "t1", "job", 0),
        TaskAssigned(0.0, None, "t1", "a1"),
        status_event("t1", "TASK_STAGING", agent_id="a1"),
        status_event("t1", "TASK_RUNNING", agent_id="a1"),
        status_event("t1", "TASK_FINISHED", agent_id="a1"),
    )
    task = views.scheduler.record("t1")
    assert views.scheduler.get("t1") == "FINISHED"
    assert (task.job, task.instance, task.agent_id, task.nid, task.time) == ("job", 0, "a1", 5, 5.0)
    assert task.previous == "RUNNING" and task.failures == 0
    assert views.mesos.get("t1") == "TASK_FINISHED"
    assert views.scheduler.illegal == {}


def test_illegal_report_is_recorded_not_applied():
    views = run(
        TaskCreated(0.0, None, "t1", "job", 0),
        TaskAssigned(0.0, None, "t1", "a1"),
        status_event("t1", "TASK_FAILED"),
        status_event("t1", "TASK_RUNNING"),
    )
    assert views.scheduler.get("t1") == "FAILED"
    assert views.scheduler.record("t1").nid == 3
    report = views.scheduler.illegal["t1"]
    assert report.nid == 4 and report.current == "FAILED" and report.target == "RUNNING"
    assert report.classification == "illegal: terminal task reported RUNNING"
    assert report.side_effects == (SideEffect.KILL,)
    assert views.scheduler.illegal_count == 1


def test_unknown_task_reported_running_stays_unknown_to_the_scheduler():
    views = run(status_event("ghost", "TASK_RUNNING", agent_id="a2"))
    assert views.scheduler.get("ghost") is None and views.scheduler.record("ghost") is None
    assert (
        views.scheduler.illegal["ghost"].classification == "illegal: unknown task reported RUNNING"
    )
    assert views.mesos.get("ghost") == "TASK_RUNNING"


def test_noop_is_not_an_illegal_report():
    views = run(
        TaskCreated(0.0, None, "t1", "job", 0),
        TaskAssigned(0.0, None, "t1", "a1"),
        status_event("t1", "TASK_RUNNING"),
        status_event("t1", "TASK_RUNNING"),
    )
    assert views.scheduler.illegal == {} and views.scheduler.record("t1").nid == 3


def test_killing_a_pending_task_deletes_it():
    views = run(TaskCreated(0.0, None, "t1", "job", 0), KillRequested(0.0, None, "t1"))
    assert views.scheduler.get("t1") is None
    assert views.scheduler.record("t1").state == "DELETED"
    assert views.scheduler.record("t1").effects == (SideEffect.DELETE,)


def test_failures_are_counted_and_effects_recorded():
    views = run(
        TaskCreated(0.0, None, "t1", "job", 0),
        TaskAssigned(0.0, None, "t1", "a1"),
        status_event("t1", "TASK_FAILED"),
    )
    task = views.scheduler.record("t1")
    assert task.failures == 1
    assert task.effects == (
        SideEffect.INCREMENT_FAILURES,
        SideEffect.SAVE_STATE,
        SideEffect.RESCHEDULE,
    )


def test_task_killing_maps_to_killed():
    views = run(
        TaskCreated(0.0, None, "t1", "job", 0),
        TaskAssigned(0.0, None, "t1", "a1"),
        status_event("t1", "TASK_KILLING"),
    )
    assert views.scheduler.get("t1") == "KILLED" and views.mesos.get("t1") == "TASK_KILLING"


def test_partitioned_while_killing_is_lost_without_reschedule():
    views = run(
        TaskCreated(0.0, None, "t1", "job", 0),
        TaskAssigned(0.0, None, "t1", "a1"),
        status_event("t1", "TASK_RUNNING"),
        KillRequested(0.0, None, "t1"),
        status_event("t1", "TASK_UNREACHABLE"),
        status_event("t1", "TASK_LOST"),
    )
    task = views.scheduler.record("t1")
    assert task.state == "LOST" and task.previous == "PARTITIONED"
    assert SideEffect.RESCHEDULE not in task.effects and SideEffect.KILL in task.effects


# --- Mesos view scenarios ---------------------------------------------------------------------


def test_reconciliation_answer_is_the_latest_state():
    answer = dict(source="SOURCE_MASTER", reason="REASON_RECONCILIATION")
    views = run(
        status_event("t1", "TASK_RUNNING", agent_id="a1", source="SOURCE_EXECUTOR", uuid="u"),
        status_event("t1", "TASK_LOST", is_reconciliation_answer=True, **answer),
    )
    task = views.mesos.record("t1")
    assert task.state == "TASK_LOST" and task.is_reconciliation_answer
    assert task.agent_id == "a1"  # the answer named no agent: keep the one we knew
    assert (task.source, task.reason, task.nid) == ("SOURCE_MASTER", "REASON_RECONCILIATION", 2)


def test_task_unknown_is_recorded_but_not_held():
    views = run(
        status_event("t1", "TASK_RUNNING", agent_id="a1"),
        status_event("t1", "TASK_UNKNOWN", source="SOURCE_MASTER", reason="REASON_RECONCILIATION"),
    )
    assert views.mesos.get("t1") == "TASK_UNKNOWN"
    assert not views.mesos.holds("t1")
    assert not views.mesos.holds("never-seen")
    assert run(status_event("t1", "TASK_RUNNING")).mesos.holds("t1")


def test_late_alive_update_after_a_final_state_is_stale():
    views = run(
        status_event("t1", "TASK_FINISHED", source="SOURCE_MASTER", reason="REASON_RECONCILIATION"),
        status_event("t1", "TASK_RUNNING", source="SOURCE_EXECUTOR", uuid="u1"),
    )
    task = views.mesos.record("t1")
    assert task.state == "TASK_FINISHED" and task.nid == 1
    assert task.stale == 1 and task.stale_nid == 2


def test_lost_task_can_come_back():
    views = run(
        status_event("t1", "TASK_LOST", reason="REASON_AGENT_REMOVED"),
        status_event("t1", "TASK_RUNNING", reason="REASON_AGENT_REREGISTERED"),
    )
    assert views.mesos.get("t1") == "TASK_RUNNING" and views.mesos.record("t1").stale == 0


def test_framework_events():
    views = run(
        FrameworkRegistered(0.0, None, "fw", "m1"),
        FrameworkDisconnected(0.0, None, "m1"),
    )
    assert (views.mesos.framework_id, views.mesos.master_id) == ("fw", "m1")
    assert not views.mesos.connected
    views.apply(3, FrameworkReregistered(3.0, None, "fw", "m2"))
    assert views.mesos.connected and views.mesos.master_id == "m2" and views.mesos.last_nid == 3


def test_unknown_event_kinds_are_ignored():
    views = run(TaskCreated(0.0, None, "t1", "job", 0))
    before = copy.deepcopy(views)
    views.apply(2, ("not", "an", "event"))
    assert views.scheduler.tasks == before.scheduler.tasks
    assert views.mesos.tasks == before.mesos.tasks
    assert views.drift.cells == before.drift.cells
    assert views.scheduler.last_nid == views.mesos.last_nid == 2


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=300)
@given(histories, st.data())
def test_incremental_views_equal_views_rebuilt_from_scratch(history, data):
    split = data.draw(st.integers(0, len(history)))
    live = Views()
    for nid, event in history[:split]:
        live.apply(nid, event)
        # Reads in between must not change anything.
        live.drift.drift()
        live.scheduler.get(event.task_id if hasattr(event, "task_id") else "t1")
    resumed = copy.deepcopy(live)  # a snapshot taken mid-way, then resumed
    for nid, event in history[split:]:
        live.apply(nid, event)
        resumed.apply(nid, event)
    rebuilt = Views.rebuild(history)
    assert live == rebuilt
    assert resumed == rebuilt
    assert sv.rebuild(history) == rebuilt.scheduler
    assert mv.rebuild(history) == rebuilt.mesos


@settings(max_examples=200)
@given(histories)
def test_tasks_evolve_independently(history):
    full = Views.rebuild(history)
    for task_id in TASK_IDS:
        own = [(nid, e) for nid, e in history if getattr(e, "task_id", None) == task_id]
        alone = Views.rebuild(own)
        assert alone.scheduler.record(task_id) == full.scheduler.record(task_id)
        assert alone.scheduler.illegal.get(task_id) == full.scheduler.illegal.get(task_id)
        assert alone.mesos.record(task_id) == full.mesos.record(task_id)
        assert alone.drift.cells.get(task_id) == full.drift.cells.get(task_id)


@settings(max_examples=100)
@given(histories)
def test_views_from_decoded_events_are_the_same(history):
    decoded = [
        (nid, from_wire(topic_of(e), msgpack.unpackb(msgpack.packb(to_wire(e)))))
        for nid, e in history
    ]
    assert Views.rebuild(decoded) == Views.rebuild(history)


_SCHEDULER_TARGET = {
    TaskAssigned: lambda e: "ASSIGNED",
    KillRequested: lambda e: "KILLING",
    TaskCreated: lambda e: "PENDING",
}
# The mapping as Aurora documents it, written once in tests/expected_tables.py.
_MESOS_TO_SCHEDULER = EXPECTED_MAPPING
_FINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE"}
_ALIVE = {"TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_UNREACHABLE"}


@settings(max_examples=300)
@given(histories)
# Always cover the stale rule: a final state, then a late "alive" update.
@example(number([status_event("t4", "TASK_FINISHED"), status_event("t4", "TASK_STAGING")]))
def test_views_agree_with_a_direct_model(history):
    """A per-task fold written from the reference tables, not from the views' code."""
    views = Views.rebuild(history)
    for task_id in TASK_IDS:
        state, failures, mesos, known = None, 0, None, False
        for _, e in history:
            if getattr(e, "task_id", None) != task_id:
                continue
            if type(e) is StatusUpdateReceived:
                if not (mesos in _FINAL and e.state in _ALIVE):
                    mesos = e.state
                target = _MESOS_TO_SCHEDULER[e.state]
            else:
                target = _SCHEDULER_TARGET[type(e)](e)
            if type(e) is TaskCreated and not known:
                state, known = "PENDING", True
                continue
            result = transition(state, target)
            if result.allowed:
                state = "DELETED" if SideEffect.DELETE in result.side_effects else target
                failures += SideEffect.INCREMENT_FAILURES in result.side_effects
        assert views.scheduler.get(task_id) == (None if state == "DELETED" else state)
        if known:
            assert views.scheduler.record(task_id).failures == failures
        else:
            assert views.scheduler.record(task_id) is None
        assert views.mesos.get(task_id) == mesos

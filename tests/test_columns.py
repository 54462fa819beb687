"""The views' columnar storage: the shared task index, snapshots (format 2 and 1), dedup."""

from __future__ import annotations

import copy
import sys
from array import array
from dataclasses import astuple

import pytest
from builders import status_event
from hypothesis import given, settings
from view_histories import histories, run

from engine.dedup import LastUuids
from engine.events import TaskAssigned, TaskCreated
from engine.ledger import LedgerState
from projections import scheduler_view as sv
from projections import snapshots
from projections.columns import TaskIndex
from projections.drift_view import DriftView
from projections.mesos_view import MesosView
from projections.scheduler_view import SchedulerView
from projections.snapshots import SnapshotError
from projections.views import Views


def _v1(views: Views) -> dict:
    """The views as format 1 wrote them (one array per task and view)."""
    s, m, d = views.scheduler, views.mesos, views.drift
    return {
        "scheduler": {
            "tasks": [
                [task_id, *[list(v) if type(v) is tuple else v for v in astuple(t)]]
                for task_id, t in s.tasks.items()
            ],
            "illegal": [[task_id, *report] for task_id, report in s.illegal.items()],
            "illegal_count": s.illegal_count,
            "last_nid": s.last_nid,
        },
        "mesos": {
            "tasks": [[task_id, *astuple(t)] for task_id, t in m.tasks.items()],
            "framework_id": m.framework_id,
            "master_id": m.master_id,
            "connected": m.connected,
            "last_nid": m.last_nid,
        },
        "drift": {
            "cells": [
                [task_id, cell.mesos.value, cell.scheduler.value, since]
                for task_id, (cell, since) in d.cells.items()
            ],
            "last_nid": d.last_nid,
        },
    }


@settings(max_examples=40, deadline=None)
@given(histories)
def test_format_1_snapshots_are_still_read(history):
    views = Views.rebuild(history)
    assert snapshots.decode_views(_v1(views)) == views


@settings(max_examples=40, deadline=None)
@given(histories)
def test_codes_are_remapped_when_the_stored_tables_differ(history):
    views = Views.rebuild(history)
    data = snapshots.encode_views(views)
    # A build whose scheduler state table lists the states in reverse order.
    states = data["scheduler"]["states"]
    order = [0, *range(len(states) - 1, 0, -1)]  # new code -> old code
    data["scheduler"]["states"] = [states[old] for old in order]
    to_new = bytes(order.index(old) for old in range(len(states))) + bytes(256 - len(states))
    for name in ("state", "previous"):
        data["scheduler"]["columns"][name] = data["scheduler"]["columns"][name].translate(to_new)
    assert snapshots.decode_views(data) == views


@settings(max_examples=20, deadline=None)
@given(histories)
def test_columns_written_in_the_other_byte_order_are_swapped(history):
    views = Views.rebuild(history)
    data = snapshots.encode_views(views)
    data["byteorder"] = "big" if sys.byteorder == "little" else "little"
    for part, columns in (
        ("scheduler", sv.COLUMNS),
        ("mesos", snapshots._mesos.COLUMNS),
        ("drift", snapshots._drift.COLUMNS),
    ):
        for name, typecode in columns.items():
            col = array(typecode, data[part]["columns"][name])
            col.byteswap()
            data[part]["columns"][name] = col.tobytes()
    assert snapshots.decode_views(data) == views


def _fleet() -> Views:
    return run(
        TaskCreated(0.0, None, "t1", "job", 0),
        TaskAssigned(0.0, None, "t1", "a1"),
        status_event("t1", "TASK_RUNNING", agent_id="a1"),
        status_event("ghost", "TASK_RUNNING", agent_id="a2"),
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d["scheduler"]["columns"].update(nid=b"\0" * 3), "column 'nid'"),
        (lambda d: d["scheduler"]["columns"].update(state=b"\xff\0"), "codes outside"),
        (lambda d: d["mesos"]["columns"].update(agent=b"\xff" * 8), "codes outside"),
        (lambda d: d.update(tasks=["t1", "t1"]), "twice"),
        (lambda d: d["scheduler"].update(states=[None, "SLEEPING"]), "does not know"),
        (lambda d: d.update(strings=["not None first"]), "intern table"),
        (lambda d: d["drift"].pop("columns"), "shape"),
    ],
)
def test_a_snapshot_of_the_wrong_shape_is_refused(damage, message):
    data = snapshots.encode_views(_fleet())
    damage(data)
    with pytest.raises(SnapshotError, match=message):
        snapshots.decode_views(data)


def test_views_share_one_index_and_each_view_lists_only_its_tasks():
    views = _fleet()
    assert list(views.index.rows) == ["t1", "ghost"]
    assert set(views.scheduler.tasks) == {"t1"} and len(views.scheduler.tasks) == 1
    assert set(views.mesos.tasks) == {"t1", "ghost"} and "ghost" not in views.scheduler.tasks
    assert views.scheduler.tasks.get("ghost") is None and views.scheduler.record("ghost") is None
    with pytest.raises(KeyError):
        views.scheduler.tasks["ghost"]
    assert dict(views.drift.disagreements) == {"ghost": views.drift.cells["ghost"]}
    # A record is a copy: changing it changes nothing in the view.
    views.scheduler.record("t1").state = "LOST"
    assert views.scheduler.get("t1") == "RUNNING"


def test_standalone_views_equal_the_ones_inside_views():
    history = [
        (1, TaskCreated(1.0, None, "t1", "job", 0)),
        (2, status_event("ghost", "TASK_RUNNING")._replace(time=2.0)),
    ]
    views = Views.rebuild(history)
    alone = sv.rebuild(history)
    assert list(alone.index.rows) == ["t1"]  # the ghost got no row in the scheduler's index
    assert alone == views.scheduler


def test_the_drift_view_needs_one_index():
    with pytest.raises(ValueError, match="one TaskIndex"):
        DriftView(SchedulerView(), MesosView())
    index = TaskIndex()
    DriftView(SchedulerView(index), MesosView(index))


def test_a_deep_copy_is_independent():
    views = _fleet()
    copied = copy.deepcopy(views)
    assert copied == views and copied.index is not views.index
    assert copied.mesos.index is copied.index and copied.drift.index is copied.index
    copied.apply(5, status_event("t1", "TASK_FINISHED")._replace(time=5.0))
    assert views.mesos.get("t1") == "TASK_RUNNING" and copied.mesos.get("t1") == "TASK_FINISHED"
    assert copied != views


def test_many_tasks_grow_every_column_together():
    views = Views()
    for t in range(5000):
        views.apply(2 * t + 1, TaskCreated(1.0, None, f"t{t}", "j", t))
        views.apply(2 * t + 2, status_event(f"m{t}", "TASK_STAGING"))
    assert len(views.index) == 10_000
    assert views.scheduler.record("t4999").instance == 4999
    assert views.mesos.get("m4999") == "TASK_STAGING" and views.scheduler.get("m4999") is None
    assert len(views.drift.cells) == 10_000 and len(views.drift.disagreements) == 5000
    assert snapshots.decode_views(snapshots.encode_views(views)) == views


CANONICAL = "AAECAwQFBgcICQoLDA0ODw=="


def test_dedup_memory_keeps_every_uuid_exactly():
    index = TaskIndex()
    memory = LastUuids(index)
    odd = {"short": "abc", "nul": "\0" * 24, "wide": "é" * 24}
    memory.remember("t1", CANONICAL)
    for task_id, uuid in odd.items():
        memory.remember(task_id, uuid)
    assert dict(memory) == {"t1": CANONICAL, **odd} and len(memory) == 4
    assert memory.get("never") is None and "never" not in memory
    memory.remember("short", CANONICAL)  # from the extras into the slots
    memory.remember("t1", "x")  # and back
    assert memory["short"] == CANONICAL and memory["t1"] == "x" and len(memory) == 4
    again = LastUuids(index, memory.data())
    assert dict(again) == dict(memory)
    # A plain dict (format 1 snapshots, or callers) is read into a memory.
    assert dict(LastUuids(TaskIndex(), dict(memory))) == dict(memory)


def test_ledger_state_round_trips_the_dedup_memory_through_a_snapshot():
    state = LedgerState()
    state.apply(1, status_event("t1", "TASK_RUNNING", uuid=CANONICAL))
    state.apply(2, status_event("t2", "TASK_RUNNING", uuid="not base64 of 16 bytes"))
    state.apply(3, status_event("t3", "TASK_RUNNING"))
    _, _, parts = snapshots.decode(snapshots.encode(3, 0.0, state.parts()))
    loaded = LedgerState.from_parts(parts)
    assert dict(loaded.last_uuid) == {"t1": CANONICAL, "t2": "not base64 of 16 bytes"}
    assert loaded.views == state.views
    assert loaded.last_uuid.index is loaded.views.index

"""Events: the registry, the wire codec, and TaskStatus validation."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack
import pytest
from addict import Dict as AddictDict
from hypothesis import given
from hypothesis import strategies as st

from engine import events as ev
from engine import task_status
from engine import wire as wire_form
from engine.events import EMPTY, EVENT_KINDS, KINDS, StatusUpdateReceived, TaskCreated
from engine.mesos_states import TaskState, UnknownTaskState
from engine.task_status import (
    InvalidStatusField,
    MalformedStatus,
    MissingStatusField,
    UnknownStatusState,
    status_from_mesos,
)
from engine.wire import NEWER_FIELDS, MalformedWire, UnknownTopic, from_wire, to_wire

# --- strategies -------------------------------------------------------------------------------

ids = st.text(min_size=1, max_size=12)
maybe_ids = st.none() | ids
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
causations = st.none() | st.integers(min_value=1, max_value=2**63 - 1)
# Values msgpack carries unchanged (no tuples, no NaN: NaN != NaN).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
wire_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
extras = st.dictionaries(st.text(max_size=10), wire_values, max_size=3)
labels = st.none() | st.lists(
    st.fixed_dictionaries({"key": st.text(max_size=5), "value": st.text(max_size=5)}), max_size=3
)

event_strategies = {
    "TaskCreated": st.builds(
        TaskCreated, times, causations, ids, ids, st.integers(0, 10_000), extras
    ),
    "TaskAssigned": st.builds(ev.TaskAssigned, times, causations, ids, ids, extras),
    "KillRequested": st.builds(ev.KillRequested, times, causations, ids, extras),
    "StatusUpdateReceived": st.builds(
        StatusUpdateReceived,
        times,
        causations,
        ids,
        st.sampled_from([s.value for s in TaskState]),
        maybe_ids,
        maybe_ids,
        st.none() | st.sampled_from(["SOURCE_MASTER", "SOURCE_AGENT", "SOURCE_EXECUTOR"]),
        st.none() | st.sampled_from(["REASON_RECONCILIATION", "REASON_AGENT_REMOVED"]),
        st.none() | st.text(max_size=20),
        st.none() | times,
        maybe_ids,
        st.none() | st.booleans(),
        labels,
        st.booleans(),
        extras,
    ),
    "FrameworkRegistered": st.builds(ev.FrameworkRegistered, times, causations, ids, ids, extras),
    "FrameworkReregistered": st.builds(
        ev.FrameworkReregistered, times, causations, ids, ids, extras
    ),
    "FrameworkDisconnected": st.builds(
        ev.FrameworkDisconnected, times, causations, maybe_ids, extras
    ),
    "FrameworkError": st.builds(ev.FrameworkError, times, causations, st.text(), extras),
    "SchedulerFault": st.builds(ev.SchedulerFault, times, causations, ids, st.text(), extras),
    "ClockStepped": st.builds(ev.ClockStepped, times, causations, times, times, extras),
}
# The reconciliation saga's kinds (engine/reconciliation.py, saga.py, outbox.py).
nids = st.integers(min_value=1, max_value=2**63 - 1)
counts = st.integers(min_value=0, max_value=10**6)
small_maps = st.dictionaries(st.text(max_size=10), counts, max_size=3)
event_strategies |= {
    "ReconciliationStarted": st.builds(
        ev.ReconciliationStarted, times, causations, ids, ids, ids, times, extras
    ),
    "ReconciliationRound": st.builds(
        ev.ReconciliationRound,
        *(times, causations, ids, counts, counts, counts, counts, counts, times, extras),
    ),
    "ReconciliationCompleted": st.builds(
        ev.ReconciliationCompleted,
        *(times, causations, ids, ids, ids, counts, counts, counts, counts, counts, times),
        *(small_maps, small_maps, extras),
    ),
    "ReconciliationSuperseded": st.builds(
        ev.ReconciliationSuperseded, times, causations, ids, ids, ids, extras
    ),
    "CommandIssued": st.builds(
        ev.CommandIssued,
        *(times, causations, ids, maybe_ids, ids, st.lists(nids, max_size=3), maybe_ids),
        *(st.none() | st.lists(ids, max_size=3), st.integers(1, 9), st.none() | nids),
        *(st.none() | times, st.booleans(), extras),
    ),
    "CommandDispatched": st.builds(ev.CommandDispatched, times, causations, nids, extras),
    "CommandFailed": st.builds(ev.CommandFailed, times, causations, nids, ids, times, extras),
    "CommandConfirmed": st.builds(ev.CommandConfirmed, times, causations, nids, ids, extras),
    "CommandCancelled": st.builds(ev.CommandCancelled, times, causations, nids, ids, extras),
    "DispatchHalted": st.builds(
        ev.DispatchHalted, times, causations, ids, counts, counts, times, times, extras
    ),
    "DispatchResumed": st.builds(ev.DispatchResumed, times, causations, ids, ids, extras),
    "SagaReacted": st.builds(ev.SagaReacted, times, causations, nids, extras),
    "TaskMarkedLost": st.builds(ev.TaskMarkedLost, times, causations, ids, ids, nids, extras),
    "LeaderElected": st.builds(ev.LeaderElected, times, causations, nids, ids, extras),
}
# The operator's orders (tools/operator).
event_strategies |= {
    "KillOrdered": st.builds(ev.KillOrdered, times, causations, ids, ids, st.text(), extras),
    "ReconciliationOrdered": st.builds(
        ev.ReconciliationOrdered, times, causations, ids, ids, st.text(), extras
    ),
    "JobScaled": st.builds(
        ev.JobScaled, times, causations, ids, counts, counts, ids, st.text(), extras
    ),
    "DryRunSet": st.builds(ev.DryRunSet, times, causations, st.booleans(), ids, st.text(), extras),
}
any_event = st.one_of(*event_strategies.values())


def through_msgpack(wire: list[Any]) -> list[Any]:
    return msgpack.unpackb(msgpack.packb(wire))


# --- registry ---------------------------------------------------------------------------------


def test_every_kind_is_registered_with_a_strategy_here():
    assert set(KINDS) == set(event_strategies)
    assert [kind.topic for kind in EVENT_KINDS] == list(KINDS)
    for kind in EVENT_KINDS:
        assert kind._fields[:2] == ("time", "causation") and kind._fields[-1] == "extra"
        assert isinstance(kind.schema_version, int) and kind.schema_version >= 1


def test_events_are_immutable_and_share_no_mutable_default():
    event = TaskCreated(1.0, None, "t1", "job", 0)
    with pytest.raises(AttributeError):
        event.task_id = "t2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.extra["x"] = 1  # type: ignore[index]
    assert TaskCreated(2.0, None, "t2", "job", 1).extra == {}


# --- wire -------------------------------------------------------------------------------------


@given(any_event)
def test_wire_round_trip(event):
    wire = to_wire(event)
    assert wire[0] == type(event).schema_version and isinstance(wire[-1], dict)
    decoded = from_wire(wire_form.topic_of(event), through_msgpack(wire))
    assert decoded == event
    assert type(decoded) is type(event)


@given(any_event, st.integers(1, 5), st.lists(wire_values, min_size=1, max_size=3))
def test_newer_version_arrays_keep_their_surplus(event, ahead, surplus):
    topic = wire_form.topic_of(event)
    wire = to_wire(event)
    newer = [wire[0] + ahead, *wire[1:-1], *surplus, wire[-1]]
    decoded = from_wire(topic, through_msgpack(newer))
    assert decoded[:-1] == event[:-1]
    assert decoded.extra[NEWER_FIELDS] == {"version": wire[0] + ahead, "fields": surplus}
    assert {k: v for k, v in decoded.extra.items() if k != NEWER_FIELDS} == dict(event.extra)
    # Written back by this version and read again, nothing is lost.
    assert from_wire(topic, through_msgpack(to_wire(decoded))) == decoded


class _TaskCreatedV2(NamedTuple):
    time: float
    causation: int | None
    task_id: str
    job: str
    instance: int
    priority: int = 5
    extra: Any = EMPTY

    topic = "TaskCreated"
    schema_version = 2


class _TaskCreatedV3(NamedTuple):
    time: float
    causation: int | None
    task_id: str
    job: str
    instance: int
    priority: int = 5
    owner: str = "nobody"
    extra: Any = EMPTY

    topic = "TaskCreated"
    schema_version = 3


def test_older_version_arrays_get_defaults(monkeypatch):
    monkeypatch.setitem(wire_form._WIRE, "TaskCreated", (_TaskCreatedV3, 3, 9))
    old = to_wire(TaskCreated(1.0, 7, "t1", "job", 3, {"k": "v"}))
    decoded = from_wire("TaskCreated", old)
    assert decoded == _TaskCreatedV3(1.0, 7, "t1", "job", 3, 5, "nobody", {"k": "v"})
    v2 = [2, 1.0, 7, "t1", "job", 3, 9, {}]
    assert from_wire("TaskCreated", v2).priority == 9


def test_older_version_missing_a_field_without_default_is_refused(monkeypatch):
    monkeypatch.setitem(wire_form._WIRE, "TaskCreated", (_TaskCreatedV2, 2, 8))
    with pytest.raises(MalformedWire, match="lacks field 'instance'"):
        from_wire("TaskCreated", [1, 1.0, None, "t1", "job", {}])


@pytest.mark.parametrize("topic", ["Nope", "", None, 3, "taskcreated"])
def test_unknown_topic(topic):
    with pytest.raises(UnknownTopic) as info:
        from_wire(topic, [1, 1.0, None, "t", "j", 0, {}])
    assert isinstance(info.value, ValueError)
    assert repr(topic) in str(info.value) and "unknown topic" in str(info.value)


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        ({"task_id": "t"}, "expected an array, got dict"),
        ("abc", "expected an array, got str"),
        ([], "empty array"),
        (["1", 1.0, None, "t", "j", 0, {}], "schema version must be a positive int"),
        ([True, 1.0, None, "t", "j", 0, {}], "schema version must be a positive int"),
        ([0, 1.0, None, "t", "j", 0, {}], "schema version must be a positive int"),
        ([1, 1.0, None, "t", "j", 0, "notamap"], "last element must be the extra map"),
        ([1, 1.0, None, "t", "j", 0, 5, {}], "version 1 has 5 fields, got 6"),
        ([1, 1.0, None, "t", {}], "version 1 has 5 fields, got 3"),
        ([2, 1.0, None, "t", {}], "newer version 2 has fewer fields"),
    ],
)
def test_malformed_arrays_are_refused_naming_topic_and_problem(wire, problem):
    with pytest.raises(MalformedWire) as info:
        from_wire("TaskCreated", wire)
    assert problem in str(info.value)
    assert "'TaskCreated'" in str(info.value)
    assert info.value.topic == "TaskCreated"


def test_tuples_from_msgpack_use_list_false_are_read():
    event = TaskCreated(1.0, None, "t1", "job", 0)
    packed = msgpack.packb(to_wire(event))
    assert from_wire("TaskCreated", msgpack.unpackb(packed, use_list=False)) == event


# --- TaskStatus -------------------------------------------------------------------------------


def pymesos_status(**overrides: Any) -> dict[str, Any]:
    status = {
        "task_id": {"value": "job/0/abc"},
        "state": "TASK_RUNNING",
        "agent_id": {"value": "agent-1"},
        "executor_id": {"value": "exec-1"},
        "source": "SOURCE_EXECUTOR",
        "reason": "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
        "message": "healthy",
        "timestamp": 1700000000.5,
        "uuid": "AAECAwQFBgcICQoLDA0ODw==",
        "healthy": True,
        "labels": {"labels": [{"key": "k", "value": "v"}]},
        "unreachable_time": {"nanoseconds": 17},
        "data": "aGVsbG8=",
    }
    status.update(overrides)
    return {k: v for k, v in status.items() if v is not _DROP}


_DROP = object()


def test_status_from_mesos_reads_every_field():
    event = status_from_mesos(pymesos_status(), time=5.0, causation=3)
    assert event == StatusUpdateReceived(
        time=5.0,
        causation=3,
        task_id="job/0/abc",
        state="TASK_RUNNING",
        agent_id="agent-1",
        executor_id="exec-1",
        source="SOURCE_EXECUTOR",
        reason="REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
        message="healthy",
        timestamp=1700000000.5,
        uuid="AAECAwQFBgcICQoLDA0ODw==",
        healthy=True,
        labels=[{"key": "k", "value": "v"}],
        is_reconciliation_answer=False,
        extra={"unreachable_time": {"nanoseconds": 17}, "data": "aGVsbG8="},
    )
    assert from_wire(event.topic, through_msgpack(to_wire(event))) == event


def test_minimal_status_and_int_timestamp():
    event = status_from_mesos(
        {"task_id": {"value": "t"}, "state": "TASK_LOST", "timestamp": 17}, time=1.0
    )
    assert event.timestamp == 17.0 and type(event.timestamp) is float
    assert event.agent_id is None and event.extra == {} and event.labels is None


def test_empty_labels_message():
    assert status_from_mesos(pymesos_status(labels={}), time=1.0).labels == []


@pytest.mark.parametrize(
    ("overrides", "answer"),
    [
        ({"source": "SOURCE_MASTER", "reason": "REASON_RECONCILIATION", "uuid": _DROP}, True),
        ({"source": "SOURCE_MASTER", "reason": "REASON_RECONCILIATION"}, False),  # has uuid
        ({"source": "SOURCE_MASTER", "reason": "REASON_AGENT_REMOVED", "uuid": _DROP}, False),
        ({"source": "SOURCE_AGENT", "reason": "REASON_RECONCILIATION", "uuid": _DROP}, False),
    ],
)
def test_reconciliation_answer_detection(overrides, answer):
    event = status_from_mesos(pymesos_status(**overrides), time=1.0)
    assert event.is_reconciliation_answer is answer


def test_addict_dicts_as_pymesos_delivers_with_use_addict():
    event = status_from_mesos(AddictDict(pymesos_status()), time=1.0)
    assert event.task_id == "job/0/abc" and event.agent_id == "agent-1"
    assert event.extra["unreachable_time"] == {"nanoseconds": 17}


def test_unknown_source_and_reason_names_are_kept():
    event = status_from_mesos(pymesos_status(source="SOURCE_NEW", reason="REASON_NEW"), time=1.0)
    assert (event.source, event.reason) == ("SOURCE_NEW", "REASON_NEW")


@pytest.mark.parametrize(
    ("overrides", "error", "field", "value"),
    [
        ({"task_id": _DROP}, MissingStatusField, "task_id", None),
        ({"task_id": "job/0/abc"}, InvalidStatusField, "task_id", "job/0/abc"),
        ({"task_id": {"value": 5}}, InvalidStatusField, "task_id", {"value": 5}),
        ({"task_id": {}}, InvalidStatusField, "task_id", {}),
        ({"task_id": {"value": ""}}, InvalidStatusField, "task_id", {"value": ""}),
        ({"state": _DROP}, MissingStatusField, "state", None),
        ({"state": 1}, InvalidStatusField, "state", 1),
        ({"state": "TASK_BOGUS"}, UnknownStatusState, "state", "TASK_BOGUS"),
        ({"timestamp": "1700000000"}, InvalidStatusField, "timestamp", "1700000000"),
        ({"timestamp": True}, InvalidStatusField, "timestamp", True),
        ({"timestamp": float("inf")}, InvalidStatusField, "timestamp", float("inf")),
        ({"agent_id": "agent-1"}, InvalidStatusField, "agent_id", "agent-1"),
        ({"agent_id": {"value": None}}, InvalidStatusField, "agent_id", {"value": None}),
        ({"executor_id": ["e"]}, InvalidStatusField, "executor_id", ["e"]),
        ({"uuid": b"\x00" * 16}, InvalidStatusField, "uuid", b"\x00" * 16),
        ({"uuid": 7}, InvalidStatusField, "uuid", 7),
        ({"healthy": "yes"}, InvalidStatusField, "healthy", "yes"),
        ({"labels": [{"key": "k"}]}, InvalidStatusField, "labels", [{"key": "k"}]),
        ({"labels": {"labels": "k=v"}}, InvalidStatusField, "labels", {"labels": "k=v"}),
        ({"message": 3}, InvalidStatusField, "message", 3),
        ({"source": 0}, InvalidStatusField, "source", 0),
        ({"reason": 9}, InvalidStatusField, "reason", 9),
    ],
)
def test_malformed_status_names_field_and_value(overrides, error, field, value):
    with pytest.raises(error) as info:
        status_from_mesos(pymesos_status(**overrides), time=1.0)
    assert isinstance(info.value, MalformedStatus) and isinstance(info.value, ValueError)
    assert info.value.field == field
    assert repr(field) in str(info.value)
    if value is not None:
        assert repr(value) in str(info.value)


def test_unknown_state_is_also_an_unknown_task_state():
    with pytest.raises(UnknownTaskState):
        status_from_mesos(pymesos_status(state="TASK_BOGUS"), time=1.0)


@pytest.mark.parametrize("status", [None, [], "TASK_RUNNING"])
def test_a_status_that_is_not_a_map(status):
    with pytest.raises(InvalidStatusField, match="<status>"):
        status_from_mesos(status, time=1.0)  # type: ignore[arg-type]


@given(
    st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in task_status._KNOWN_STATUS_FIELDS),
        wire_values,
        max_size=4,
    )
)
def test_unknown_fields_are_kept_in_extra_and_survive_the_wire(unknown):
    status = {"task_id": {"value": "t"}, "state": "TASK_STAGING", **unknown}
    event = status_from_mesos(status, time=1.0)
    assert dict(event.extra) == unknown
    assert from_wire(event.topic, through_msgpack(to_wire(event))) == event

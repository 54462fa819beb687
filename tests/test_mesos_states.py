"""The Mesos task state table, its mapping, and the Source/Reason names."""

from __future__ import annotations

import pytest
from expected_tables import EXPECTED_MAPPING, EXPECTED_TERMINAL
from hypothesis import given
from hypothesis import strategies as st

from engine import mesos_states as ms
from engine.mesos_states import (
    STATES,
    Reason,
    Source,
    TaskState,
    UnknownReason,
    UnknownSource,
    UnknownTaskState,
    parse_reason,
    parse_source,
    parse_state,
)

REFERENCE_REASONS = {
    "REASON_RECONCILIATION",
    "REASON_AGENT_DISCONNECTED",
    "REASON_AGENT_REMOVED",
    "REASON_AGENT_RESTARTED",
    "REASON_AGENT_REREGISTERED",
    "REASON_AGENT_REMOVED_BY_OPERATOR",
    "REASON_INVALID_OFFERS",
    "REASON_TASK_INVALID",
    "REASON_TASK_KILLED_DURING_LAUNCH",
}


def test_table_covers_every_state_and_the_mapping_is_aurora_s():
    assert set(STATES) == set(TaskState)
    assert {str(s): str(info.scheduler) for s, info in STATES.items()} == EXPECTED_MAPPING


def test_flags():
    assert {str(s) for s, info in STATES.items() if info.terminal} == EXPECTED_TERMINAL
    assert {str(s) for s, i in STATES.items() if i.resurrectable} == {
        "TASK_LOST",
        "TASK_GONE_BY_OPERATOR",
    }
    assert {str(s) for s, i in STATES.items() if not i.stored_by_master} == {"TASK_UNKNOWN"}
    assert EXPECTED_TERMINAL - {"TASK_LOST", "TASK_GONE_BY_OPERATOR"} == ms.FINAL
    # Only terminal states can be resurrected.
    assert all(info.terminal for info in STATES.values() if info.resurrectable)


@given(st.sampled_from(list(TaskState)))
def test_parse_state_accepts_every_name(state):
    assert parse_state(state.value) is state
    assert ms.to_scheduler(state.value) is STATES[state].scheduler
    assert ms.is_terminal(state.value) == (state.value in EXPECTED_TERMINAL)


@given(st.text().filter(lambda s: s not in TaskState.__members__))
def test_parse_state_refuses_unknown_text_naming_it(name):
    with pytest.raises(UnknownTaskState) as info:
        parse_state(name)
    assert isinstance(info.value, ValueError)
    assert info.value.value == name
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("value", [None, 1, 1.5, b"TASK_RUNNING", ["TASK_RUNNING"], {}])
def test_parse_state_refuses_non_text(value):
    with pytest.raises(UnknownTaskState):
        parse_state(value)


def test_to_scheduler_refuses_unknown():
    with pytest.raises(UnknownTaskState, match="TASK_BOGUS"):
        ms.to_scheduler("TASK_BOGUS")


def test_sources_and_reasons():
    assert {s.value for s in Source} == {"SOURCE_MASTER", "SOURCE_AGENT", "SOURCE_EXECUTOR"}
    names = {r.value for r in Reason}
    assert names >= REFERENCE_REASONS
    # mesos.proto v1 numbers its reasons 0..34 with no gaps.
    assert len(names) == 35
    assert all(name.startswith("REASON_") for name in names)
    assert parse_reason("REASON_RECONCILIATION") is Reason.REASON_RECONCILIATION
    assert parse_source("SOURCE_AGENT") is Source.SOURCE_AGENT
    with pytest.raises(UnknownReason, match="REASON_NOPE"):
        parse_reason("REASON_NOPE")
    with pytest.raises(UnknownSource, match="SOURCE_SLAVE"):
        parse_source("SOURCE_SLAVE")


def test_describe_prints_every_state():
    text = ms.describe()
    for state in TaskState:
        assert f"| {state} |" in text
    assert "| TASK_UNKNOWN | no | no | no | PARTITIONED |" in text

"""The scheduler lifecycle table and transition()."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import lifecycle as lc
from engine.lifecycle import (
    KILL_ON_LIVE_REPORT_FROM,
    LIVE_REPORTS,
    RECONCILED,
    TERMINAL,
    TRANSIENT,
    TRANSITIONS,
    Outcome,
    ScheduleStatus,
    SideEffect,
    UnknownScheduleStatus,
    transition,
)

S = ScheduleStatus
E = SideEffect
states = st.sampled_from(list(ScheduleStatus))
flags = st.booleans()


def test_every_state_appears_in_the_table():
    seen = {src for src, _ in TRANSITIONS} | {dst for _, dst in TRANSITIONS}
    assert seen == set(ScheduleStatus)


def test_side_effects_are_in_aurora_order_without_repeats():
    order = list(SideEffect)
    assert [e.value for e in order] == [
        "INCREMENT_FAILURES",
        "SAVE_STATE",
        "RESCHEDULE",
        "TRANSITION_TO_LOST",
        "KILL",
        "DELETE",
    ]
    for pair, effects in TRANSITIONS.items():
        positions = [order.index(e) for e in effects]
        assert positions == sorted(set(positions)), pair


def test_terminal_states_leave_only_by_deletion():
    for (src, dst), effects in TRANSITIONS.items():
        if src in TERMINAL:
            assert dst is S.DELETED and effects == (E.DELETE,), (src, dst)
    for state in TERMINAL:
        assert (state, S.DELETED) in TRANSITIONS


def test_deleted_has_no_exit_and_nothing_enters_init():
    assert not [pair for pair in TRANSITIONS if pair[0] is S.DELETED]
    assert not [pair for pair in TRANSITIONS if pair[1] is S.INIT]


def test_state_sets():
    assert {s.value for s in TERMINAL} == {"FINISHED", "FAILED", "KILLED", "LOST"}
    assert {s.value for s in TRANSIENT} == {
        "ASSIGNED",
        "STARTING",
        "KILLING",
        "PREEMPTING",
        "RESTARTING",
        "DRAINING",
    }
    assert TRANSIENT | {S.RUNNING, S.PARTITIONED} == RECONCILED
    assert not RECONCILED & TERMINAL


@given(states, states, flags, flags, flags)
def test_transition_never_raises_and_agrees_with_the_table(cur, tgt, service, retry, killing):
    result = transition(cur, tgt, is_service=service, retryable=retry, was_killing=killing)
    assert (result.current, result.target) == (cur, tgt)
    if cur is tgt:
        assert result.outcome is Outcome.NOOP and not result.allowed
        assert result.side_effects == () and result.classification.startswith("noop")
    elif (cur, tgt) in TRANSITIONS:
        assert result.allowed and result.outcome is Outcome.SUCCESS
        # Conditional effects may drop out; nothing is ever added.
        assert set(result.side_effects) <= set(TRANSITIONS[cur, tgt])
    else:
        assert not result.allowed and result.classification.startswith("illegal: ")
        if tgt in LIVE_REPORTS and cur in KILL_ON_LIVE_REPORT_FROM:
            assert result.side_effects == (E.KILL,)
            assert result.outcome is Outcome.ILLEGAL_WITH_SIDE_EFFECTS
        else:
            assert result.side_effects == () and result.outcome is Outcome.ILLEGAL


@given(states)
def test_none_means_deleted(target):
    assert transition(None, target) == transition(S.DELETED, target)


@given(states, states)
def test_plain_names_give_the_same_answer_as_members(cur, tgt):
    assert transition(cur.value, tgt.value) == transition(cur, tgt)


@pytest.mark.parametrize("dead", sorted(TERMINAL))
@pytest.mark.parametrize("alive", ["ASSIGNED", "STARTING", "RUNNING"])
def test_terminal_task_reported_alive_is_illegal_and_killed(dead, alive):
    result = transition(dead, alive)
    assert not result.allowed
    assert result.side_effects == (E.KILL,)
    assert result.classification == f"illegal: terminal task reported {alive}"


def test_unknown_task_reported_running_is_killed():
    result = transition(None, "RUNNING")
    assert result.side_effects == (E.KILL,)
    assert result.classification == "illegal: unknown task reported RUNNING"


@pytest.mark.parametrize("dead", [None, *sorted(TERMINAL)])
def test_never_kill_on_partitioned_alone(dead):
    # AURORA-1966: TASK_UNKNOWN maps to PARTITIONED; killing on it looped forever.
    result = transition(dead, "PARTITIONED")
    assert not result.allowed and E.KILL not in result.side_effects


def test_lost_transitions_from_the_reference():
    assert transition("RUNNING", "LOST").side_effects == (E.SAVE_STATE, E.RESCHEDULE)
    assert transition("ASSIGNED", "LOST").side_effects == (E.SAVE_STATE, E.RESCHEDULE, E.KILL)
    assert transition("PARTITIONED", "LOST").side_effects == (
        E.SAVE_STATE,
        E.RESCHEDULE,
        E.KILL,
    )
    assert transition("PARTITIONED", "LOST", was_killing=True).side_effects == (
        E.SAVE_STATE,
        E.KILL,
    )


def test_conditional_reschedules():
    assert E.RESCHEDULE not in transition("RUNNING", "FINISHED").side_effects
    assert E.RESCHEDULE in transition("RUNNING", "FINISHED", is_service=True).side_effects
    failed = transition("RUNNING", "FAILED", retryable=False)
    assert failed.side_effects == (E.INCREMENT_FAILURES, E.SAVE_STATE)
    assert E.RESCHEDULE in transition("RUNNING", "FAILED", retryable=False, is_service=True)[4]
    # A preempted/restarting task is replaced whatever its job is.
    assert E.RESCHEDULE in transition("RESTARTING", "FINISHED").side_effects


def test_killing_a_task_that_never_launched_deletes_it_without_saving():
    for src in ("PENDING", "THROTTLED"):
        assert transition(src, "KILLING").side_effects == (E.DELETE,)


def test_kill_while_partitioned_goes_to_lost():
    assert E.TRANSITION_TO_LOST in transition("KILLING", "PARTITIONED").side_effects
    assert E.TRANSITION_TO_LOST in transition("PARTITIONED", "KILLING").side_effects


def test_transition_result_is_frozen():
    result = transition("RUNNING", "FINISHED")
    with pytest.raises(AttributeError):
        result.allowed = False  # type: ignore[misc]
    assert not dataclasses.is_dataclass(result)


@pytest.mark.parametrize("bad", ["RUNNIN", "", 3, None, "TASK_RUNNING"])
def test_an_unknown_target_name_is_a_precise_error(bad):
    with pytest.raises(UnknownScheduleStatus) as info:
        transition("RUNNING", bad)
    assert isinstance(info.value, ValueError)
    assert repr(bad) in str(info.value)


def test_an_unknown_current_name_is_named():
    with pytest.raises(UnknownScheduleStatus, match="'BOGUS'"):
        transition("BOGUS", "RUNNING")


def test_describe_prints_every_row():
    text = lc.describe()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == len(TRANSITIONS) + 1  # + header
    assert "| RUNNING | LOST | SAVE_STATE, RESCHEDULE |" in text
    assert "if the job is a service" in text
    assert len(lc.as_rows()) == len(TRANSITIONS)

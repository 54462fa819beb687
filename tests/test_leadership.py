"""The leadership table (engine/leadership.py): pure, so every signal sequence is checked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.leadership import (
    ACTING,
    TRANSITIONS,
    IllegalSignal,
    Leadership,
    Role,
    Signal,
)


def test_every_role_and_signal_is_decided_except_a_second_election() -> None:
    undecided = {(r, s) for r in Role for s in Signal} - set(TRANSITIONS)
    assert undecided == {(Role.LEADER, Signal.ELECTED), (Role.PAUSED, Signal.ELECTED)}
    with pytest.raises(IllegalSignal, match="elected cannot happen to a replica that is leader"):
        Leadership(Role.LEADER, 3).apply(Signal.ELECTED, 4)


def test_a_suspended_leader_stops_acting_and_resumes_at_its_epoch() -> None:
    leader, elected = Leadership().apply(Signal.ELECTED, 7)
    assert elected.acting and leader == Leadership(Role.LEADER, 7)
    paused, suspended = leader.apply(Signal.SUSPENDED)
    assert not suspended.acting and paused == Leadership(Role.PAUSED, 7)
    back, reconnected = paused.apply(Signal.RECONNECTED)
    assert reconnected.acting and back == Leadership(Role.LEADER, 7)
    gone, lost = paused.apply(Signal.LOST)
    assert not lost.acting and gone == Leadership(Role.STANDBY, None)


def test_elected_needs_an_epoch() -> None:
    for epoch in (None, 0):
        with pytest.raises(ValueError, match="epoch won"):
            Leadership().apply(Signal.ELECTED, epoch)


@given(st.lists(st.sampled_from(Signal), max_size=30))
def test_any_sequence_of_signals(signals: list[Signal]) -> None:
    state, next_epoch = Leadership(), 1
    for signal in signals:
        if signal is Signal.ELECTED and state.role in (Role.LEADER, Role.PAUSED):
            with pytest.raises(IllegalSignal):
                state.apply(signal, next_epoch)
            continue
        before = state
        state, change = state.apply(signal, next_epoch)
        if signal is Signal.ELECTED and before.role is Role.STANDBY:
            next_epoch += 1
        assert change.before is before.role and change.role is state.role
        assert change.acting == (state.role in ACTING) == (state.role is Role.LEADER)
        # An epoch is held exactly while leading or paused, and only an election changes it.
        assert (state.epoch is not None) == (state.role in (Role.LEADER, Role.PAUSED))
        if state.epoch is not None and signal is not Signal.ELECTED:
            assert state.epoch == before.epoch
        if before.role is Role.RESIGNED:
            assert state.role is Role.RESIGNED

"""The scheduler's task lifecycle: Aurora's task states and every legal transition, as one table.

Everything that decides whether a scheduler state change is legal, and which side effects it
carries, lives in this file (the h11 `_state.py` idea). Side effects are values, returned in
Aurora's fixed execution order; someone else (the saga, the views) executes them.

Learned from apache/aurora TaskStateMachine.java (the partition-aware version); two deliberate
deviations are marked "DEVIATION" below.
"""

from __future__ import annotations

from enum import StrEnum
from itertools import product
from typing import NamedTuple


class ScheduleStatus(StrEnum):
    """Aurora's ScheduleStatus, plus DELETED: the pseudo-state of a task the store does not hold."""

    INIT = "INIT"
    THROTTLED = "THROTTLED"
    PENDING = "PENDING"
    ASSIGNED = "ASSIGNED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    PREEMPTING = "PREEMPTING"
    RESTARTING = "RESTARTING"
    DRAINING = "DRAINING"
    FAILED = "FAILED"
    KILLED = "KILLED"
    KILLING = "KILLING"
    LOST = "LOST"
    PARTITIONED = "PARTITIONED"
    DELETED = "DELETED"


class SideEffect(StrEnum):
    """Work a transition asks for. Declaration order IS the execution order (Aurora's)."""

    INCREMENT_FAILURES = "INCREMENT_FAILURES"
    SAVE_STATE = "SAVE_STATE"
    RESCHEDULE = "RESCHEDULE"
    TRANSITION_TO_LOST = "TRANSITION_TO_LOST"
    KILL = "KILL"
    DELETE = "DELETE"


class Condition(StrEnum):
    """Facts about the task (not its state) that decide whether a conditional effect applies."""

    IF_SERVICE = "if the job is a service"
    IF_RETRYABLE = "if a service, or below its max failures"
    UNLESS_WAS_KILLING = "unless it became PARTITIONED while KILLING"


class Outcome(StrEnum):
    """Aurora's StateChangeResult."""

    SUCCESS = "SUCCESS"
    NOOP = "NOOP"
    ILLEGAL = "ILLEGAL"
    ILLEGAL_WITH_SIDE_EFFECTS = "ILLEGAL_WITH_SIDE_EFFECTS"


class UnknownScheduleStatus(ValueError):
    """A scheduler state name that is not one of ScheduleStatus (a programming error)."""

    def __init__(self, value: object) -> None:
        super().__init__(f"unknown scheduler task state {value!r}")
        self.value = value


S = ScheduleStatus
E = SideEffect

TERMINAL: frozenset[ScheduleStatus] = frozenset({S.FINISHED, S.FAILED, S.KILLED, S.LOST})
# Timeout-able: a task stuck here past transient_task_state_timeout becomes LOST.
TRANSIENT: frozenset[ScheduleStatus] = frozenset(
    {S.ASSIGNED, S.STARTING, S.KILLING, S.PREEMPTING, S.RESTARTING, S.DRAINING}
)
# The states an explicit reconciliation asks Mesos about: launched and not terminal.
RECONCILED: frozenset[ScheduleStatus] = frozenset(
    {
        S.ASSIGNED,
        S.STARTING,
        S.RUNNING,
        S.KILLING,
        S.PREEMPTING,
        S.RESTARTING,
        S.DRAINING,
        S.PARTITIONED,
    }
)
# States a Mesos report may "revive" a task into; reporting them for a dead task is illegal.
LIVE_REPORTS: frozenset[ScheduleStatus] = frozenset({S.ASSIGNED, S.STARTING, S.RUNNING})

_SAVE = (E.SAVE_STATE,)
_KILL = (E.SAVE_STATE, E.KILL)
_RESCHEDULE = (E.SAVE_STATE, E.RESCHEDULE)
_FAIL = (E.INCREMENT_FAILURES, E.SAVE_STATE, E.RESCHEDULE)
_TO_LOST = (E.SAVE_STATE, E.TRANSITION_TO_LOST)
_DELETE = (E.DELETE,)

# THE table: every legal (from, to) and its side effects, in execution order. A pair that is
# absent is illegal. Moving into DELETED never saves state (the task is being removed), nor
# does killing a task that never launched (PENDING/THROTTLED -> KILLING just deletes it).
TRANSITIONS: dict[tuple[ScheduleStatus, ScheduleStatus], tuple[SideEffect, ...]] = {
    (S.INIT, S.PENDING): _SAVE,
    (S.INIT, S.THROTTLED): _SAVE,
    (S.THROTTLED, S.PENDING): _SAVE,
    (S.THROTTLED, S.KILLING): _DELETE,
    (S.PENDING, S.ASSIGNED): _SAVE,
    (S.PENDING, S.KILLING): _DELETE,
    # Launched and alive.
    (S.ASSIGNED, S.STARTING): _SAVE,
    (S.ASSIGNED, S.RUNNING): _SAVE,
    (S.ASSIGNED, S.FINISHED): _RESCHEDULE,
    (S.ASSIGNED, S.FAILED): _FAIL,
    (S.ASSIGNED, S.KILLED): _RESCHEDULE,
    # An ASSIGNED task that goes LOST may still launch later: kill it as well.
    (S.ASSIGNED, S.LOST): (E.SAVE_STATE, E.RESCHEDULE, E.KILL),
    (S.ASSIGNED, S.KILLING): _KILL,
    (S.ASSIGNED, S.PREEMPTING): _KILL,
    (S.ASSIGNED, S.RESTARTING): _KILL,
    (S.ASSIGNED, S.DRAINING): _KILL,
    (S.ASSIGNED, S.PARTITIONED): _SAVE,
    (S.STARTING, S.RUNNING): _SAVE,
    (S.STARTING, S.FINISHED): _RESCHEDULE,
    (S.STARTING, S.FAILED): _FAIL,
    (S.STARTING, S.KILLED): _RESCHEDULE,
    (S.STARTING, S.LOST): _RESCHEDULE,
    (S.STARTING, S.KILLING): _KILL,
    (S.STARTING, S.PREEMPTING): _KILL,
    (S.STARTING, S.RESTARTING): _KILL,
    (S.STARTING, S.DRAINING): _KILL,
    (S.STARTING, S.PARTITIONED): _SAVE,
    (S.RUNNING, S.FINISHED): _RESCHEDULE,
    (S.RUNNING, S.FAILED): _FAIL,
    (S.RUNNING, S.KILLED): _RESCHEDULE,
    (S.RUNNING, S.LOST): _RESCHEDULE,
    (S.RUNNING, S.KILLING): _KILL,
    (S.RUNNING, S.PREEMPTING): _KILL,
    (S.RUNNING, S.RESTARTING): _KILL,
    (S.RUNNING, S.DRAINING): _KILL,
    (S.RUNNING, S.PARTITIONED): _SAVE,
    # Partitioned: the agent is unreachable and the task may come back in any state.
    (S.PARTITIONED, S.ASSIGNED): _SAVE,
    (S.PARTITIONED, S.STARTING): _SAVE,
    (S.PARTITIONED, S.RUNNING): _SAVE,
    (S.PARTITIONED, S.FINISHED): _SAVE,
    (S.PARTITIONED, S.FAILED): _FAIL,
    (S.PARTITIONED, S.LOST): (E.SAVE_STATE, E.RESCHEDULE, E.KILL),
    # A user/operator action on a partitioned task cannot wait for the partition to heal.
    (S.PARTITIONED, S.KILLING): _TO_LOST,
    (S.PARTITIONED, S.PREEMPTING): _TO_LOST,
    (S.PARTITIONED, S.RESTARTING): _TO_LOST,
    (S.PARTITIONED, S.DRAINING): _TO_LOST,
    # Being stopped on purpose (preempt/restart/drain): any end means "start a replacement".
    **{
        (src, dst): effects
        for src in (S.PREEMPTING, S.RESTARTING, S.DRAINING)
        for dst, effects in (
            (S.FINISHED, _RESCHEDULE),
            (S.FAILED, _RESCHEDULE),
            (S.KILLED, _RESCHEDULE),
            (S.KILLING, _SAVE),
            (S.LOST, (E.SAVE_STATE, E.RESCHEDULE, E.KILL)),
            (S.PARTITIONED, _TO_LOST),
        )
    },
    (S.KILLING, S.FINISHED): _SAVE,
    (S.KILLING, S.FAILED): _SAVE,
    (S.KILLING, S.KILLED): _SAVE,
    (S.KILLING, S.LOST): _SAVE,
    # A kill must finish even if the agent is unreachable: mark it lost at once.
    (S.KILLING, S.PARTITIONED): _TO_LOST,
    (S.KILLING, S.DELETED): _DELETE,
    # Terminal states leave only by deletion.
    (S.FINISHED, S.DELETED): _DELETE,
    (S.FAILED, S.DELETED): _DELETE,
    (S.KILLED, S.DELETED): _DELETE,
    (S.LOST, S.DELETED): _DELETE,
}

# Effects in TRANSITIONS that apply only under a condition on the task (not on its state).
CONDITIONS: dict[tuple[ScheduleStatus, ScheduleStatus, SideEffect], Condition] = {
    **{
        (src, S.FINISHED, E.RESCHEDULE): Condition.IF_SERVICE
        for src in (S.ASSIGNED, S.STARTING, S.RUNNING)
    },
    **{
        (src, S.FAILED, E.RESCHEDULE): Condition.IF_RETRYABLE
        for src in (S.ASSIGNED, S.STARTING, S.RUNNING, S.PARTITIONED)
    },
    (S.PARTITIONED, S.LOST, E.RESCHEDULE): Condition.UNLESS_WAS_KILLING,
}

# Illegal reports that still carry a KILL: something we believe dead, or being stopped, is
# reported alive, so it must be (re-)killed. Unknown tasks (None) are DELETED here.
KILL_ON_LIVE_REPORT_FROM: frozenset[ScheduleStatus] = TERMINAL | {
    S.DELETED,
    S.KILLING,
    S.PREEMPTING,
    S.RESTARTING,
    S.DRAINING,
}
# DEVIATION from Aurora, which also kills a terminal/unknown task reported PARTITIONED: that is
# what a TASK_UNKNOWN answer maps to, and killing on it looped forever (AURORA-1966). We never
# kill on PARTITIONED alone; the drift view and the saga decide with more evidence.


class Transition(NamedTuple):
    """The result of asking for `current -> target`; frozen, never an exception."""

    current: ScheduleStatus
    target: ScheduleStatus
    allowed: bool
    outcome: Outcome
    side_effects: tuple[SideEffect, ...]
    classification: str


def _condition_holds(condition: Condition, is_service: bool, retryable: bool, was_killing: bool):
    if condition is Condition.IF_SERVICE:
        return is_service
    if condition is Condition.IF_RETRYABLE:
        return is_service or retryable
    return not was_killing


def _describe_task(state: ScheduleStatus) -> str:
    if state is S.DELETED:
        return "unknown task"
    if state in TERMINAL:
        return "terminal task"
    return f"{state} task"


def _compute(
    current: ScheduleStatus,
    target: ScheduleStatus,
    is_service: bool,
    retryable: bool,
    was_killing: bool,
) -> Transition:
    if current is target:
        return Transition(current, target, False, Outcome.NOOP, (), f"noop: already {target}")
    effects = TRANSITIONS.get((current, target))
    if effects is not None:
        kept = tuple(
            e
            for e in effects
            if (cond := CONDITIONS.get((current, target, e))) is None
            or _condition_holds(cond, is_service, retryable, was_killing)
        )
        return Transition(
            current, target, True, Outcome.SUCCESS, kept, f"legal: {current} -> {target}"
        )
    if target in LIVE_REPORTS and current in KILL_ON_LIVE_REPORT_FROM:
        return Transition(
            current,
            target,
            False,
            Outcome.ILLEGAL_WITH_SIDE_EFFECTS,
            (E.KILL,),
            f"illegal: {_describe_task(current)} reported {target}",
        )
    return Transition(
        current,
        target,
        False,
        Outcome.ILLEGAL,
        (),
        f"illegal: {_describe_task(current)} reported {target}",
    )


# Every answer is precomputed: the views call transition() once per event on the replay path.
_FLAGS = tuple(product((False, True), repeat=3))
_RESULTS: dict[tuple[str, str, bool, bool, bool], Transition] = {
    (cur.value, tgt.value, *flags): _compute(cur, tgt, *flags)
    for cur in ScheduleStatus
    for tgt in ScheduleStatus
    for flags in _FLAGS
}


def transition(
    current: ScheduleStatus | str | None,
    target: ScheduleStatus | str,
    *,
    is_service: bool = False,
    retryable: bool = True,
    was_killing: bool = False,
) -> Transition:
    """Classify `current -> target` and return its side effects in execution order.

    `current=None` means the scheduler does not know the task (Aurora's DELETED). Never raises
    for two valid states: an illegal report is classified ("illegal: terminal task reported
    RUNNING"), with a KILL when a dead or dying task is reported alive. The keyword facts pick
    the conditional effects (see CONDITIONS); `retryable` means "below its max failures".
    Raises UnknownScheduleStatus only for a name that is not a state at all.
    """
    # No bool() here: 0/1 hash and compare like False/True, and this runs once per event.
    key = ("DELETED" if current is None else current, target, is_service, retryable, was_killing)
    try:
        return _RESULTS[key]
    except (KeyError, TypeError):
        parse_status(target)
        raise UnknownScheduleStatus(current) from None


def parse_status(name: object) -> ScheduleStatus:
    """The ScheduleStatus called `name`, or UnknownScheduleStatus."""
    if isinstance(name, str) and name in _BY_NAME:
        return _BY_NAME[name]
    raise UnknownScheduleStatus(name)


_BY_NAME: dict[str, ScheduleStatus] = {s.value: s for s in ScheduleStatus}


def is_terminal(state: ScheduleStatus | str) -> bool:
    """Whether the scheduler considers `state` final (DELETED is not a state the task is in)."""
    return state in TERMINAL


def as_rows() -> list[tuple[str, str, str]]:
    """The transition table as (from, to, side effects) rows, conditions spelled out."""
    rows = []
    for (src, dst), effects in TRANSITIONS.items():
        parts = []
        for effect in effects:
            cond = CONDITIONS.get((src, dst, effect))
            parts.append(f"{effect} ({cond})" if cond else str(effect))
        rows.append((str(src), str(dst), ", ".join(parts) or "-"))
    return rows


def describe() -> str:
    """The lifecycle as a Markdown document: the transition table and the state sets."""
    lines = ["| from | to | side effects (in order) |", "|---|---|---|"]
    lines += [f"| {src} | {dst} | {effects} |" for src, dst, effects in as_rows()]
    lines.append("")
    for name, states in (
        ("terminal", TERMINAL),
        ("transient (timeout-able)", TRANSIENT),
        ("explicitly reconciled", RECONCILED),
    ):
        ordered = [s for s in ScheduleStatus if s in states]
        lines.append(f"- {name}: {', '.join(ordered)}")
    lines.append(
        "- illegal reports of ASSIGNED/STARTING/RUNNING for a task in "
        + ", ".join(s for s in ScheduleStatus if s in KILL_ON_LIVE_REPORT_FROM)
        + " yield KILL; every other illegal report yields nothing."
    )
    return "\n".join(lines)

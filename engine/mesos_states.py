"""Mesos v1 task states as one table, and the mapping to the scheduler's states.

Also the TaskStatus Source and Reason names of include/mesos/v1/mesos.proto. Pure data and
lookups; status_from_mesos (engine/events.py) uses these on the append path.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from engine.lifecycle import ScheduleStatus


class TaskState(StrEnum):
    """Mesos v1 TaskState."""

    TASK_STAGING = "TASK_STAGING"
    TASK_STARTING = "TASK_STARTING"
    TASK_RUNNING = "TASK_RUNNING"
    TASK_KILLING = "TASK_KILLING"
    TASK_FINISHED = "TASK_FINISHED"
    TASK_FAILED = "TASK_FAILED"
    TASK_KILLED = "TASK_KILLED"
    TASK_ERROR = "TASK_ERROR"
    TASK_LOST = "TASK_LOST"
    TASK_DROPPED = "TASK_DROPPED"
    TASK_UNREACHABLE = "TASK_UNREACHABLE"
    TASK_GONE = "TASK_GONE"
    TASK_GONE_BY_OPERATOR = "TASK_GONE_BY_OPERATOR"
    TASK_UNKNOWN = "TASK_UNKNOWN"


class Source(StrEnum):
    """TaskStatus.Source: who generated the update."""

    SOURCE_MASTER = "SOURCE_MASTER"
    SOURCE_AGENT = "SOURCE_AGENT"
    SOURCE_EXECUTOR = "SOURCE_EXECUTOR"


class Reason(StrEnum):
    """TaskStatus.Reason, the full v1 list (mesos.proto, through Mesos 1.11)."""

    REASON_COMMAND_EXECUTOR_FAILED = "REASON_COMMAND_EXECUTOR_FAILED"
    REASON_CONTAINER_LAUNCH_FAILED = "REASON_CONTAINER_LAUNCH_FAILED"
    REASON_CONTAINER_LIMITATION = "REASON_CONTAINER_LIMITATION"
    REASON_CONTAINER_LIMITATION_DISK = "REASON_CONTAINER_LIMITATION_DISK"
    REASON_CONTAINER_LIMITATION_MEMORY = "REASON_CONTAINER_LIMITATION_MEMORY"
    REASON_CONTAINER_PREEMPTED = "REASON_CONTAINER_PREEMPTED"
    REASON_CONTAINER_UPDATE_FAILED = "REASON_CONTAINER_UPDATE_FAILED"
    REASON_MAX_COMPLETION_TIME_REACHED = "REASON_MAX_COMPLETION_TIME_REACHED"
    REASON_EXECUTOR_REGISTRATION_TIMEOUT = "REASON_EXECUTOR_REGISTRATION_TIMEOUT"
    REASON_EXECUTOR_REREGISTRATION_TIMEOUT = "REASON_EXECUTOR_REREGISTRATION_TIMEOUT"
    REASON_EXECUTOR_TERMINATED = "REASON_EXECUTOR_TERMINATED"
    REASON_EXECUTOR_UNREGISTERED = "REASON_EXECUTOR_UNREGISTERED"
    REASON_FRAMEWORK_REMOVED = "REASON_FRAMEWORK_REMOVED"
    REASON_GC_ERROR = "REASON_GC_ERROR"
    REASON_INVALID_FRAMEWORKID = "REASON_INVALID_FRAMEWORKID"
    REASON_INVALID_OFFERS = "REASON_INVALID_OFFERS"
    REASON_IO_SWITCHBOARD_EXITED = "REASON_IO_SWITCHBOARD_EXITED"
    REASON_MASTER_DISCONNECTED = "REASON_MASTER_DISCONNECTED"
    REASON_RECONCILIATION = "REASON_RECONCILIATION"
    REASON_RESOURCES_UNKNOWN = "REASON_RESOURCES_UNKNOWN"
    REASON_AGENT_DISCONNECTED = "REASON_AGENT_DISCONNECTED"
    REASON_AGENT_DRAINING = "REASON_AGENT_DRAINING"
    REASON_AGENT_REMOVED = "REASON_AGENT_REMOVED"
    REASON_AGENT_REMOVED_BY_OPERATOR = "REASON_AGENT_REMOVED_BY_OPERATOR"
    REASON_AGENT_REREGISTERED = "REASON_AGENT_REREGISTERED"
    REASON_AGENT_RESTARTED = "REASON_AGENT_RESTARTED"
    REASON_AGENT_UNKNOWN = "REASON_AGENT_UNKNOWN"
    REASON_TASK_KILLED_DURING_LAUNCH = "REASON_TASK_KILLED_DURING_LAUNCH"
    REASON_TASK_CHECK_STATUS_UPDATED = "REASON_TASK_CHECK_STATUS_UPDATED"
    REASON_TASK_HEALTH_CHECK_STATUS_UPDATED = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
    REASON_TASK_GROUP_INVALID = "REASON_TASK_GROUP_INVALID"
    REASON_TASK_GROUP_UNAUTHORIZED = "REASON_TASK_GROUP_UNAUTHORIZED"
    REASON_TASK_INVALID = "REASON_TASK_INVALID"
    REASON_TASK_UNAUTHORIZED = "REASON_TASK_UNAUTHORIZED"
    REASON_TASK_UNKNOWN = "REASON_TASK_UNKNOWN"


class UnknownTaskState(ValueError):
    """A TaskState name Mesos does not define (or a value that is not text)."""

    def __init__(self, value: object) -> None:
        super().__init__(f"unknown Mesos task state {value!r}")
        self.value = value


class UnknownSource(ValueError):
    """A TaskStatus.Source name Mesos does not define."""

    def __init__(self, value: object) -> None:
        super().__init__(f"unknown Mesos TaskStatus source {value!r}")
        self.value = value


class UnknownReason(ValueError):
    """A TaskStatus.Reason name Mesos does not define."""

    def __init__(self, value: object) -> None:
        super().__init__(f"unknown Mesos TaskStatus reason {value!r}")
        self.value = value


class StateInfo(NamedTuple):
    """One row of the Mesos state table."""

    terminal: bool
    # Terminal, but the master turns it back into a live state when the agent re-registers.
    resurrectable: bool
    # TASK_UNKNOWN is only ever an answer: the master holds no such state for any task.
    stored_by_master: bool
    scheduler: ScheduleStatus


M = TaskState
S = ScheduleStatus

# THE table. The scheduler column is Aurora's mapping (Conversions.java). TASK_KILLING maps to
# KILLED on purpose, as Aurora does: KILLING is a transient scheduler state with a timeout,
# and a task the executor is killing is, for the scheduler, done.
STATES: dict[TaskState, StateInfo] = {
    M.TASK_STAGING: StateInfo(False, False, True, S.STARTING),
    M.TASK_STARTING: StateInfo(False, False, True, S.STARTING),
    M.TASK_RUNNING: StateInfo(False, False, True, S.RUNNING),
    M.TASK_KILLING: StateInfo(False, False, True, S.KILLED),
    M.TASK_UNREACHABLE: StateInfo(False, False, True, S.PARTITIONED),
    M.TASK_UNKNOWN: StateInfo(False, False, False, S.PARTITIONED),
    M.TASK_FINISHED: StateInfo(True, False, True, S.FINISHED),
    M.TASK_FAILED: StateInfo(True, False, True, S.FAILED),
    M.TASK_KILLED: StateInfo(True, False, True, S.KILLED),
    M.TASK_ERROR: StateInfo(True, False, True, S.LOST),
    M.TASK_LOST: StateInfo(True, True, True, S.LOST),
    M.TASK_DROPPED: StateInfo(True, False, True, S.LOST),
    M.TASK_GONE: StateInfo(True, False, True, S.LOST),
    M.TASK_GONE_BY_OPERATOR: StateInfo(True, True, True, S.LOST),
}

# Plain-str keyed copies: hashing a StrEnum member runs Python code, hashing a str does not,
# and these lookups sit on the append and replay paths.
BY_NAME: dict[str, StateInfo] = {state.value: info for state, info in STATES.items()}
_STATE_BY_NAME: dict[str, TaskState] = {state.value: state for state in TaskState}
_SOURCE_BY_NAME: dict[str, Source] = {s.value: s for s in Source}
_REASON_BY_NAME: dict[str, Reason] = {r.value: r for r in Reason}

TERMINAL: frozenset[str] = frozenset(name for name, info in BY_NAME.items() if info.terminal)
# "Final": terminal and never coming back. Once Mesos said one of these, a later "alive"
# update for the task can only be an older update delivered late.
FINAL: frozenset[str] = frozenset(
    name for name, info in BY_NAME.items() if info.terminal and not info.resurrectable
)
NOT_STORED: frozenset[str] = frozenset(
    name for name, info in BY_NAME.items() if not info.stored_by_master
)
# "Alive": what the master holds as not over (staging, starting, running, killing,
# unreachable): a task in one of these may be doing work.
ALIVE: frozenset[str] = frozenset(
    name for name, info in BY_NAME.items() if not info.terminal and info.stored_by_master
)


def parse_state(name: object) -> TaskState:
    """The TaskState called `name`; UnknownTaskState (naming the value) otherwise."""
    if isinstance(name, str):
        state = _STATE_BY_NAME.get(name)
        if state is not None:
            return state
    raise UnknownTaskState(name)


def parse_source(name: object) -> Source:
    """The Source called `name`; UnknownSource otherwise."""
    if isinstance(name, str) and name in _SOURCE_BY_NAME:
        return _SOURCE_BY_NAME[name]
    raise UnknownSource(name)


def parse_reason(name: object) -> Reason:
    """The Reason called `name`; UnknownReason otherwise."""
    if isinstance(name, str) and name in _REASON_BY_NAME:
        return _REASON_BY_NAME[name]
    raise UnknownReason(name)


def to_scheduler(name: TaskState | str) -> ScheduleStatus:
    """The scheduler state a Mesos state maps to (Aurora's mapping)."""
    try:
        return BY_NAME[name].scheduler
    except (KeyError, TypeError):
        raise UnknownTaskState(name) from None


def is_terminal(name: TaskState | str) -> bool:
    """Whether Mesos calls `name` terminal."""
    try:
        return BY_NAME[name].terminal
    except (KeyError, TypeError):
        raise UnknownTaskState(name) from None


def as_rows() -> list[tuple[str, str, str, str, str]]:
    """The table as (state, terminal, resurrectable, stored by master, scheduler) rows."""
    yes_no = ("no", "yes")
    return [
        (
            str(state),
            yes_no[info.terminal],
            yes_no[info.resurrectable],
            yes_no[info.stored_by_master],
            str(info.scheduler),
        )
        for state, info in STATES.items()
    ]


def describe() -> str:
    """The Mesos state table as Markdown."""
    lines = [
        "| Mesos state | terminal | resurrectable | stored by master | scheduler state |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in as_rows()]
    return "\n".join(lines)

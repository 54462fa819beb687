"""The events: frozen, versioned records with explicit fields, and their wire form.

Each kind is a `typing.NamedTuple` (cheap to build on replay, immutable, positional) with a
stable `topic` and a `schema_version`. Field layout, the same for every kind:

    time, causation, <kind fields...>, extra

- `time` (float seconds) is given by the caller: the core reads no clock.
- `causation` is the notification id of the event this one answers, or None.
- `extra` holds fields this version does not know; it is kept on read and written back.

The wire form is a msgpack-friendly array `[schema_version, time, causation, ..., extra]`.
A later schema version may only APPEND kind fields (before `extra`), each with a default, so
an old reader keeps the surplus (under NEWER_FIELDS in extra) and a new reader fills fields
an old writer did not have from their defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import msgpack

from engine.mesos_states import BY_NAME as _MESOS_STATES
from engine.mesos_states import UnknownTaskState

# The default `extra`: read-only, so one shared instance cannot be mutated by accident.
EMPTY: Mapping[str, Any] = MappingProxyType({})

# Where from_wire keeps the positional fields of a NEWER schema version that this code does not
# know: extra[NEWER_FIELDS] = {"version": <writer's version>, "fields": [<surplus values>]}.
NEWER_FIELDS = "__newer_fields__"


class TaskCreated(NamedTuple):
    """The scheduler created a task (Aurora: INIT -> PENDING)."""

    time: float
    causation: int | None
    task_id: str
    job: str
    instance: int
    extra: Mapping[str, Any] = EMPTY

    topic = "TaskCreated"
    schema_version = 1


class TaskAssigned(NamedTuple):
    """The scheduler assigned the task to an agent (launch requested)."""

    time: float
    causation: int | None
    task_id: str
    agent_id: str
    extra: Mapping[str, Any] = EMPTY

    topic = "TaskAssigned"
    schema_version = 1


class KillRequested(NamedTuple):
    """The scheduler decided to kill the task."""

    time: float
    causation: int | None
    task_id: str
    extra: Mapping[str, Any] = EMPTY

    topic = "KillRequested"
    schema_version = 1


class StatusUpdateReceived(NamedTuple):
    """A Mesos v1 TaskStatus, as pymesos delivered it (see status_from_mesos)."""

    time: float
    causation: int | None
    task_id: str
    state: str
    agent_id: str | None = None
    executor_id: str | None = None
    source: str | None = None
    reason: str | None = None
    message: str | None = None
    timestamp: float | None = None
    # The base64 text as received; None for master-generated updates (never acknowledged).
    uuid: str | None = None
    healthy: bool | None = None
    # Labels.labels as received: a list of {"key": .., "value": ..}.
    labels: list[dict[str, Any]] | None = None
    # SOURCE_MASTER + REASON_RECONCILIATION + no uuid: the master's answer to a reconcile call.
    is_reconciliation_answer: bool = False
    extra: Mapping[str, Any] = EMPTY

    topic = "StatusUpdateReceived"
    schema_version = 1


class FrameworkRegistered(NamedTuple):
    """The master accepted our first SUBSCRIBE and gave us a framework id."""

    time: float
    causation: int | None
    framework_id: str
    master_id: str
    extra: Mapping[str, Any] = EMPTY

    topic = "FrameworkRegistered"
    schema_version = 1


class FrameworkReregistered(NamedTuple):
    """We resubscribed with our framework id (every pymesos reconnect lands here)."""

    time: float
    causation: int | None
    framework_id: str
    master_id: str
    extra: Mapping[str, Any] = EMPTY

    topic = "FrameworkReregistered"
    schema_version = 1


class FrameworkDisconnected(NamedTuple):
    """The subscription stream ended; master-generated updates sent meanwhile are lost."""

    time: float
    causation: int | None
    master_id: str | None = None
    extra: Mapping[str, Any] = EMPTY

    topic = "FrameworkDisconnected"
    schema_version = 1


class FrameworkError(NamedTuple):
    """The master sent an ERROR event (e.g. "Framework has been removed")."""

    time: float
    causation: int | None
    message: str
    extra: Mapping[str, Any] = EMPTY

    topic = "FrameworkError"
    schema_version = 1


class SchedulerFault(NamedTuple):
    """A scheduler callback failed (a bug or an unusable input): recorded instead of raised,
    because a raise on pymesos's IO thread aborts the driver."""

    time: float
    causation: int | None
    where: str  # the callback: "update", "offers", ...
    error: str  # repr of the exception, truncated
    extra: Mapping[str, Any] = EMPTY

    topic = "SchedulerFault"
    schema_version = 1


# --- the reconciliation saga (engine/reconciliation.py, engine/saga.py, engine/outbox.py) ------


class ReconciliationStarted(NamedTuple):
    """A reconciliation run began. `causation` is the (re)registration that triggered it, if any.

    `kind` is "explicit" or "implicit"; `trigger` says why ("schedule", "registered",
    "operator", ...); `deadline` is the time after which the run stops asking (its limit).
    """

    time: float
    causation: int | None
    run_id: str
    kind: str
    trigger: str
    deadline: float
    extra: Mapping[str, Any] = EMPTY

    topic = "ReconciliationStarted"
    schema_version = 1


class ReconciliationRound(NamedTuple):
    """One round of a run: its batches were issued (as RECONCILE commands in the same append)
    and the answers so far counted. The run looks again at `next_at` (backoff + jitter)."""

    time: float
    causation: int | None
    run_id: str
    round: int
    asked: int  # tasks asked in this round
    batches: int
    answered: int  # tasks of the run that got any update since the run started
    remaining: int  # tasks still unconfirmed (asked again next round)
    next_at: float
    extra: Mapping[str, Any] = EMPTY

    topic = "ReconciliationRound"
    schema_version = 1


class ReconciliationCompleted(NamedTuple):
    """A run ended: everything answered ("answered"), the quiet period passed ("quiet", implicit),
    or its limit passed ("limit"). Counts are by drift cell (of the tasks the run covered, at
    the end) and by rule (commands decided while it ran)."""

    time: float
    causation: int | None
    run_id: str
    kind: str
    outcome: str
    asked: int
    answered: int
    answers: int  # reconciliation answers received while it ran
    unanswered: int
    rounds: int
    duration: float
    by_cell: dict[str, int]
    by_rule: dict[str, int]
    extra: Mapping[str, Any] = EMPTY

    topic = "ReconciliationCompleted"
    schema_version = 1


class ReconciliationSuperseded(NamedTuple):
    """A run in progress was replaced by a new run of the same kind (e.g. after reregistration)."""

    time: float
    causation: int | None
    run_id: str
    by_run_id: str
    reason: str
    extra: Mapping[str, Any] = EMPTY

    topic = "ReconciliationSuperseded"
    schema_version = 1


class CommandIssued(NamedTuple):
    """The saga decided a command (the outbox: written BEFORE anything acts on it).

    Its command id is this event's notification id. `kind` is one of engine.rules.CommandKind;
    `task_id` is None for a RECONCILE batch (then `tasks` holds the batch; an empty batch is
    an implicit request). `evidence` is the notification ids of the events the decision rests
    on; `rule` the id of the rule in engine.rules that fired. `retry_of` is the command this
    one retries; `not_before` the earliest dispatch time; `dry_run` marks decisions that are
    recorded and never dispatched.
    """

    time: float
    causation: int | None
    kind: str
    task_id: str | None
    rule: str
    evidence: list[int]
    run_id: str | None = None
    tasks: list[str] | None = None
    attempt: int = 1
    retry_of: int | None = None
    not_before: float | None = None
    dry_run: bool = False
    extra: Mapping[str, Any] = EMPTY

    topic = "CommandIssued"
    schema_version = 1


class CommandDispatched(NamedTuple):
    """The dispatcher handed the command to the driver (a KILL now awaits its confirmation)."""

    time: float
    causation: int | None
    command_id: int
    extra: Mapping[str, Any] = EMPTY

    topic = "CommandDispatched"
    schema_version = 1


class CommandFailed(NamedTuple):
    """Sending the command raised; it stays pending and is tried again at `retry_at`."""

    time: float
    causation: int | None
    command_id: int
    error: str
    retry_at: float
    extra: Mapping[str, Any] = EMPTY

    topic = "CommandFailed"
    schema_version = 1


class CommandConfirmed(NamedTuple):
    """The command's effect is observed. `causation` is the confirming event (a terminal update
    for a KILL), or the command itself for a local command whose effect is appended with it."""

    time: float
    causation: int | None
    command_id: int
    outcome: str
    extra: Mapping[str, Any] = EMPTY

    topic = "CommandConfirmed"
    schema_version = 1


class CommandCancelled(NamedTuple):
    """A command that will never be dispatched (its run was superseded, dry run ended, ...)."""

    time: float
    causation: int | None
    command_id: int
    reason: str
    extra: Mapping[str, Any] = EMPTY

    topic = "CommandCancelled"
    schema_version = 1


class DispatchHalted(NamedTuple):
    """The blast-radius breaker tripped: destructive commands wait until an operator resumes."""

    time: float
    causation: int | None
    reason: str
    affected: int  # tasks killed or lost within the window, counting those about to be
    total: int  # tasks the scheduler holds
    share: float  # the configured limit
    window: float
    extra: Mapping[str, Any] = EMPTY

    topic = "DispatchHalted"
    schema_version = 1


class DispatchResumed(NamedTuple):
    """An operator resumed dispatch after the breaker tripped."""

    time: float
    causation: int | None
    operator: str
    reason: str
    extra: Mapping[str, Any] = EMPTY

    topic = "DispatchResumed"
    schema_version = 1


class SagaReacted(NamedTuple):
    """The saga's tracking record: it has decided on every event up to `upto` (appended with
    the commands it decided, in the same transaction)."""

    time: float
    causation: int | None
    upto: int
    extra: Mapping[str, Any] = EMPTY

    topic = "SagaReacted"
    schema_version = 1


class TaskMarkedLost(NamedTuple):
    """The scheduler gave the task up as LOST by rule (a MARK_LOST command took effect)."""

    time: float
    causation: int | None
    task_id: str
    rule: str
    command_id: int
    extra: Mapping[str, Any] = EMPTY

    topic = "TaskMarkedLost"
    schema_version = 1


# THE registry. Adding a kind: define its NamedTuple above and add one line here.
EVENT_KINDS: tuple[type, ...] = (
    TaskCreated,
    TaskAssigned,
    KillRequested,
    StatusUpdateReceived,
    FrameworkRegistered,
    FrameworkReregistered,
    FrameworkDisconnected,
    ReconciliationStarted,
    ReconciliationRound,
    ReconciliationCompleted,
    ReconciliationSuperseded,
    CommandIssued,
    CommandDispatched,
    CommandFailed,
    CommandConfirmed,
    CommandCancelled,
    DispatchHalted,
    DispatchResumed,
    SagaReacted,
    TaskMarkedLost,
    FrameworkError,
    SchedulerFault,
)

KINDS: dict[str, type] = {kind.topic: kind for kind in EVENT_KINDS}
assert len(KINDS) == len(EVENT_KINDS), "two event kinds share a topic"
for _kind in EVENT_KINDS:
    assert _kind._fields[:2] == ("time", "causation") and _kind._fields[-1] == "extra", _kind

# topic -> (class, schema version, wire length). Wire length counts the version slot.
_WIRE: dict[str, tuple[type, int, int]] = {
    kind.topic: (kind, kind.schema_version, len(kind._fields) + 1) for kind in EVENT_KINDS
}
_new = tuple.__new__


class WireError(ValueError):
    """A stored event array that cannot be read; names the topic and the problem."""

    def __init__(self, topic: object, problem: str) -> None:
        super().__init__(f"event {topic!r}: {problem}")
        self.topic = topic
        self.problem = problem


class UnknownTopic(WireError):
    """The topic names no registered event kind."""

    def __init__(self, topic: object) -> None:
        super().__init__(topic, f"unknown topic (known: {', '.join(KINDS)})")


class MalformedWire(WireError):
    """The array does not have the shape of its kind's schema."""


def topic_of(event: NamedTuple) -> str:
    """The stable topic string of an event."""
    return type(event).topic


def to_wire(event: NamedTuple) -> list[Any]:
    """`[schema_version, time, causation, fields..., extra]`, ready for msgpack."""
    wire = [event.schema_version, *event]
    if type(wire[-1]) is not dict:
        wire[-1] = dict(wire[-1])
    return wire


def from_wire(topic: str, wire: list[Any] | tuple[Any, ...]) -> NamedTuple:
    """The event that `to_wire` produced `wire` from, or a WireError naming topic and problem.

    Arrays of a newer schema version with extra positional fields are accepted: the surplus is
    kept in extra[NEWER_FIELDS]. Arrays of an older version get the missing trailing fields'
    defaults. Field types are not re-checked here (they were checked before the append).
    """
    try:
        kind, version, width = _WIRE[topic]
    except (KeyError, TypeError):
        raise UnknownTopic(topic) from None
    wire_type = type(wire)
    if (
        (wire_type is list or wire_type is tuple)
        and len(wire) == width
        and wire[0] == version
        and type(wire[0]) is int  # True == 1, but a bool is not a version
        and type(wire[-1]) is dict
    ):
        return _new(kind, wire[1:])
    return _from_other_wire(topic, kind, version, width, wire)


def _from_other_wire(topic: str, kind: type, version: int, width: int, wire: Any) -> NamedTuple:
    """The slow path: other versions, and precise errors for malformed arrays."""
    if not isinstance(wire, list | tuple):
        raise MalformedWire(topic, f"expected an array, got {type(wire).__name__}")
    if not wire:
        raise MalformedWire(topic, "empty array (no schema version)")
    wire_version = wire[0]
    if type(wire_version) is not int or wire_version < 1:
        raise MalformedWire(topic, f"schema version must be a positive int, got {wire_version!r}")
    if len(wire) < 2 or not isinstance(wire[-1], dict):
        raise MalformedWire(topic, f"last element must be the extra map, got {wire[-1]!r}")
    fields, extra = list(wire[1:-1]), wire[-1]
    known = width - 2  # positional fields of our version, without version and extra
    if wire_version == version and len(fields) != known:
        raise MalformedWire(topic, f"version {version} has {known} fields, got {len(fields)}")
    if wire_version > version:
        if len(fields) < known:
            raise MalformedWire(
                topic,
                f"newer version {wire_version} has fewer fields ({len(fields)}) than "
                f"version {version} ({known}): fields may only be appended",
            )
        extra = dict(extra)
        extra[NEWER_FIELDS] = {"version": wire_version, "fields": fields[known:]}
        fields = fields[:known]
    elif wire_version < version:
        if len(fields) > known:
            raise MalformedWire(
                topic, f"older version {wire_version} has more fields than version {version}"
            )
        defaults = kind._field_defaults
        for name in kind._fields[len(fields) : known]:
            if name not in defaults:
                raise MalformedWire(
                    topic,
                    f"older version {wire_version} lacks field {name!r}, which has no default",
                )
            fields.append(defaults[name])
    return _new(kind, (*fields, extra))


# --- Mesos TaskStatus -> StatusUpdateReceived -------------------------------------------------


class MalformedStatus(ValueError):
    """A TaskStatus dict that is not a valid Mesos v1 TaskStatus; names field and value."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        shown = repr(value)
        if len(shown) > 200:
            shown = shown[:200] + "..."
        super().__init__(f"TaskStatus field {field!r} {problem}, got {shown}")
        self.field = field
        self.value = value


class MissingStatusField(MalformedStatus):
    """A required TaskStatus field is absent."""

    def __init__(self, field: str) -> None:
        super().__init__(field, None, "is required")


class InvalidStatusField(MalformedStatus):
    """A TaskStatus field has the wrong shape or type."""


class UnknownStatusState(MalformedStatus, UnknownTaskState):
    """TaskStatus.state is text, but not a Mesos task state name."""

    def __init__(self, value: object) -> None:
        MalformedStatus.__init__(self, "state", value, "is not a Mesos task state")


_KNOWN_STATUS_FIELDS = frozenset(
    {
        "task_id",
        "state",
        "agent_id",
        "executor_id",
        "source",
        "reason",
        "message",
        "timestamp",
        "uuid",
        "healthy",
        "labels",
    }
)


def _id_value(status: Mapping[str, Any], field: str) -> str | None:
    """The text of an optional `{"value": str}` id field."""
    wrapped = status.get(field)
    if wrapped is None:
        return None
    value = wrapped.get("value") if isinstance(wrapped, dict) else None
    if type(value) is not str:
        raise InvalidStatusField(field, wrapped, 'must be {"value": <text>}')
    if not value.isascii():
        _check_unicode(field, value)
    return value


def _optional_text(status: Mapping[str, Any], field: str) -> str | None:
    value = status.get(field)
    if value is not None:
        if not isinstance(value, str):
            raise InvalidStatusField(field, value, "must be text")
        if not value.isascii():
            _check_unicode(field, value)
    return value


def _check_unicode(field: str, value: str) -> None:
    # JSON's "\ud800" escape decodes to a lone surrogate, which UTF-8 (and so msgpack)
    # cannot encode: refused here, by name, instead of failing inside the append.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidStatusField(field, value, f"is not valid Unicode ({e.reason})") from None


def _check_storable(field: str, value: object) -> None:
    """Refuses a value the log cannot store and read back: an int outside 64 bits, a lone
    surrogate, a map key that is not text (the log reads maps with text keys only, so such
    an update would be written and then make the log unreadable), a set, an object."""
    try:
        msgpack.unpackb(msgpack.packb(value))
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidStatusField(field, value, f"cannot be stored in the log ({e})") from None


def status_from_mesos(
    status: Mapping[str, Any], *, time: float, causation: int | None = None
) -> StatusUpdateReceived:
    """Validate a TaskStatus dict exactly as pymesos delivers it and make the event.

    Raises a MalformedStatus subclass naming the field and the offending value. Unknown fields
    (data, unreachable_time, check_status, container_status, limitation, anything newer) go
    into extra. Unknown source or reason NAMES are kept, not refused: Mesos adds reasons
    between versions, and refusing an update we must acknowledge would stall the task's
    update stream (the agent re-sends it until acknowledged). An unknown STATE is refused: no
    view could place it.
    """
    if not isinstance(status, dict):
        raise InvalidStatusField("<status>", status, "must be a TaskStatus map")
    get = status.get
    task_id = _id_value(status, "task_id")
    if task_id is None:
        raise MissingStatusField("task_id")
    if not task_id:  # Mesos refuses an empty TaskID; no view could file it under a task
        raise InvalidStatusField("task_id", status["task_id"], "must not be empty")
    state = get("state")
    if state is None:
        raise MissingStatusField("state")
    if not isinstance(state, str):
        raise InvalidStatusField("state", state, "must be text")
    if state not in _MESOS_STATES:
        raise UnknownStatusState(state)
    timestamp = get("timestamp")
    if timestamp is not None:
        if type(timestamp) is not float and (type(timestamp) is not int):
            raise InvalidStatusField("timestamp", timestamp, "must be a number of seconds")
        timestamp = float(timestamp)
        if not math.isfinite(timestamp):
            raise InvalidStatusField("timestamp", timestamp, "must be finite")
    uuid = _optional_text(status, "uuid")
    source = _optional_text(status, "source")
    reason = _optional_text(status, "reason")
    healthy = get("healthy")
    if healthy is not None and type(healthy) is not bool:
        raise InvalidStatusField("healthy", healthy, "must be true or false")
    labels = get("labels")
    if labels is not None:
        # An empty Labels message may arrive as {} (protobuf JSON omits empty repeated fields).
        inner = labels.get("labels", []) if isinstance(labels, dict) else None
        if not isinstance(inner, list) or not labels.keys() <= {"labels"}:
            raise InvalidStatusField("labels", labels, 'must be {"labels": [...]}')
        labels = inner
        if labels:
            _check_storable("labels", labels)
    extra = EMPTY
    if not status.keys() <= _KNOWN_STATUS_FIELDS:
        extra = {k: v for k, v in status.items() if k not in _KNOWN_STATUS_FIELDS}
        try:
            _check_storable("<extra>", extra)
        except InvalidStatusField:
            for key, value in extra.items():  # name the field at fault
                if type(key) is not str:
                    raise InvalidStatusField(
                        repr(key), value, "has a name that is not text"
                    ) from None
                _check_storable(key, value)
            raise
    return StatusUpdateReceived(
        time,
        causation,
        task_id,
        str(state),
        _id_value(status, "agent_id"),
        _id_value(status, "executor_id"),
        source,
        reason,
        _optional_text(status, "message"),
        timestamp,
        uuid,
        healthy,
        labels,
        source == "SOURCE_MASTER" and reason == "REASON_RECONCILIATION" and not uuid,
        extra,
    )

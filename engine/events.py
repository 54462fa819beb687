"""The events: frozen, versioned records with explicit fields.

Each kind is a `typing.NamedTuple` (cheap to build on replay, immutable, positional) with a
stable `topic` (its class name) and a `schema_version`, both set by the `kind` decorator.
Field layout, the same for every kind:

    time, causation, <kind fields...>, extra

- `time` (float seconds) is given by the caller: the core reads no clock.
- `causation` is the notification id of the event this one answers, or None.
- `extra` holds fields this version does not know; it is kept on read and written back.

How an event is stored (its wire form, and the rules for later schema versions) is
engine/wire.py's; how a Mesos TaskStatus dict becomes a StatusUpdateReceived is
engine/task_status.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

# The default `extra`: read-only, so one shared instance cannot be mutated by accident.
EMPTY: Mapping[str, Any] = MappingProxyType({})

_Kind = TypeVar("_Kind", bound=type)


def kind(cls: _Kind, *, version: int = 1) -> _Kind:
    """Marks a NamedTuple as an event kind: its topic is its class name (stable: renaming a
    kind is a new kind), its schema version ``version``."""
    cls.topic = cls.__name__  # type: ignore[attr-defined]
    cls.schema_version = version  # type: ignore[attr-defined]
    return cls


@kind
class TaskCreated(NamedTuple):
    """The scheduler created a task (Aurora: INIT -> PENDING)."""

    time: float
    causation: int | None
    task_id: str
    job: str
    instance: int
    extra: Mapping[str, Any] = EMPTY


@kind
class TaskAssigned(NamedTuple):
    """The scheduler assigned the task to an agent (launch requested)."""

    time: float
    causation: int | None
    task_id: str
    agent_id: str
    extra: Mapping[str, Any] = EMPTY


@kind
class KillRequested(NamedTuple):
    """The scheduler decided to kill the task."""

    time: float
    causation: int | None
    task_id: str
    extra: Mapping[str, Any] = EMPTY


@kind
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


# The fields of a StatusUpdateReceived copied from the Mesos TaskStatus field of the same name
# (the others are every event's, or derived: is_reconciliation_answer).
TASK_STATUS_FIELDS: tuple[str, ...] = tuple(
    name
    for name in StatusUpdateReceived._fields
    if name not in ("time", "causation", "is_reconciliation_answer", "extra")
)


@kind
class FrameworkRegistered(NamedTuple):
    """The master accepted our first SUBSCRIBE and gave us a framework id."""

    time: float
    causation: int | None
    framework_id: str
    master_id: str
    extra: Mapping[str, Any] = EMPTY


@kind
class FrameworkReregistered(NamedTuple):
    """We resubscribed with our framework id (every pymesos reconnect lands here)."""

    time: float
    causation: int | None
    framework_id: str
    master_id: str
    extra: Mapping[str, Any] = EMPTY


@kind
class FrameworkDisconnected(NamedTuple):
    """The subscription stream ended; master-generated updates sent meanwhile are lost."""

    time: float
    causation: int | None
    master_id: str | None = None
    extra: Mapping[str, Any] = EMPTY


@kind
class FrameworkError(NamedTuple):
    """The master sent an ERROR event (e.g. "Framework has been removed")."""

    time: float
    causation: int | None
    message: str
    extra: Mapping[str, Any] = EMPTY


@kind
class SchedulerFault(NamedTuple):
    """A scheduler callback failed (a bug or an unusable input): recorded instead of raised,
    because a raise on pymesos's IO thread aborts the driver."""

    time: float
    causation: int | None
    where: str  # the callback: "update", "offers", ...
    error: str  # repr of the exception, truncated
    extra: Mapping[str, Any] = EMPTY


# --- the reconciliation saga (engine/reconciliation.py, engine/saga.py, engine/outbox.py) ---


@kind
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


@kind
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


@kind
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


@kind
class ReconciliationSuperseded(NamedTuple):
    """A run in progress was replaced by a new run of the same kind (e.g. after reregistration)."""

    time: float
    causation: int | None
    run_id: str
    by_run_id: str
    reason: str
    extra: Mapping[str, Any] = EMPTY


@kind
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


@kind
class CommandDispatched(NamedTuple):
    """The dispatcher handed the command to the driver (a KILL now awaits its confirmation)."""

    time: float
    causation: int | None
    command_id: int
    extra: Mapping[str, Any] = EMPTY


@kind
class CommandFailed(NamedTuple):
    """Sending the command raised; it stays pending and is tried again at `retry_at`."""

    time: float
    causation: int | None
    command_id: int
    error: str
    retry_at: float
    extra: Mapping[str, Any] = EMPTY


@kind
class CommandConfirmed(NamedTuple):
    """The command's effect is observed. `causation` is the confirming event (a terminal update
    for a KILL), or the command itself for a local command whose effect is appended with it."""

    time: float
    causation: int | None
    command_id: int
    outcome: str
    extra: Mapping[str, Any] = EMPTY


@kind
class CommandCancelled(NamedTuple):
    """A command that will never be dispatched (its run was superseded, dry run ended, ...)."""

    time: float
    causation: int | None
    command_id: int
    reason: str
    extra: Mapping[str, Any] = EMPTY


@kind
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


@kind
class DispatchResumed(NamedTuple):
    """An operator resumed dispatch after the breaker tripped."""

    time: float
    causation: int | None
    operator: str
    reason: str
    extra: Mapping[str, Any] = EMPTY


@kind
class SagaReacted(NamedTuple):
    """The saga's tracking record: it has decided on every event up to `upto` (appended with
    the commands it decided, in the same transaction)."""

    time: float
    causation: int | None
    upto: int
    extra: Mapping[str, Any] = EMPTY


@kind
class TaskMarkedLost(NamedTuple):
    """The scheduler gave the task up as LOST by rule (a MARK_LOST command took effect)."""

    time: float
    causation: int | None
    task_id: str
    rule: str
    command_id: int
    extra: Mapping[str, Any] = EMPTY


@kind
class ClockStepped(NamedTuple):
    """The runtime's wall clock stepped (NTP, an operator, a resumed VM): between two of its
    readings it moved by `time - previous`, while a monotonic clock measured `elapsed`.
    `time` is the new reading. Recorded for audits (why runs and timers moved); the
    schedules survive a step without it (engine/reconciliation.py: scheduled_due)."""

    time: float
    causation: int | None
    previous: float  # the wall clock's reading before the step
    elapsed: float  # monotonic seconds between the two readings
    extra: Mapping[str, Any] = EMPTY

    @property
    def step(self) -> float:
        """How far the wall clock jumped (negative: back) beyond the time that passed."""
        return self.time - self.previous - self.elapsed


@kind
class LeaderElected(NamedTuple):
    """A replica won the election (engine/election.py) and leads the replicated log from
    here on: every later event up to the next LeaderElected was written at `epoch` by
    `replica` (a replicated `taskledger run`, engine/replication.py). It is the new leader's
    first event, appended once it has caught up with the log and before it calls Mesos."""

    time: float
    causation: int | None
    epoch: int
    replica: str
    extra: Mapping[str, Any] = EMPTY


# --- operator actions (tools/operator: the running scheduler's API and `taskledger ctl`) ------
# Each names the operator and why. Resuming dispatch after the breaker tripped is
# DispatchResumed, above. The effect of an order follows it as the ordinary events (a
# KillRequested, a run's ReconciliationStarted, TaskCreated), naming the order as their
# causation where the event has room for it.


@kind
class KillOrdered(NamedTuple):
    """An operator ordered the task killed; a KillRequested caused by this event follows."""

    time: float
    causation: int | None
    task_id: str
    operator: str
    reason: str
    extra: Mapping[str, Any] = EMPTY


@kind
class ReconciliationOrdered(NamedTuple):
    """An operator asked for a reconciliation run now; the run starts with trigger
    "operator". `kind` is "explicit" or "implicit"."""

    time: float
    causation: int | None
    kind: str
    operator: str
    reason: str
    extra: Mapping[str, Any] = EMPTY


@kind
class JobScaled(NamedTuple):
    """An operator changed how many instances of the job the scheduler keeps. Kills of the
    instances at or above `instances` (KillRequested) and new tasks for instances below it
    whose tasks are all over (TaskCreated) follow, caused by this event."""

    time: float
    causation: int | None
    job: str
    instances: int
    previous: int
    operator: str
    reason: str
    extra: Mapping[str, Any] = EMPTY


@kind
class DryRunSet(NamedTuple):
    """An operator turned dry run on (commands are decided and recorded, never dispatched)
    or off."""

    time: float
    causation: int | None
    dry_run: bool
    operator: str
    reason: str
    extra: Mapping[str, Any] = EMPTY


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
    ClockStepped,
    KillOrdered,
    ReconciliationOrdered,
    JobScaled,
    DryRunSet,
    LeaderElected,
)

KINDS: dict[str, type] = {kind.topic: kind for kind in EVENT_KINDS}
assert len(KINDS) == len(EVENT_KINDS), "two event kinds share a topic"
for _kind in EVENT_KINDS:
    assert _kind._fields[:2] == ("time", "causation") and _kind._fields[-1] == "extra", _kind

"""The outbox: commands issued and not yet carried out (pure; engine/dispatcher.py sends them).

Every command is first a CommandIssued event in the log (its id is that event's notification
id); nothing acts on the cluster before. `Outbox` is the view of those commands, evolved from
CommandIssued / CommandDispatched / CommandFailed / CommandConfirmed / CommandCancelled and the
breaker's DispatchHalted / DispatchResumed: pure, and equal to a rebuild from the log.

The dispatcher (engine/dispatcher.py) takes the pending commands (`plan`, here), hands the
remote ones to a `send` callable supplied by the caller (the pymesos adapter; the simulated
master in tests), applies the local ones, and records the outcome. Crash safety, command by command
(engine/rules.py COMMANDS says which kind is which):

- Remote commands (KILL, RECONCILE) are sent, then CommandDispatched is appended. A crash in
  between leaves the command pending, so it is sent again after restart: at least once. Both
  kinds are harmless to repeat (killing a dead task is a no-op; asking again only makes the
  master answer twice), and none is lost, because the CommandIssued is durable first.
- Local commands (RESCHEDULE, MARK_LOST) append their effect (TaskCreated of the replacement,
  or TaskMarkedLost) and their CommandConfirmed in ONE transaction: exactly once. A launch is
  not idempotent, so the replacement's task id is derived from the command id: even a second
  attempt would find it created and only confirm.
This is eventsourcing's tracking idea applied per command: the process's position (which
commands are settled) is recorded in the same log, atomically with what it produced. The
saga's own position is recorded the same way (SagaReacted, engine/saga.py).

Safety: a dry-run command is recorded and never dispatched (RECONCILE excepted: it is a
read-only question, and it lets a dry run see what it would do); the blast-radius breaker
halts every command but RECONCILE when more than `breaker_share` of the tasks would be killed
or lost within `breaker_window` (Singularity's disaster detection), records why
(DispatchHalted), and holds until an operator resumes (DispatchResumed, which approves the
commands pending at that moment); kills are rate limited. A kill counts for the breaker only
if Mesos last reported its task alive (staging, starting, running, killing, unreachable): a
kill of a task Mesos already reported lost, gone, finished or unknown (Aurora's kill on
ASSIGNED -> LOST, say, after a scheduler crash) destroys nothing, and a crash-looping
scheduler must not halt itself on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

from engine.events import (
    EMPTY,
    CommandCancelled,
    CommandConfirmed,
    CommandDispatched,
    CommandFailed,
    CommandIssued,
    DispatchHalted,
    DispatchResumed,
    TaskCreated,
    TaskMarkedLost,
)
from engine.lifecycle import TERMINAL, ScheduleStatus
from engine.mesos_states import ALIVE
from engine.rules import COMMANDS, CommandKind

_KILL = CommandKind.KILL.value
_RECONCILE = CommandKind.RECONCILE.value
_RESCHEDULE = CommandKind.RESCHEDULE.value
_MARK_LOST = CommandKind.MARK_LOST.value
_DESTRUCTIVE = frozenset(kind.value for kind, info in COMMANDS.items() if info.destructive)
_REMOTE = frozenset(kind.value for kind, info in COMMANDS.items() if info.remote)
# Scheduler states with nothing left to kill or lose: finished, or deleted.
DONE_NAMES = frozenset(s.value for s in TERMINAL) | {ScheduleStatus.DELETED.value}
# How far back the view keeps dispatch times (longer than any sensible breaker/rate window).
HISTORY = 3600.0

ISSUED, FAILED, DISPATCHED, CONFIRMED, CANCELLED, RETRIED = (
    "issued",
    "failed",
    "dispatched",
    "confirmed",
    "cancelled",
    "retried",
)


@dataclass(frozen=True)
class DispatchConfig:
    """The dispatcher's safety limits."""

    breaker_share: float = 0.2  # more than this share of tasks killed or lost ...
    breaker_window: float = 300.0  # ... within this many seconds halts dispatch
    breaker_min: int = 5  # never trips for fewer affected tasks (small clusters)
    kill_rate_limit: int = 100  # at most this many kills ...
    kill_rate_window: float = 10.0  # ... per this many seconds; the rest wait
    retry_base: float = 1.0  # a failed send is tried again after base * 2**failures ...
    retry_cap: float = 60.0  # ... at most this long


# The fields of a command that the record and the pending command read from its CommandIssued
# (they carry the event, not a copy of its fields).
_ISSUED_FIELDS = ("kind", "task_id", "rule", "run_id", "attempt", "retry_of", "dry_run")


def _reads_its_event(cls: type) -> type:
    """Gives `cls` (which has `issued`, a CommandIssued) read-only properties for the
    event's fields, and `issued_at` for its time."""
    for name in _ISSUED_FIELDS:
        setattr(cls, name, property(attrgetter(f"issued.{name}"), doc=f"CommandIssued.{name}"))
    cls.issued_at = property(attrgetter("issued.time"), doc="CommandIssued.time")  # type: ignore[attr-defined]
    return cls


@_reads_its_event
@dataclass(slots=True)
class CommandRecord:
    """One command: the CommandIssued that decided it, and where it is in its life."""

    command_id: int  # the CommandIssued's notification id
    issued: CommandIssued
    # The earliest dispatch: the command's own, then a failed send's retry time.
    not_before: float | None
    status: str = ISSUED
    failures: int = 0
    last_error: str | None = None
    dispatched_at: float | None = None
    settled_at: float | None = None
    settled_by: int | None = None  # the notification id that confirmed or cancelled it
    outcome: str | None = None
    new_task_id: str | None = None  # RESCHEDULE: the replacement

    evidence = property(attrgetter("issued.evidence"))
    tasks = property(attrgetter("issued.tasks"))


@_reads_its_event
class PendingCommand(NamedTuple):
    """A command as the outbox hands it out (and as `send` receives it): the CommandIssued
    that decided it, and what a sender needs beside it: where Mesos (or the scheduler) last
    placed its task, or each task of a RECONCILE batch."""

    command_id: int
    issued: CommandIssued
    status: str
    not_before: float | None
    agent_id: str | None  # where Mesos (or the scheduler) last placed the task
    agents: tuple[str | None, ...] | None = None  # RECONCILE: each task's agent, as above

    @property
    def evidence(self) -> tuple[int, ...]:
        return tuple(self.issued.evidence)

    @property
    def tasks(self) -> tuple[str, ...] | None:
        """RECONCILE: the batch ("()" = implicit); None for a command about one task."""
        tasks = self.issued.tasks
        return None if tasks is None else tuple(tasks)


@dataclass(slots=True)
class Outbox:
    """Every command by id; the pending ones (issued or failed) in id order; the breaker."""

    commands: dict[int, CommandRecord] = field(default_factory=dict)
    pending: dict[int, CommandRecord] = field(default_factory=dict)
    halted: DispatchHalted | None = None
    halted_nid: int | None = None
    resumed_at: float | None = None
    approved_upto: int = 0  # commands up to this id were pending when an operator resumed
    destructive: list[tuple[float, str]] = field(default_factory=list)  # (time, task)
    kill_times: list[float] = field(default_factory=list)
    last_nid: int = 0


# --- evolve ------------------------------------------------------------------------------------


def _issued(box: Outbox, nid: int, e: CommandIssued) -> None:
    rec = CommandRecord(nid, e, e.not_before)
    box.commands[nid] = rec
    box.pending[nid] = rec
    old = box.commands.get(e.retry_of) if e.retry_of is not None else None
    if old is not None and old.status == DISPATCHED:
        old.status = RETRIED


def _trim(times: list, now: float) -> None:
    cut = 0
    while cut < len(times) and _time_of(times[cut]) < now - HISTORY:
        cut += 1
    if cut:
        del times[:cut]


def _time_of(item: Any) -> float:
    return item[0] if isinstance(item, tuple) else item


def _dispatched(box: Outbox, nid: int, e: CommandDispatched, views: Any = None) -> None:
    rec = box.commands.get(e.command_id)
    if rec is None:
        return
    box.pending.pop(e.command_id, None)
    rec.status = DISPATCHED
    rec.dispatched_at = e.time
    if rec.kind == _KILL:
        box.kill_times.append(e.time)
        _trim(box.kill_times, e.time)
        if views is None or alive(views, rec.task_id):
            box.destructive.append((e.time, rec.task_id or ""))
            _trim(box.destructive, e.time)


def alive(views: Any, task_id: str | None) -> bool:
    """Whether Mesos last reported the task alive: what a kill of it would destroy."""
    return task_id is not None and views.mesos.get(task_id) in ALIVE


def _failed(box: Outbox, nid: int, e: CommandFailed) -> None:
    rec = box.commands.get(e.command_id)
    if rec is None:
        return
    rec.status = FAILED
    rec.failures += 1
    rec.last_error = e.error
    rec.not_before = e.retry_at


def _confirmed(box: Outbox, nid: int, e: CommandConfirmed) -> None:
    rec = box.commands.get(e.command_id)
    if rec is None:
        return
    was_pending = box.pending.pop(e.command_id, None) is not None
    rec.status = CONFIRMED
    rec.settled_at = e.time
    rec.settled_by = e.causation if rec.kind in _REMOTE else nid
    rec.outcome = e.outcome
    rec.new_task_id = e.extra.get("new_task_id")
    if rec.kind == _MARK_LOST and was_pending:  # a local command: confirmed = carried out
        rec.dispatched_at = e.time
        box.destructive.append((e.time, rec.task_id or ""))
        _trim(box.destructive, e.time)


def _cancelled(box: Outbox, nid: int, e: CommandCancelled) -> None:
    rec = box.commands.get(e.command_id)
    if rec is None:
        return
    box.pending.pop(e.command_id, None)
    rec.status = CANCELLED
    rec.settled_at = e.time
    rec.settled_by = nid
    rec.outcome = e.reason


def _halted(box: Outbox, nid: int, e: DispatchHalted) -> None:
    box.halted = e
    box.halted_nid = nid


def _resumed(box: Outbox, nid: int, e: DispatchResumed) -> None:
    box.halted = None
    box.halted_nid = None
    box.resumed_at = e.time
    box.approved_upto = max(box.pending, default=box.approved_upto)


HANDLERS: dict[type, Callable[[Outbox, int, Any], None]] = {
    CommandIssued: _issued,
    CommandDispatched: _dispatched,
    CommandFailed: _failed,
    CommandConfirmed: _confirmed,
    CommandCancelled: _cancelled,
    DispatchHalted: _halted,
    DispatchResumed: _resumed,
}


def evolve(box: Outbox, nid: int, event: Any, views: Any = None) -> Outbox:
    """Apply one event (in place) and return the outbox. ``views`` (which already include
    the event) tell whether a dispatched kill counts for the breaker (see ``alive``)."""
    if type(event) is CommandDispatched:
        _dispatched(box, nid, event, views)
    else:
        handler = HANDLERS.get(type(event))
        if handler is not None:
            handler(box, nid, event)
    box.last_nid = nid
    return box


# --- reading -----------------------------------------------------------------------------------


def as_pending(rec: CommandRecord, views: Any) -> PendingCommand:
    """The record as handed out, with the agent the task was last seen on."""
    issued = rec.issued
    task_id, tasks = issued.task_id, issued.tasks
    return PendingCommand(
        command_id=rec.command_id,
        issued=issued,
        status=rec.status,
        not_before=rec.not_before,
        agent_id=None if task_id is None else _agent_of(views, task_id),
        agents=None if tasks is None else tuple(_agent_of(views, t) for t in tasks),
    )


def _agent_of(views: Any, task_id: str) -> str | None:
    """Where the task is, as Mesos last said, else as the scheduler assigned it: the master
    answers an explicit request by the named agent (TASK_GONE, UNREACHABLE, ... or silence)."""
    mesos = views.mesos.record(task_id)
    if mesos is not None and mesos.agent_id:
        return mesos.agent_id
    sched = views.scheduler.record(task_id)
    return None if sched is None else sched.agent_id


def pending(box: Outbox, views: Any) -> list[PendingCommand]:
    """The commands not yet dispatched (issued, or failed and waiting to be tried again)."""
    return [as_pending(rec, views) for rec in box.pending.values()]


def unconfirmed(box: Outbox) -> list[CommandRecord]:
    """Dispatched commands that still wait for their confirmation (KILLs)."""
    return [r for r in box.commands.values() if r.status == DISPATCHED and r.kind == _KILL]


# --- planning a dispatch (pure) ----------------------------------------------------------------


class DispatchPlan(NamedTuple):
    """What one dispatch does: trip the breaker?, send these, apply those, hold the rest."""

    halt: DispatchHalted | None
    remote: list[PendingCommand]
    local: list[list[Any]]  # per local command: its effect events, confirmation last
    held: list[tuple[int, str]]  # (command id, why it waits)


def replacement_id(task_id: str, job: str | None, instance: int | None, command_id: int) -> str:
    """The deterministic task id of the task a RESCHEDULE command creates."""
    if job is not None and instance is not None:
        return f"{job}/{instance}/r{command_id}"
    return f"{task_id}/r{command_id}"


def _local_effect(rec: CommandRecord, views: Any, now: float) -> list[Any]:
    cid = rec.command_id
    task_id = rec.task_id or ""
    sched = views.scheduler.tasks.get(task_id)
    if rec.kind == _MARK_LOST:
        if sched is None or sched.state in DONE_NAMES:
            return [_confirmed_locally(now, cid, "already terminal: nothing to mark")]
        return [
            TaskMarkedLost(time=now, causation=cid, task_id=task_id, rule=rec.rule, command_id=cid),
            _confirmed_locally(now, cid, "marked LOST"),
        ]
    job = None if sched is None else sched.job
    instance = None if sched is None else sched.instance
    new_id = replacement_id(task_id, job, instance, cid)
    extra = {"new_task_id": new_id}
    if new_id in views.scheduler.tasks:
        return [_confirmed_locally(now, cid, f"replacement {new_id} exists", extra)]
    return [
        TaskCreated(
            time=now,
            causation=cid,
            task_id=new_id,
            job=job or task_id,
            instance=instance or 0,
            extra={"ancestor": task_id, "command": cid},
        ),
        _confirmed_locally(now, cid, f"rescheduled as {new_id}", extra),
    ]


def _confirmed_locally(
    now: float, cid: int, outcome: str, extra: dict[str, Any] | None = None
) -> CommandConfirmed:
    """A local command's confirmation, appended with its effect: caused by the command."""
    return CommandConfirmed(
        time=now, causation=cid, command_id=cid, outcome=outcome, extra=extra or EMPTY
    )


def _live_count(views: Any) -> tuple[int, set[str]]:
    live = set()
    for task_id, rec in views.scheduler.tasks.items():
        if rec.state not in DONE_NAMES:
            live.add(task_id)
    return len(live), live


def plan(box: Outbox, views: Any, now: float, config: DispatchConfig) -> DispatchPlan:
    """Which pending commands a dispatch at `now` sends, applies or holds, and whether the
    blast-radius breaker trips. Pure."""
    due = [r for r in box.pending.values() if r.not_before is None or r.not_before <= now]
    held: list[tuple[int, str]] = []
    halt = None
    if box.halted is None:
        candidates = {
            r.task_id or ""
            for r in due
            if r.kind in _DESTRUCTIVE
            and not r.dry_run
            and r.command_id > box.approved_upto
            and (r.kind != _KILL or alive(views, r.task_id))
        }
        if candidates:
            since = now - config.breaker_window
            if box.resumed_at is not None:
                since = max(since, box.resumed_at)
            recent = {task for t, task in box.destructive if t > since}
            affected = recent | candidates
            count, live = _live_count(views)
            total = count + len(affected - live)
            if len(affected) >= config.breaker_min and len(affected) > config.breaker_share * total:
                halt = DispatchHalted(
                    time=now,
                    causation=None,
                    reason=f"{len(affected)} of {total} tasks would be killed or lost within "
                    f"{config.breaker_window:g} s (limit {config.breaker_share:.0%})",
                    affected=len(affected),
                    total=total,
                    share=config.breaker_share,
                    window=config.breaker_window,
                )
    halted = box.halted is not None or halt is not None
    kills = sum(1 for t in box.kill_times if t > now - config.kill_rate_window)
    budget = config.kill_rate_limit - kills
    remote: list[PendingCommand] = []
    local: list[list[Any]] = []
    for rec in due:
        kind = rec.kind
        if rec.dry_run and kind != _RECONCILE:
            held.append((rec.command_id, "dry run"))
            continue
        if halted and kind != _RECONCILE:
            held.append((rec.command_id, "breaker halted dispatch"))
            continue
        if kind == _KILL:
            if budget <= 0:
                held.append((rec.command_id, "kill rate limit"))
                continue
            budget -= 1
        if kind in _REMOTE:
            remote.append(as_pending(rec, views))
        else:
            local.append(_local_effect(rec, views, now))
    return DispatchPlan(halt, remote, local, held)

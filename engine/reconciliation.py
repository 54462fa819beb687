"""Reconciliation runs: Mesos's recommended algorithm as a pure state machine over the log.

A run is events (engine/events.py): ReconciliationStarted, then per round the RECONCILE
commands (CommandIssued) with a ReconciliationRound, then ReconciliationCompleted or
ReconciliationSuperseded. `evolve` keeps `Runs` up to date from those events and the status
updates; the decision functions below return the events of the next step. No clock: `now` is
an argument, and the backoff's jitter comes from a Random seeded with the run id and round,
so deciding again from the same log gives the same times.

Explicit (Mesos's algorithm):
1. start: remaining = every task the scheduler holds launched and not terminal
   (lifecycle.RECONCILED);
2. ask for `remaining` in batches (default 1000, Aurora's);
3. wait: truncated exponential backoff (base * 2**(round-1), capped) times (1 + jitter),
   and as long again after the last answer while answers still come (a round of 100k tasks
   is answered over many seconds);
4. drop every task that got ANY update since the run started (a TASK_UNKNOWN answer does not
   count: the master holds nothing, so the task is asked again: AURORA-1966); repeat from 2
   until none remains ("answered") or the run's limit passes ("limit"). A silent task is
   never evidence of anything: it stays unconfirmed and is asked again.
Implicit: one request naming no task; answers are counted until a quiet period passes after
the last one ("quiet"), or the limit. A quiet run's omissions are kept (`Runs.omitted`): the
tasks the Mesos view holds alive that the run did not mention, with nothing said of them since
before it started. The master no longer holds them, so that view is stale; the saga asks about
them by name (R-IMPLICIT-OMITTED-ASK), because an explicit answer (TASK_GONE, TASK_UNKNOWN, ...)
is evidence and an omission is not. An update about such a task, or a (re)registration (a new
master: the old one's omissions say nothing), drops it.

Schedules: explicit and implicit periodically on non-overlapping phases (hourly each, implicit
offset by `spread`, 30 min), measured from the first event of the log plus an initial delay;
an explicit run after every (re)registration, superseding a run in progress; never two runs of
one kind at once. After a (re)registration, `reregister_window` (Mesos's
agent_reregister_timeout, 10 min) is the time during which the master may be silent about
tasks on agents that have not re-registered yet: the saga treats nothing as lost then.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

from engine.events import (
    CommandDispatched,
    CommandIssued,
    FrameworkRegistered,
    FrameworkReregistered,
    ReconciliationCompleted,
    ReconciliationRound,
    ReconciliationStarted,
    ReconciliationSuperseded,
    StatusUpdateReceived,
)
from engine.lifecycle import RECONCILED
from engine.mesos_states import ALIVE
from engine.rules import RULE_FOR, CommandKind, RuleId, RunStep, issue

EXPLICIT = "explicit"
IMPLICIT = "implicit"
KINDS = (EXPLICIT, IMPLICIT)
_RECONCILE = CommandKind.RECONCILE.value
_RECONCILED_NAMES = frozenset(s.value for s in RECONCILED)
_UNKNOWN = "TASK_UNKNOWN"
_OMITTED_ASK = RULE_FOR[RunStep.OMISSIONS].value
_EXPLICIT_ROUND: RuleId = RULE_FOR[RunStep.EXPLICIT_ROUND]
_IMPLICIT_ROUND: RuleId = RULE_FOR[RunStep.IMPLICIT_ROUND]


class UnknownRunKind(ValueError):
    """A reconciliation kind other than "explicit" or "implicit"."""

    def __init__(self, kind: object) -> None:
        super().__init__(f"reconciliation kind must be 'explicit' or 'implicit', got {kind!r}")
        self.kind = kind


@dataclass(frozen=True)
class RunConfig:
    """Timings of runs and schedules, in seconds. `compressed(f)` divides every duration by f
    (for the demo: an hour becomes a minute with f=60)."""

    batch_size: int = 1000
    batch_interval: float = 0.0  # spacing of a round's batches (Aurora: 5 s); 0 = all at once
    backoff_base: float = 5.0
    backoff_cap: float = 120.0
    jitter: float = 0.2  # each wait is multiplied by 1 + jitter * U[0, 1)
    explicit_limit: float = 1800.0  # Aurora expects a run to finish well within 30 min
    implicit_quiet: float = 30.0
    implicit_limit: float = 600.0
    initial_delay: float = 60.0  # Aurora's reconciliation_initial_delay
    explicit_interval: float = 3600.0
    implicit_interval: float = 3600.0
    spread: float = 1800.0  # the implicit schedule's offset from the explicit one
    reregister_window: float = 600.0  # Mesos's agent_reregister_timeout
    # A run that started more than this after `now` lies in the future of a clock that
    # stepped back: the schedule restarts from `now` (scheduled_due). A bound on how far
    # apart two readers' clocks may be, not a duration of the schedule: never compressed.
    clock_tolerance: float = 60.0

    def __post_init__(self) -> None:
        if type(self.batch_size) is not int or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        for name in ("explicit_interval", "implicit_interval", "backoff_base"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")

    def compressed(self, factor: float) -> RunConfig:
        """The same schedule with every duration divided by `factor`."""
        durations = {
            name: getattr(self, name) / factor
            for name in (
                "batch_interval",
                "backoff_base",
                "backoff_cap",
                "explicit_limit",
                "implicit_quiet",
                "implicit_limit",
                "initial_delay",
                "explicit_interval",
                "implicit_interval",
                "spread",
                "reregister_window",
            )
        }
        return replace(self, **durations)


@dataclass(slots=True)
class Run:
    """One run in progress."""

    run_id: str
    kind: str
    trigger: str
    started_nid: int
    started_at: float
    deadline: float
    asked: dict[str, None] = field(default_factory=dict)  # explicit: tasks asked (in order)
    remaining: dict[str, None] = field(default_factory=dict)  # explicit: not yet confirmed
    answered_tasks: dict[str, None] = field(default_factory=dict)  # implicit: who answered
    # Explicit: tasks updated after the start but before the first round recorded them.
    early: set[str] = field(default_factory=set)
    answered: int = 0
    answers: int = 0
    rounds: int = 0
    next_at: float | None = None  # None: its first round is not issued yet
    sent_at: float | None = None  # when its first RECONCILE was dispatched
    last_answer_at: float | None = None  # the latest reconciliation answer while it ran
    command_ids: set[int] = field(default_factory=set)
    by_rule: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Omitted:
    """What a completed implicit run did not mention that the Mesos view holds alive, not yet
    asked about by name (tasks in task id order)."""

    run_id: str
    started_nid: int
    started_at: float
    completed_nid: int
    tasks: dict[str, None] = field(default_factory=dict)


@dataclass(slots=True)
class Runs:
    """The runs in progress, and what the schedules need to know."""

    active: dict[str, Run] = field(default_factory=dict)  # kind -> run
    started: dict[str, int] = field(default_factory=dict)  # kind -> runs started (for ids)
    last_started_at: dict[str, float] = field(default_factory=dict)
    completed: int = 0
    superseded: int = 0
    first_time: float | None = None  # the log's first event: where the schedules start
    registration_due: int | None = None  # a (re)registration no run has answered yet
    registered_at: float | None = None  # time of the latest (re)registration
    omitted: Omitted | None = None  # the latest quiet implicit run's omissions, not yet asked

    def run(self, run_id: str | None) -> Run | None:
        """The active run with this id, or None."""
        if run_id is None:
            return None
        for run in self.active.values():
            if run.run_id == run_id:
                return run
        return None


# --- evolve ------------------------------------------------------------------------------------


def evolve(runs: Runs, nid: int, event: Any, views: Any) -> Runs:
    """Apply one event (in place). `views` already include it."""
    kind = type(event)
    if runs.first_time is None:
        runs.first_time = event.time
    if kind is StatusUpdateReceived:
        if runs.active:
            _answer(runs, event)
        if runs.omitted is not None:
            _heard(runs, event.task_id)
    elif kind is CommandIssued:
        if event.rule == _OMITTED_ASK:
            for task_id in event.tasks or ():
                _heard(runs, task_id)
        if event.kind == _RECONCILE and event.run_id is not None:
            run = runs.run(event.run_id)
            if run is not None:
                run.command_ids.add(nid)
                if run.kind == EXPLICIT and event.tasks:
                    asked, remaining, early = run.asked, run.remaining, run.early
                    for task_id in event.tasks:
                        if task_id in asked:
                            continue
                        asked[task_id] = None
                        if early and task_id in early:
                            run.answered += 1  # updated since the start: confirmed already
                        else:
                            remaining[task_id] = None
        if event.run_id is not None:
            run = runs.run(event.run_id)
            if run is not None:
                run.by_rule[event.rule] = run.by_rule.get(event.rule, 0) + 1
    elif kind is CommandDispatched:
        for run in runs.active.values():
            if event.command_id in run.command_ids and run.sent_at is None:
                run.sent_at = event.time
    elif kind is ReconciliationRound:
        run = runs.run(event.run_id)
        if run is not None:
            run.rounds = event.round
            run.next_at = event.next_at
    elif kind is ReconciliationStarted:
        runs.active[event.kind] = Run(
            event.run_id, event.kind, event.trigger, nid, event.time, event.deadline
        )
        runs.started[event.kind] = runs.started.get(event.kind, 0) + 1
        runs.last_started_at[event.kind] = event.time
        due = runs.registration_due
        if due is not None and event.causation is not None and event.causation >= due:
            runs.registration_due = None
    elif kind is ReconciliationCompleted or kind is ReconciliationSuperseded:
        run = runs.run(event.run_id)
        if run is not None:
            del runs.active[run.kind]
            if kind is ReconciliationCompleted:
                runs.completed += 1
                if run.kind == IMPLICIT and event.outcome == "quiet":
                    runs.omitted = omissions(run, nid, views)
            else:
                runs.superseded += 1
    elif kind is FrameworkRegistered or kind is FrameworkReregistered:
        runs.registration_due = nid
        runs.registered_at = event.time
        runs.omitted = None
    return runs


def _heard(runs: Runs, task_id: str) -> None:
    """The task was said something of, or asked about: no longer an omission to ask about."""
    omitted = runs.omitted
    if omitted is not None and task_id in omitted.tasks:
        del omitted.tasks[task_id]
        if not omitted.tasks:
            runs.omitted = None


def omissions(run: Run, completed_nid: int, views: Any) -> Omitted | None:
    """The tasks a quiet implicit run did not mention although the Mesos view holds them alive
    and nothing was said of them since before the run started; None if there are none.

    Only a run whose request reached the master and whose answers stopped ("quiet") says
    anything by what it omits. One pass over the Mesos view, once per implicit run.
    """
    if run.sent_at is None:
        return None
    mesos = views.mesos
    state_of, record = mesos.get, mesos.record
    answered, started = run.answered_tasks, run.started_nid
    # What the master holds alive, it must mention (engine.mesos_states.ALIVE).
    tasks = sorted(
        task_id
        for task_id in mesos.tasks
        if task_id not in answered and state_of(task_id) in ALIVE and record(task_id).nid < started
    )
    if not tasks:
        return None
    return Omitted(run.run_id, started, run.started_at, completed_nid, dict.fromkeys(tasks))


def _answer(runs: Runs, event: StatusUpdateReceived) -> None:
    explicit = runs.active.get(EXPLICIT)
    if explicit is not None:
        if event.is_reconciliation_answer:
            explicit.answers += 1
            explicit.last_answer_at = event.time
        if event.state != _UNKNOWN:
            if event.task_id in explicit.remaining:
                del explicit.remaining[event.task_id]
                explicit.answered += 1
            elif explicit.next_at is None:  # before its first round was recorded
                explicit.early.add(event.task_id)
    implicit = runs.active.get(IMPLICIT)
    if implicit is not None and event.is_reconciliation_answer and implicit.sent_at is not None:
        implicit.answers += 1
        implicit.last_answer_at = event.time
        if event.task_id not in implicit.answered_tasks:
            implicit.answered_tasks[event.task_id] = None
            implicit.answered += 1


# --- decisions -----------------------------------------------------------------------------------


def check_kind(kind: object) -> str:
    """`kind` if it is "explicit" or "implicit"; UnknownRunKind otherwise."""
    if kind not in KINDS:
        raise UnknownRunKind(kind)
    return str(kind)


def backoff(run_id: str, round_: int, config: RunConfig) -> float:
    """The wait after round `round_` (1-based): truncated exponential, with seeded jitter."""
    wait = min(config.backoff_cap, config.backoff_base * 2.0 ** min(round_ - 1, 60))
    # random.Random seeds a str through SHA-512: the same on every run and machine.
    return wait * (1.0 + config.jitter * random.Random(f"{run_id}/{round_}").random())


def in_reregistration_window(runs: Runs, now: float, config: RunConfig) -> bool:
    """Whether agents may still be re-registering after the latest (re)registration."""
    return runs.registered_at is not None and now < runs.registered_at + config.reregister_window


def next_run_id(runs: Runs, kind: str) -> str:
    return f"{kind}-{runs.started.get(kind, 0) + 1}"


def start(
    runs: Runs,
    kind: str,
    trigger: str,
    now: float,
    config: RunConfig,
    *,
    causation: int | None = None,
) -> list[Any]:
    """The events that start a run of `kind`, superseding one in progress (never two at once).

    Returns [ReconciliationSuperseded?, ReconciliationStarted]; the caller cancels the old
    run's undispatched commands.
    """
    check_kind(kind)
    run_id = next_run_id(runs, kind)
    events: list[Any] = []
    old = runs.active.get(kind)
    if old is not None:
        events.append(
            ReconciliationSuperseded(
                time=now, causation=causation, run_id=old.run_id, by_run_id=run_id, reason=trigger
            )
        )
    limit = config.explicit_limit if kind == EXPLICIT else config.implicit_limit
    events.append(
        ReconciliationStarted(
            time=now,
            causation=causation,
            run_id=run_id,
            kind=kind,
            trigger=trigger,
            deadline=now + limit,
        )
    )
    return events


def scheduled_due(runs: Runs, kind: str, now: float, config: RunConfig) -> bool:
    """Whether the periodic schedule of `kind` calls for a run now.

    Slots are first_time + initial_delay (+ spread for implicit) + k * interval; a run is due
    when none of its kind started since the latest slot that has passed, and none is active.
    Missed slots give one run, not a burst.

    A step of the wall clock never stops the schedule. A run that started more than
    `clock_tolerance` after `now` lies in the future of a clock that stepped back (a day
    back; or corrected after one tick ten years ahead): left alone, no slot would be later
    than it until the clock caught up, and a run active since then would wait for timers
    that lie there too. So a run is due now, superseding such an active run, and the
    schedule goes on from its start; likewise the first run of a log whose first event lies
    in that future. Slots before the first one (k < 0) count once a run has started: a
    clock stepped back past the log's start keeps its hourly slots.
    """
    if runs.first_time is None:
        return False
    future = now + config.clock_tolerance
    active = runs.active.get(kind)
    if active is not None:
        return active.started_at > future
    last = runs.last_started_at.get(kind)
    if last is not None and last > future:
        return True
    interval, phase = _schedule(runs.first_time, kind, config)
    if last is None:
        return now >= phase or runs.first_time > future
    slot = phase + math.floor((now - phase) / interval) * interval
    return last < slot


def _schedule(first_time: float, kind: str, config: RunConfig) -> tuple[float, float]:
    """(interval, first slot) of the periodic schedule of `kind`."""
    interval = config.explicit_interval if kind == EXPLICIT else config.implicit_interval
    phase = first_time + config.initial_delay + (config.spread if kind == IMPLICIT else 0.0)
    return interval, phase


def next_scheduled(runs: Runs, kind: str, now: float, config: RunConfig) -> float | None:
    """When the periodic schedule of `kind` next calls for a run (`now` if one is due now;
    None before the log's first event, or while a run of `kind` is active)."""
    if runs.first_time is None or kind in runs.active:
        return None
    if scheduled_due(runs, kind, now, config):
        return now
    interval, phase = _schedule(runs.first_time, kind, config)
    if now < phase and kind not in runs.last_started_at:
        return phase  # the first slot (earlier ones count only once a run has started)
    return phase + (math.floor((now - phase) / interval) + 1) * interval


def explicit_asks(run: Run, views: Any) -> list[str]:
    """The tasks the explicit run's next round asks about: on the first round every launched,
    non-terminal task; afterwards those unconfirmed that the scheduler still holds so."""
    state_of = views.scheduler.get
    names = _RECONCILED_NAMES
    if run.next_at is None:
        return [task_id for task_id in views.scheduler.tasks if state_of(task_id) in names]
    return [task_id for task_id in run.remaining if state_of(task_id) in names]


def round_events(
    run: Run, views: Any, now: float, config: RunConfig, *, dry_run: bool = False
) -> list[Any]:
    """The next round of a run: its RECONCILE commands and the ReconciliationRound."""
    round_ = run.rounds + 1
    wait = backoff(run.run_id, round_, config)
    evidence = [run.started_nid]
    if run.kind == IMPLICIT:
        command = issue(
            _IMPLICIT_ROUND,
            now,
            evidence=evidence,
            run_id=run.run_id,
            tasks=[],
            attempt=round_,
            dry_run=dry_run,
        )
        next_at = now + max(config.implicit_quiet, wait)
        return [
            command,
            ReconciliationRound(
                time=now,
                causation=None,
                run_id=run.run_id,
                round=round_,
                asked=0,
                batches=1,
                answered=0,
                remaining=0,
                next_at=next_at,
            ),
        ]
    asks = explicit_asks(run, views)
    size = config.batch_size
    events: list[Any] = []
    for i, first in enumerate(range(0, len(asks), size)):
        not_before = now + i * config.batch_interval if config.batch_interval else None
        events.append(
            issue(
                _EXPLICIT_ROUND,
                now,
                evidence=evidence,
                run_id=run.run_id,
                tasks=asks[first : first + size],
                attempt=round_,
                not_before=not_before,
                dry_run=dry_run,
            )
        )
    batches = len(events)
    spread = (batches - 1) * config.batch_interval if batches else 0.0
    events.append(
        ReconciliationRound(
            time=now,
            causation=None,
            run_id=run.run_id,
            round=round_,
            asked=len(asks),
            batches=batches,
            answered=run.answered,
            remaining=len(asks),
            next_at=now + spread + wait,
        )
    )
    return events


def step(
    run: Run,
    views: Any,
    now: float,
    config: RunConfig,
    *,
    extra_by_rule: dict[str, int] | None = None,
    dry_run: bool = False,
) -> list[Any]:
    """What a run does at `now`: its first round, the next round, its completion, or nothing."""
    if run.next_at is None:
        return round_events(run, views, now, config, dry_run=dry_run)
    if now < run.next_at:
        return []
    if run.kind == EXPLICIT:
        last = run.last_answer_at
        if (
            last is not None
            and now < last + backoff(run.run_id, run.rounds, config)
            and run.remaining
            and now < run.deadline
        ):
            # Still answering: a large round's answers take the master many seconds (100k
            # tasks at 10k answers/s), longer than the backoff. Asking again now would only
            # repeat them; the next round waits until they have stopped for one backoff (and
            # meanwhile no tick walks the 100k tasks still to hear from).
            return []
        asks = explicit_asks(run, views)
        if not asks:
            return [complete(run, views, now, "answered", 0, extra_by_rule)]
        if now >= run.deadline:
            return [complete(run, views, now, "limit", len(asks), extra_by_rule)]
        return round_events(run, views, now, config, dry_run=dry_run)
    quiet_from = None if run.sent_at is None else max(run.sent_at, run.last_answer_at or 0.0)
    if quiet_from is not None and now >= quiet_from + config.implicit_quiet:
        return [complete(run, views, now, "quiet", 0, extra_by_rule)]
    if now >= run.deadline:
        return [complete(run, views, now, "limit", 0, extra_by_rule)]
    return []


def complete(
    run: Run,
    views: Any,
    now: float,
    outcome: str,
    unanswered: int,
    extra_by_rule: dict[str, int] | None = None,
) -> ReconciliationCompleted:
    """The event that ends a run, with counts by drift cell and by rule.

    by_cell counts the tasks the run covered (explicit: asked; implicit: answered) by the
    disagreeing cell they are in at the end, and the rest under "consistent": one pass over
    the (few) disagreements, not one lookup per covered task.
    """
    covered = run.asked if run.kind == EXPLICIT else run.answered_tasks
    counts: dict[Any, int] = {}
    for task_id, (cell, _since) in views.drift.disagreements.items():
        if task_id in covered:
            counts[cell] = counts.get(cell, 0) + 1
    by_cell = {cell.label: n for cell, n in counts.items()}
    consistent = len(covered) - sum(counts.values())
    if consistent:
        by_cell["consistent"] = consistent
    by_rule = dict(run.by_rule)
    for rule_id, count in (extra_by_rule or {}).items():
        by_rule[rule_id] = by_rule.get(rule_id, 0) + count
    return ReconciliationCompleted(
        time=now,
        causation=run.started_nid,
        run_id=run.run_id,
        kind=run.kind,
        outcome=outcome,
        asked=len(run.asked) if run.kind == EXPLICIT else 0,
        answered=run.answered,
        answers=run.answers,
        unanswered=unanswered,
        rounds=run.rounds,
        duration=now - run.started_at,
        by_cell=by_cell,
        by_rule=by_rule,
    )

"""One pass over the log that remembers what forensic questions need.

`build(events)` folds (notification id, event) pairs into a `LogIndex`: the reconciliation
runs, the commands with their dispatches and outcomes, every event about each task (with
the scheduler and Mesos states right after it), what each command found when it was issued,
and, when asked, the drift timeline by cell (launches in flight apart: tools/forensics/
launches.py) and each drift episode: when its first evidence was recorded, when the ledger
learned of the drift, and when it converged.

Pure: data in, data out (the caller reads the log). The state is the Ledger's own
`LedgerState`, folded with its `apply`, so "what the ledger believed" here is what the Ledger
believed: a run is the saga's record of it (engine.reconciliation.Run) and a command the
outbox's (engine.outbox.CommandRecord: its status and outcome are the saga's), each with what
an audit keeps beside it (a run's ordinal, rounds and end; a command's reports, what it
found, and a question's answers).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine import outbox
from engine import reconciliation as rc
from engine.drift_table import TABLE, Cell, FoundBy
from engine.events import (
    CommandCancelled,
    CommandConfirmed,
    CommandDispatched,
    CommandFailed,
    CommandIssued,
    DispatchResumed,
    LeaderElected,
    ReconciliationCompleted,
    ReconciliationRound,
    ReconciliationStarted,
    ReconciliationSuperseded,
    StatusUpdateReceived,
    TaskCreated,
    TaskMarkedLost,
)
from engine.ledger import LedgerState
from engine.rules import CommandKind
from tools.forensics import outcomes
from tools.forensics.launches import in_flight
from tools.forensics.leaders import Leaders, Leadership
from tools.forensics.times import DATABLE_FROM, DATABLE_UNTIL

# Events that report on a command: they name it by `command_id`.
COMMAND_STEPS: tuple[type, ...] = (
    CommandDispatched,
    CommandFailed,
    CommandConfirmed,
    CommandCancelled,
    TaskMarkedLost,
)
# The triggers of the run a (re-)subscription starts (engine/mesos/core.py's _subscribed):
# the first of a leadership is the run its leader started on taking over.
SUBSCRIBED = frozenset({"registered", "reregistered"})
# The command kind whose `tasks` is a batch of questions, not an action on one task.
RECONCILE = CommandKind.RECONCILE.value
RESCHEDULE = CommandKind.RESCHEDULE.value
_SETTLING = (CommandConfirmed, CommandCancelled)
# What a task is in the drift timeline besides a disagreeing cell: a launch in flight.
IN_FLIGHT = "in flight"


class Moment(NamedTuple):
    """One task as both views held it at one notification id."""

    id: int  # the notification id it is as of
    scheduler_state: str | None
    scheduler_time: float | None  # when the scheduler state was entered
    scheduler_agent: str | None
    mesos_state: str | None
    mesos_time: float | None  # when Mesos's latest state was recorded
    mesos_agent: str | None
    cell: str | None  # e.g. "non-terminal/terminal" (Mesos first)
    found_by: str | None  # "consistent", "explicit", "implicit"


class TaskEvent(NamedTuple):
    """An event about a task, with the two views' states for it right after it."""

    nid: int
    event: Any
    scheduler_state: str | None
    mesos_state: str | None


@dataclass
class Run:
    """A reconciliation run, from its start to its end (if it ended): the saga's own record
    of it (`saga`, engine.reconciliation.Run, as it stood when the run ended), and what an
    audit keeps beside it."""

    saga: rc.Run
    ordinal: int  # 1 for the first run in the log: "run #12"
    rounds: list[tuple[int, ReconciliationRound]] = field(default_factory=list)
    end_nid: int | None = None
    end_time: float | None = None
    outcome: str | None = None  # "answered", "quiet", "limit", "superseded"; None: running
    completed: ReconciliationCompleted | None = None
    superseded_by: str | None = None
    commands: list[int] = field(default_factory=list)  # every command naming the run

    run_id = property(lambda self: self.saga.run_id)
    kind = property(lambda self: self.saga.kind)
    trigger = property(lambda self: self.saga.trigger)
    nid = property(lambda self: self.saga.started_nid)
    time = property(lambda self: self.saga.started_at)
    deadline = property(lambda self: self.saga.deadline)

    @property
    def duration(self) -> float | None:
        return None if self.end_time is None else self.end_time - self.time


# The outbox's status of a command -> what an audit calls it ("retried": a dispatched KILL
# that a later KILL retries; "failed" after a dispatch: it was dispatched).
_STATUS = {
    outbox.ISSUED: "pending",
    outbox.FAILED: "failed",
    outbox.DISPATCHED: "dispatched",
    outbox.RETRIED: "dispatched",
    outbox.CONFIRMED: "confirmed",
    outbox.CANCELLED: "cancelled",
}


@dataclass
class Command:
    """A command the saga issued: the outbox's record of it (`record`, engine.outbox, as the
    fold left it), with every event that reported on it and what it found."""

    record: outbox.CommandRecord
    steps: list[tuple[int, Any]] = field(default_factory=list)
    found: Moment | None = None  # the task as the views held it when the command was issued
    # RECONCILE only: how many tasks it asked about (None: implicit, every task), how many
    # answered after it was issued, and when the first and the last of them came.
    asked: int | None = None
    answered: int = 0
    first_answer_time: float | None = None
    last_answer_time: float | None = None

    nid = property(lambda self: self.record.command_id)  # its command id
    event = property(lambda self: self.record.issued)  # the CommandIssued
    kind = property(lambda self: self.record.kind)
    rule = property(lambda self: self.record.rule)
    run_id = property(lambda self: self.record.run_id)

    def tasks(self) -> tuple[str, ...]:
        if self.event.task_id is not None:
            return (self.event.task_id,)
        return tuple(self.event.tasks or ())

    @property
    def settled(self) -> bool:
        return self.record.status in (outbox.CONFIRMED, outbox.CANCELLED)

    @property
    def status(self) -> str:
        """ "confirmed", "cancelled", "dispatched", "failed" or "pending"."""
        rec = self.record
        if rec.status == outbox.FAILED and rec.dispatched_at is not None:
            return "dispatched"
        return _STATUS[rec.status]

    @property
    def outcome(self) -> str | None:
        """CommandConfirmed.outcome, "cancelled: <reason>", or None."""
        rec = self.record
        if rec.status == outbox.CANCELLED:
            return f"cancelled: {rec.outcome}"
        return rec.outcome if rec.status == outbox.CONFIRMED else None

    @property
    def outcome_nid(self) -> int | None:
        """The id of the event that settled it (confirmed or cancelled), or None."""
        if not self.settled:
            return None
        return next((nid for nid, e in reversed(self.steps) if type(e) in _SETTLING), None)

    @property
    def outcome_time(self) -> float | None:
        return self.record.settled_at if self.settled else None

    @property
    def answers(self) -> str | None:
        """A RECONCILE's answers (outcomes.ANSWERED, PARTLY, UNANSWERED), None for the other
        kinds and for a RECONCILE cancelled or neither sent nor answered yet."""
        if self.kind != RECONCILE or self.status == "cancelled":
            return None
        if not self.answered and self.status != "dispatched":
            return None
        return outcomes.reconcile_status(self.asked, self.answered)

    @property
    def shown_status(self) -> str:
        """The status a reader is shown: a RECONCILE's answers once it has them, else
        `status`."""
        return self.answers or self.status

    def heard(self, time: float) -> None:
        """A reconciliation answer this RECONCILE asked for came at `time`."""
        self.answered += 1
        if self.first_answer_time is None:
            self.first_answer_time = time
        self.last_answer_time = time


class DriftSample(NamedTuple):
    """The disagreements by cell right after a notification id that changed them, and the
    launches in flight then (not counted in by_cell)."""

    nid: int
    time: float
    by_cell: dict[str, int]
    in_flight: int = 0


class Episode(NamedTuple):
    """One task's stretch in disagreeing cells, from the ledger learning of it on."""

    task_id: str
    cell: str  # the cell it entered first
    nid: int  # the event that put it there: when the ledger learned of the drift
    time: float
    end_nid: int | None  # the event that made the two sides agree again (None: not yet)
    end_time: float | None
    # The earliest event the commands about the task (since its previous episode ended)
    # rest on, if earlier than `nid`: the fault's first evidence in the log.
    evidence_nid: int | None = None
    evidence_time: float | None = None
    commands: tuple[int, ...] = ()  # those commands' ids

    @property
    def first_nid(self) -> int:
        return self.nid if self.evidence_nid is None else min(self.nid, self.evidence_nid)

    @property
    def first_time(self) -> float:
        return self.time if self.evidence_time is None else min(self.time, self.evidence_time)

    @property
    def detection_seconds(self) -> float:
        """From the fault's first evidence to the ledger learning of the drift."""
        return self.time - self.first_time

    @property
    def converge_seconds(self) -> float | None:
        """From the ledger learning of the drift to the two sides agreeing again."""
        return None if self.end_time is None else self.end_time - self.time


@dataclass
class LogIndex:
    """What `build` remembers; see the module docstring."""

    state: LedgerState = field(default_factory=LedgerState)
    upto: int = 0  # the last notification id folded
    events: int = 0  # Ledger events folded
    by_topic: Counter[str] = field(default_factory=Counter)
    first_time: float | None = None
    last_time: float | None = None
    # The earliest and latest event times that make a date (what a chart can show).
    time_low: float | None = None
    time_high: float | None = None
    undated: int = 0  # events whose time makes no date
    runs: dict[str, Run] = field(default_factory=dict)
    commands: dict[int, Command] = field(default_factory=dict)
    task_events: dict[str, list[TaskEvent]] = field(default_factory=dict)
    # nid of a status update -> the command it confirmed / the run it answered.
    confirms: dict[int, int] = field(default_factory=dict)
    answers_run: dict[int, str] = field(default_factory=dict)
    # (job, instance) -> its tasks, one per generation, oldest first (every task created).
    instances: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    # a replacement -> the RESCHEDULE command that created it (every task created).
    created_by: dict[str, int] = field(default_factory=dict)
    # An operator's resumes of dispatch after the breaker halted it, in log order.
    resumes: list[tuple[int, DispatchResumed]] = field(default_factory=list)
    # A replicated log's leaderships (tools/forensics/leaders.py), and the run each started
    # when it took over: a new leader subscribes to Mesos, and a subscription reconciles.
    leaders: Leaders = field(default_factory=Leaders)
    first_runs: dict[str, Leadership] = field(default_factory=dict)
    # with timeline=True only:
    drift_samples: list[DriftSample] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)  # by start, ended or not
    ever_drifted: set[str] = field(default_factory=set)
    ever_in_flight: set[str] = field(default_factory=set)

    @property
    def converge_seconds(self) -> list[float]:
        """Per ended drift episode, from the ledger learning of it to agreement."""
        return [e.converge_seconds for e in self.episodes if e.converge_seconds is not None]

    def generations(self, job: str, instance: int) -> list[str]:
        """The tasks of one instance of a job, newest first."""
        return list(reversed(self.instances.get((job, instance), ())))

    def event_of(self, task_id: str, nid: int) -> Any | None:
        """The event `nid` if it is among the task's events, else None."""
        rows = self.task_events.get(task_id, ())
        at = bisect_left(rows, nid, key=lambda row: row.nid)
        return rows[at].event if at < len(rows) and rows[at].nid == nid else None

    def event_time(self, task_id: str, nid: int) -> float | None:
        """The time of the event `nid` among the task's events, or None."""
        event = self.event_of(task_id, nid)
        return None if event is None else event.time

    def knows(self, task_id: str) -> bool:
        return task_id in self.task_events

    def commands_about(self, task_id: str, *, asks: bool = False) -> list[Command]:
        """The commands that act on the task (and with asks=True, RECONCILE batches that
        asked about it), oldest first."""
        return [
            c
            for c in self.commands.values()
            if c.event.task_id == task_id or (asks and task_id in (c.event.tasks or ()))
        ]

    def run_of_command(self, command_id: int) -> str | None:
        command = self.commands.get(command_id)
        return None if command is None else command.run_id


def moment(state: LedgerState, nid: int, task_id: str) -> Moment:
    """The task as the state's views hold it."""
    views = state.views
    s = views.scheduler.record(task_id)
    m = views.mesos.record(task_id)
    cell = views.drift.cell(task_id)
    return Moment(
        nid,
        views.scheduler.get(task_id),
        None if s is None else s.time,
        None if s is None else s.agent_id,
        None if m is None else m.state,
        None if m is None else m.time,
        None if m is None else m.agent_id,
        None if cell is None else cell.label,
        None if cell is None else str(TABLE[cell]),
    )


def build(
    events: Iterable[tuple[int, Any]],
    *,
    task: str | None = None,
    tasks: Collection[str] | None = None,
    timeline: bool = False,
    state: LedgerState | None = None,
) -> LogIndex:
    """Folds the events. With `task` (or `tasks`), only those tasks' events are kept (runs,
    commands and task creations are always kept: they are few). With `timeline`, drift
    samples and drift episodes are recorded too. `state` starts the fold from a state other
    than empty."""
    index = LogIndex(state=LedgerState() if state is None else state)
    st = index.state
    keep: set[str] | None = None
    if task is not None or tasks is not None:
        keep = set(tasks or ()) | ({task} if task is not None else set())
    track = _Timeline(index) if timeline else None
    fold = _Fold(index, keep)
    low, high = DATABLE_FROM, DATABLE_UNTIL
    for nid, event in events:
        kind = type(event)
        index.events += 1
        index.by_topic[kind.topic] += 1
        t = event.time
        if index.first_time is None:
            index.first_time = t
        index.last_time = t
        if low <= t < high:  # makes a date (NaN fails both)
            if index.time_low is None or t < index.time_low:
                index.time_low = t
            if index.time_high is None or t > index.time_high:
                index.time_high = t
        else:
            index.undated += 1
        task_id = getattr(event, "task_id", None)
        if track is not None:
            touched = track.touched(kind, event, task_id)
            before = [track.where(x) for x in touched]
            st.apply(nid, event)
            for x, was in zip(touched, before, strict=True):
                track.moved(x, was, nid, t)
        else:
            st.apply(nid, event)
        index.upto = nid
        _FOLD.get(kind, _Fold.about_task)(fold, nid, event)
    if track is not None:
        track.finish()
    return index


class _Fold:
    """What each kind of event adds to the index, once the Ledger's state has it."""

    def __init__(self, index: LogIndex, keep: set[str] | None) -> None:
        self.index = index
        self.keep = keep  # the tasks whose events are kept (None: every task)
        self.asks = _Asks()
        self.reconciled: set[int] = set()  # the leaderships (LeaderElected ids) that ran one

    def _add(self, task_id: str, nid: int, event: Any) -> None:
        if self.keep is None or task_id in self.keep:
            _add(self.index, task_id, nid, event)

    def run_started(self, nid: int, e: ReconciliationStarted) -> None:
        # The saga's record of the run, which it updates until the run ends.
        saga = self.index.state.saga.runs.active[e.kind]
        self.index.runs[e.run_id] = Run(saga, len(self.index.runs) + 1)
        leader = self.index.leaders.writer_of(nid)
        if e.trigger in SUBSCRIBED and leader is not None and leader.nid not in self.reconciled:
            self.reconciled.add(leader.nid)
            self.index.first_runs[e.run_id] = leader

    def run_round(self, nid: int, e: ReconciliationRound) -> None:
        run = self.index.runs.get(e.run_id)
        if run is not None:
            run.rounds.append((nid, e))

    def run_ended(self, nid: int, e: Any) -> None:
        run = self.index.runs.get(e.run_id)
        if run is not None:
            run.end_nid, run.end_time = nid, e.time
            if type(e) is ReconciliationCompleted:
                run.outcome, run.completed = e.outcome, e
            else:
                run.outcome, run.superseded_by = "superseded", e.by_run_id
        self.asks.run_ended(e.run_id)

    def issued(self, nid: int, e: CommandIssued) -> None:
        index = self.index
        command = index.commands[nid] = Command(index.state.saga.outbox.commands[nid])
        run = index.runs.get(e.run_id) if e.run_id is not None else None
        if run is not None:
            run.commands.append(nid)
        if e.kind == RECONCILE:
            self.asks.issued(command)
        for x in command.tasks():
            self._add(x, nid, e)
        if e.task_id is not None:
            command.found = moment(index.state, nid, e.task_id)

    def command_step(self, nid: int, e: Any) -> None:
        command = self.index.commands.get(e.command_id)
        if command is None:
            return
        command.steps.append((nid, e))
        if type(e) is CommandConfirmed and e.causation is not None:
            self.index.confirms[e.causation] = e.command_id
        task_id = getattr(e, "task_id", None)
        for x in (task_id,) if task_id is not None else command.tasks():
            self._add(x, nid, e)

    def resumed(self, nid: int, e: DispatchResumed) -> None:
        self.index.resumes.append((nid, e))

    def elected(self, nid: int, e: LeaderElected) -> None:
        self.index.leaders.add(Leadership(nid, e.time, e.epoch, e.replica))

    def about_task(self, nid: int, e: Any) -> None:
        task_id = getattr(e, "task_id", None)
        if task_id is None:
            return
        kind = type(e)
        answer = kind is StatusUpdateReceived and e.is_reconciliation_answer
        if kind is TaskCreated:
            _created(self.index, e)
        elif answer:
            self.asks.answer(task_id, e.time)
        if self.keep is None or task_id in self.keep:
            _add(self.index, task_id, nid, e)
            runs = self.index.state.saga.runs
            if answer and runs.active:
                self.index.answers_run[nid] = _answered_run(runs, task_id)


_FOLD: dict[type, Callable[[_Fold, int, Any], None]] = {
    ReconciliationStarted: _Fold.run_started,
    ReconciliationRound: _Fold.run_round,
    ReconciliationCompleted: _Fold.run_ended,
    ReconciliationSuperseded: _Fold.run_ended,
    CommandIssued: _Fold.issued,
    **{kind: _Fold.command_step for kind in COMMAND_STEPS},
    DispatchResumed: _Fold.resumed,
    LeaderElected: _Fold.elected,
}


def _created(index: LogIndex, event: TaskCreated) -> None:
    index.instances.setdefault((event.job, event.instance), []).append(event.task_id)
    maker = index.commands.get(event.causation) if event.causation is not None else None
    if maker is not None and maker.kind == RESCHEDULE:
        index.created_by[event.task_id] = maker.nid


class _Asks:
    """The RECONCILE commands waiting for answers: an answer about a task counts for every
    one that asked about it since it was issued (the master answers each request, and the
    answers cannot be told apart); an implicit one counts every answer until its run ends."""

    def __init__(self) -> None:
        self.waiting: dict[str, list[Command]] = {}
        self.implicit: dict[str | None, list[Command]] = {}

    def issued(self, command: Command) -> None:
        asked = command.event.tasks
        if asked:
            command.asked = len(asked)
            for x in asked:
                self.waiting.setdefault(x, []).append(command)
        elif command.event.task_id is None:
            self.implicit.setdefault(command.run_id, []).append(command)
        else:
            command.asked = 1
            self.waiting.setdefault(command.event.task_id, []).append(command)

    def answer(self, task_id: str, time: float) -> None:
        for command in self.waiting.pop(task_id, ()):
            command.heard(time)
        for commands in self.implicit.values():
            for command in commands:
                command.heard(time)

    def run_ended(self, run_id: str) -> None:
        self.implicit.pop(run_id, None)


class _Timeline:
    """The drift timeline of a fold: counts by cell, launches in flight, and episodes."""

    def __init__(self, index: LogIndex) -> None:
        self.index = index
        self.state = index.state
        self.counts: Counter[str] = Counter()
        self.flying: set[str] = set()
        self.opened: dict[str, int] = {}  # task -> its open episode's position in episodes
        for d in self.state.views.drift.drift():
            where = self.where(d.task_id)
            if where == IN_FLIGHT:
                self.flying.add(d.task_id)
            elif where is not None:
                self.counts[where] += 1

    @staticmethod
    def touched(kind: type, event: Any, task_id: str | None) -> tuple[str, ...]:
        """The tasks an event may move in the timeline: its own, or those a transient
        RECONCILE asks about (asking ends their launch's time in flight)."""
        if task_id is not None:
            return (task_id,)
        if kind is CommandIssued and event.kind == RECONCILE and event.run_id is None:
            return tuple(event.tasks or ())
        return ()

    def where(self, task_id: str) -> str | None:
        """The task's disagreeing cell, IN_FLIGHT, or None when the two sides agree."""
        cell = _disagreeing(self.state.views.drift.cell(task_id))
        if cell is None:
            return None
        return IN_FLIGHT if in_flight(self.state, task_id) else cell.label

    def moved(self, task_id: str, before: str | None, nid: int, time: float) -> None:
        after = self.where(task_id)
        if before == after:
            return
        index = self.index
        for where, step in ((before, -1), (after, 1)):
            if where == IN_FLIGHT:
                (self.flying.add if step > 0 else self.flying.discard)(task_id)
            elif where is not None:
                self.counts[where] += step
        if after == IN_FLIGHT:
            index.ever_in_flight.add(task_id)
        elif after is not None:
            index.ever_drifted.add(task_id)
        index.drift_samples.append(
            DriftSample(nid, time, {k: v for k, v in self.counts.items() if v}, len(self.flying))
        )
        drifting_before = before is not None and before != IN_FLIGHT
        drifting_after = after is not None and after != IN_FLIGHT
        if drifting_after and not drifting_before:
            self.opened[task_id] = len(index.episodes)
            index.episodes.append(Episode(task_id, after, nid, time, None, None))  # type: ignore[arg-type]
        elif drifting_before and not drifting_after and task_id in self.opened:
            at = self.opened.pop(task_id)
            index.episodes[at] = index.episodes[at]._replace(end_nid=nid, end_time=time)

    def finish(self) -> None:
        """Each episode's commands and first evidence: the commands about its task issued
        after the task's previous episode ended, up to this one's end."""
        index = self.index
        by_task: dict[str, list[Command]] = {}
        for command in index.commands.values():
            if command.event.task_id is not None:
                by_task.setdefault(command.event.task_id, []).append(command)
        previous_end: dict[str, int] = {}
        for at, episode in enumerate(index.episodes):
            after = previous_end.get(episode.task_id, 0)
            until = index.upto if episode.end_nid is None else episode.end_nid
            ids = tuple(c.nid for c in by_task.get(episode.task_id, ()) if after < c.nid <= until)
            known = [
                (n, index.event_time(episode.task_id, n))
                for c in ids
                for n in index.commands[c].event.evidence or ()
                if n < episode.nid
            ]
            first, first_time = min(
                ((n, when) for n, when in known if when is not None), default=(None, None)
            )
            index.episodes[at] = episode._replace(
                evidence_nid=first,
                evidence_time=first_time,
                commands=ids,
            )
            previous_end[episode.task_id] = until


def _disagreeing(cell: Cell | None) -> Cell | None:
    """The cell if it is one of disagreement, else None."""
    return None if cell is None or TABLE[cell] is FoundBy.CONSISTENT else cell


def _add(index: LogIndex, task_id: str, nid: int, event: Any) -> None:
    views = index.state.views
    row = TaskEvent(nid, event, views.scheduler.get(task_id), views.mesos.get(task_id))
    events = index.task_events.get(task_id)
    if events is None:
        index.task_events[task_id] = [row]
    else:
        events.append(row)


def _answered_run(runs: rc.Runs, task_id: str) -> str:
    """The running run a reconciliation answer belongs to: the newest that asked about
    the task, else the newest implicit one, else the newest."""
    active = list(runs.active.values())
    for run in reversed(active):
        if run.kind == rc.EXPLICIT and task_id in run.asked:
            return run.run_id
    for run in reversed(active):
        if run.kind == rc.IMPLICIT:
            return run.run_id
    return active[-1].run_id

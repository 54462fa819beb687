"""The reconciliation saga: pure decisions from (saga state, views, now) to the events to append.

Two pure functions (the Decider/Saga pattern):

- `evolve(state, nid, event, views) -> state` keeps `SagaState` (the runs, the outbox, what
  each task has been asked, killed, lost or rescheduled for, the lifecycle side effects still
  owed) up to date from the log. It reads the three views, which must already include the
  event. A rebuild from scratch gives an equal state (`rebuild`).
- `decide(state, views, now, config) -> events` returns what to append now: CommandIssued
  events (each with its kind, task, rule id from engine/rules.py, evidence = the notification
  ids it rests on, and run), confirmations and cancellations, run events
  (engine/reconciliation.py), and SagaReacted, the saga's tracking record. It is
  level-triggered where it can be (drift cells, timers, open kills): deciding twice from the
  same state decides nothing new, so a crash between deciding and appending loses nothing.
  Edge-triggered facts (a transition's side effects) are kept as obligations in the state until
  a SagaReacted, appended with the commands they produced, settles them.

Every decision is a row of engine/rules.py: `decide` collects the triggers that hold (drift
cells, side effects owed, timers, run steps, command outcomes) and `_Pass.fire` looks each
up in the table and fires the rule: its commands, each kind issued with its per-task guards
(one open kill, one loss, one replacement per task).

Safety properties (tests/test_saga*.py check them):
- every command has a rule and evidence; a KILL's evidence includes an update that showed the
  task alive, the scheduler's own KillRequested, or the KILL it retries: never silence;
- at most one open KILL per task, retried with backoff (15 s doubling to 5 min) until a
  terminal update confirms, and a new kill of the same task waits out the same backoff
  (no kill loops: AURORA-1966, Cook #44);
- nothing is marked lost inside the agent re-registration window after a (re)registration
  (Marathon #3142, Singularity #2066), and silence alone never kills;
- what a quiet implicit run omits (a task the Mesos view holds alive) is only asked about by
  name (R-IMPLICIT-OMITTED-ASK), never killed or lost for, and not even asked about when the
  run started inside that window;
- a task is rescheduled at most once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from engine import reconciliation as rc
from engine.drift_table import TABLE, Cell
from engine.events import (
    CommandCancelled,
    CommandConfirmed,
    CommandIssued,
    DryRunSet,
    JobScaled,
    KillRequested,
    ReconciliationCompleted,
    ReconciliationStarted,
    ReconciliationSuperseded,
    SagaReacted,
    StatusUpdateReceived,
    TaskAssigned,
    TaskCreated,
    TaskMarkedLost,
)
from engine.lifecycle import TRANSIENT, ScheduleStatus, SideEffect
from engine.mesos_states import FINAL
from engine.outbox import DISPATCHED, DONE_NAMES, DispatchConfig, Outbox
from engine.outbox import evolve as outbox_evolve
from engine.reconciliation import RunConfig, Runs
from engine.rules import (
    MESOS_SAYS,
    RULE_FOR,
    RULES,
    Cause,
    CommandKind,
    MesosSays,
    Outcome,
    RuleId,
    RunStep,
    Timer,
    Trigger,
    issue,
)
from projections.views import Views

_KILL = CommandKind.KILL.value
_RECONCILE = CommandKind.RECONCILE.value
_RESCHEDULE = CommandKind.RESCHEDULE.value
_MARK_LOST = CommandKind.MARK_LOST.value
# The scheduler states whose timers the saga keeps (engine/replay.py hands them to the kernel).
TRANSIENT_NAMES = frozenset(s.value for s in TRANSIENT)
PARTITIONED = ScheduleStatus.PARTITIONED.value
LOST = ScheduleStatus.LOST.value
_ACTIONABLE = frozenset(
    {SideEffect.KILL.value, SideEffect.RESCHEDULE.value, SideEffect.TRANSITION_TO_LOST.value}
)
_KILL_EFFECT = SideEffect.KILL.value
_UPDATE, _UPDATE_LOST = Cause.UPDATE.value, Cause.UPDATE_LOST.value
# R-KILL-CONFIRMED: what Mesos may say, after the kill was decided, that ends it.
_GIVEN_UP = frozenset({MesosSays.TERMINAL, MesosSays.UNKNOWN})
_INSTEAD_IF_RESCHEDULED = RULES[RULE_FOR[Outcome.RESCHEDULED]]


@dataclass(frozen=True)
class SagaConfig:
    """Everything the saga's decisions depend on besides the log and the time.

    Not part of the state: changing it changes later decisions, never the recorded ones.
    """

    runs: RunConfig = field(default_factory=RunConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    dry_run: bool = False
    transient_timeout: float = 300.0  # Aurora's transient_task_state_timeout
    transient_grace: float = 60.0  # after asking about an overdue task, before giving it up
    partition_timeout: float = 900.0
    kill_backoff_base: float = 15.0  # Aurora's kill retry: 15 s ...
    kill_backoff_cap: float = 300.0  # ... growing to 5 min

    def compressed(self, factor: float) -> SagaConfig:
        """Every duration divided by `factor` (the demo runs an hour in a minute with 60)."""
        return replace(
            self,
            runs=self.runs.compressed(factor),
            transient_timeout=self.transient_timeout / factor,
            transient_grace=self.transient_grace / factor,
            partition_timeout=self.partition_timeout / factor,
            kill_backoff_base=self.kill_backoff_base / factor,
            kill_backoff_cap=self.kill_backoff_cap / factor,
        )


class Obligation(NamedTuple):
    """Side effects a transition asked for that the saga has not decided on yet."""

    nid: int
    task_id: str
    effects: tuple[str, ...]
    cause: str  # the event's topic; "StatusUpdateReceived:LOST" for an update that lost it


@dataclass(slots=True)
class KillTrack:
    """The open kill of one task (one episode: first kill until confirmed)."""

    first: int  # command id of the episode's first KILL
    latest: int  # command id of its latest KILL (a retry)
    attempts: int


@dataclass(slots=True)
class SagaState:
    """The saga's view of the log."""

    runs: Runs = field(default_factory=Runs)
    outbox: Outbox = field(default_factory=Outbox)
    open_kills: dict[str, KillTrack] = field(default_factory=dict)
    kill_episodes: dict[str, tuple[int, float]] = field(default_factory=dict)  # n, last start
    rescheduled: dict[str, int] = field(default_factory=dict)  # task -> RESCHEDULE command
    replaced_by: dict[str, str] = field(default_factory=dict)  # task -> its replacement
    ancestor: dict[str, str] = field(default_factory=dict)  # replacement -> task
    lost_marked: dict[str, int] = field(default_factory=dict)  # task -> MARK_LOST command
    transient: dict[str, float] = field(default_factory=dict)  # task -> since (TRANSIENT)
    partitioned: dict[str, float] = field(default_factory=dict)  # task -> since (PARTITIONED)
    transient_asked: dict[str, tuple[int, float]] = field(default_factory=dict)  # cid, time
    obligations: list[Obligation] = field(default_factory=list)
    reacted_upto: int = 0
    last_nid: int = 0
    # An operator's standing orders (tools/operator), so that a restart keeps them: the
    # newest DryRunSet's setting (None: never ordered) and each job's newest JobScaled.
    dry_run_order: bool | None = None
    scaled: dict[str, int] = field(default_factory=dict)  # job -> instances


# --- evolve ------------------------------------------------------------------------------------


def _task_event(state: SagaState, nid: int, event: Any, views: Views) -> None:
    task_id = event.task_id
    # The new state only if this event moved the task: most updates move nothing, and
    # reading the whole record for each of them was most of the saga's cost on replay.
    moved = views.scheduler.moved_to(task_id, nid)
    if moved is not None:  # this event moved the task
        st, effects = moved
        actions = move_actions(effects) if effects else None
        task_moved(state, nid, task_id, event.time, st, actions, event.topic)
    elif type(event) is StatusUpdateReceived:
        illegal = views.scheduler.illegal.get(task_id)
        if illegal is not None and illegal.nid == nid and _KILL_EFFECT in illegal.side_effects:
            state.obligations.append(Obligation(nid, task_id, (_KILL_EFFECT,), event.topic))


# --- what evolve reads of the kinds the replay kernel applies itself ---------------------------
# The compiled replay kernel (engine/_replay_kernel.pyx) applies status updates, task
# creations and assignments to the views itself, and to a LedgerState's saga it does only
# what evolve would for them, which is little: such an event changes the saga's state only
# (1) while `listens` (reconciliation.evolve then reads every status update), or
# (2) if it moved its task (task_moved, below; the kernel mirrors it), or
# (3) if it is a status update asking an illegal move, which may owe a kill (the kernel hands
#     those to evolve);
# besides, every event sets last_nid. tests/test_replay_kernel.py checks the two paths leave
# byte-identical states.


def listens(state: SagaState) -> bool:
    """Whether evolve reads every status update now, moved or not: while a run is active or a
    quiet implicit run's omissions are kept (reconciliation.evolve), and before the log's
    first event (the schedules start from its time)."""
    runs = state.runs
    return bool(runs.active) or runs.omitted is not None or runs.first_time is None


def move_actions(effects: tuple[SideEffect, ...]) -> tuple[str, ...] | None:
    """The side effects of a move the saga owes a decision on (an obligation), or None."""
    return tuple(e.value for e in effects if e in _ACTIONABLE) or None


def task_moved(
    state: SagaState,
    nid: int,
    task_id: str,
    time: float,
    st: str,
    actions: tuple[str, ...] | None,
    topic: str,
) -> None:
    """The event at `nid` (of kind `topic`, at `time`) moved the task to scheduler state `st`,
    with these actionable side effects: the timers restart, and the effects are owed.

    What this leaves in `transient` and `partitioned` depends only on the task's last move
    (in if that entered the state, with its time, after the tasks that moved before it), so
    the replay kernel may apply a run of moves to them at once."""
    state.transient.pop(task_id, None)
    if st in TRANSIENT_NAMES:
        state.transient[task_id] = time
    state.partitioned.pop(task_id, None)
    if st == PARTITIONED:
        state.partitioned[task_id] = time
    state.transient_asked.pop(task_id, None)
    if actions is not None:
        cause = _UPDATE_LOST if st == LOST and topic == _UPDATE else topic
        state.obligations.append(Obligation(nid, task_id, actions, cause))


def _command_issued(state: SagaState, nid: int, e: CommandIssued, views: Views) -> None:
    kind, task_id = e.kind, e.task_id
    if kind == _KILL:
        track = state.open_kills.get(task_id)
        if e.retry_of is not None and track is not None:
            track.latest = nid
            track.attempts = e.attempt
        else:
            state.open_kills[task_id] = KillTrack(nid, nid, e.attempt)
            episodes = state.kill_episodes.get(task_id, (0, 0.0))[0]
            state.kill_episodes[task_id] = (episodes + 1, max(e.time, e.not_before or e.time))
    elif kind == _RESCHEDULE:
        state.rescheduled[task_id] = nid
    elif kind == _MARK_LOST:
        state.lost_marked[task_id] = nid
    elif kind == _RECONCILE and e.run_id is None and e.tasks:
        for asked in e.tasks:
            state.transient_asked[asked] = (nid, e.time)


def _command_settled(state: SagaState, nid: int, e: Any, views: Views) -> None:
    rec = state.outbox.commands.get(e.command_id)
    if rec is None:
        return
    task_id = rec.task_id
    confirmed = type(e) is CommandConfirmed
    if rec.kind == _KILL:
        track = state.open_kills.get(task_id)
        if track is not None and (confirmed or track.latest == e.command_id):
            del state.open_kills[task_id]
    elif rec.kind == _RESCHEDULE:
        if confirmed and rec.new_task_id is not None:
            state.replaced_by[task_id] = rec.new_task_id
            state.ancestor[rec.new_task_id] = task_id
        elif not confirmed and state.rescheduled.get(task_id) == e.command_id:
            del state.rescheduled[task_id]
    elif (
        rec.kind == _MARK_LOST and not confirmed and state.lost_marked.get(task_id) == e.command_id
    ):
        del state.lost_marked[task_id]


def _reacted(state: SagaState, nid: int, e: SagaReacted, views: Views) -> None:
    obligations = state.obligations
    cut = 0
    while cut < len(obligations) and obligations[cut].nid <= e.upto:
        cut += 1
    del obligations[:cut]
    state.reacted_upto = max(state.reacted_upto, e.upto)


def _dry_run_set(state: SagaState, nid: int, event: DryRunSet, views: Views) -> None:
    state.dry_run_order = bool(event.dry_run)


def _job_scaled(state: SagaState, nid: int, event: JobScaled, views: Views) -> None:
    state.scaled[event.job] = event.instances


_HANDLERS = {
    DryRunSet: _dry_run_set,
    JobScaled: _job_scaled,
    StatusUpdateReceived: _task_event,
    KillRequested: _task_event,
    TaskMarkedLost: _task_event,
    TaskAssigned: _task_event,
    TaskCreated: _task_event,
    CommandIssued: _command_issued,
    CommandConfirmed: _command_settled,
    CommandCancelled: _command_settled,
    SagaReacted: _reacted,
}


def evolve(state: SagaState, nid: int, event: Any, views: Views) -> SagaState:
    """Apply one event (in place) and return the state. `views` must already include it."""
    rc.evolve(state.runs, nid, event, views)
    outbox_evolve(state.outbox, nid, event, views)
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        handler(state, nid, event, views)
    state.last_nid = nid
    return state


def rebuild(history: Iterable[tuple[int, Any]]) -> tuple[Views, SagaState]:
    """The views and the saga state built from scratch from (notification id, event) pairs."""
    views = Views()
    state = SagaState()
    for nid, event in history:
        views.apply(nid, event)
        evolve(state, nid, event, views)
    return views, state


# --- decide ------------------------------------------------------------------------------------


def kill_backoff(attempts: int, config: SagaConfig) -> float:
    """How long a kill waits for its confirmation after its `attempts`-th send."""
    return min(config.kill_backoff_cap, config.kill_backoff_base * 2.0 ** min(attempts - 1, 30))


class _Pass:
    """One decision pass: the events so far, and what they already decided per task."""

    def __init__(self, state: SagaState, views: Views, now: float, config: SagaConfig) -> None:
        self.state = state
        self.views = views
        self.now = now
        self.config = config
        self.events: list[Any] = []
        self.killing: set[str] = set()  # tasks with a KILL decided in this pass
        self.losing: set[str] = set()
        self.rescheduling: set[str] = set()
        self.confirmed: set[str] = set()  # tasks whose open kill this pass confirmed
        self.by_run: dict[str, dict[str, int]] = {}

    def fire(
        self,
        trigger: Trigger | tuple[Any, ...],
        task_id: str | None,
        evidence: list[int] | Callable[[], list[int]],
        **details: Any,
    ) -> None:
        """THE way a decision is taken: the rule `trigger` fires (engine.rules.RULE_FOR; none:
        nothing), and its commands are issued. `evidence` (or a function computing it, if
        building it costs) is what the decision rests on; `details` are the command's other
        fields (run_id, tasks, attempt, retry_of), or for a confirming rule the command it
        settles and how (command_id, outcome); `found_by_run` is the run whose kind finds the
        trigger (a drift cell's), named by the command if the rule says so."""
        rule_id = RULE_FOR.get(trigger)  # type: ignore[call-overload]
        if rule_id is None:
            return
        rule = RULES[rule_id]
        if rule.if_rescheduled and task_id in self.state.rescheduled:
            rule = _INSTEAD_IF_RESCHEDULED
        found_by_run = details.pop("found_by_run", None)
        if found_by_run is not None and rule.counted_by_run:
            details["run_id"] = found_by_run
        if rule.asked_by is not None:
            return  # the explicit run's next round asks (rule.asked_by)
        if rule.confirms:
            evidence = evidence() if callable(evidence) else evidence
            self.events.append(
                CommandConfirmed(
                    time=self.now,
                    causation=evidence[0],
                    command_id=details["command_id"],
                    outcome=details["outcome"],
                )
            )
            self.confirmed.add(task_id)  # type: ignore[arg-type]
            return
        for kind in rule.commands:
            _ISSUERS[kind](self, rule.id, task_id, evidence, **details)

    def _issue(
        self, rule_id: RuleId, task_id: str | None, evidence: list[int], **details: Any
    ) -> None:
        self.events.append(
            issue(
                rule_id,
                self.now,
                evidence=evidence,
                task_id=task_id,
                dry_run=self.config.dry_run,
                **details,
            )
        )
        run_id = details.get("run_id")
        if run_id is not None:
            counts = self.by_run.setdefault(run_id, {})
            counts[rule_id.value] = counts.get(rule_id.value, 0) + 1

    def _kill(self, rule_id: RuleId, task_id: str, evidence: Any, **details: Any) -> None:
        state = self.state
        if details.get("retry_of") is None:  # a retry is the open kill's next attempt
            if task_id in self.killing:
                return
            if task_id in state.open_kills and task_id not in self.confirmed:
                return  # one open kill per task: it is retried, not doubled
            episode = state.kill_episodes.get(task_id)
            if episode is not None:
                allowed = episode[1] + kill_backoff(episode[0], self.config)
                if self.now < allowed:
                    details["not_before"] = allowed  # a task killed before waits out the backoff
        self._issue(rule_id, task_id, evidence() if callable(evidence) else evidence, **details)
        self.killing.add(task_id)

    def _mark_lost(self, rule_id: RuleId, task_id: str, evidence: Any, **details: Any) -> None:
        if task_id in self.losing or task_id in self.state.lost_marked:
            return
        sched = self.views.scheduler.tasks.get(task_id)
        if sched is None or sched.state in DONE_NAMES:
            return
        self._issue(rule_id, task_id, evidence() if callable(evidence) else evidence, **details)
        self.losing.add(task_id)

    def _reschedule(self, rule_id: RuleId, task_id: str, evidence: Any, **details: Any) -> None:
        if task_id in self.rescheduling or task_id in self.state.rescheduled:
            return  # a task is replaced at most once
        self._issue(rule_id, task_id, evidence() if callable(evidence) else evidence, **details)
        self.rescheduling.add(task_id)

    def _reconcile(self, rule_id: RuleId, task_id: None, evidence: Any, **details: Any) -> None:
        self._issue(rule_id, task_id, evidence() if callable(evidence) else evidence, **details)


# How each kind of command is issued: the per-task guards (one open kill, one loss, one
# replacement) are part of issuing it.
_ISSUERS: dict[str, Callable[..., None]] = {
    _KILL: _Pass._kill,
    _MARK_LOST: _Pass._mark_lost,
    _RESCHEDULE: _Pass._reschedule,
    _RECONCILE: _Pass._reconcile,
}


def _nids(*records: Any) -> list[int]:
    return [r.nid for r in records if r is not None]


def _confirm_kills(p: _Pass) -> None:
    mesos = p.views.mesos.tasks
    for task_id, track in p.state.open_kills.items():
        m = mesos.get(task_id)
        if m is None:
            continue
        # A final state ends it whenever it came; a resurrectable one (LOST) or TASK_UNKNOWN
        # only if Mesos said it after the kill was decided.
        if m.state in FINAL or (m.nid > track.first and MESOS_SAYS[m.state] in _GIVEN_UP):
            p.fire(
                Outcome.KILL_TOOK_EFFECT,
                task_id,
                [m.nid],
                command_id=track.latest,
                outcome=f"Mesos says {m.state}",
            )


def _retry_kills(p: _Pass) -> None:
    commands = p.state.outbox.commands
    mesos = p.views.mesos.tasks
    for task_id, track in p.state.open_kills.items():
        if task_id in p.confirmed:
            continue
        rec = commands.get(track.latest)
        if rec is None or rec.status != DISPATCHED or rec.dispatched_at is None:
            continue
        m = mesos.get(task_id)
        if m is not None and m.state == "TASK_UNREACHABLE":
            continue  # the master cannot deliver it: wait for the agent to come back
        if p.now < rec.dispatched_at + kill_backoff(track.attempts, p.config):
            continue
        p.fire(
            Timer.KILL_BACKOFF,
            task_id,
            [track.latest, *_nids(m)],
            run_id=rec.run_id,
            attempt=track.attempts + 1,
            retry_of=track.latest,
        )


def drift_triggers(views: Views) -> Iterator[tuple[str, Cell, MesosSays]]:
    """(task, cell, what Mesos says) for every disagreement: the drift rules' triggers
    (engine.rules.DriftCell), in the drift view's order."""
    mesos_state = views.mesos.get
    for task_id, (cell, _since) in views.drift.disagreements.items():
        name = mesos_state(task_id)
        yield task_id, cell, MesosSays.SILENT if name is None else MESOS_SAYS[name]


def _drift_rules(p: _Pass) -> None:
    views, active = p.views, p.state.runs.active
    mesos, sched = views.mesos.record, views.scheduler.record
    for task_id, cell, says in drift_triggers(views):
        run = active.get(TABLE[cell].value)
        p.fire(
            (cell, says),  # a DriftCell, as a plain tuple: the same key, cheaper to build
            task_id,
            lambda task_id=task_id: _nids(mesos(task_id), sched(task_id)),
            found_by_run=None if run is None else run.run_id,
        )


def _obligations(p: _Pass) -> None:
    upto = None
    for ob in p.state.obligations:
        upto = ob.nid
        for effect in ob.effects:
            p.fire((effect, ob.cause), ob.task_id, [ob.nid])  # a SideEffectOf
    if upto is not None:
        p.events.append(SagaReacted(time=p.now, causation=None, upto=upto))


def _timers(p: _Pass) -> None:
    state, views, now, config = p.state, p.views, p.now, p.config
    mesos, sched = views.mesos.tasks, views.scheduler.tasks
    in_window = rc.in_reregistration_window(state.runs, now, config.runs)
    overdue: list[str] = []
    evidence: list[int] = []
    for task_id, since in state.transient.items():
        m = mesos.get(task_id)
        asked = state.transient_asked.get(task_id)
        heard = since if m is None else max(since, m.time)
        if asked is not None and m is not None and max(m.nid, m.stale_nid or 0) > asked[0]:
            asked = None  # Mesos answered since we asked: the clock restarts from its answer
        if asked is None:
            if now - heard >= config.transient_timeout:
                overdue.append(task_id)
                evidence.append(sched[task_id].nid)
        elif now >= asked[1] + config.transient_grace and not in_window:
            p.fire(Timer.TRANSIENT_GRACE, task_id, [sched[task_id].nid, asked[0]])
    size = config.runs.batch_size
    for first in range(0, len(overdue), size):
        p.fire(
            Timer.TRANSIENT_TIMEOUT,
            None,
            evidence[first : first + size],
            tasks=overdue[first : first + size],
        )
    if in_window:
        return
    for task_id, since in state.partitioned.items():
        if now - since >= config.partition_timeout:
            p.fire(
                Timer.PARTITION_TIMEOUT,
                task_id,
                _nids(sched.get(task_id), mesos.get(task_id)),
            )


def _omitted_asks(p: _Pass) -> None:
    """R-IMPLICIT-OMITTED-ASK: ask by name about what a quiet implicit run did not mention
    although the Mesos view holds it alive. Never a kill or a loss: an omission is not
    evidence, the master's answer to the question is. A run that started inside the agent
    re-registration window (or before a (re)registration) proves nothing: the master omits the
    tasks of agents not re-registered yet."""
    runs = p.state.runs
    omitted = runs.omitted
    if omitted is None:
        return
    window = p.config.runs.reregister_window
    if runs.registered_at is not None and omitted.started_at < runs.registered_at + window:
        return
    record = p.views.mesos.record
    tasks = list(omitted.tasks)
    size = p.config.runs.batch_size
    for first in range(0, len(tasks), size):
        batch = tasks[first : first + size]
        p.fire(
            RunStep.OMISSIONS,
            None,
            [omitted.started_nid, omitted.completed_nid, *_nids(*map(record, batch))],
            run_id=omitted.run_id,
            tasks=batch,
        )


def _cancel_run_commands(p: _Pass, run: rc.Run, reason: str) -> None:
    pending = p.state.outbox.pending
    for cid in sorted(run.command_ids):
        if cid in pending:
            p.events.append(
                CommandCancelled(time=p.now, causation=None, command_id=cid, reason=reason)
            )


def _runs(p: _Pass) -> None:
    state, now, config = p.state, p.now, p.config
    runs = state.runs
    starting: set[str] = set()
    if runs.registration_due is not None:
        old = runs.active.get(rc.EXPLICIT)
        if old is not None:
            _cancel_run_commands(p, old, "run superseded")
        p.events += rc.start(
            runs, rc.EXPLICIT, "registered", now, config.runs, causation=runs.registration_due
        )
        starting.add(rc.EXPLICIT)
    for kind in rc.KINDS:
        if kind not in starting and rc.scheduled_due(runs, kind, now, config.runs):
            old = runs.active.get(kind)
            if old is not None:  # it started in the future of a clock that stepped back
                _cancel_run_commands(p, old, "run superseded")
            p.events += rc.start(runs, kind, "schedule", now, config.runs)
            starting.add(kind)
    for kind, run in list(runs.active.items()):
        if kind in starting:
            continue
        step = rc.step(
            run,
            p.views,
            now,
            config.runs,
            extra_by_rule=p.by_run.get(run.run_id),
            dry_run=config.dry_run,
        )
        if step and step[-1].topic == "ReconciliationCompleted":
            _cancel_run_commands(p, run, "run completed")
        p.events += step


# After appending one of these, deciding again at the same time may decide more: a run's
# first round needs its start's id; an implicit run's omissions are asked about resting on its
# completion's id; a confirmed or cancelled kill frees the task for a new one.
DECIDE_AGAIN: frozenset[type] = frozenset(
    {
        ReconciliationStarted,
        ReconciliationSuperseded,
        ReconciliationCompleted,
        CommandConfirmed,
        CommandCancelled,
    }
)


def decide(state: SagaState, views: Views, now: float, config: SagaConfig) -> list[Any]:
    """The events the saga appends at `now` (empty if there is nothing to do). Pure."""
    p = _Pass(state, views, now, config)
    if not config.dry_run:
        for cid, rec in state.outbox.pending.items():
            if rec.dry_run:
                p.events.append(
                    CommandCancelled(
                        time=now, causation=None, command_id=cid, reason="dry run ended"
                    )
                )
    _confirm_kills(p)
    _retry_kills(p)
    _drift_rules(p)
    _timers(p)
    _omitted_asks(p)
    _runs(p)
    _obligations(p)  # last: its SagaReacted closes the batch
    return p.events


def start_run(
    state: SagaState, views: Views, kind: str, trigger: str, now: float, config: SagaConfig
) -> list[Any]:
    """The events that start a run now (an operator's or a caller's request), superseding a run
    of the same kind in progress."""
    p = _Pass(state, views, now, config)
    old = state.runs.active.get(rc.check_kind(kind))
    if old is not None:
        _cancel_run_commands(p, old, "run superseded")
    p.events += rc.start(state.runs, kind, trigger, now, config.runs)
    return p.events


def run_id_of_start(events: list[Any]) -> str:
    """The run id a start_run() batch starts."""
    return next(e.run_id for e in events if e.topic == "ReconciliationStarted")

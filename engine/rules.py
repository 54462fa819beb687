"""The reconciliation decision table: every rule the saga may fire, as data, in one place.

Each rule is a row: a stable id (written into every command it issues, so an audit can
answer "why was task X killed?" with a rule, its reason and the events it rested on), the
typed triggers it fires on, the commands it issues, and a one-line reason. A trigger is one
of:

- `DriftCell(cell, says)`: a task in a disagreeing cell of the drift table
  (engine/drift_table.py), keyed by its `Cell`, and what Mesos last said of it;
- `SideEffectOf(effect, cause)`: a lifecycle side effect (engine/lifecycle.py) a transition
  asked for, and what caused the transition;
- a `Timer` that ran out, a `RunStep` of a reconciliation run, or a command `Outcome`.

engine/saga.py collects the triggers that hold, looks each up here (`RULE_FOR`) and fires
the rule through one function, which issues the rule's commands (`issue` builds each
CommandIssued, its kind taken from the row); engine/reconciliation.py builds its rounds'
commands with `issue` too. Nothing decides outside this table: a row may issue nothing
(`R-UNREACHABLE-HOLD`: a deliberate non-decision), leave its question to the explicit run's
next round (`asked_by`), settle the open command instead of issuing one (`confirms`), or give
way to another rule for a task already rescheduled (`if_rescheduled`). The command kinds, and
whether sending one twice is harmless, are here too (COMMANDS), because which commands a
rule may issue is part of the decision, and the outbox's crash safety rests on them.

There is no row for agreement: a consistent cell (drift_table.FoundBy.CONSISTENT) is never
looked at, so a rule for it could never fire.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple

from engine.drift_table import TABLE, Cell, FoundBy, Holds
from engine.events import CommandIssued
from engine.lifecycle import ScheduleStatus, SideEffect
from engine.mesos_states import BY_NAME as MESOS_STATES
from engine.mesos_states import StateInfo


class CommandKind(StrEnum):
    """What a command asks for."""

    KILL = "KILL"
    RECONCILE = "RECONCILE"
    RESCHEDULE = "RESCHEDULE"
    MARK_LOST = "MARK_LOST"


class CommandInfo(NamedTuple):
    """How a kind of command is carried out."""

    remote: bool  # sent to the master by the driver; otherwise applied to the log locally
    idempotent: bool  # sending it twice is harmless
    destructive: bool  # counted by the blast-radius breaker (kills and losses)
    why: str


K = CommandKind

# THE command table. The dispatcher sends remote commands at least once (it records
# CommandDispatched after send returns, so a crash in between re-sends on restart): only
# idempotent kinds may be remote. Local commands append their effect and their confirmation in
# ONE transaction: exactly once.
COMMANDS: dict[CommandKind, CommandInfo] = {
    K.KILL: CommandInfo(
        remote=True,
        idempotent=True,
        destructive=True,
        why="killing a dead or dying task is a no-op for Mesos; a repeat only adds an update",
    ),
    K.RECONCILE: CommandInfo(
        remote=True,
        idempotent=True,
        destructive=False,
        why="a read-only question; a repeat only makes the master answer twice",
    ),
    K.RESCHEDULE: CommandInfo(
        remote=False,
        idempotent=False,
        destructive=False,
        why="a launch is not idempotent: the replacement's task id is derived from the command "
        "id and created with the confirmation in one transaction, so it exists at most once",
    ),
    K.MARK_LOST: CommandInfo(
        remote=False,
        idempotent=True,
        destructive=True,
        why="a scheduler-side verdict: TaskMarkedLost and the confirmation are one transaction",
    ),
}
assert all(info.idempotent for info in COMMANDS.values() if info.remote), "remote must be safe"


class RuleId(StrEnum):
    """The rule ids. Their values are what commands, logs and reports carry."""

    IMPLICIT_KILL_TERMINAL = "R-IMPLICIT-KILL-TERMINAL"
    IMPLICIT_KILL_UNKNOWN = "R-IMPLICIT-KILL-UNKNOWN"
    PARTITION_RETURNED_KILL = "R-PARTITION-RETURNED-KILL"
    UNREACHABLE_HOLD = "R-UNREACHABLE-HOLD"
    EXPLICIT_TERMINAL = "R-EXPLICIT-TERMINAL"
    UNKNOWN_ASK_AGAIN = "R-UNKNOWN-ASK-AGAIN"
    SILENCE_ASK_AGAIN = "R-SILENCE-ASK-AGAIN"
    GONE_RESCHEDULE = "R-GONE-RESCHEDULE"
    LIFECYCLE_RESCHEDULE = "R-LIFECYCLE-RESCHEDULE"
    LOST_RESCHEDULE = "R-LOST-RESCHEDULE"
    KILL_REQUESTED = "R-KILL-REQUESTED"
    LIFECYCLE_KILL = "R-LIFECYCLE-KILL"
    LIFECYCLE_TO_LOST = "R-LIFECYCLE-TO-LOST"
    KILL_RETRY = "R-KILL-RETRY"
    KILL_CONFIRMED = "R-KILL-CONFIRMED"
    TRANSIENT_RECONCILE = "R-TRANSIENT-RECONCILE"
    TRANSIENT_LOST = "R-TRANSIENT-LOST"
    PARTITION_TIMEOUT = "R-PARTITION-TIMEOUT"
    EXPLICIT_ROUND = "R-EXPLICIT-ROUND"
    IMPLICIT_ASK = "R-IMPLICIT-ASK"
    IMPLICIT_OMITTED_ASK = "R-IMPLICIT-OMITTED-ASK"


# --- the triggers ------------------------------------------------------------------------------


class MesosSays(StrEnum):
    """What Mesos's latest word on a task amounts to, for choosing a drift rule."""

    ALIVE = "alive"  # STAGING, STARTING, RUNNING, KILLING
    UNREACHABLE = "unreachable"
    TERMINAL = "terminal"
    UNKNOWN = "unknown"  # answered TASK_UNKNOWN: holds no state
    SILENT = "silent"  # never said anything


def _says(info: StateInfo) -> MesosSays:
    if not info.stored_by_master:
        return MesosSays.UNKNOWN
    if info.terminal:
        return MesosSays.TERMINAL
    # Held by the master on an agent it cannot reach: Aurora's PARTITIONED.
    if info.scheduler is ScheduleStatus.PARTITIONED:
        return MesosSays.UNREACHABLE
    return MesosSays.ALIVE


# Mesos state name -> what it says, from the Mesos state table (engine/mesos_states.py).
MESOS_SAYS: dict[str, MesosSays] = {name: _says(info) for name, info in MESOS_STATES.items()}


class Cause(StrEnum):
    """What caused a transition whose side effects the saga owes (an obligation's cause):
    the event's topic, and a status update that moved its task to LOST apart."""

    UPDATE = "StatusUpdateReceived"
    UPDATE_LOST = "StatusUpdateReceived:LOST"
    KILL_REQUESTED = "KillRequested"
    MARKED_LOST = "TaskMarkedLost"
    CREATED = "TaskCreated"
    ASSIGNED = "TaskAssigned"


class Timer(StrEnum):
    """A deadline the saga keeps (durations in engine.saga.SagaConfig)."""

    KILL_BACKOFF = "kill backoff"
    TRANSIENT_TIMEOUT = "transient timeout"
    TRANSIENT_GRACE = "transient grace"
    PARTITION_TIMEOUT = "partition timeout"


class RunStep(StrEnum):
    """A step of a reconciliation run (engine/reconciliation.py)."""

    EXPLICIT_ROUND = "explicit round"
    IMPLICIT_ROUND = "implicit round"
    OMISSIONS = "quiet implicit run's omissions"


class Outcome(StrEnum):
    """What became of a command, as the saga acts on it."""

    KILL_TOOK_EFFECT = "open kill's task terminal or unknown"
    RESCHEDULED = "task already rescheduled"


class DriftCell(NamedTuple):
    """A task in a disagreeing cell, and what Mesos last said of it."""

    cell: Cell
    says: MesosSays


class SideEffectOf(NamedTuple):
    """A side effect a transition asked for, and what caused the transition."""

    effect: SideEffect
    cause: Cause


Trigger = DriftCell | SideEffectOf | Timer | RunStep | Outcome


class Rule(NamedTuple):
    """One row of the decision table."""

    id: RuleId
    triggers: tuple[Trigger, ...]
    commands: tuple[CommandKind, ...]  # () = deliberately nothing
    matches: str  # the triggers in words
    reason: str
    # The question is asked by this rule's command (the explicit run's next round), not one
    # per task: the row records why, and issues nothing itself.
    asked_by: RuleId | None = None
    # Fires no command: it settles the open command (a CommandConfirmed).
    confirms: bool = False
    # For a task whose RESCHEDULE was issued, the Outcome.RESCHEDULED rule fires instead.
    if_rescheduled: bool = False
    # Its command names the run whose kind finds the drift cell, and that run's report
    # (ReconciliationCompleted.by_rule) counts it.
    counted_by_run: bool = False


_NT, _T, _A = Holds.NON_TERMINAL, Holds.TERMINAL, Holds.ABSENT
M, E, C = MesosSays, SideEffect, Cause

_RULES = (
    Rule(
        RuleId.IMPLICIT_KILL_TERMINAL,
        (DriftCell(Cell(_NT, _T), M.ALIVE),),
        (K.KILL,),
        "cell non-terminal/terminal (found by implicit), Mesos says the task is alive",
        "Mesos runs a task the scheduler holds finished: a rogue duplicate; kill until a "
        "terminal update confirms",
        if_rescheduled=True,
        counted_by_run=True,
    ),
    Rule(
        RuleId.IMPLICIT_KILL_UNKNOWN,
        (DriftCell(Cell(_NT, _A), M.ALIVE),),
        (K.KILL,),
        "cell non-terminal/absent (found by implicit), Mesos says the task is alive",
        "Mesos runs a task the scheduler never launched or forgot: an orphan; kill until a "
        "terminal update confirms",
        if_rescheduled=True,
        counted_by_run=True,
    ),
    Rule(
        RuleId.PARTITION_RETURNED_KILL,
        (Outcome.RESCHEDULED,),
        (K.KILL,),
        "cell non-terminal/terminal or non-terminal/absent for a task already rescheduled",
        "the original came back after its replacement was created: keep the replacement, kill "
        "the original (one instance, not two)",
        counted_by_run=True,
    ),
    Rule(
        RuleId.UNREACHABLE_HOLD,
        (DriftCell(Cell(_NT, _T), M.UNREACHABLE), DriftCell(Cell(_NT, _A), M.UNREACHABLE)),
        (),
        "Mesos says TASK_UNREACHABLE (any column)",
        "the agent is partitioned and the task may come back: no kill; the partition timer decides",
    ),
    Rule(
        RuleId.EXPLICIT_TERMINAL,
        (DriftCell(Cell(_T, _NT), M.TERMINAL),),
        (K.MARK_LOST,),
        "cell terminal/non-terminal (found by explicit): Mesos holds a terminal state the "
        "scheduler could not apply",
        "Mesos's terminal state is the truth about the cluster: give the task up as LOST",
    ),
    Rule(
        RuleId.UNKNOWN_ASK_AGAIN,
        (DriftCell(Cell(_A, _NT), M.UNKNOWN),),
        (K.RECONCILE,),
        "cell absent/non-terminal (found by explicit), Mesos answered TASK_UNKNOWN",
        "the master holds no state for it: never kill on TASK_UNKNOWN alone (AURORA-1966); "
        "ask again next round",
        asked_by=RuleId.EXPLICIT_ROUND,
    ),
    Rule(
        RuleId.SILENCE_ASK_AGAIN,
        (DriftCell(Cell(_A, _NT), M.SILENT),),
        (K.RECONCILE,),
        "cell absent/non-terminal (found by explicit), Mesos has not answered",
        "no answer is not evidence (the master is silent for agents that have not "
        "re-registered): ask again, never kill or lose for it",
        asked_by=RuleId.EXPLICIT_ROUND,
    ),
    Rule(
        RuleId.GONE_RESCHEDULE,
        (SideEffectOf(E.RESCHEDULE, C.UPDATE_LOST),),
        (K.RESCHEDULE,),
        "a status update moved a live task to LOST (TASK_GONE, TASK_LOST, TASK_DROPPED, "
        "TASK_GONE_BY_OPERATOR, TASK_ERROR)",
        "Mesos says the task is gone: replace it with a new task linked to its ancestor",
    ),
    Rule(
        RuleId.LIFECYCLE_RESCHEDULE,
        (SideEffectOf(E.RESCHEDULE, C.UPDATE),),
        (K.RESCHEDULE,),
        "a status update's transition carries RESCHEDULE (failed, killed by Mesos, ...)",
        "the task lifecycle (Aurora's) replaces a task that ended this way",
    ),
    Rule(
        RuleId.LOST_RESCHEDULE,
        (SideEffectOf(E.RESCHEDULE, C.MARKED_LOST),),
        (K.RESCHEDULE,),
        "a TaskMarkedLost transition carries RESCHEDULE",
        "a task given up as LOST by rule is replaced (its KILL side effect is not executed: "
        "no kill from silence)",
    ),
    Rule(
        RuleId.KILL_REQUESTED,
        (SideEffectOf(E.KILL, C.KILL_REQUESTED),),
        (K.KILL,),
        "the scheduler's kill (KillRequested) moved a launched task to KILLING",
        "the scheduler decided to kill: send it and keep sending until a terminal update "
        "confirms (Marathon #623)",
        if_rescheduled=True,
    ),
    Rule(
        RuleId.LIFECYCLE_KILL,
        (SideEffectOf(E.KILL, C.UPDATE), SideEffectOf(E.KILL, C.UPDATE_LOST)),
        (K.KILL,),
        "a status update's transition carries KILL (a dead or dying task reported alive, "
        "ASSIGNED/PARTITIONED reported LOST)",
        "the task lifecycle (Aurora's) asks for a kill, resting on that update",
        if_rescheduled=True,
    ),
    Rule(
        RuleId.LIFECYCLE_TO_LOST,
        (
            SideEffectOf(E.TRANSITION_TO_LOST, C.KILL_REQUESTED),
            SideEffectOf(E.TRANSITION_TO_LOST, C.UPDATE),
            SideEffectOf(E.TRANSITION_TO_LOST, C.UPDATE_LOST),
        ),
        (K.MARK_LOST,),
        "a transition carries TRANSITION_TO_LOST (a partitioned task being killed)",
        "a kill cannot wait for a partition to heal: give the task up as LOST",
    ),
    Rule(
        RuleId.KILL_RETRY,
        (Timer.KILL_BACKOFF,),
        (K.KILL,),
        "a dispatched KILL without a terminal update after its backoff (15 s doubling to 5 min)",
        "a kill is not done until Mesos confirms it: send it again",
    ),
    Rule(
        RuleId.KILL_CONFIRMED,
        (Outcome.KILL_TOOK_EFFECT,),
        (),
        "an open KILL, and Mesos now says the task is terminal or holds no state for it",
        "the kill took effect (or there is nothing left to kill): confirm it, stop retrying",
        confirms=True,
    ),
    Rule(
        RuleId.TRANSIENT_RECONCILE,
        (Timer.TRANSIENT_TIMEOUT,),
        (K.RECONCILE,),
        "a task in ASSIGNED/STARTING/KILLING/PREEMPTING/RESTARTING/DRAINING unchanged for "
        "the transient timeout (5 min)",
        "an expected update is overdue: ask Mesos first",
    ),
    Rule(
        RuleId.TRANSIENT_LOST,
        (Timer.TRANSIENT_GRACE,),
        (K.MARK_LOST,),
        "still unchanged and unanswered a grace period after R-TRANSIENT-RECONCILE, outside "
        "the agent re-registration window",
        "Aurora's transient timeout: the task is stuck, give it up as LOST",
    ),
    Rule(
        RuleId.PARTITION_TIMEOUT,
        (Timer.PARTITION_TIMEOUT,),
        (K.MARK_LOST,),
        "a task PARTITIONED for the partition timeout, outside the agent re-registration window",
        "a partition that does not heal: give the task up as LOST (it is then rescheduled)",
    ),
    Rule(
        RuleId.EXPLICIT_ROUND,
        (RunStep.EXPLICIT_ROUND,),
        (K.RECONCILE,),
        "an explicit run's round is due (start, or backoff passed with tasks unconfirmed)",
        "Mesos's algorithm: ask for every unconfirmed non-terminal task, in batches, with "
        "truncated exponential backoff",
    ),
    Rule(
        RuleId.IMPLICIT_ASK,
        (RunStep.IMPLICIT_ROUND,),
        (K.RECONCILE,),
        "an implicit run started",
        "one request naming no task: the master answers for every task it holds",
    ),
    Rule(
        RuleId.IMPLICIT_OMITTED_ASK,
        (RunStep.OMISSIONS,),
        (K.RECONCILE,),
        "an implicit run completed (quiet) that started outside the agent re-registration "
        "window, and did not mention a task the Mesos view holds alive (STAGING, STARTING, "
        "RUNNING, KILLING, UNREACHABLE) and nothing was said of since before the run",
        "the master no longer holds the task, so the Mesos view is stale; an omission is not "
        "evidence: never kill or lose for it, ask about it by name and let the answer "
        "(TASK_GONE, TASK_UNKNOWN, ...) settle the view",
    ),
)

RULES: dict[RuleId, Rule] = {rule.id: rule for rule in _RULES}
assert len(RULES) == len(_RULES) == len(RuleId), "every rule id has exactly one row"

# THE lookup: trigger -> the rule that fires on it. A trigger with no rule fires nothing; the
# one deliberate gap is a KILL side effect of TaskMarkedLost: a task given up by rule (silence
# or a timer) is never killed for it; if it shows up alive, R-PARTITION-RETURNED-KILL /
# R-LIFECYCLE-KILL rest on that.
RULE_FOR: dict[Trigger, RuleId] = {trigger: rule.id for rule in _RULES for trigger in rule.triggers}
assert len(RULE_FOR) == sum(len(rule.triggers) for rule in _RULES), "a trigger fires two rules"
assert SideEffectOf(E.KILL, C.MARKED_LOST) not in RULE_FOR
for _rule in _RULES:
    assert len(_rule.commands) <= 1, f"{_rule.id}: one command kind per rule"
    assert not (_rule.confirms and _rule.commands), _rule.id
    assert _rule.asked_by is None or RULES[_rule.asked_by].commands == _rule.commands, _rule.id
assert RULES[RULE_FOR[Outcome.RESCHEDULED]].commands == (K.KILL,)


def _drift_order(trigger: DriftCell) -> tuple[int, int]:
    return list(TABLE).index(trigger.cell), list(MesosSays).index(trigger.says)


# The drift lookup alone, in the table's order: (cell, what Mesos says) -> rule id, for every
# disagreeing cell and every Mesos word that can put a task there.
DRIFT_RULES: dict[tuple[Cell, MesosSays], RuleId] = {
    (t.cell, t.says): RULE_FOR[t]
    for t in sorted((t for t in RULE_FOR if type(t) is DriftCell), key=_drift_order)
}
assert all(TABLE[cell] is not FoundBy.CONSISTENT for cell, _ in DRIFT_RULES)
# The side-effect lookup alone: (effect, cause) -> rule id.
EFFECT_RULES: dict[tuple[SideEffect, Cause], RuleId] = {
    (t.effect, t.cause): RULE_FOR[t] for t in RULE_FOR if type(t) is SideEffectOf
}


class UnknownRule(KeyError):
    """A rule id that is not in the table."""

    def __init__(self, rule_id: object) -> None:
        super().__init__(f"unknown rule {rule_id!r} (known: {', '.join(RULES)})")
        self.rule_id = rule_id


def rule(rule_id: str) -> Rule:
    """The rule with this id, or UnknownRule."""
    try:
        return RULES[rule_id]  # type: ignore[index]
    except KeyError:
        raise UnknownRule(rule_id) from None


def issue(
    rule_id: RuleId,
    now: float,
    *,
    evidence: list[int],
    task_id: str | None = None,
    run_id: str | None = None,
    tasks: list[str] | None = None,
    attempt: int = 1,
    retry_of: int | None = None,
    not_before: float | None = None,
    dry_run: bool = False,
) -> CommandIssued:
    """The command a rule issues: its kind is the rule's, and it is caused by its first
    piece of evidence (the event the decision rests on most directly)."""
    commands = RULES[rule_id].commands
    if len(commands) != 1 or RULES[rule_id].asked_by is not None:
        raise ValueError(f"rule {rule_id} issues no command of its own")
    kind = commands[0]
    return CommandIssued(
        time=now,
        causation=evidence[0] if evidence else None,
        kind=kind.value,
        task_id=task_id,
        rule=rule_id.value,
        evidence=evidence,
        run_id=run_id,
        tasks=tasks,
        attempt=attempt,
        retry_of=retry_of,
        not_before=not_before,
        dry_run=dry_run,
    )


# --- printing ------------------------------------------------------------------------------------


def describe_trigger(trigger: Trigger) -> str:
    """A trigger in words, e.g. "drift non-terminal/absent, Mesos says alive"."""
    if type(trigger) is DriftCell:
        return f"drift {trigger.cell.label}, Mesos says {trigger.says}"
    if type(trigger) is SideEffectOf:
        return f"side effect {trigger.effect} of {trigger.cause}"
    return f"{_TRIGGER_TYPE[type(trigger)].replace('_', ' ')}: {trigger}"


_TRIGGER_TYPE: dict[type, str] = {
    DriftCell: "drift",
    SideEffectOf: "side_effect",
    Timer: "timer",
    RunStep: "run_step",
    Outcome: "outcome",
}


def trigger_data(trigger: Trigger) -> dict[str, Any]:
    """A trigger as JSON-ready data: {"type": ..., and its fields}."""
    kind = _TRIGGER_TYPE[type(trigger)]
    if type(trigger) is DriftCell:
        return {"type": kind, "cell": trigger.cell.label, "mesos_says": str(trigger.says)}
    if type(trigger) is SideEffectOf:
        return {"type": kind, "effect": str(trigger.effect), "cause": str(trigger.cause)}
    return {"type": kind, kind: str(trigger)}


def fires_on(r: Rule) -> str:
    """What the rule fires on and what it does beyond its commands, in words."""
    text = "; ".join(describe_trigger(t) for t in r.triggers)
    if r.asked_by is not None:
        text += f" (asked by {r.asked_by}'s next round)"
    if r.confirms:
        text += " (confirms the open command)"
    if r.if_rescheduled:
        text += f" ({RULE_FOR[Outcome.RESCHEDULED]} instead if already rescheduled)"
    if r.counted_by_run:
        text += " (counted by the run that finds the cell)"
    return text


def as_rows() -> list[tuple[str, str, str, str]]:
    """The table as (rule id, matches, commands, reason) rows."""
    return [
        (str(r.id), r.matches, ", ".join(r.commands) or "(nothing)", r.reason)
        for r in RULES.values()
    ]


def describe() -> str:
    """The decision table and the command table as Markdown."""
    lines = ["| rule | matches | fires on | commands | reason |", "|---|---|---|---|---|"]
    for r in RULES.values():
        commands = ", ".join(r.commands) or "(nothing)"
        lines.append(f"| {r.id} | {r.matches} | {fires_on(r)} | {commands} | {r.reason} |")
    lines += ["", "| command | sent to Mesos | idempotent | destructive | why |"]
    lines.append("|---|---|---|---|---|")
    yes_no = ("no", "yes")
    for kind, info in COMMANDS.items():
        lines.append(
            f"| {kind} | {yes_no[info.remote]} | {yes_no[info.idempotent]} | "
            f"{yes_no[info.destructive]} | {info.why} |"
        )
    return "\n".join(lines)

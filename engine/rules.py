"""The reconciliation decision table: every rule the saga may fire, as data, in one place.

Each rule has a stable id (it is written into every command it issues, so an audit can answer
"why was task X killed?" with a rule, its reason and the events it rested on), what it
matches (a cell of the drift table, engine/drift_table.py, or an observation: a lifecycle
side effect, a timer, a run's round), the commands it issues, and a one-line reason.

engine/saga.py reads the lookup tables at the bottom (DRIFT_RULES, EFFECT_RULES) to pick a
rule; it never decides outside this table. The command kinds, and whether sending one twice is
harmless, are here too (COMMANDS), because which commands a rule may issue is part of the
decision, and the outbox's crash safety rests on them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from engine.lifecycle import SideEffect


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
        True,
        True,
        True,
        "killing a dead or dying task is a no-op for Mesos; a repeat only adds an update",
    ),
    K.RECONCILE: CommandInfo(
        True,
        True,
        False,
        "a read-only question; a repeat only makes the master answer twice",
    ),
    K.RESCHEDULE: CommandInfo(
        False,
        False,
        False,
        "a launch is not idempotent: the replacement's task id is derived from the command id "
        "and created with the confirmation in one transaction, so it exists at most once",
    ),
    K.MARK_LOST: CommandInfo(
        False,
        True,
        True,
        "a scheduler-side verdict: TaskMarkedLost and the confirmation are one transaction",
    ),
}
assert all(info.idempotent for info in COMMANDS.values() if info.remote), "remote must be safe"


class Rule(NamedTuple):
    """One row of the decision table."""

    id: str
    matches: str  # the drift cell (Mesos/scheduler) or the observation it fires on
    commands: tuple[CommandKind, ...]  # () = deliberately nothing
    reason: str


_RULES = (
    Rule(
        "R-CONSISTENT",
        "cells non-terminal/non-terminal, terminal/terminal, terminal/absent, absent/terminal, "
        "absent/absent",
        (),
        "both sides agree: nothing to do",
    ),
    Rule(
        "R-IMPLICIT-KILL-TERMINAL",
        "cell non-terminal/terminal (found by implicit), Mesos says the task is alive",
        (K.KILL,),
        "Mesos runs a task the scheduler holds finished: a rogue duplicate; kill until a "
        "terminal update confirms",
    ),
    Rule(
        "R-IMPLICIT-KILL-UNKNOWN",
        "cell non-terminal/absent (found by implicit), Mesos says the task is alive",
        (K.KILL,),
        "Mesos runs a task the scheduler never launched or forgot: an orphan; kill until a "
        "terminal update confirms",
    ),
    Rule(
        "R-PARTITION-RETURNED-KILL",
        "cell non-terminal/terminal or non-terminal/absent for a task already rescheduled",
        (K.KILL,),
        "the original came back after its replacement was created: keep the replacement, kill "
        "the original (one instance, not two)",
    ),
    Rule(
        "R-UNREACHABLE-HOLD",
        "Mesos says TASK_UNREACHABLE (any column)",
        (),
        "the agent is partitioned and the task may come back: no kill; the partition timer decides",
    ),
    Rule(
        "R-EXPLICIT-TERMINAL",
        "cell terminal/non-terminal (found by explicit): Mesos holds a terminal state the "
        "scheduler could not apply",
        (K.MARK_LOST,),
        "Mesos's terminal state is the truth about the cluster: give the task up as LOST",
    ),
    Rule(
        "R-UNKNOWN-ASK-AGAIN",
        "cell absent/non-terminal (found by explicit), Mesos answered TASK_UNKNOWN",
        (K.RECONCILE,),
        "the master holds no state for it: never kill on TASK_UNKNOWN alone (AURORA-1966); "
        "ask again next round",
    ),
    Rule(
        "R-SILENCE-ASK-AGAIN",
        "cell absent/non-terminal (found by explicit), Mesos has not answered",
        (K.RECONCILE,),
        "no answer is not evidence (the master is silent for agents that have not "
        "re-registered): ask again, never kill or lose for it",
    ),
    Rule(
        "R-GONE-RESCHEDULE",
        "a status update moved a live task to LOST (TASK_GONE, TASK_LOST, TASK_DROPPED, "
        "TASK_GONE_BY_OPERATOR, TASK_ERROR)",
        (K.RESCHEDULE,),
        "Mesos says the task is gone: replace it with a new task linked to its ancestor",
    ),
    Rule(
        "R-LIFECYCLE-RESCHEDULE",
        "a status update's transition carries RESCHEDULE (failed, killed by Mesos, ...)",
        (K.RESCHEDULE,),
        "the task lifecycle (Aurora's) replaces a task that ended this way",
    ),
    Rule(
        "R-LOST-RESCHEDULE",
        "a TaskMarkedLost transition carries RESCHEDULE",
        (K.RESCHEDULE,),
        "a task given up as LOST by rule is replaced (its KILL side effect is not executed: "
        "no kill from silence)",
    ),
    Rule(
        "R-KILL-REQUESTED",
        "the scheduler's kill (KillRequested) moved a launched task to KILLING",
        (K.KILL,),
        "the scheduler decided to kill: send it and keep sending until a terminal update "
        "confirms (Marathon #623)",
    ),
    Rule(
        "R-LIFECYCLE-KILL",
        "a status update's transition carries KILL (a dead or dying task reported alive, "
        "ASSIGNED/PARTITIONED reported LOST)",
        (K.KILL,),
        "the task lifecycle (Aurora's) asks for a kill, resting on that update",
    ),
    Rule(
        "R-LIFECYCLE-TO-LOST",
        "a transition carries TRANSITION_TO_LOST (a partitioned task being killed)",
        (K.MARK_LOST,),
        "a kill cannot wait for a partition to heal: give the task up as LOST",
    ),
    Rule(
        "R-KILL-RETRY",
        "a dispatched KILL without a terminal update after its backoff (15 s doubling to 5 min)",
        (K.KILL,),
        "a kill is not done until Mesos confirms it: send it again",
    ),
    Rule(
        "R-KILL-CONFIRMED",
        "an open KILL, and Mesos now says the task is terminal or holds no state for it",
        (),
        "the kill took effect (or there is nothing left to kill): confirm it, stop retrying",
    ),
    Rule(
        "R-TRANSIENT-RECONCILE",
        "a task in ASSIGNED/STARTING/KILLING/PREEMPTING/RESTARTING/DRAINING unchanged for "
        "the transient timeout (5 min)",
        (K.RECONCILE,),
        "an expected update is overdue: ask Mesos first",
    ),
    Rule(
        "R-TRANSIENT-LOST",
        "still unchanged and unanswered a grace period after R-TRANSIENT-RECONCILE, outside "
        "the agent re-registration window",
        (K.MARK_LOST,),
        "Aurora's transient timeout: the task is stuck, give it up as LOST",
    ),
    Rule(
        "R-PARTITION-TIMEOUT",
        "a task PARTITIONED for the partition timeout, outside the agent re-registration window",
        (K.MARK_LOST,),
        "a partition that does not heal: give the task up as LOST (it is then rescheduled)",
    ),
    Rule(
        "R-EXPLICIT-ROUND",
        "an explicit run's round is due (start, or backoff passed with tasks unconfirmed)",
        (K.RECONCILE,),
        "Mesos's algorithm: ask for every unconfirmed non-terminal task, in batches, with "
        "truncated exponential backoff",
    ),
    Rule(
        "R-IMPLICIT-ASK",
        "an implicit run started",
        (K.RECONCILE,),
        "one request naming no task: the master answers for every task it holds",
    ),
    Rule(
        "R-IMPLICIT-OMITTED-ASK",
        "an implicit run completed (quiet) that started outside the agent re-registration "
        "window, and did not mention a task the Mesos view holds alive (STAGING, STARTING, "
        "RUNNING, KILLING, UNREACHABLE) and nothing was said of since before the run",
        (K.RECONCILE,),
        "the master no longer holds the task, so the Mesos view is stale; an omission is not "
        "evidence: never kill or lose for it, ask about it by name and let the answer "
        "(TASK_GONE, TASK_UNKNOWN, ...) settle the view",
    ),
)

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}
assert len(RULES) == len(_RULES), "two rules share an id"


class UnknownRule(KeyError):
    """A rule id that is not in the table."""

    def __init__(self, rule_id: object) -> None:
        super().__init__(f"unknown rule {rule_id!r} (known: {', '.join(RULES)})")
        self.rule_id = rule_id


def rule(rule_id: str) -> Rule:
    """The rule with this id, or UnknownRule."""
    try:
        return RULES[rule_id]
    except KeyError:
        raise UnknownRule(rule_id) from None


# --- the lookups the saga uses ---------------------------------------------------------------


class MesosSays(StrEnum):
    """What Mesos's latest word on a task amounts to, for choosing a drift rule."""

    ALIVE = "alive"  # STAGING, STARTING, RUNNING, KILLING
    UNREACHABLE = "unreachable"
    TERMINAL = "terminal"
    UNKNOWN = "unknown"  # answered TASK_UNKNOWN: holds no state
    SILENT = "silent"  # never said anything


MESOS_SAYS: dict[str, MesosSays] = {
    "TASK_STAGING": MesosSays.ALIVE,
    "TASK_STARTING": MesosSays.ALIVE,
    "TASK_RUNNING": MesosSays.ALIVE,
    "TASK_KILLING": MesosSays.ALIVE,
    "TASK_UNREACHABLE": MesosSays.UNREACHABLE,
    "TASK_UNKNOWN": MesosSays.UNKNOWN,
    **{
        state: MesosSays.TERMINAL
        for state in (
            "TASK_FINISHED",
            "TASK_FAILED",
            "TASK_KILLED",
            "TASK_ERROR",
            "TASK_LOST",
            "TASK_DROPPED",
            "TASK_GONE",
            "TASK_GONE_BY_OPERATOR",
        )
    },
}

_NT, _T, _A = "non-terminal", "terminal", "absent"
M = MesosSays
# (drift cell label, what Mesos says) -> rule id, for every disagreeing cell and every Mesos
# word that can put a task there. R-PARTITION-RETURNED-KILL overrides the two kill rules for a
# task that was already rescheduled (see engine/saga.py).
DRIFT_RULES: dict[tuple[str, MesosSays], str] = {
    (f"{_NT}/{_T}", M.ALIVE): "R-IMPLICIT-KILL-TERMINAL",
    (f"{_NT}/{_T}", M.UNREACHABLE): "R-UNREACHABLE-HOLD",
    (f"{_NT}/{_A}", M.ALIVE): "R-IMPLICIT-KILL-UNKNOWN",
    (f"{_NT}/{_A}", M.UNREACHABLE): "R-UNREACHABLE-HOLD",
    (f"{_T}/{_NT}", M.TERMINAL): "R-EXPLICIT-TERMINAL",
    (f"{_A}/{_NT}", M.UNKNOWN): "R-UNKNOWN-ASK-AGAIN",
    (f"{_A}/{_NT}", M.SILENT): "R-SILENCE-ASK-AGAIN",
}
# Rules whose command is carried by the explicit run's next round, not issued per task.
ASKED_BY_RUN: frozenset[str] = frozenset({"R-UNKNOWN-ASK-AGAIN", "R-SILENCE-ASK-AGAIN"})

# (lifecycle side effect, what caused the transition) -> rule id. The cause is the event's
# topic; "LOST" marks a status update that moved the task to LOST.
EFFECT_RULES: dict[tuple[SideEffect, str], str | None] = {
    (SideEffect.RESCHEDULE, "StatusUpdateReceived:LOST"): "R-GONE-RESCHEDULE",
    (SideEffect.RESCHEDULE, "StatusUpdateReceived"): "R-LIFECYCLE-RESCHEDULE",
    (SideEffect.RESCHEDULE, "TaskMarkedLost"): "R-LOST-RESCHEDULE",
    (SideEffect.KILL, "KillRequested"): "R-KILL-REQUESTED",
    (SideEffect.KILL, "StatusUpdateReceived"): "R-LIFECYCLE-KILL",
    (SideEffect.KILL, "StatusUpdateReceived:LOST"): "R-LIFECYCLE-KILL",
    # Deliberately nothing: a task given up by rule (silence or a timer) is never killed for
    # it; if it shows up alive, R-PARTITION-RETURNED-KILL / R-LIFECYCLE-KILL rest on that.
    (SideEffect.KILL, "TaskMarkedLost"): None,
    (SideEffect.TRANSITION_TO_LOST, "KillRequested"): "R-LIFECYCLE-TO-LOST",
    (SideEffect.TRANSITION_TO_LOST, "StatusUpdateReceived"): "R-LIFECYCLE-TO-LOST",
    (SideEffect.TRANSITION_TO_LOST, "StatusUpdateReceived:LOST"): "R-LIFECYCLE-TO-LOST",
}
for _rule_id in (*DRIFT_RULES.values(), *EFFECT_RULES.values()):
    assert _rule_id is None or _rule_id in RULES, _rule_id


def as_rows() -> list[tuple[str, str, str, str]]:
    """The table as (rule id, matches, commands, reason) rows."""
    return [
        (r.id, r.matches, ", ".join(r.commands) or "(nothing)", r.reason) for r in RULES.values()
    ]


def describe() -> str:
    """The decision table and the command table as Markdown."""
    lines = ["| rule | matches | commands | reason |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in as_rows()]
    lines += ["", "| command | sent to Mesos | idempotent | destructive | why |"]
    lines.append("|---|---|---|---|---|")
    yes_no = ("no", "yes")
    for kind, info in COMMANDS.items():
        lines.append(
            f"| {kind} | {yes_no[info.remote]} | {yes_no[info.idempotent]} | "
            f"{yes_no[info.destructive]} | {info.why} |"
        )
    return "\n".join(lines)

"""What made the saga act: one vocabulary for "found by", in every command and report.

A command is found by what the saga was reacting to when it issued it:

| found by    | meaning                                                                          |
|-------------|----------------------------------------------------------------------------------|
| `explicit`  | an explicit reconciliation run (the command carries its run id)                  |
| `implicit`  | an implicit reconciliation run (the command carries its run id)                  |
| `update`    | a status update as it arrived: its lifecycle transition, or the drift it showed  |
| `timer`     | one of the saga's timeouts: partition, transient (an overdue update), kill retry |
| `scheduler` | the scheduler's own decision (KillRequested)                                     |
| `follow-up` | an earlier command of the saga (a task it marked LOST is replaced)               |

The drift table's own column (projections/drift_view.py: which reconciliation reveals a
cell, or "consistent" for no disagreement) uses the first two words in the same sense.
Pure: data in, data out.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.rules import RuleId

EXPLICIT, IMPLICIT = "explicit", "implicit"
UPDATE, TIMER, SCHEDULER, FOLLOW_UP = "update", "timer", "scheduler", "follow-up"
WORDS: tuple[str, ...] = (EXPLICIT, IMPLICIT, UPDATE, TIMER, SCHEDULER, FOLLOW_UP)

# Rule -> what it reacts to when the command carries no run (engine/rules.py; every rule
# that issues a command is here: tests/test_cli_why.py checks).
RULE_TRIGGER: dict[str, str] = {
    RuleId.IMPLICIT_KILL_TERMINAL: UPDATE,
    RuleId.IMPLICIT_KILL_UNKNOWN: UPDATE,
    RuleId.PARTITION_RETURNED_KILL: UPDATE,
    RuleId.EXPLICIT_TERMINAL: UPDATE,
    RuleId.UNKNOWN_ASK_AGAIN: EXPLICIT,
    RuleId.SILENCE_ASK_AGAIN: EXPLICIT,
    RuleId.GONE_RESCHEDULE: UPDATE,
    RuleId.LIFECYCLE_RESCHEDULE: UPDATE,
    RuleId.LOST_RESCHEDULE: FOLLOW_UP,
    RuleId.KILL_REQUESTED: SCHEDULER,
    RuleId.LIFECYCLE_KILL: UPDATE,
    RuleId.LIFECYCLE_TO_LOST: UPDATE,
    RuleId.KILL_RETRY: TIMER,
    RuleId.TRANSIENT_RECONCILE: TIMER,
    RuleId.TRANSIENT_LOST: TIMER,
    RuleId.PARTITION_TIMEOUT: TIMER,
    RuleId.EXPLICIT_ROUND: EXPLICIT,
    RuleId.IMPLICIT_ASK: IMPLICIT,
    RuleId.IMPLICIT_OMITTED_ASK: IMPLICIT,
}
# The event kind a command's evidence names that overrides its rule's word: a transition
# the scheduler's own kill caused was the scheduler's decision (R-LIFECYCLE-TO-LOST).
EVIDENCE_TRIGGER: dict[str, str] = {"KillRequested": SCHEDULER}


def found_by(rule: str, run_kind: str | None, evidence_kinds: Iterable[str] = ()) -> str:
    """The word for what made the saga issue a command by `rule`: its run's kind if it has
    one, else the kind of its evidence or its rule's (UPDATE for a rule this build does
    not know)."""
    if run_kind is not None:
        return run_kind
    for kind in evidence_kinds:
        word = EVIDENCE_TRIGGER.get(kind)
        if word is not None:
            return word
    return RULE_TRIGGER.get(rule, UPDATE)


def cell_finder(found: str | None) -> str:
    """The drift table's verdict on a cell as words: "no disagreement", or which
    reconciliation reveals it."""
    if found is None:
        return "no cell"
    if found == "consistent":
        return "no disagreement"
    return f"a disagreement {found} reconciliation finds"

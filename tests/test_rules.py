"""The decision table as data: complete over the drift table, consistent, printable."""

from __future__ import annotations

import pytest

from engine import rules
from engine.drift_table import MESOS_ROW, TABLE, FoundBy
from engine.lifecycle import SideEffect
from engine.mesos_states import ALIVE, BY_NAME, NOT_STORED, TERMINAL
from engine.rules import (
    COMMANDS,
    DRIFT_RULES,
    EFFECT_RULES,
    MESOS_SAYS,
    RULE_FOR,
    RULES,
    Cause,
    CommandKind,
    DriftCell,
    MesosSays,
    Outcome,
    RuleId,
    SideEffectOf,
)


def test_every_rule_has_an_id_a_trigger_a_match_and_a_reason():
    assert set(RULES) == set(RuleId)
    for rule_id, rule in RULES.items():
        assert rule.id is rule_id and rule_id.startswith("R-")
        assert rule.triggers and rule.matches and rule.reason
        assert all(isinstance(kind, CommandKind) for kind in rule.commands)
        assert all(RULE_FOR[t] is rule_id for t in rule.triggers)


def test_what_mesos_says_comes_from_the_mesos_state_table():
    assert set(MESOS_SAYS) == set(BY_NAME)
    says = {word: {s for s, w in MESOS_SAYS.items() if w is word} for word in MesosSays}
    assert says[MesosSays.TERMINAL] == TERMINAL
    assert says[MesosSays.UNKNOWN] == NOT_STORED == {"TASK_UNKNOWN"}
    assert says[MesosSays.UNREACHABLE] == {"TASK_UNREACHABLE"}
    assert says[MesosSays.ALIVE] | says[MesosSays.UNREACHABLE] == ALIVE
    assert says[MesosSays.SILENT] == set()  # silence is no state at all


def test_every_disagreeing_cell_and_every_mesos_word_that_lands_there_has_a_rule():
    for cell, found_by in TABLE.items():
        words = {MESOS_SAYS[state] for state, row in MESOS_ROW.items() if row is cell.mesos}
        if cell.mesos.value == "absent":
            words.add(MesosSays.SILENT)
        for word in words:
            rule_id = RULE_FOR.get(DriftCell(cell, word))
            if found_by is FoundBy.CONSISTENT:
                assert rule_id is None, (cell.label, word)  # agreement is never looked at
            else:
                assert rule_id in RULES, (cell.label, word)
                assert DRIFT_RULES[(cell, word)] is rule_id


def test_no_kill_rests_on_task_unknown_or_silence():
    for (cell, word), rule_id in DRIFT_RULES.items():
        if word in (MesosSays.UNKNOWN, MesosSays.SILENT):
            assert CommandKind.KILL not in RULES[rule_id].commands, (cell, word)
    assert SideEffectOf(SideEffect.KILL, Cause.MARKED_LOST) not in RULE_FOR
    assert (SideEffect.KILL, Cause.MARKED_LOST) not in EFFECT_RULES


def test_rules_that_issue_nothing_say_why():
    for rule in RULES.values():
        if rule.asked_by is not None:  # the explicit run's next round asks, not the rule
            assert RULES[rule.asked_by].commands == rule.commands
        if not rule.commands:
            assert rule.confirms or rule.id is RuleId.UNREACHABLE_HOLD, rule.id
    confirming = [r.id for r in RULES.values() if r.confirms]
    assert confirming == [RuleId.KILL_CONFIRMED] == [RULE_FOR[Outcome.KILL_TOOK_EFFECT]]


def test_a_rule_issues_commands_of_its_own_kind_caused_by_its_first_evidence():
    command = rules.issue(RuleId.KILL_RETRY, 5.0, evidence=[3, 4], task_id="t", retry_of=3)
    assert (command.kind, command.rule, command.causation) == ("KILL", "R-KILL-RETRY", 3)
    assert type(command.kind) is str and type(command.rule) is str  # as read back from a log
    ask = rules.issue(RuleId.IMPLICIT_ASK, 1.0, evidence=[], tasks=[])
    assert ask.kind == "RECONCILE" and ask.causation is None
    with pytest.raises(ValueError):
        rules.issue(RuleId.UNREACHABLE_HOLD, 1.0, evidence=[1], task_id="t")


def test_remote_commands_are_exactly_the_idempotent_ones_that_may_be_resent():
    assert {k for k, i in COMMANDS.items() if i.remote} == {CommandKind.KILL, CommandKind.RECONCILE}
    assert not COMMANDS[CommandKind.RESCHEDULE].idempotent
    assert all(COMMANDS[k].idempotent for k in COMMANDS if COMMANDS[k].remote)


def test_describe_prints_every_rule_its_triggers_and_every_command():
    text = rules.describe()
    for rule in RULES.values():
        assert f"| {rule.id} |" in text
        for trigger in rule.triggers:
            assert rules.describe_trigger(trigger) in text
    for kind in CommandKind:
        assert f"| {kind} |" in text
    assert len(rules.as_rows()) == len(RULES)


def test_unknown_rule_is_named():
    with pytest.raises(rules.UnknownRule, match="R-NOPE"):
        rules.rule("R-NOPE")
    assert rules.rule("R-KILL-RETRY").commands == (CommandKind.KILL,)

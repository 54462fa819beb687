"""The decision table as data: complete over the drift table, consistent, printable."""

from __future__ import annotations

import pytest

from engine import rules
from engine.drift_table import MESOS_ROW, TABLE, FoundBy
from engine.lifecycle import SideEffect
from engine.mesos_states import BY_NAME
from engine.rules import COMMANDS, DRIFT_RULES, EFFECT_RULES, MESOS_SAYS, RULES, CommandKind


def test_every_rule_has_an_id_a_match_and_a_reason():
    for rule_id, rule in RULES.items():
        assert rule.id == rule_id and rule_id.startswith("R-")
        assert rule.matches and rule.reason
        assert all(isinstance(kind, CommandKind) for kind in rule.commands)


def test_every_mesos_state_is_classified():
    assert set(MESOS_SAYS) == set(BY_NAME)


def test_every_disagreeing_cell_and_every_mesos_word_that_lands_there_has_a_rule():
    for cell, found_by in TABLE.items():
        words = {MESOS_SAYS[state] for state, row in MESOS_ROW.items() if row is cell.mesos} or {
            rules.MesosSays.SILENT
        }
        if cell.mesos.value == "absent":
            words.add(rules.MesosSays.SILENT)
        for word in words:
            rule_id = DRIFT_RULES.get((cell.label, word))
            if found_by is FoundBy.CONSISTENT:
                assert rule_id is None, (cell.label, word)
            else:
                assert rule_id in RULES, (cell.label, word)


def test_no_kill_rests_on_task_unknown_or_silence():
    for (cell, word), rule_id in DRIFT_RULES.items():
        if word in (rules.MesosSays.UNKNOWN, rules.MesosSays.SILENT):
            assert CommandKind.KILL not in RULES[rule_id].commands, (cell, word)
    assert EFFECT_RULES[(SideEffect.KILL, "TaskMarkedLost")] is None


def test_remote_commands_are_exactly_the_idempotent_ones_that_may_be_resent():
    assert {k for k, i in COMMANDS.items() if i.remote} == {CommandKind.KILL, CommandKind.RECONCILE}
    assert not COMMANDS[CommandKind.RESCHEDULE].idempotent
    assert all(COMMANDS[k].idempotent for k in COMMANDS if COMMANDS[k].remote)


def test_describe_prints_every_rule_and_command():
    text = rules.describe()
    for rule_id in RULES:
        assert f"| {rule_id} |" in text
    for kind in CommandKind:
        assert f"| {kind} |" in text
    assert len(rules.as_rows()) == len(RULES)


def test_unknown_rule_is_named():
    with pytest.raises(rules.UnknownRule, match="R-NOPE"):
        rules.rule("R-NOPE")
    assert rules.rule("R-KILL-RETRY").commands == (CommandKind.KILL,)

"""`why` and `history` as an on-call engineer meets them: each observation once, where a
replacement came from, a job's instance across generations, one vocabulary for what found a
task, runs named by what they did, nothing cut on a narrow terminal, and an --as-of before
the log said so."""

from __future__ import annotations

import json

import pytest
from cli_log import KILL, ROGUE_SEEN, as_json, run

from engine import rules
from tools.forensics import found_by


def by_kind(doc: dict, kind: str) -> dict:
    (command,) = [c for c in doc["commands"] if c["kind"] == kind]
    return command


def test_an_observation_is_listed_once(partition_log):
    path, ids = partition_log
    lost = by_kind(as_json("why", "web/7/g7", "--log", path), "MARK_LOST")
    assert lost["rule"] == "R-PARTITION-TIMEOUT"
    observed = [s["id"] for s in lost["chain"] if s["step"] == "observation"]
    # The evidence names the UNREACHABLE update twice (both views' records point at it).
    assert observed.count(ids["unreachable"]) == 1
    text = run("why", "web/7/g7", "--log", path).stdout
    assert text.count(f"│ observation │ {ids['unreachable']} ") == 1


def test_a_replacement_names_the_reschedule_and_its_ancestor(partition_log):
    path, ids = partition_log
    doc = as_json("why", ids["replacement"], "--log", path)
    created = doc["created_by"]
    assert created["kind"] == "RESCHEDULE" and created["rule"] == "R-LOST-RESCHEDULE"
    assert created["ancestor"] == "web/7/g7" and created["ancestors"] == ["web/7/g7"]
    assert f"web/7/r{created['command']}" == ids["replacement"]
    assert created["sentence"].startswith("rescheduled because")
    text = run("why", ids["replacement"], "--log", path).stdout
    assert f"created by #{created['command']} RESCHEDULE of its ancestor web/7/g7" in text
    assert "no other command was issued" in text
    assert "no command was issued" not in text
    # A task the scheduler created itself has no such line.
    assert as_json("why", "web/3/g3", "--log", path)["created_by"] is None


def test_an_instance_answers_for_every_generation_newest_first(partition_log):
    path, ids = partition_log
    doc = as_json("why", "web/7", "--log", path)
    assert doc["instance"] == {
        "job": "web",
        "instance": 7,
        "tasks": [ids["replacement"], "web/7/g7"],
    }
    assert [g["task"] for g in doc["generations"]] == [ids["replacement"], "web/7/g7"]
    assert doc["task"] == ids["replacement"]  # the top level is the newest generation's
    assert {c["kind"] for c in doc["generations"][1]["commands"]} == {
        "MARK_LOST",
        "RESCHEDULE",
        "KILL",
    }
    text = run("why", "web/7", "--log", path).stdout
    assert "web/7 is instance 7 of job web: 2 generation(s)" in text
    assert text.index(f"── {ids['replacement']} ──") < text.index("── web/7/g7 ──")
    history = as_json("history", "web/7", "--log", path)
    assert {e["task"] for e in history["events"]} == {ids["replacement"], "web/7/g7"}
    assert [e["id"] for e in history["events"]] == sorted({e["id"] for e in history["events"]})
    # Still unknown: an instance no task was created for, and a task id that is one.
    missing = run("why", "web/70", "--log", path)
    assert missing.exit_code == 2 and "unknown task 'web/70'" in missing.stderr
    assert as_json("why", "web/7/g7", "--log", path)["instance"] is None


def test_every_rule_that_acts_has_a_word_for_what_found_it():
    acting = {r.id for r in rules.RULES.values() if r.commands}
    assert acting <= set(found_by.RULE_TRIGGER)
    assert set(found_by.RULE_TRIGGER.values()) <= set(found_by.WORDS)


def test_one_vocabulary_for_what_found_a_task(partition_log, story_log):
    path, _ = partition_log
    doc = as_json("why", "web/7/g7", "--log", path)
    words = {c["kind"]: c["found_by"] for c in doc["commands"]}
    assert words["MARK_LOST"] == "timer" and words["RESCHEDULE"] == "follow-up"
    assert all(c["found_by"] in found_by.WORDS for c in doc["commands"])
    text = run("why", "web/7/g7", "--log", path).stdout
    assert "a check at" not in text and "found by consistent" not in text
    assert "because the saga's timer at" in text and "found by timer" in text
    rogue = by_kind(as_json("why", "rogue/1", "--log", story_log), "KILL")
    assert rogue["found_by"] == "implicit"


def test_a_run_is_told_by_what_it_did(story_log):
    kill = by_kind(as_json("why", "rogue/1", "--log", story_log), "KILL")
    (step,) = [s for s in kill["chain"] if s["step"] == "run" and s["id"] != KILL]
    assert "ended quiet" not in step["what"]
    assert "1 answer, ended when the answers stopped" in step["what"]
    assert "issued KILL x1 (R-IMPLICIT-KILL-UNKNOWN)" in step["what"]


def test_history_is_not_cut_on_a_narrow_terminal(story_log, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = run("history", "rogue/1", "--log", story_log).stdout
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    monkeypatch.setenv("COLUMNS", "100")
    assert "…" not in run("why", "rogue/1", "--log", story_log).stdout


@pytest.mark.parametrize("before", ["2020-01-01T00:00:00Z", "0"])
@pytest.mark.parametrize("command", [["drift"], ["query"], ["why", "rogue/1"]])
def test_an_as_of_before_the_log_is_said(story_log, before, command):
    result = run(*command, "--log", story_log, "--as-of", before, "--json")
    if command[0] == "why":  # no event names the task yet: an unknown task, in ONE line
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
        assert "unknown task" in result.stderr
        return
    assert result.exit_code == 0
    assert json.loads(result.stdout)["as_of"]["before_log"] is True
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"taskledger: note: --as-of {before} is before the log's first event")
    later = run(*command, "--log", story_log, "--as-of", str(ROGUE_SEEN), "--json")
    assert later.stderr == "" and json.loads(later.stdout)["as_of"]["before_log"] is False

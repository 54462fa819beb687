"""The read commands on a short run's log: content, --as-of, --json shapes, and that they
never write to the log."""

from __future__ import annotations

import pytest
from cli_log import (
    BEFORE_DRIFT,
    KILL,
    LAST,
    MARKER,
    ROGUE_SEEN,
    SNAPSHOT_AT,
    as_json,
    fingerprint,
    run,
)


def test_history_lists_every_event_about_the_task_in_order(story_log):
    data = as_json("history", "rogue/1", "--log", story_log)
    assert data["schema"] == "taskledger.history/1"
    assert data["task"] == "rogue/1"
    assert data["as_of"]["id"] == LAST
    events = data["events"]
    assert [e["id"] for e in events] == [ROGUE_SEEN, KILL, KILL + 1, KILL + 2, KILL + 3]
    assert [e["kind"] for e in events] == [
        "StatusUpdateReceived",
        "CommandIssued",
        "CommandDispatched",
        "StatusUpdateReceived",
        "CommandConfirmed",
    ]
    first = events[0]
    assert first["state"] == "TASK_RUNNING"
    assert first["source"] == "SOURCE_MASTER"
    assert first["reason"] == "REASON_RECONCILIATION"
    assert first["run"] == "implicit-1"  # the implicit run it answered
    assert first["time_iso"] == "2024-05-01T03:01:42Z"
    # The kill, its dispatch, the confirming update and the confirmation name the command.
    assert [e["command"] for e in events[1:]] == [KILL] * 4
    assert events[3]["state"] == "TASK_KILLED"


def test_history_text_shows_the_message(story_log):
    result = run("history", "web/0", "--log", story_log)
    assert result.exit_code == 0
    assert "TaskCreated" in result.stdout and "MARKER" in result.stdout
    assert "history of web/0" in result.stdout


def test_history_as_of_stops_there(story_log):
    data = as_json("history", "web/0", "--log", story_log, "--as-of", "4")
    assert [e["id"] for e in data["events"]] == [2, 3, 4]
    assert data["events"][-1]["message"] is None
    full = as_json("history", "web/0", "--log", story_log)
    assert any(e["message"] == MARKER for e in full["events"])


def test_why_names_the_rule_the_run_and_the_evidence(story_log):
    data = as_json("why", "rogue/1", "--log", story_log)
    assert data["schema"] == "taskledger.why/1"
    (kill,) = data["commands"]
    assert kill["command"] == KILL and kill["kind"] == "KILL"
    assert kill["rule"] == "R-IMPLICIT-KILL-UNKNOWN"
    assert kill["rule_reason"]  # from engine.rules
    assert kill["run"] == "implicit-1" and kill["run_ordinal"] == 1
    assert kill["status"] == "confirmed" and kill["outcome"] == "killed"
    assert kill["found"]["mesos_state"] == "TASK_RUNNING"
    assert kill["found"]["mesos_agent"] == "agent-3"
    assert kill["found"]["cell"] == "non-terminal/absent"
    steps = [s["step"] for s in kill["chain"]]
    assert steps[0] == "observation" and kill["chain"][0]["id"] == ROGUE_SEEN
    assert steps.index("rule") < steps.index("command") < steps.index("dispatch")
    assert steps[-1] == "outcome"
    assert kill["sentence"].startswith(
        "killed because the implicit run #1 at 03:01:40 found it TASK_RUNNING on agent-3 "
        "while the scheduler did not know it (rule R-IMPLICIT-KILL-UNKNOWN)"
    )


def test_why_text_starts_with_the_sentence(story_log):
    result = run("why", "rogue/1", "--log", story_log)
    assert result.exit_code == 0
    assert "killed because the implicit run #1" in result.stdout
    assert "R-IMPLICIT-KILL-UNKNOWN" in result.stdout


def test_why_without_commands_shows_what_mesos_said(story_log):
    data = as_json("why", "web/1", "--log", story_log)
    assert data["commands"] == []
    assert [o["state"] for o in data["observations"]] == ["TASK_RUNNING", "TASK_UNKNOWN"]
    assert data["now"]["cell"] == "absent/non-terminal"
    result = run("why", "web/1", "--log", story_log)
    assert "no command was issued about web/1" in result.stdout


def test_drift_differs_before_and_after(story_log):
    before = as_json("drift", "--log", story_log, "--as-of", str(BEFORE_DRIFT))
    assert before["total"] == 0 and before["cells"] == []
    during = as_json("drift", "--log", story_log, "--as-of", str(ROGUE_SEEN))
    assert during["total"] == 1
    (cell,) = during["cells"]
    assert cell["cell"] == "non-terminal/absent" and cell["found_by"] == "implicit"
    assert cell["tasks"][0]["task_id"] == "rogue/1"
    assert cell["tasks"][0]["since"] == ROGUE_SEEN
    now = as_json("drift", "--log", story_log)
    assert now["as_of"]["id"] == LAST
    assert [(c["cell"], c["count"]) for c in now["cells"]] == [("absent/non-terminal", 1)]
    assert now["cells"][0]["tasks"][0]["task_id"] == "web/1"


def test_as_of_a_timestamp(story_log):
    # 03:00:07 is web/1's RUNNING (id 8); 03:01:42 the rogue task's answer (id 12).
    before = as_json("drift", "--log", story_log, "--as-of", "2024-05-01T03:00:07Z")
    assert before["as_of"]["id"] == BEFORE_DRIFT and before["total"] == 0
    naive = as_json("drift", "--log", story_log, "--as-of", "2024-05-01T03:01:42")
    assert naive["as_of"]["id"] == ROGUE_SEEN and naive["total"] == 1
    text = run("drift", "--log", story_log, "--as-of", "2024-05-01T03:00:07+00:00")
    assert "no drift as of 2024-05-01T03:00:07Z" in text.stdout


def test_query_filters_and_counts(story_log):
    data = as_json("query", "--log", story_log, "--job", "web")
    assert data["schema"] == "taskledger.query/1"
    assert data["total"] == 2
    assert [r["task_id"] for r in data["items"]] == ["web/0", "web/1"]
    # The counts are of the tasks that match (the rogue task is not web's).
    assert data["counts"]["state"] == {"RUNNING": 1, "PARTITIONED": 1}
    everything = as_json("query", "--log", story_log)
    assert everything["counts"]["state"] == {"RUNNING": 1, "PARTITIONED": 1, "null": 1}
    running = as_json("query", "--log", story_log, "--state", "running")  # any case
    assert running["filters"] == {"state": "RUNNING"} and running["total"] == 1
    assert running["counts"]["state"] == {"RUNNING": 1}
    by_cell = as_json("query", "--log", story_log, "--cell", "absent/non-terminal")
    assert [r["task_id"] for r in by_cell["items"]] == ["web/1"]
    agent = as_json("query", "--log", story_log, "--agent", "agent-3", "--count-by", "agent")
    assert [r["task_id"] for r in agent["items"]] == ["rogue/1"]
    assert "agent" in agent["counts"]
    then = as_json("query", "--log", story_log, "--state", "RUNNING", "--as-of", "8")
    assert [r["task_id"] for r in then["items"]] == ["web/0", "web/1"]
    page = as_json("query", "--log", story_log, "--limit", "1")
    assert page["next_after"] == "rogue/1" and page["next_offset"] == 1


def test_replay_counts(story_log):
    data = as_json("replay", "--log", story_log)
    assert data["events"] == LAST and data["tasks"] == 3 and data["drift"] == 1
    assert data["by_kind"]["CommandIssued"] == 3
    assert data["mesos_states"] == {"TASK_KILLED": 1, "TASK_RUNNING": 1, "TASK_UNKNOWN": 1}
    text = run("replay", "--log", story_log)
    assert text.exit_code == 0 and "replayed 21 events" in text.stdout


def test_snapshot_list_and_check(story_log):
    listed = as_json("snapshot", "list", "--log", story_log)
    assert [s["id"] for s in listed["snapshots"]] == [SNAPSHOT_AT]
    assert listed["snapshots"][0]["time_iso"] == "2024-05-01T03:02:01Z"
    checked = as_json("snapshot", "check", "--log", story_log)
    assert checked["ok"] is True
    assert checked["snapshots"] == [{"id": SNAPSHOT_AT, "ok": True, "problem": None}]
    assert as_json("snapshot", "list", "--log", story_log, "--as-of", "16")["snapshots"] == []


def test_verify_a_sound_log(story_log):
    data = as_json("verify", "--log", story_log)
    assert data["ok"] is True and data["problems"] == []
    assert {c["name"]: c["ok"] for c in data["checks"]} == {
        "records": True,
        "ids": True,
        "index": True,
        "unique": True,
        "snapshots": True,
        "views": True,
    }
    views = next(c for c in data["checks"] if c["name"] == "views")
    assert f"snapshot at id {SNAPSHOT_AT}" in views["detail"]
    text = run("verify", "--log", story_log)
    assert text.exit_code == 0 and "is sound" in text.stdout


def test_rules_prints_the_decision_table():
    from engine import rules

    data = as_json("rules")
    assert [r["id"] for r in data["rules"]] == list(rules.RULES)
    kill = next(r for r in data["rules"] if r["id"] == "R-IMPLICIT-KILL-UNKNOWN")
    assert kill["commands"] == ["KILL"]
    text = run("rules")
    assert text.exit_code == 0 and "R-IMPLICIT-KILL-UNKNOWN" in text.stdout
    assert run("rules", "--markdown").stdout.startswith("| rule | matches |")


READS = [
    ["history", "web/0"],
    ["history", "web/0", "--as-of", "5"],
    ["why", "rogue/1"],
    ["why", "web/1", "--as-of", "2024-05-01T03:01:42Z"],
    ["drift"],
    ["drift", "--as-of", "12"],
    ["query", "--state", "RUNNING"],
    ["replay"],
    ["snapshot", "list"],
    ["snapshot", "check"],
    ["verify"],
]


@pytest.mark.parametrize("args", READS, ids=lambda a: " ".join(a))
@pytest.mark.parametrize("json_flag", [False, True], ids=["text", "json"])
def test_read_commands_never_write(story_log, args, json_flag):
    before = fingerprint(story_log)
    result = run(*args, "--log", story_log, *(["--json"] if json_flag else []))
    assert result.exit_code == 0, result.output
    assert fingerprint(story_log) == before


def test_report_does_not_write_to_the_log(story_log, tmp_path):
    before = fingerprint(story_log)
    result = run("report", "--log", story_log, "--html", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    assert fingerprint(story_log) == before


def test_query_sorts_task_ids_naturally_and_pages_stably(tmp_path):
    from cli_log import T0, as_json

    from engine.ledger import Ledger

    path = str(tmp_path / "log")
    with Ledger.open(path, durable=False) as ledger:
        for n in (10, 1, 0, 11, 2, 100, 9):
            ledger.task_created(f"web/{n}", job="web", instance=n, time=T0 + n)
    natural = ["web/0", "web/1", "web/2", "web/9", "web/10", "web/11", "web/100"]
    assert [r["task_id"] for r in as_json("query", "--log", path)["items"]] == natural
    text = run("query", "--log", path).stdout
    assert [text.index(t + " ") for t in natural] == sorted(text.index(t + " ") for t in natural)
    pages, after = [], None
    while True:
        page = as_json(
            "query", "--log", path, "--limit", "3", *(["--after", after] if after else [])
        )
        pages += [r["task_id"] for r in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert pages == natural

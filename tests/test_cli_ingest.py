"""`taskledger ingest` and `taskledger snapshot take|prune`: the commands that write."""

from __future__ import annotations

import json
import time

import pytest
from builders import mesos_uuid, task_status
from cli_log import LAST, SNAPSHOT_AT, private_copy, run

from engine.ledger import Ledger


def line(task: str, state: str, **more) -> str:
    return json.dumps(task_status(task, state, **more))


def test_ingest_a_file_then_read_it_back(tmp_path):
    feed = tmp_path / "updates.jsonl"
    feed.write_text(
        "\n".join(
            [
                line("a", "TASK_STAGING", uuid=mesos_uuid(1), timestamp=1714532400.5),
                line("a", "TASK_RUNNING", uuid=mesos_uuid(2), agent_id={"value": "agent-9"}),
                "",
                # A v1 scheduler event carrying the status, as the HTTP API streams it.
                json.dumps(
                    {"type": "UPDATE", "update": {"status": json.loads(line("b", "TASK_LOST"))}}
                ),
                line("a", "TASK_RUNNING", uuid=mesos_uuid(2)),  # re-sent: a duplicate
            ]
        )
        + "\n"
    )
    log = str(tmp_path / "log")
    before = time.time()
    result = run("ingest", str(feed), "--log", log, "--json")
    after = time.time()
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == "taskledger.ingest/1"
    assert (data["lines"], data["appended"], data["duplicates"], data["blank"]) == (5, 3, 1, 1)
    assert (data["first_id"], data["last_id"], data["skipped"]) == (1, 3, 0)
    with Ledger.open(log) as ledger:
        assert ledger.mesos_view.get("a") == "TASK_RUNNING"
        assert ledger.mesos_view.get("b") == "TASK_LOST"
        events = [e for _, e in ledger.events()]
        # Recorded at the time of ingest (in order); the status's own timestamp is kept.
        times = [e.time for e in events]
        assert before <= times[0] <= times[1] <= times[2] <= after
        assert events[0].timestamp == 1714532400.5
    # Ingesting the file again: every update with a uuid is in the log already (a's older
    # STAGING too, not only its latest); b's has no uuid (nothing to know it by): appended.
    again = json.loads(run("ingest", str(feed), "--log", log, "--json").stdout)
    assert (again["appended"], again["duplicates"]) == (1, 3)
    with Ledger.open(log) as ledger:
        assert ledger.mesos_view.get("a") == "TASK_RUNNING"  # no step back to STAGING


def test_ingest_from_stdin(tmp_path):
    log = str(tmp_path / "log")
    feed = line("x", "TASK_RUNNING") + "\n" + line("y", "TASK_FINISHED") + "\n"
    result = run("ingest", "-", "--log", log, input=feed)
    assert result.exit_code == 0, result.output
    assert "ingested 2 update(s) (ids 1..2)" in result.stdout
    history = json.loads(run("history", "y", "--log", log, "--json").stdout)
    assert [e["state"] for e in history["events"]] == ["TASK_FINISHED"]


def test_a_bad_line_stops_with_its_number_and_keeps_the_lines_before(tmp_path):
    log = str(tmp_path / "log")
    feed = tmp_path / "bad.jsonl"
    feed.write_text(
        "\n".join(
            [
                line("a", "TASK_RUNNING"),
                line("b", "TASK_RUNNING"),
                line("c", "TASK_EXPLODED"),
                line("d", "TASK_RUNNING"),
            ]
        )
    )
    result = run("ingest", str(feed), "--log", log, "--batch", "1000")
    assert result.exit_code == 2
    (message,) = result.stderr.splitlines()
    assert "line 3:" in message and "'state'" in message and "TASK_EXPLODED" in message
    assert "2 update(s) before it ingested, ids 1..2" in message
    assert "Traceback" not in result.output
    with Ledger.open(log) as ledger:
        assert ledger.last_id == 2
        assert ledger.mesos_view.get("b") == "TASK_RUNNING"
        assert ledger.mesos_view.get("d") is None


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ("{not json", "line 2: not JSON"),
        ('{"state": "TASK_RUNNING"}', "line 2: TaskStatus field 'task_id' is required"),
        ('{"task_id": "a", "state": "TASK_RUNNING"}', "line 2: TaskStatus field 'task_id'"),
        ('{"task_id": {"value": "a"}, "state": "TASK_RUNNING", "timestamp": "x"}', "'timestamp'"),
        ("[1, 2]", "line 2:"),
    ],
)
def test_bad_lines_are_named(tmp_path, bad, needle):
    feed = tmp_path / "bad.jsonl"
    feed.write_text(line("a", "TASK_RUNNING") + "\n" + bad + "\n")
    result = run("ingest", str(feed), "--log", str(tmp_path / "log"))
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1
    assert needle in result.stderr


def test_skip_bad_counts_and_goes_on(tmp_path):
    feed = tmp_path / "mixed.jsonl"
    feed.write_bytes(
        (
            "\n".join(
                [
                    line("a", "TASK_RUNNING"),
                    "oops",
                    line("b", "TASK_NOPE"),
                    line("c", "TASK_RUNNING"),
                ]
            )
            + "\n"
        ).encode()
        + b"\xff\xfe\n"
    )
    log = str(tmp_path / "log")
    result = run("ingest", str(feed), "--log", log, "--skip-bad", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert (data["appended"], data["skipped"]) == (2, 3)
    assert [b["line"] for b in data["bad"]] == [2, 3, 5]
    assert "not UTF-8" in data["bad"][2]["error"]
    text = run("ingest", str(feed), "--log", log, "--skip-bad")
    assert "3 bad line(s) skipped" in text.stdout
    assert "skipped line 2: not JSON" in text.stderr


def test_snapshot_take_then_check(story_log, tmp_path):
    path = private_copy(story_log, tmp_path)
    result = run("snapshot", "take", "--log", path, "--json")
    assert result.exit_code == 0, result.output
    taken = json.loads(result.stdout)
    assert taken["id"] == LAST and taken["size"] > 0
    listed = json.loads(run("snapshot", "list", "--log", path, "--json").stdout)
    assert [s["id"] for s in listed["snapshots"]] == [SNAPSHOT_AT, LAST]
    checked = json.loads(run("snapshot", "check", "--log", path, "--json").stdout)
    assert checked["ok"] and [s["id"] for s in checked["snapshots"]] == [SNAPSHOT_AT, LAST]


def test_snapshot_prune_keeps_the_newest_and_the_whole_log(story_log, tmp_path):
    path = private_copy(story_log, tmp_path)
    assert run("snapshot", "take", "--log", path).exit_code == 0
    before = json.loads(run("replay", "--log", path, "--json").stdout)
    pruned = run("snapshot", "prune", "--keep", "1", "--log", path, "--json")
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.stdout) | {"log": None} == {
        "schema": "taskledger.snapshot-prune/1",
        "log": None,
        "deleted": [SNAPSHOT_AT],
        "kept": [LAST],
    }
    listed = json.loads(run("snapshot", "list", "--log", path, "--json").stdout)
    assert [s["id"] for s in listed["snapshots"]] == [LAST]
    after = json.loads(run("replay", "--log", path, "--json").stdout)
    assert {k: v for k, v in after.items() if k not in ("seconds", "events_per_second")} == {
        k: v for k, v in before.items() if k not in ("seconds", "events_per_second")
    }
    again = run("snapshot", "prune", "--keep", "1", "--log", path)
    assert again.exit_code == 0 and "deleted 0 snapshot(s); kept: " in again.stdout
    assert run("snapshot", "prune", "--keep", "0", "--log", path).exit_code == 2

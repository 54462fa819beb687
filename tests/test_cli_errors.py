"""Every user mistake is one line on stderr, exit status 2, and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import lmdb
import pytest
from cli_log import private_copy, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("taskledger: "), lines
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


READ_COMMANDS = [
    ["history", "web/0"],
    ["why", "web/0"],
    ["drift"],
    ["query"],
    ["replay"],
    ["snapshot", "list"],
    ["snapshot", "check"],
    ["verify"],
    ["report", "--html", "/tmp/taskledger-never-written.html"],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: a[0] + " " + (a[1:2] or [""])[0])
def test_missing_log(tmp_path, args):
    missing = str(tmp_path / "nope")
    one_line_error(run(*args, "--log", missing), "no log at", missing)
    assert not os.path.exists(missing)  # a read never creates a log


def test_a_file_is_not_a_log(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("hello")
    one_line_error(run("drift", "--log", str(path)), "is a file, not a folder")


def test_an_empty_folder_is_not_a_log(tmp_path):
    one_line_error(run("drift", "--log", str(tmp_path)), "not a taskledger log")
    assert os.listdir(tmp_path) == []


def test_garbage_is_not_a_log(tmp_path):
    (tmp_path / "data.mdb").write_bytes(os.urandom(64 * 1024))
    one_line_error(run("history", "x", "--log", str(tmp_path)), "not a taskledger log")


def test_another_lmdb_is_not_a_log(tmp_path):
    env = lmdb.open(str(tmp_path), max_dbs=2)
    env.open_db(b"other")
    env.close()
    one_line_error(run("verify", "--log", str(tmp_path)), "not a taskledger log")


@pytest.mark.parametrize("command", ["history", "why"])
def test_unknown_task(story_log, command):
    one_line_error(run(command, "nope/7", "--log", story_log), "unknown task 'nope/7'")


def test_a_task_unknown_as_of_then(story_log):
    one_line_error(
        run("why", "rogue/1", "--log", story_log, "--as-of", "8"),
        "unknown task 'rogue/1'",
        "up to notification id 8",
    )


@pytest.mark.parametrize(
    ("as_of", "needle"),
    [
        ("yesterday", "not a notification id or an ISO timestamp"),
        ("999", "past the end of the log (last id 21)"),
        ("-3", "not a notification id"),
        ("2024-13-01T00:00:00", "not a notification id or an ISO timestamp"),
    ],
)
@pytest.mark.parametrize("command", [["drift"], ["history", "web/0"], ["query"], ["verify"]])
def test_bad_as_of(story_log, as_of, needle, command):
    one_line_error(run(*command, "--log", story_log, "--as-of", as_of), "bad --as-of", needle)


def test_bad_filters(story_log):
    one_line_error(run("drift", "--log", story_log, "--cell", "x/y"), "bad --cell 'x/y'")
    one_line_error(run("query", "--log", story_log, "--cell", "x/y"), "bad --cell 'x/y'")
    one_line_error(run("query", "--log", story_log, "--limit", "0"), "bad --limit 0")
    one_line_error(
        run("query", "--log", story_log, "--state", "BOGUS"),
        "bad --state 'BOGUS': not a scheduler state",
        "RUNNING",
    )
    one_line_error(
        run("query", "--log", story_log, "--mesos-state", "RUNNING"),
        "bad --mesos-state 'RUNNING'",
        "did you mean TASK_RUNNING?",
    )
    one_line_error(
        run("query", "--log", story_log, "--state", "RUNING", "--json"), "did you mean RUNNING?"
    )


def test_snapshot_check_of_a_missing_snapshot(story_log):
    one_line_error(
        run("snapshot", "check", "5", "--log", story_log), "no snapshot at notification id 5"
    )


def test_report_into_a_missing_folder(story_log, tmp_path):
    out = str(tmp_path / "no" / "r.html")
    one_line_error(run("report", "--log", story_log, "--html", out), "no folder")


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: a[0] + " " + (a[1:2] or [""])[0])
def test_a_log_path_with_a_nul_byte(tmp_path, args):
    one_line_error(run(*args, "--log", str(tmp_path) + "/a\0b"), "NUL byte")


def test_paths_with_a_nul_byte_for_ingest_and_report(story_log, tmp_path):
    log = str(tmp_path / "log")
    one_line_error(run("ingest", "\0", "--log", log), "NUL byte")
    assert not os.path.exists(log)
    one_line_error(run("report", "--log", story_log, "--html", str(tmp_path) + "/a\0b"))


def test_ingest_missing_file(tmp_path):
    one_line_error(
        run("ingest", str(tmp_path / "none.jsonl"), "--log", str(tmp_path / "log")),
        "no such file",
    )
    assert not os.path.exists(tmp_path / "log")  # nothing created for a bad input


def test_snapshot_take_needs_an_existing_log(tmp_path):
    one_line_error(run("snapshot", "take", "--log", str(tmp_path / "log")), "no log at")
    one_line_error(run("snapshot", "prune", "--log", str(tmp_path / "log")), "no log at")


HOLDER = textwrap.dedent(
    """
    import sys, time
    from engine.ledger import Ledger
    ledger = Ledger.open(sys.argv[1], durable=False)
    print("ready", flush=True)
    sys.stdin.read()
    ledger.close()
    """
)


def test_a_log_held_by_another_process(story_log, tmp_path):
    path = private_copy(story_log, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        feed = tmp_path / "in.jsonl"
        feed.write_text('{"task_id": {"value": "a"}, "state": "TASK_RUNNING"}\n')
        line = one_line_error(run("ingest", str(feed), "--log", path), "held by another process")
        assert f"pid {holder.pid}" in line
        one_line_error(run("snapshot", "take", "--log", path), "held by another process")
        one_line_error(run("snapshot", "prune", "--log", path), "held by another process")
        # Reading while the writer runs is fine: that is what read-only opening is for.
        assert run("drift", "--log", path).exit_code == 0
        assert run("verify", "--log", path).exit_code == 0
    finally:
        holder.communicate("", timeout=30)


def test_the_installed_command_prints_one_line(tmp_path):
    """The real entry point (not CliRunner): one line, exit 2, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "drift", "--log", str(tmp_path / "nope")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"taskledger: no log at {tmp_path / 'nope'}: no such folder"
    ]
    assert done.stdout == ""

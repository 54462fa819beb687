"""`taskledger demo --ha` as a user runs it: its own PostgreSQL, ZooKeeper, master and three
replicas; the leader killed once and paused once; the end's checks printed; exit status 0;
and nothing it started left running, also when it is interrupted with Ctrl-C halfway.

Each demo runs in a session of its own, so a process it leaves behind is found by session
id; PostgreSQL (which pg_ctl starts in a session of its own) by its port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

from click.testing import CliRunner

from tools.cli import cli


def demo(cwd: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "demo", "--ha", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # as a terminal's job: its own process group
        env={**os.environ, "COLUMNS": "200"},
    )


def in_session(sid: int) -> list[str]:
    """The command lines of the processes still in session ``sid``."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended meanwhile
        if int(fields[3]) == sid:  # after ")": state, ppid, pgrp, session
            left.append(command)
    return left


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def nothing_left(proc: subprocess.Popen[str], output: str) -> None:
    """No process of the demo's session, and no server on the ports it printed, within a
    few seconds of its exit."""
    ports = [int(p) for p in re.findall(r"(?:PostgreSQL|ZooKeeper) on 127\.0\.0\.1:(\d+)", output)]
    assert len(ports) == 2, output
    deadline = time.monotonic() + 15
    while True:
        left = in_session(proc.pid)
        serving = [p for p in ports if listening(p)]
        if not left and not serving:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left running: {left}, servers on {serving}")
        time.sleep(0.2)


def test_the_ha_demo_loses_no_leader_twice_and_nothing_acknowledged(tmp_path) -> None:
    proc = demo(str(tmp_path), "--kills", "1", "--pauses", "1")
    try:
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    kill = re.search(
        r"kill 1: leader (\w) .* SIGKILLed; (\w) leads at epoch 2, dispatching", output
    )
    pause = re.search(r"pause 2: leader (\w) \(epoch 2\) SIGSTOPped.*leads at epoch 3", output)
    assert kill and pause, output
    assert kill.group(1) != kill.group(2) and pause.group(1) == kill.group(2), output
    assert re.search(rf"{pause.group(1)} resumed, .* exited with status 3\n", output), output
    assert len(re.findall(r"web/\d+/\w+, lost meanwhile, replaced", output)) == 2, output
    assert "leader gone -> new leader dispatching: median" in output, output
    for check in (
        "every acknowledged update in the log of record, once",
        "no stale epoch write accepted",
        "each resumed leader stepped down (exit status 3)",
        "taskledger verify --log postgresql://",
        "each of the 5 instances RUNNING once",
    ):
        assert f"ok  {check}" in output, output
    assert "epochs never decrease" in output and "FAILED" not in output, output
    assert output.rstrip().splitlines()[-2] == "nothing lost", output
    nothing_left(proc, output)
    # The mirrors it keeps are ordinary logs, sound.
    mirror = tmp_path / "var" / "ha-demo" / kill.group(2)
    verified = CliRunner().invoke(cli, ["verify", "--log", str(mirror)])
    assert verified.exit_code == 0, verified.output


def test_ctrl_c_stops_everything_the_ha_demo_started(tmp_path) -> None:
    proc = demo(str(tmp_path), "--kills", "5", "--pauses", "0")
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if re.match(r"kill 1: ", line):
                break
        else:
            raise AssertionError("".join(lines))
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    assert "interrupted" in output, output
    nothing_left(proc, output)

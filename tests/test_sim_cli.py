"""`taskledger sim` and `python -m tools.sim_master`: one click command with every option, the
fault catalogue it prints, and the master it runs (a real process on a free port): one
stderr line per request it refuses or cannot parse, no traceback, a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from click.testing import CliRunner

from tools.cli import cli
from tools.sim_master.client import call, get_json
from tools.sim_master.faults import ACTIONS, RULES, WHAT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTIONS = ["--host", "--port", "--agents", "--cpus", "--mem", "--seed", "--time-scale"]
OPTIONS += ["--heartbeat", "--fault", "--epoch", "--list-faults"]


def test_taskledger_sim_help_shows_every_option():
    result = CliRunner().invoke(cli, ["sim", "--help"])
    assert result.exit_code == 0
    for option in OPTIONS:
        assert option in result.output, option


def test_python_m_tools_sim_master_is_the_same_command():
    done = subprocess.run(
        [sys.executable, "-m", "tools.sim_master", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: python -m tools.sim_master [OPTIONS]")
    assert all(option in done.stdout for option in OPTIONS)


def test_list_faults_says_what_every_fault_does_with_its_parameters():
    result = CliRunner().invoke(cli, ["sim", "--list-faults"])
    assert result.exit_code == 0
    assert set(WHAT) == set(ACTIONS) | set(RULES)
    flat = " ".join(result.output.split())
    for kind, spec in {**ACTIONS, **RULES}.items():
        line = next(ln for ln in result.output.splitlines() if ln.split()[:1] == [kind])
        for param in spec:
            assert f"{param}=" in line, (kind, param)
        assert " ".join(WHAT[kind].split()) in flat, kind


def test_the_readme_documents_every_fault():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    part = readme[readme.index("## The simulated master") : readme.index("## Deterministic")]
    for kind in {**ACTIONS, **RULES}:
        assert f"| `{kind}` |" in part, kind


def test_bad_options_are_usage_errors_naming_the_value():
    runner = CliRunner()
    for args, words in [
        (["--agents", "0"], "'--agents': 0 is not in the range x>=1"),
        (["--time-scale", "0"], "'--time-scale': 0.0 is not in the range x>0"),
        (["--fault", "{nope"], "Invalid value for '--fault': '{nope'"),
        (["--fault", '{"kind": "explode"}'], "unknown fault kind 'explode'"),
        (["--fault", '{"kind": "agent_partition"}'], "parameter 'agent_id' is required"),
    ]:
        result = runner.invoke(cli, ["sim", *args])
        assert result.exit_code == 2, (args, result.output)
        assert words in result.output, (args, result.output)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_master_logs_one_line_per_bad_request_and_stops_on_sigterm():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.sim_master", "--port", str(port), "--agents", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        assert f"master on 127.0.0.1:{port}, 1 agents" in proc.stdout.readline()
        assert get_json(address, "/version") == {"version": "1.11.0"}
        for raw in (
            b"POST /api/v1/scheduler HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"POST /api/v1/scheduler HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\nzz\r\n",
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(raw)
                assert s.recv(100).startswith(b"HTTP/1.")  # a 400, then closed
        assert call(address, b"{", content_type="application/json")[0] == 400
        assert call(address, {"type": "REVIVE"}, content_type=None)[0] == 400
        assert call(address, None, method="GET", content_type=None, path="/nope")[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    lines = err.strip().splitlines()  # each line is logged before its answer is sent
    assert "Traceback" not in err, err
    assert lines == [
        "taskledger sim: a request from 127.0.0.1 it could not parse: 400 Invalid character"
        " in Content-Length",
        "taskledger sim: a request from 127.0.0.1 it could not parse: 400 Invalid character"
        " in chunk size",
        "taskledger sim: POST /api/v1/scheduler: 400 Failed to parse body into JSON:"
        " Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "taskledger sim: POST /api/v1/scheduler: 400 Expecting 'Content-Type' to be present",
        "taskledger sim: GET /nope: 404 404: Not Found",
    ], lines

"""`taskledger run` refuses to start, in one line and with exit status 2, when what it was
given cannot work, and leaves no log folder behind: a master address it cannot use, a
master or ZooKeeper that does not answer within --master-timeout (here: closed ports;
tests/test_run_zk.py runs against a real ZooKeeper), credentials half given, an operator API off
loopback without tokens, a port already taken. And what it does start with: the options in
the FrameworkInfo and the credential, one log format."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import NamedTuple

import pytest
from click.testing import CliRunner
from sim_session import inject

from engine.ledger import Ledger
from engine.mesos.core import SchedulerCore
from tools.cli import cli
from tools.run_command import _prepare, run_command
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Done(NamedTuple):
    returncode: int
    stderr: str


CLEAN_ENV = {k: None for k in os.environ if k.startswith("TASKLEDGER_")}


def start(*args: str, log: str) -> tuple[Done, float]:
    """`taskledger run` in a process of its own (as an operator starts it)."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "run", "--log", log, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in CLEAN_ENV},
    )
    return Done(done.returncode, done.stderr), time.monotonic() - began


def refused(*args: str, log: str) -> Done:
    """`taskledger run` in this process: what it refuses, it refuses before it configures
    logging or imports the driver (so this is the same as a process of its own, faster)."""
    result = CliRunner().invoke(cli, ["run", "--log", log, *args], env=CLEAN_ENV)
    return Done(result.exit_code, result.stderr)


def one_line(done: Done) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("taskledger run: "), done.stderr
    return lines[0]


def test_zookeeper_that_does_not_answer(tmp_path):
    log = str(tmp_path / "log")
    port = closed_port()
    done, took = start("--master", f"zk://127.0.0.1:{port}/mesos", "--master-timeout", "1", log=log)
    assert one_line(done) == (
        f"taskledger run: no ZooKeeper answered at 127.0.0.1:{port} (--master "
        f"zk://127.0.0.1:{port}/mesos) (waited 1 s: --master-timeout)"
    )
    assert took < 15  # was ~15 s of kazoo's own timeout and a traceback
    assert not os.path.exists(log) and os.listdir(tmp_path) == []


def test_a_master_that_does_not_answer(tmp_path):
    log = str(tmp_path / "log")
    port = closed_port()
    done = refused("--master", f"127.0.0.1:{port}", "--master-timeout", "1", log=log)
    assert one_line(done) == (
        f"taskledger run: no Mesos master at 127.0.0.1:{port}: Connection refused "
        "(waited 1 s: --master-timeout)"
    )
    assert not os.path.exists(log)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--master", "ftp://m:5050"), "give HOST:PORT, https://HOST:PORT or zk://"),
        (("--master", "https://m:5050/api"), "give https://HOST:PORT, no path"),
        (("--master", "zk://z:2181"), "give the masters' ZooKeeper path, e.g. zk://z:2181/mesos"),
        (("--master", "zk://me:pw@z:2181/mesos"), "'zk://me:****@z:2181/mesos'"),
        (("--master", "m:5050", "--principal", "ops"), "--principal needs --secret-file"),
        (("--master", "m:5050", "--secret-file", "/x"), "--secret-file needs --principal"),
        (("--master", "m:5050", "--api", "0.0.0.0:0"), "needs --api-token-file"),
        ((), "--master is required"),
    ],
)
def test_settings_that_cannot_work(tmp_path, args, says):
    log = str(tmp_path / "log")
    line = one_line(refused(*args, log=log))
    assert says in line, line
    assert "pw" not in line  # a password in the address is never echoed
    assert not os.path.exists(log)


def test_an_api_port_in_use(tmp_path):
    log = str(tmp_path / "log")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = refused("--master", "m:5050", "--api", f"127.0.0.1:{port}", log=log)
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(done)
    assert not os.path.exists(log)


def test_the_options_reach_the_framework_info_and_the_driver(tmp_path):
    """What `run` subscribes with: name, user, role, principal, failover timeout, web UI
    link from its options, and the credential pymesos sends (the secret from its file)."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    with BackgroundSim(SimConfig(agents=1)) as sim:
        args = [
            *("--master", sim.address, "--log", str(tmp_path / "log")),
            *("--principal", "ops", "--secret-file", str(secret), "--role", "web"),
            *("--framework-name", "shop", "--user", "nobody", "--failover-timeout", "3h"),
            *("--webui-url", "http://ops.example/", "--api", "off"),
        ]
        ctx = run_command.make_context("run", args)
        runtime, _ = _prepare(ctx.params)
    assert runtime.config.credential == ("ops", "s3cret")
    assert "s3cret" not in repr(runtime.config)
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        runtime.core = SchedulerCore(ledger, runtime.config.job, clock=lambda: 0.0)
        info = runtime._framework()
    assert {k: info[k] for k in ("name", "user", "role", "principal", "webui_url")} == {
        "name": "shop",
        "user": "nobody",
        "role": "web",
        "principal": "ops",
        "webui_url": "http://ops.example/",
    }
    assert info["failover_timeout"] == 3 * 3600.0


def test_one_log_format_and_nothing_twice(tmp_path):
    """With -v, pymesos's lines come through the one handler, in the one format, once
    (pymesos installs a handler of its own at import, which printed each line twice)."""
    err = tmp_path / "stderr"
    config = SimConfig(agents=1, heartbeat_interval=15.0)
    with BackgroundSim(config, time_scale=20) as sim, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "tools.cli", "run", "-v", "--master", sim.address),
                *("--log", str(tmp_path / "log"), "--instances", "1", "--heartbeat", "0.75"),
                *("--time-scale", "20"),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        time.sleep(3)
        inject(sim.address, {"kind": "stream_drop"})  # pymesos says so, and reconnects
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    lines = err.read_text().splitlines()
    stamped = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S+: ")
    records = [line for line in lines if stamped.match(line)]
    assert any(" pymesos." in line for line in records), lines  # pymesos did log something
    assert not any("[INFO]" in line or "[WARNING]" in line for line in lines), lines
    messages = [stamped.sub("", line) for line in records]
    assert all(a != b for a, b in zip(messages, messages[1:], strict=False)), messages
    assert records[0].endswith(f"(1 events); operator API and web view {_url(lines)}")


def _url(lines: list[str]) -> str:
    found = re.search(r"operator API and web view (http://127\.0\.0\.1:\d+/)", "\n".join(lines))
    assert found, lines
    return found.group(1)

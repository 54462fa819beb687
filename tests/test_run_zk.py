"""`taskledger run --master zk://...` against a real ZooKeeper (tests/servers.py): the
masters' leader is read from the znodes Mesos writes (its MasterInfo as JSON under
``json.info_<sequence>``; the lowest sequence leads), and the scheduler subscribes to that
master through pymesos's detector and runs its job there.

The simulated master does not register itself in ZooKeeper, so each test writes the znode
a Mesos master would (with the simulated master's address, or one nothing listens on)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from e2e_support import running_on_cluster
from kazoo.client import KazooClient

from tools.mesos_master import leader
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("TASKLEDGER_")}


def master_info(address: str) -> bytes:
    """The MasterInfo JSON a Mesos master writes (the fields pymesos's detector reads)."""
    host, port = address.rsplit(":", 1)
    return json.dumps(
        {"address": {"hostname": host, "ip": host, "port": int(port)}, "hostname": host}
    ).encode()


@pytest.fixture
def zk(zookeeper):
    client = KazooClient(hosts=zookeeper.hosts)
    client.start(timeout=10)
    path = f"/mesos-{uuid.uuid4().hex[:8]}"
    client.ensure_path(path)
    try:
        yield client, path
    finally:
        client.delete(path, recursive=True)
        client.stop()
        client.close()


def register(client: KazooClient, path: str, address: str) -> str:
    """Registers a master as Mesos does: an ephemeral sequential json.info_ znode."""
    return client.create(f"{path}/json.info_", master_info(address), ephemeral=True, sequence=True)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_leader_is_the_lowest_json_info_znode(zk):
    client, path = zk
    assert leader(client, path) is None  # no master registered yet
    client.create(f"{path}/log_replicas", b"")
    client.create(f"{path}/info_", b"\x08protobuf, before Mesos 0.24", sequence=True)
    assert leader(client, path) is None
    first = register(client, path, "10.0.0.3:5050")
    register(client, path, "10.0.0.7:5050")
    assert leader(client, path) == "10.0.0.3:5050"
    client.delete(first)  # the leading master's session ended: the next one leads
    assert leader(client, path) == "10.0.0.7:5050"
    assert leader(client, path + "-never-registered") is None


def test_a_scheduler_finds_its_master_through_zookeeper_and_runs_its_job(zk, zookeeper, tmp_path):
    client, path = zk
    log, err = tmp_path / "log", tmp_path / "stderr"
    with BackgroundSim(SimConfig(agents=2), time_scale=20) as sim, open(err, "w") as stderr:
        register(client, path, sim.address)
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "tools.cli", "run"),
                *("--master", f"zk://{zookeeper.hosts}{path}", "--log", str(log)),
                *("--instances", "2", "--time-scale", "20"),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=CLEAN_ENV,
        )
        try:
            deadline = time.monotonic() + 45
            running = running_on_cluster(sim.address)
            while time.monotonic() < deadline and sorted(running) != [0, 1]:
                assert proc.poll() is None, err.read_text()
                time.sleep(0.2)
                running = running_on_cluster(sim.address)
            assert sorted(running) == [0, 1], (running, err.read_text())
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
    assert code == 0, err.read_text()
    started = err.read_text().splitlines()[0]
    # The start-up line names both: what it was given and the master ZooKeeper named.
    assert f"zk://{zookeeper.hosts}{path}" in started and sim.address in started, started


def test_a_leader_named_by_zookeeper_that_does_not_answer_is_one_line(zk, zookeeper, tmp_path):
    client, path = zk
    dead = f"127.0.0.1:{closed_port()}"
    register(client, path, dead)
    log = tmp_path / "log"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "tools.cli", "run", "--log", str(log)),
            *("--master", f"zk://{zookeeper.hosts}{path}", "--master-timeout", "1"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=CLEAN_ENV,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("taskledger run: ") and dead in lines[0], lines
    assert not log.exists()  # nothing left behind

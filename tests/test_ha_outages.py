"""The replicated `taskledger run` when its servers go away: three replicas (real
processes) against the simulated master, each test with a PostgreSQL and a ZooKeeper of its
own (they are stopped and started under the replicas).

* ZooKeeper stopped while the leader runs: the leader pauses at once (no append to the log,
  no call to the master, a task failing meanwhile is neither acknowledged nor replaced),
  steps down once suspended longer than its session (exit status 3); when ZooKeeper is back
  one leader takes over and the job converges, nothing lost.
* PostgreSQL stopped (fast shutdown: every session ended) and started again: no update is
  acknowledged while nothing can be made durable (a task failing meanwhile has its update
  held by the leader, its append retried); the leader either recovers (the append goes
  through once the server is back: what this machine shows) or, its append failed, steps
  down with exit status 3 and another replica leads; a follower whose tail of the log broke
  exits and is restarted, as its supervisor would. Then the job converges, the failed
  task's update is acknowledged, `verify` is clean, no acknowledged update is lost.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from servers import PostgresServer, ZooKeeperServer

from engine.replication import DEPOSED_EXIT
from tools.cli import cli
from tools.demo import inject
from tools.ha_cluster import (
    LogOfRecord,
    Replicas,
    acknowledged,
    converged,
    leader_after,
    log_problems,
    replicas_of,
    stale_writes,
    wait,
)
from tools.sim_master.client import get_json
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

SIM_SCALE = 20.0
INSTANCES = 4
SESSION = 1.0  # seconds: ZooKeeper's tick is 500 ms
OUTAGE = 3.0  # seconds each server stays down: longer than the session


@pytest.fixture
def servers() -> Iterator[tuple[PostgresServer, ZooKeeperServer]]:
    postgres = PostgresServer().start()
    try:
        zookeeper = ZooKeeperServer().start()
        try:
            yield postgres, zookeeper
        finally:
            zookeeper.stop()
    finally:
        postgres.stop()


@pytest.fixture
def ha(
    servers, tmp_path
) -> Iterator[tuple[Replicas, LogOfRecord, PostgresServer, ZooKeeperServer]]:
    postgres, zookeeper = servers
    config = SimConfig(agents=3, seed=7, wire_time_scale=SIM_SCALE)
    with BackgroundSim(config, time_scale=SIM_SCALE) as sim:
        group = replicas_of(
            sim.address,
            postgres,
            "public",
            zookeeper.hosts,
            str(tmp_path),
            session_timeout=SESSION,
            instances=INSTANCES,
            time_scale=SIM_SCALE,
        )
        log = LogOfRecord(group.log, postgres.password)
        try:
            for name in ("a", "b", "c"):
                group.start(name)
            leader_after(log, 0)
            wait(lambda: converged(sim.address, INSTANCES), 60, "the job to run")
            yield group, log, postgres, zookeeper
        finally:
            group.stop()
            log.close()


def supervise(group: Replicas, seconds: float) -> dict[str, list[int]]:
    """For ``seconds``, starts again each replica that exited, as its supervisor would;
    returns each one's exit statuses."""
    exits: dict[str, list[int]] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, proc in list(group.procs.items()):
            if proc.poll() is not None:
                exits.setdefault(name, []).append(proc.returncode)
                group.start(name)
        time.sleep(0.05)
    return exits


def a_running_task(master: str) -> str:
    tasks = get_json(master, "/state")["tasks"]
    return sorted(t["task_id"] for t in tasks if t["agent_state"] == "TASK_RUNNING")[0]


def settled(group: Replicas, log: LogOfRecord, context: str) -> dict[str, list[int]]:
    """The job converges (replicas that exit restarted meanwhile: their exit statuses are
    returned), and the log of record holds every update acknowledged, once, each event at
    its leader's epoch, and `verify` finds it sound."""
    exits: dict[str, list[int]] = {}
    deadline = time.monotonic() + 60
    while not converged(group.master, INSTANCES):
        if time.monotonic() > deadline:
            said = {name: group.stderr(name, 800) for name in group.procs}
            raise AssertionError(f"{context}: no convergence; exits {exits}; stderr: {said}")
        for name, statuses in supervise(group, 0.2).items():
            exits.setdefault(name, []).extend(statuses)
    assert log_problems(log, group.master) == [], context
    verified = CliRunner().invoke(
        cli, ["verify", "--log", group.log.text], env={"PGPASSWORD": group.password}
    )
    assert verified.exit_code == 0, verified.output
    return exits


def test_a_zookeeper_outage_pauses_the_leader_and_one_leader_resumes(ha) -> None:
    group, log, _, zookeeper = ha
    [first] = log.leaders()
    leader = group.procs[first.replica]
    zookeeper.kill()
    time.sleep(0.2)  # a batch committing as the connection dropped lands meanwhile
    events, acked = len(log.written()), acknowledged(group.master)
    lost = a_running_task(group.master)
    inject(group.master, {"kind": "executor_lost", "task_id": lost})
    time.sleep(OUTAGE)
    # Suspended, the leader did nothing: its appends and its calls wait at the gate...
    assert len(log.written()) == events, "the leader appended while ZooKeeper was down"
    assert acknowledged(group.master) == acked, "an update acknowledged while paused"
    tasks = get_json(group.master, "/state")["tasks"]
    assert [t for t in tasks if t["agent_state"] == "TASK_STAGING"] == [], "a task launched"
    # ... and, suspended longer than its session, it stepped down.
    try:
        status = leader.wait(10)
    except subprocess.TimeoutExpired:
        said = group.stderr(first.replica, 20000)
        raise AssertionError(f"the paused leader did not step down: {said}") from None
    assert status == DEPOSED_EXIT, group.stderr(first.replica)
    assert "suspended longer than the session" in group.stderr(first.replica)
    zookeeper.restart()
    supervise(group, 0.5)
    elected = leader_after(log, first.epoch)
    assert stale_writes(log, elected) == []
    settled(group, log, "after the ZooKeeper outage")
    assert acknowledged(group.master) - acked, "the lost task's update never acknowledged"


def test_a_postgresql_restart_acknowledges_nothing_it_could_not_record(ha) -> None:
    group, log, postgres, _ = ha
    [first] = log.leaders()
    acked = acknowledged(group.master)
    postgres.halt()
    lost = a_running_task(group.master)
    inject(group.master, {"kind": "executor_lost", "task_id": lost})
    exits = supervise(group, OUTAGE)
    # Nothing could be made durable, so nothing was acknowledged.
    assert acknowledged(group.master) == acked, "an update acknowledged with the log down"
    postgres.resume()
    for name, statuses in settled(group, log, "after the PostgreSQL restart").items():
        exits.setdefault(name, []).extend(statuses)
    assert acknowledged(group.master) - acked, "the lost task's update never acknowledged"
    # The leader either recovered (its append retried once the server was back) or
    # stepped down as deposed, and then another replica leads; a follower that lost the
    # log exits and is restarted.
    leaders = log.leaders()
    if exits.get(first.replica):
        assert set(exits[first.replica]) == {DEPOSED_EXIT}, exits
        assert leaders[-1].epoch > first.epoch, leaders
    else:
        assert leaders == [first], leaders
    assert stale_writes(log, leaders[-1]) == []

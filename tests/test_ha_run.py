"""The replicated `taskledger run` (engine/replication.py), as real processes: three replicas
of one scheduler against the simulated master, PostgreSQL the log of record, a ZooKeeper
election; the leader SIGKILLed, or SIGSTOPped longer than its session and resumed.

After every fault: a new leader took over (a LeaderElected with a higher epoch in the log),
the job converges (each instance RUNNING once on the cluster, every update acknowledged),
every update the master saw acknowledged is in the log of record exactly once, epochs never
decrease along the log, a resumed old leader wrote nothing and stepped down (exit status
3; no call of a deposed leader reaches the master: tests/test_sender.py checks the gate), and
a killed leader's mirror is a prefix of the log of record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from servers import free_port
from sim_session import state, wait_until

from engine.ledger import Ledger
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
    streams,
)
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

SIM_SCALE = 20.0
INSTANCES = 4
SESSION = 1.0  # seconds: ZooKeeper's tick here is 500 ms (tests/servers.py)
# Faults of the pause-and-kill loop, alternating (a soak: TASKLEDGER_HA_ROUNDS=100).
ROUNDS = int(os.environ.get("TASKLEDGER_HA_ROUNDS", "3"))


@pytest.fixture
def cluster() -> Iterator[BackgroundSim]:
    config = SimConfig(agents=3, seed=11, wire_time_scale=SIM_SCALE)
    with BackgroundSim(config, time_scale=SIM_SCALE) as sim:
        yield sim


@pytest.fixture
def ha(cluster, postgres, zookeeper, tmp_path) -> Iterator[tuple[Replicas, LogOfRecord]]:
    with postgres.fresh_schema() as schema:
        group = replicas_of(
            cluster.address,
            postgres,
            schema,
            zookeeper.hosts,
            str(tmp_path),
            session_timeout=SESSION,
            instances=INSTANCES,
            time_scale=SIM_SCALE,
        )
        log = LogOfRecord(group.log, postgres.password)
        try:
            yield group, log
        finally:
            group.stop()
            log.close()


# ----------------------------------------------------------------------------- checks
def check_log(log: LogOfRecord, address: str, context: str) -> None:
    problems = log_problems(log, address)
    assert problems == [], f"{context}: {problems}"


def wait_converged(group: Replicas, log: LogOfRecord, context: str) -> None:
    try:
        wait_until(lambda: converged(group.master, INSTANCES), 60, what="convergence")
    except TimeoutError:
        said = {name: group.stderr(name)[-800:] for name in group.procs}
        raise AssertionError(f"{context}: no convergence; stderr: {said}") from None


def scrape(port: int) -> dict[str, float] | None:
    """The taskledger_ samples a replica serves (None while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    pairs = (line.split(" ", 1) for line in text.splitlines() if line.startswith("taskledger_"))
    return {name: float(value) for name, value in pairs}


def leadership_metrics(port: int) -> tuple[float, float] | None:
    """(taskledger_leader, taskledger_epoch) a replica serves, once it has an epoch."""
    values = scrape(port)
    if values is None:
        return None
    leader, epoch = values["taskledger_leader"], values["taskledger_epoch"]
    return (leader, epoch) if epoch else None


def mirror_matches(path: str, log: LogOfRecord) -> None:
    """A stopped replica's mirror is a prefix of the log of record, event for event."""
    with Ledger.open(path) as mirror:
        local = [(type(e).__name__, e) for _, e in mirror.events()]
    record = [(type(e).__name__, e) for _, e in log.written()]
    assert local == record[: len(local)], f"the mirror {path} is not a prefix of the log"


# ----------------------------------------------------------------------------- tests
def test_a_killed_leader_is_replaced_and_nothing_acknowledged_is_lost(ha) -> None:
    group, log = ha
    ports = {name: free_port() for name in ("a", "b", "c")}
    for name, port in ports.items():
        group.start(name, "--metrics-port", str(port))
    first = leader_after(log, 0)
    wait_converged(group, log, "first leader")
    # Each replica says whether it leads, and the epoch, in its metrics.
    for name, port in ports.items():
        said = wait_until(lambda port=port: leadership_metrics(port), 10, what="metrics")
        assert said == ((1.0, 1.0) if name == first.replica else (0.0, 1.0)), (name, said)
    # The standbys time what they apply live (a standby started late may have caught up on
    # everything so far, untimed: a task lost now gives each live events to apply); the
    # first leader never followed a live event.
    lost = sorted(t["task_id"] for t in state(group.master)["tasks"])[0]
    inject(group.master, {"kind": "executor_lost", "task_id": lost})
    wait_converged(group, log, "after a task was lost")

    def lag_samples() -> dict[str, dict[str, float]] | None:
        said = {name: scrape(port) for name, port in ports.items()}
        standbys = [v for name, v in said.items() if name != first.replica]
        if any(v is None or not v["taskledger_follower_lag_seconds_count"] for v in standbys):
            return None
        return said  # type: ignore[return-value]

    said = wait_until(lag_samples, 20, what="each standby's timed lag")
    for name, values in said.items():
        count = values["taskledger_follower_lag_seconds_count"]
        if name == first.replica:
            assert count == 0, values
        else:
            mean = values["taskledger_follower_lag_seconds_sum"] / count
            assert 0 <= mean < 5, f"replica {name}: a mean lag of {mean} s"
    epoch = first.epoch
    leader = first.replica
    for kill in range(2):
        group.procs[leader].kill()
        group.procs[leader].wait(10)
        new = leader_after(log, epoch)
        assert new.replica != leader
        wait_converged(group, log, f"after kill {kill}")
        check_log(log, group.master, f"after kill {kill}")
        mirror_matches(group.mirror(leader), log)
        group.start(leader)  # as its supervisor would: a follower now
        epoch, leader = new.epoch, new.replica
    # A clean stop hands over at once (the lock node is deleted, not left to expire).
    group.procs[leader].send_signal(signal.SIGTERM)
    assert group.procs[leader].wait(30) == 0, group.stderr(leader)
    new = leader_after(log, epoch)
    wait_converged(group, log, "after SIGTERM")
    check_log(log, group.master, "after SIGTERM")


def test_paused_and_killed_leaders_in_a_loop_write_nothing_stale(ha) -> None:
    """A leader SIGSTOPped longer than its session resumes knowing nothing: its appends are
    refused (nothing below the new epoch after the new leader's LeaderElected), it learns
    it was deposed and exits DEPOSED_EXIT (its supervisor, here the test, restarts it as a
    follower). Pauses and kills alternate; `taskledger verify` on the log of record finds
    no stale write at the end."""
    group, log = ha
    for name in ("a", "b", "c"):
        group.start(name)
    elected = leader_after(log, 0)
    wait_converged(group, log, "first leader")
    faults = [("pause", "kill")[n % 2] for n in range(ROUNDS)]
    for round_, fault in enumerate(faults):
        context = f"round {round_} ({fault} of {elected.replica} at epoch {elected.epoch})"
        old = group.procs[elected.replica]
        if fault == "kill":
            old.kill()
            old.wait(10)
            new = leader_after(log, elected.epoch)
        else:
            old.send_signal(signal.SIGSTOP)
            new = leader_after(log, elected.epoch)
            time.sleep(0.5)  # the new leader is subscribed and dispatching meanwhile
            old.send_signal(signal.SIGCONT)
            try:
                code = old.wait(30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{context}: the resumed leader did not step down") from None
            # What this run of the replica said (its file holds its earlier runs too): a
            # fenced leader's errors can push the line past a short tail.
            said = group.stderr(elected.replica, 200_000).rsplit(
                f": following {group.log.text}", 1
            )[-1]
            assert code == DEPOSED_EXIT, f"{context}: exit {code}; {said[-3000:]}"
            assert "no longer leading" in said, said[-3000:]
        stale = stale_writes(log, new)
        assert stale == [], f"{context}: stale writes accepted: {stale}"
        wait_converged(group, log, context)
        check_log(log, group.master, context)
        mirror_matches(group.mirror(elected.replica), log)
        group.start(elected.replica)  # as its supervisor would
        elected = new
    verified = CliRunner().invoke(
        cli, ["verify", "--log", group.log.text], env={"PGPASSWORD": group.password}
    )
    assert verified.exit_code == 0, verified.output
    assert "epochs never decrease" in verified.output, verified.output


def test_a_resumed_leader_changes_nothing_and_its_successor_takes_what_it_missed(ha) -> None:
    """A task fails while the leader is SIGSTOPped longer than its session, so the update
    waits for it on its stream. Resumed, it neither records nor acknowledges that update
    (its appends are fenced, and anything it still sends goes out on the stream the new
    leader's SUBSCRIBE failed over: the master refuses it; tools/ha_demo.py counts those):
    the new leader records and acknowledges it, at its own epoch, and replaces the task."""
    group, log = ha
    for name in ("a", "b", "c"):
        group.start(name)
    first = leader_after(log, 0)
    wait_converged(group, log, "first leader")
    old_stream = streams(group.master)
    old = group.procs[first.replica]
    acked = acknowledged(group.master)
    old.send_signal(signal.SIGSTOP)
    lost = sorted(t["task_id"] for t in state(group.master)["tasks"])[0]
    inject(group.master, {"kind": "executor_lost", "task_id": lost})
    new = leader_after(log, first.epoch)
    wait_until(lambda: streams(group.master) - old_stream, 30, what="the new SUBSCRIBE")
    old.send_signal(signal.SIGCONT)
    assert old.wait(30) == DEPOSED_EXIT, group.stderr(first.replica)
    wait_converged(group, log, "after the resumed leader stepped down")
    assert stale_writes(log, new) == []
    check_log(log, group.master, "after the resumed leader stepped down")
    updates = {(e.task_id, e.uuid): n.epoch for n, e in log.written() if hasattr(e, "uuid")}
    missed = {key for key in acknowledged(group.master) - acked if key[0] == lost}
    assert missed, f"the update of {lost} was never acknowledged"
    assert {updates[key] for key in missed} == {new.epoch}, updates


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--log", "postgresql://u@db:5432/sched"), "needs --zk HOST:PORT/PATH"),
        (("--log", "postgresql://u:pw@db/sched", "--zk", "z:2181/p"), "never on the command"),
        (("--log", "postgresql://db/sched", "--zk", "z:2181/p"), "postgresql://USER@HOST:PORT/DB"),
        (("--log", "postgresql://u@db/s?sslmode=x", "--zk", "z:2181/p"), "unknown parameter"),
        (("--log", "postgresql://u@db/sched", "--zk", "z:2181"), "HOST:PORT[,HOST:PORT...]/PATH"),
        (("--log", "postgresql://u@db/sched", "--zk", "z/p"), "'z' is not HOST:PORT"),
        (("--log", "var/log", "--zk", "z:2181/p"), "--zk is for a replicated log"),
        (("--log", "var/log", "--replica", "a"), "--replica is for a replicated log"),
    ],
)
def test_replication_settings_that_cannot_work(args: tuple[str, ...], says: str) -> None:
    """Refused in one line, exit status 2, before anything is contacted or created."""
    result = CliRunner().invoke(cli, ["run", "--master", "127.0.0.1:1", *args])
    assert result.exit_code == 2, result.output
    assert says in result.output, result.output
    assert "pw" not in result.output

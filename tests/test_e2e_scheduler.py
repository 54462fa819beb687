"""The embedded scheduler end to end: the real pymesos driver over real HTTP to the simulated
master, the Ledger on a real LMDB folder, and faults injected through the master's admin API.
Each test checks convergence: every instance runs exactly once, in the Ledger and on the
cluster, and the views agree with a replay of the log (tests/e2e_support.py). The faults of
the catalogue that need the saga's timers are in tests/test_e2e_faults.py."""

from __future__ import annotations

import pytest
from e2e_support import Scheduler, assert_converges, assert_replay_equal
from sim_session import inject, state, wait_until

from engine.ledger import Ledger
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

SCALE = 20.0
INSTANCES = 8


def start_scheduler(master: str, log: str) -> Scheduler:
    return Scheduler(master, log, instances=INSTANCES, heartbeat_interval=15.0 / SCALE).start()


@pytest.fixture
def cluster():
    with BackgroundSim(SimConfig(agents=3, seed=3, wire_time_scale=SCALE), time_scale=SCALE) as sim:
        yield sim


def test_keeps_the_job_running_and_acknowledges_after_append(cluster, tmp_path):
    scheduler = start_scheduler(cluster.address, str(tmp_path / "log"))
    try:
        assert_converges(scheduler, cluster.address)
        # Every update the agents sent was acknowledged: none still pending on the master.
        wait_until(
            lambda: all(t["pending_updates"] == 0 for t in state(cluster.address)["tasks"]),
            10,
            what="all updates acknowledged",
        )
    finally:
        scheduler.stop()


def test_scheduler_restart_resubscribes_as_the_same_framework(cluster, tmp_path):
    log = str(tmp_path / "log")
    scheduler = start_scheduler(cluster.address, log)
    assert_converges(scheduler, cluster.address)
    framework_id = scheduler.ledger.mesos_view.framework_id
    scheduler.stop()
    again = start_scheduler(cluster.address, log)
    try:
        wait_until(lambda: again.ledger.mesos_view.connected, 10, what="resubscribed")
        assert again.ledger.mesos_view.framework_id == framework_id
        assert_converges(again, cluster.address)
        frameworks = state(cluster.address)["frameworks"]
        assert [f["id"] for f in frameworks if not f["removed"]] == [framework_id]
    finally:
        again.stop()


def test_snapshots_while_running_and_a_restart_loads_the_newest(cluster, tmp_path):
    log = str(tmp_path / "log")
    scheduler = Scheduler(
        cluster.address,
        log,
        instances=INSTANCES,
        heartbeat_interval=15.0 / SCALE,
        snapshot_every=10,
    ).start()
    try:
        assert_converges(scheduler, cluster.address)
        wait_until(lambda: scheduler.ledger.snapshots(), 10, what="a snapshot")
        assert len(scheduler.ledger.snapshots()) <= 2  # the older ones pruned
        assert_replay_equal(scheduler.ledger)
    finally:
        scheduler.stop()
    taken = scheduler.runtime.snapshotter.stats
    assert taken.taken >= 1 and taken.failed == 0
    with Ledger.open(log) as ledger:
        assert ledger.snapshot_problems == []
        assert ledger.snapshots()[-1].nid == taken.last_nid
    again = start_scheduler(cluster.address, log)
    try:
        assert_converges(again, cluster.address)
    finally:
        again.stop()


def resubscriptions(ledger: Ledger) -> int:
    return sum(1 for _, e in ledger.events() if type(e).__name__ == "FrameworkReregistered")


def test_stream_drop_and_silent_stream(cluster, tmp_path):
    scheduler = start_scheduler(cluster.address, str(tmp_path / "log"))
    try:
        assert_converges(scheduler, cluster.address)
        before = resubscriptions(scheduler.ledger)
        inject(cluster.address, {"kind": "stream_drop"})
        wait_until(
            lambda: resubscriptions(scheduler.ledger) > before, 10, what="resubscribed after drop"
        )
        inject(cluster.address, {"kind": "stream_silent"})
        wait_until(
            lambda: scheduler.runtime.stats.watchdog_restarts >= 1, 10, what="watchdog restart"
        )
        assert_converges(scheduler, cluster.address)
    finally:
        scheduler.stop()


def test_master_failover(cluster, tmp_path):
    scheduler = start_scheduler(cluster.address, str(tmp_path / "log"))
    try:
        assert_converges(scheduler, cluster.address)
        inject(cluster.address, {"kind": "master_failover", "down_for": 20, "reregister_after": 20})
        # The master is down at once (its listener closes): wait for the scheduler to notice.
        wait_until(lambda: not scheduler.core.subscribed, 10, what="disconnected")
        assert_converges(scheduler, cluster.address, timeout=30)
    finally:
        scheduler.stop()

"""The embedded scheduler end to end: the real pymesos driver over real HTTP to the simulated
master, the Ledger on a real LMDB folder, and faults injected through the master's admin API.
Each test checks convergence: every instance runs exactly once, in the Ledger and on the
cluster, and the views agree with a replay of the log."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pymesos  # noqa: F401  (imported in the main thread: it installs a SIGINT handler)
import pytest
from sim_session import inject, state, wait_until

from engine.ledger import Ledger
from engine.mesos.core import JobSpec
from engine.mesos.runtime import Runtime, RuntimeConfig
from projections.drift_view import Views
from tools.sim.cluster import SimConfig
from tools.sim.server import BackgroundSim

SCALE = 20.0
INSTANCES = 8


class Scheduler:
    """A Runtime on a thread, stoppable and restartable on the same log."""

    def __init__(self, master: str, log_path: str) -> None:
        self.master, self.log_path = master, log_path
        self.runtime: Runtime | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> Scheduler:
        config = RuntimeConfig(
            master=self.master,
            log_path=self.log_path,
            job=JobSpec("web", INSTANCES),
            heartbeat_interval=15.0 / SCALE,
            tick=0.05,
            failover_timeout=3600.0,
            http_timeout=5.0,
        )
        self.runtime = Runtime(config)
        self.thread = threading.Thread(target=self.runtime.run, name="runtime")
        self.thread.start()
        assert self.runtime.ready.wait(10)
        return self

    def stop(self) -> None:
        assert self.runtime is not None and self.thread is not None
        self.runtime.stop()
        self.thread.join(20)
        assert not self.thread.is_alive()

    @property
    def ledger(self) -> Ledger:
        assert self.runtime is not None and self.runtime.ledger is not None
        return self.runtime.ledger


@pytest.fixture
def cluster():
    with BackgroundSim(SimConfig(agents=3, seed=3, wire_time_scale=SCALE), time_scale=SCALE) as sim:
        yield sim


def running_on_cluster(address: str) -> Counter:
    """instance number -> how many tasks of it the agents run."""
    counts: Counter = Counter()
    try:
        tasks = state(address)["tasks"]
    except OSError:  # the master is down (failover): nothing to count yet
        return counts
    for task in tasks:
        if task["agent_state"] in ("TASK_RUNNING", "TASK_STARTING", "TASK_STAGING"):
            counts[int(task["task_id"].split("/")[1])] += 1
    return counts


def converged(scheduler: Scheduler, address: str) -> bool:
    ledger = scheduler.ledger
    running = [t for t, r in ledger.scheduler_view.tasks.items() if r.state == "RUNNING"]
    on_cluster = running_on_cluster(address)
    return (
        len(running) == INSTANCES
        and ledger.drift() == []
        and sorted(on_cluster) == list(range(INSTANCES))
        and all(n == 1 for n in on_cluster.values())
    )


def assert_converges(scheduler: Scheduler, address: str, timeout: float = 20.0) -> None:
    wait_until(lambda: converged(scheduler, address), timeout, what="convergence")
    ledger = scheduler.ledger
    assert ledger.views == Views.rebuild(ledger.events())
    assert scheduler.runtime is not None and scheduler.runtime.core is not None
    assert scheduler.runtime.core.stats.callback_errors == 0, scheduler.runtime.core.stats


def test_keeps_the_job_running_and_acknowledges_after_append(cluster, tmp_path):
    scheduler = Scheduler(cluster.address, str(tmp_path / "log")).start()
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
    scheduler = Scheduler(cluster.address, log).start()
    assert_converges(scheduler, cluster.address)
    framework_id = scheduler.ledger.mesos_view.framework_id
    scheduler.stop()
    again = Scheduler(cluster.address, log).start()
    try:
        wait_until(lambda: again.ledger.mesos_view.connected, 10, what="resubscribed")
        assert again.ledger.mesos_view.framework_id == framework_id
        assert_converges(again, cluster.address)
        frameworks = state(cluster.address)["frameworks"]
        assert [f["id"] for f in frameworks if not f["removed"]] == [framework_id]
    finally:
        again.stop()


def resubscriptions(ledger: Ledger) -> int:
    return sum(1 for _, e in ledger.events() if type(e).__name__ == "FrameworkReregistered")


def test_stream_drop_and_silent_stream(cluster, tmp_path):
    scheduler = Scheduler(cluster.address, str(tmp_path / "log")).start()
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
    scheduler = Scheduler(cluster.address, str(tmp_path / "log")).start()
    try:
        assert_converges(scheduler, cluster.address)
        inject(cluster.address, {"kind": "master_failover", "down_for": 20, "reregister_after": 20})
        time.sleep(0.5)
        assert_converges(scheduler, cluster.address, timeout=30)
    finally:
        scheduler.stop()

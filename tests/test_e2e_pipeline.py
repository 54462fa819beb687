"""The pipelined production path with thousands of tasks: the real pymesos driver over real
HTTP to the simulated master, the Runtime on a thread, a real LMDB log.

Behaviour, not timings (benchmarks/e2e.py measures): a job of a few thousand tasks is
launched, every update acknowledged; a master failover is followed by the explicit
reconciliation of every task, and an operator's implicit run answers every task too; a
stalled log slows the reading of the stream instead of piling updates up in memory.
"""

from __future__ import annotations

import time

import pytest
from e2e_support import (
    Scheduler,
    assert_no_update_recorded_twice,
    assert_replay_equal,
    cluster_tasks,
    events_of,
    running_in_ledger,
)
from sim_session import inject, wait_until

from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

SCALE = 20.0
TASKS = 2000


@pytest.fixture
def big_cluster():
    config = SimConfig(
        agents=8, seed=4, agent_cpus=100.0, agent_mem=100_000.0, wire_time_scale=SCALE
    )
    with BackgroundSim(config, time_scale=SCALE) as sim:
        yield sim


def all_acknowledged(address: str, count: int) -> bool:
    tasks = cluster_tasks(address)
    return len(tasks) == count and all(
        t["agent_state"] == "TASK_RUNNING" and t["pending_updates"] == 0 for t in tasks
    )


def completed_after(ledger, since: int, kind: str):
    """The first run of ``kind`` started after ``since`` that completed (or None)."""
    started = {e.run_id for _, e in events_of(ledger, "ReconciliationStarted", since)}
    for _, e in events_of(ledger, "ReconciliationCompleted", since):
        if e.run_id in started and e.kind == kind:
            return e
    return None


def answered_tasks(ledger, since: int) -> set[str]:
    return {
        e.task_id
        for _, e in events_of(ledger, "StatusUpdateReceived", since)
        if e.is_reconciliation_answer
    }


def small_tasks(address: str, log: str, instances: int, **options) -> Scheduler:
    """A scheduler of ``instances`` tasks of 0.01 cpus and 1 MB, on the cluster's clock."""
    return Scheduler(
        address,
        log,
        instances=instances,
        heartbeat_interval=15.0 / SCALE,
        saga_scale=SCALE,
        cpus=0.01,
        mem=1.0,
        **options,
    )


def test_thousands_of_tasks_launch_fail_over_and_are_reconciled(big_cluster, tmp_path):
    address = big_cluster.address
    scheduler = small_tasks(address, str(tmp_path / "log"), TASKS)
    scheduler.start()
    try:
        ledger = scheduler.ledger
        wait_until(lambda: len(running_in_ledger(ledger)) == TASKS, 120, what="launch")
        wait_until(lambda: all_acknowledged(address, TASKS), 60, what="every update acked")
        since = ledger.last_id
        inject(address, {"kind": "master_failover", "down_for": 1.0, "reregister_after": 0})
        explicit = wait_until(
            lambda: completed_after(ledger, since, "explicit"), 120, what="explicit run"
        )
        assert explicit.outcome == "answered" and explicit.asked == TASKS
        assert answered_tasks(ledger, since) >= set(running_in_ledger(ledger))
        since = ledger.last_id
        scheduler.runtime.request_reconciliation("implicit")
        implicit = wait_until(
            lambda: completed_after(ledger, since, "implicit"), 120, what="implicit run"
        )
        assert implicit.outcome == "quiet"
        # Every task is answered: the run may have ended quiet while the last answers of
        # 2,000 were still on their way (its count is what it had then), so wait for them.
        wait_until(
            lambda: answered_tasks(ledger, since) >= set(running_in_ledger(ledger)),
            60,
            what="every implicit answer",
        )
        assert implicit.answered > 0
        assert len(running_in_ledger(ledger)) == TASKS and ledger.drift() == []
        assert_replay_equal(ledger)
        assert_no_update_recorded_twice(ledger)
        assert scheduler.core.stats.callback_errors == 0
        assert scheduler.core.in_flight.peak <= scheduler.core.in_flight.limit
    finally:
        scheduler.stop()


def test_a_stalled_log_slows_the_stream_and_bounds_what_is_in_flight(big_cluster, tmp_path):
    """Every commit made slow: the updates in flight never pass their bound, the IO thread
    waits (the stream is read more slowly), nothing queued for the log grows past the
    bound, and the job still converges with every update acknowledged."""
    address, limit, tasks = big_cluster.address, 16, 300
    scheduler = small_tasks(address, str(tmp_path / "log"), tasks, max_in_flight=limit)
    scheduler.start()
    try:
        store = scheduler.ledger._store
        commit = store._commit
        queued: list[int] = []

        def slow_commit(batch):
            queued.append(store.pending_submissions() + len(batch))
            time.sleep(0.02)
            return commit(batch)

        store._commit = slow_commit  # the disk got slow: each commit takes 20 ms more
        wait_until(lambda: all_acknowledged(address, tasks), 120, what="every update acked")
        in_flight = scheduler.core.in_flight
        assert in_flight.peak <= limit
        assert in_flight.waits > 0  # the IO thread waited for the log
        assert max(queued) <= limit + 8  # updates, plus the few appends other threads wait on
        assert_no_update_recorded_twice(scheduler.ledger)
    finally:
        scheduler.stop()

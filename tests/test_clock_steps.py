"""Steps of the wall clock: the reconciliation schedules survive them, and the runtime
records each as a ClockStepped event.

The scheduler ticks with the wall clock, and NTP steps clocks in real clusters: one tick ten
years ahead (then corrected), or a step back of a day, used to stop every scheduled run
until the clock caught up with the runs' times, silently.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pymesos  # noqa: F401  (imported in the main thread: it installs a SIGINT handler)
import pytest
from saga_cluster import FakeMaster, status, step
from sim_session import wait_until

from engine.clock_watch import ClockWatch
from engine.events import (
    ClockStepped,
    ReconciliationCompleted,
    ReconciliationStarted,
    ReconciliationSuperseded,
)
from engine.ledger import Ledger, state_digest
from engine.mesos.core import JobSpec
from engine.mesos.runtime import Runtime, RuntimeConfig
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

T0 = 1_714_532_400.0
MINUTE, HOUR, DAY = 60.0, 3600.0, 86_400.0
TEN_YEARS = 3650 * DAY


def _cluster(ledger: Ledger, master: FakeMaster) -> None:
    master.agent("a1")
    ledger.framework_registered("fw", "master", time=T0)
    for n in range(3):
        task = f"web/{n}"
        ledger.task_created(task, job="web", instance=n, time=T0)
        ledger.task_assigned(task, agent_id="a1", time=T0)
        master.launch(task, "a1")
    master.deliver(ledger, T0)


def _ticks(ledger: Ledger, master: FakeMaster, start: float, hours: float) -> float:
    """The runtime's loop once a minute from ``start`` for ``hours``; returns the last now."""
    now = start
    for _ in range(int(hours * HOUR / MINUTE)):
        step(ledger, master, now)
        now += MINUTE
    return now - MINUTE


def _runs_after(ledger: Ledger, nid: int) -> tuple[Counter, int]:
    """Scheduled runs started after ``nid`` by kind, and the runs completed after it."""
    started: Counter = Counter()
    completed = 0
    for _, e in ledger.events(nid + 1):
        if type(e) is ReconciliationStarted and e.trigger == "schedule":
            started[e.kind] += 1
        completed += type(e) is ReconciliationCompleted
    return started, completed


@pytest.mark.parametrize(
    "jump",
    [
        pytest.param([TEN_YEARS], id="one tick ten years ahead, then corrected"),
        pytest.param([], id="a step back of a day"),
    ],
)
def test_the_schedules_survive_a_step_of_the_clock(tmp_path, jump):
    path = tmp_path / "log"
    master = FakeMaster()
    with Ledger.open(path, durable=False) as ledger:
        _cluster(ledger, master)
        last = _ticks(ledger, master, T0, 3)
        for ahead in jump:  # one tick far ahead, as a clock wrong for a moment gives
            step(ledger, master, last + ahead)
        back = last + MINUTE if jump else last - DAY
        mark = ledger.last_id
        last = _ticks(ledger, master, back, 6)
        started, completed = _runs_after(ledger, mark)
        # Hourly each: six explicit and six implicit runs in six hours (two before the fix
        # after the jump ahead, none after the step back), and none stuck.
        assert started["explicit"] >= 6 and started["implicit"] >= 6, started
        assert completed >= 10
        digest = ledger.digest()
    # Replay reproduces every decision: the reopened log is the same state, and deciding
    # again at the last time decides nothing new.
    with Ledger.open(path, durable=False) as again:
        assert again.digest() == digest
        assert again.tick(now=last) == []


def test_a_run_started_in_the_future_of_a_stepped_clock_is_superseded(tmp_path):
    master = FakeMaster()
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        _cluster(ledger, master)
        ledger.tick(now=T0)  # the registration's run
        ledger.reconcile("explicit", now=T0 + DAY)  # the clock a day ahead for a moment
        ahead = {run.run_id for run in ledger.saga.runs.active.values()}
        assert len(ahead) == 2  # the implicit schedule's slot passed too, a day ahead
        mark = ledger.last_id
        ledger.tick(now=T0 + HOUR)  # corrected: those runs' timers lie a day ahead
        superseded = {
            e.run_id for _, e in ledger.events(mark + 1) if e.topic == "ReconciliationSuperseded"
        }
        assert superseded == ahead
        assert all(run.started_at == T0 + HOUR for run in ledger.saga.runs.active.values())
        # Their commands not sent yet are cancelled with them, not left in the outbox.
        assert all(c.run_id not in ahead for c in ledger.pending_commands())


def test_two_clocks_a_little_apart_do_not_restart_a_schedule(tmp_path):
    """A run started by another thread a few seconds 'later' (its clock read after the
    tick's) is not a clock step: it goes on."""
    master = FakeMaster()
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        _cluster(ledger, master)
        ledger.tick(now=T0)  # the registration's run
        ledger.reconcile("explicit", now=T0 + 5)
        mark = ledger.last_id
        ledger.tick(now=T0 + 1)
        ledger.tick(now=T0 + 2)
        assert not any(type(e) is ReconciliationSuperseded for _, e in ledger.events(mark + 1))
        assert ledger.saga.runs.active["explicit"].started_at == T0 + 5


def test_a_log_begun_by_a_clock_far_ahead_still_gets_its_runs(tmp_path):
    """The schedules start from the log's first event: written by a clock ten years ahead,
    then corrected, the implicit schedule (which no registration starts) still runs."""
    master = FakeMaster()
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        master.agent("a1")
        ledger.task_created("web/0", job="web", time=T0 + TEN_YEARS)
        ledger.task_assigned("web/0", agent_id="a1", time=T0 + TEN_YEARS)
        ledger.status_update(status("web/0", "TASK_RUNNING"), time=T0 + TEN_YEARS)
        _ticks(ledger, master, T0, 3)
        started, _ = _runs_after(ledger, 0)
        assert started["implicit"] >= 3 and started["explicit"] >= 3, started


# -- detecting a step ------------------------------------------------------------------------------


def test_clock_watch_sees_steps_and_nothing_else():
    watch = ClockWatch(threshold=1.0)
    assert watch.observe(T0, 100.0) is None  # the first pair: nothing to compare with
    assert watch.observe(T0 + 0.25, 100.25) is None
    assert watch.observe(T0 + 30.9, 130.0) is None  # a slow tick: both clocks moved
    ahead = watch.observe(T0 + 30.9 + TEN_YEARS, 130.25)
    assert ahead == ClockStepped(T0 + 30.9 + TEN_YEARS, None, T0 + 30.9, 0.25)
    assert ahead.step == pytest.approx(TEN_YEARS - 0.25, abs=1e-3)
    back = watch.observe(T0 + 31.4 - DAY, 130.75)
    assert back is not None and back.step == pytest.approx(-DAY - TEN_YEARS, abs=1e-3)
    assert watch.observe(T0 + 31.9 - DAY + 0.5, 131.25) is None  # within the threshold
    with pytest.raises(ValueError, match="threshold"):
        ClockWatch(threshold=0)


def test_the_runtime_records_a_step_of_its_wall_clock(tmp_path):
    """The real runtime (pymesos over HTTP to the simulated master) with an injected
    (wall, monotonic) pair: the wall clock steps back a day while it runs."""
    offset = [0.0]

    def wall() -> float:
        return time.time() + offset[0]

    path = str(tmp_path / "log")
    with BackgroundSim(SimConfig(agents=2, seed=5)) as sim:
        config = RuntimeConfig(
            master=sim.address,
            log_path=path,
            job=JobSpec("web", 1),
            tick=0.05,
            failover_timeout=600.0,
            http_timeout=5.0,
            snapshot_every=0,
            durable=False,
        )
        runtime = Runtime(config, clock=wall, monotonic=time.monotonic)
        thread = threading.Thread(target=runtime.run)
        thread.start()
        try:
            assert runtime.ready.wait(10)
            wait_until(lambda: runtime.stats.ticks >= 3, 10, "a few ticks")
            stepped_at = time.time()
            offset[0] = -DAY
            ledger = runtime.ledger
            assert ledger is not None
            wait_until(
                lambda: any(type(e) is ClockStepped for _, e in ledger.events()), 10, "the step"
            )
        finally:
            runtime.stop()
            thread.join(20)
    with Ledger.open(path, durable=False) as again:
        steps = [e for _, e in again.events() if type(e) is ClockStepped]
        assert len(steps) == 1
        (event,) = steps
        assert event.step == pytest.approx(-DAY, abs=1.0)
        assert stepped_at - 1.0 <= event.previous <= stepped_at + 0.5
        assert event.time == pytest.approx(event.previous - DAY, abs=1.0)
        assert state_digest(again.load(None)) == again.digest()

"""Helpers for the end-to-end tests: the scheduler `Runtime` on a thread against a simulated
master over real HTTP (the real pymesos driver), and the checks every such test ends with.

Convergence means, at one moment: every instance of the job is RUNNING in the Ledger exactly
once, there is no drift, and the cluster runs exactly the tasks the Ledger holds RUNNING (one
live task per instance, each known to the master, nothing else of ours alive). After it, the
live state must equal a replay of the log, the core must have caught no callback error, and
no agent update (task id, uuid) may be recorded twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pymesos  # noqa: F401  (imported in the main thread: it installs a SIGINT handler)
from sim_session import state, wait_until

from engine.ledger import Ledger, LedgerState, state_digest
from engine.mesos.core import JobSpec
from engine.mesos.runtime import Runtime, RuntimeConfig

LIVE = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING")
JOB = "web"


class Scheduler:
    """A Runtime on a thread, stoppable and restartable on the same log.

    ``saga_scale`` compresses the saga's schedules and timeouts (RuntimeConfig.saga_options);
    use the simulator's time scale so that both sides agree on how long things take.
    """

    def __init__(
        self,
        master: str,
        log_path: str,
        *,
        instances: int = 8,
        heartbeat_interval: float = 0.75,
        saga_scale: float | None = None,
        http_timeout: float = 5.0,
        tick: float = 0.05,
        snapshot_every: int | None = None,  # None: the runtime's default
        cpus: float = 0.1,
        mem: float = 32.0,
        max_in_flight: int | None = None,  # None: the runtime's default
    ) -> None:
        self.master, self.log_path = master, log_path
        self.snapshot_every = snapshot_every
        self.instances = instances
        self.heartbeat_interval = heartbeat_interval
        self.saga_scale = saga_scale
        self.http_timeout = http_timeout
        self.tick = tick
        self.cpus, self.mem, self.max_in_flight = cpus, mem, max_in_flight
        self.runtime: Runtime | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> Scheduler:
        config = RuntimeConfig(
            master=self.master,
            log_path=self.log_path,
            job=JobSpec(JOB, self.instances, cpus=self.cpus, mem=self.mem),
            heartbeat_interval=self.heartbeat_interval,
            tick=self.tick,
            failover_timeout=3600.0,
            http_timeout=self.http_timeout,
            saga_options={} if self.saga_scale is None else {"time_scale": self.saga_scale},
            **({} if self.snapshot_every is None else {"snapshot_every": self.snapshot_every}),
            **({} if self.max_in_flight is None else {"max_in_flight": self.max_in_flight}),
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

    @property
    def core(self) -> Any:
        assert self.runtime is not None and self.runtime.core is not None
        return self.runtime.core


# -- the cluster's side ---------------------------------------------------------------------------


def cluster_tasks(address: str) -> list[dict]:
    try:
        return state(address)["tasks"]
    except OSError:  # the master is down (failover): nothing to see yet
        return []


def instance_of(task_id: str) -> int | None:
    """The instance number of one of the job's task ids ("web/3/g7" -> 3), else None."""
    parts = task_id.split("/")
    if len(parts) >= 3 and parts[0] == JOB and parts[1].isdigit():
        return int(parts[1])
    return None


def live_on_cluster(address: str) -> dict[str, dict]:
    """task id -> the task, for every task an agent runs (or is starting, or killing)."""
    return {t["task_id"]: t for t in cluster_tasks(address) if t["agent_state"] in LIVE}


def running_on_cluster(address: str) -> Counter:
    """instance number -> how many live tasks of it the agents run."""
    counts: Counter = Counter()
    for task_id in live_on_cluster(address):
        instance = instance_of(task_id)
        if instance is not None:
            counts[instance] += 1
    return counts


# -- convergence ----------------------------------------------------------------------------------


def running_in_ledger(ledger: Ledger) -> dict[str, int | None]:
    """task id -> instance, for the tasks the scheduler view holds RUNNING."""
    return {t: r.instance for t, r in ledger.scheduler_view.tasks.items() if r.state == "RUNNING"}


def problems(scheduler: Scheduler, address: str) -> list[str]:
    """Why the scheduler and the cluster have not converged (empty: they have)."""
    ledger = scheduler.ledger
    wanted = list(range(scheduler.instances))
    found = []
    running = running_in_ledger(ledger)
    if sorted(running.values(), key=lambda i: -1 if i is None else i) != wanted:
        found.append(f"ledger RUNNING instances {sorted(Counter(running.values()).items())}")
    drift = ledger.drift()
    if drift:
        found.append(f"drift {[(d.task_id, d.scheduler_state, d.mesos_state) for d in drift]}")
    live = live_on_cluster(address)
    if set(live) != set(running):
        found.append(
            f"cluster runs {sorted(set(live) - set(running))} not RUNNING in the ledger, "
            f"misses {sorted(set(running) - set(live))}"
        )
    per_instance = running_on_cluster(address)
    twice = sorted(i for i, n in per_instance.items() if n > 1)
    if twice:
        found.append(f"instances running twice: {twice}")
    unknown = sorted(t for t, task in live.items() if task["master_state"] is None)
    if unknown:
        found.append(f"live tasks the master does not know yet: {unknown}")
    return found


def wait_converged(scheduler: Scheduler, address: str, timeout: float = 20.0) -> None:
    last: list[str] = []

    def ok() -> bool:
        last[:] = problems(scheduler, address)
        return not last

    try:
        wait_until(ok, timeout, what="convergence")
    except TimeoutError as err:
        raise AssertionError(f"no convergence within {timeout} s: {'; '.join(last)}") from err


def assert_replay_equal(ledger: Ledger, attempts: int = 50) -> None:
    """The live state (views, dedup memory, saga) equals a replay of the log from scratch.

    The runtime keeps appending, so the live digest is taken between two equal readings of
    the last notification id: then no commit changed the state in between."""
    for _ in range(attempts):
        last = ledger.last_id
        live = ledger.digest()
        if ledger.last_id != last:
            continue
        replayed = LedgerState()
        for nid, event in ledger.events(1, last):
            replayed.apply(nid, event)
        assert replayed.last_nid == last
        assert state_digest(replayed) == live, "the live state differs from a replay of the log"
        # What a restart loads (the newest snapshot, then the replay kernel over the tail).
        loaded = ledger.state_as_of(last)
        assert state_digest(loaded) == live, "the live state differs from snapshot + tail"
        return
    raise AssertionError("the log never stood still long enough to compare with a replay")


def assert_no_update_recorded_twice(ledger: Ledger) -> None:
    seen: Counter = Counter(
        (e.task_id, e.uuid)
        for _, e in ledger.events()
        if type(e).__name__ == "StatusUpdateReceived" and e.uuid is not None
    )
    twice = {key: n for key, n in seen.items() if n > 1}
    assert not twice, f"agent updates recorded more than once: {twice}"


def assert_converges(scheduler: Scheduler, address: str, timeout: float = 20.0) -> None:
    """Convergence, then the checks that hold after every fault."""
    wait_converged(scheduler, address, timeout)
    assert_replay_equal(scheduler.ledger)
    assert_no_update_recorded_twice(scheduler.ledger)
    assert scheduler.core.stats.callback_errors == 0, scheduler.core.stats


# -- reading the log ------------------------------------------------------------------------------


def scheduled_run_done(ledger: Ledger, kind: str = "explicit") -> bool:
    """Whether the first run the saga's schedule started (not a registration's) completed:
    the next is an interval away (30 s with the compression used here), so a test that starts
    now sees only the runs it causes."""
    started = {
        e.run_id for _, e in events_of(ledger, "ReconciliationStarted") if e.trigger == "schedule"
    }
    started = {r for r in started if r.startswith(kind)}
    done = {e.run_id for _, e in events_of(ledger, "ReconciliationCompleted")}
    return bool(started & done)


def events_of(ledger: Ledger, topic: str, since: int = 0) -> Iterator[tuple[int, Any]]:
    for nid, event in ledger.events(since + 1):
        if type(event).__name__ == topic:
            yield nid, event


def commands(ledger: Ledger, since: int = 0, kind: str | None = None) -> list[Any]:
    """The CommandIssued events after notification id ``since`` (of one kind, if given)."""
    return [e for _, e in events_of(ledger, "CommandIssued", since) if kind in (None, e.kind)]


def rules_for(ledger: Ledger, task_id: str, since: int = 0) -> list[tuple[str, str]]:
    """(kind, rule) of every command issued for the task (by id, or in a RECONCILE batch)."""
    return [
        (e.kind, e.rule)
        for e in commands(ledger, since)
        if e.task_id == task_id or task_id in (e.tasks or ())
    ]


def updates_of(ledger: Ledger, task_id: str, since: int = 0, *, answers: bool = False) -> list[Any]:
    """The task's status updates recorded after ``since``; reconciliation answers (which
    repeat what the master last heard) only with ``answers``."""
    return [
        e
        for _, e in events_of(ledger, "StatusUpdateReceived", since)
        if e.task_id == task_id and (answers or not e.is_reconciliation_answer)
    ]


def replacement_of(ledger: Ledger, task_id: str) -> str | None:
    """The task a RESCHEDULE command created for ``task_id`` (None if none yet)."""
    for _, e in events_of(ledger, "TaskCreated"):
        if (e.extra or {}).get("ancestor") == task_id:
            return e.task_id
    return None


def running_task_on(address: str, agent_index: int | None = None) -> dict:
    """One of the job's tasks an agent runs (on the agent with that index, if given)."""
    agents = {a["id"]: a["index"] for a in state(address)["agents"]}
    for task in sorted(cluster_tasks(address), key=lambda t: t["task_id"]):
        if task["agent_state"] != "TASK_RUNNING" or instance_of(task["task_id"]) is None:
            continue
        if agent_index is None or agents[task["agent_id"]] == agent_index:
            return task
    raise AssertionError(f"no running task of the job on agent {agent_index}")


def rule_spent(address: str, kind: str) -> bool:
    """Whether no armed rule of this kind is left (each fired its `count` times)."""
    return not any(r["kind"] == kind for r in state(address)["rules"])


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> Any:
    return wait_until(predicate, timeout, what=what)


def now() -> float:
    return time.time()

"""The real pymesos MesosSchedulerDriver against the simulated master over real HTTP."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import pymesos  # imported in the main thread: it installs a SIGINT handler
import pytest
from sim_session import inject, state, task_view, wait_until

from tools.sim_master.client import get_json
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

SCALE = 20.0  # heartbeats every 0.75 s, update re-sends every 0.5 s (then doubling)

FRAMEWORK = {
    "user": "test",
    "name": "sim-pymesos",
    "failover_timeout": 3600.0,
    "capabilities": [{"type": "PARTITION_AWARE"}, {"type": "TASK_KILLING_STATE"}],
}


class Recorder(pymesos.Scheduler):
    """Puts every callback on a queue; does nothing on the driver's IO thread."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple] = queue.Queue()
        self.heartbeats = 0
        # Offers are kept aside (not consumed by waits for other events) until used; the
        # master drops them on a disconnection, so the scheduler forgets them then too.
        self.offers: dict[str, dict] = {}
        self._lock = threading.Lock()

    def take_offer(self, timeout: float = 8.0) -> dict:
        def pop() -> dict | None:
            with self._lock:
                return self.offers.pop(next(iter(self.offers))) if self.offers else None

        return wait_until(pop, timeout, what="an offer")  # type: ignore[return-value]

    def registered(self, driver, framework_id, master_info):  # noqa: ANN001
        self.events.put(("registered", framework_id["value"], master_info))

    def reregistered(self, driver, master_info):  # noqa: ANN001
        self.events.put(("reregistered", master_info))

    def disconnected(self, driver):  # noqa: ANN001
        with self._lock:
            self.offers.clear()
        self.events.put(("disconnected",))

    def resourceOffers(self, driver, offers):  # noqa: ANN001, N802
        with self._lock:
            self.offers.update((o["id"]["value"], o) for o in offers)

    def offerRescinded(self, driver, offer_id):  # noqa: ANN001, N802
        with self._lock:
            self.offers.pop(offer_id["value"], None)

    def statusUpdate(self, driver, status):  # noqa: ANN001, N802
        self.events.put(("update", status))

    def error(self, driver, message):  # noqa: ANN001
        self.events.put(("error", message))

    def processHeartBeat(self, driver):  # noqa: ANN001, N802
        self.heartbeats += 1

    def wait(self, kind: str, predicate: Callable[[tuple], bool] = lambda e: True, timeout=8.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind} event in time")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event[0] == "error":
                raise AssertionError(f"driver error: {event[1]}")
            if event[0] == kind and predicate(event):
                return event

    def update(self, task_id: str, state: str | None = None, timeout: float = 8.0) -> dict:
        def match(e: tuple) -> bool:
            s = e[1]
            return s["task_id"]["value"] == task_id and state in (None, s["state"])

        return self.wait("update", match, timeout)[1]


@pytest.fixture
def sim():
    with BackgroundSim(SimConfig(agents=2, seed=3), time_scale=SCALE) as running:
        yield running


@pytest.fixture
def driver(sim):
    recorder = Recorder()
    drv = pymesos.MesosSchedulerDriver(
        recorder,
        dict(FRAMEWORK),
        sim.address,
        failover=True,
        implicit_acknowledgements=False,
        timeout=30,
    )
    drv.recorder = recorder
    drv.start()
    yield drv
    drv.stop(failover=True)
    drv.join()


def task_info(task_id: str, offer: dict, **labels: str) -> dict:
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": offer["agent_id"],
        "command": {"value": "sleep 1000"},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 128}},
        ],
        "labels": {"labels": [{"key": k.replace("_", "."), "value": v} for k, v in labels.items()]},
    }


def launch(driver, *tasks: tuple[str, dict]) -> dict:
    """Launch tasks (id, labels) on the first offer; returns the offer."""
    offer = driver.recorder.take_offer()
    infos = [task_info(tid, offer, **labels) for tid, labels in tasks]
    driver.launchTasks(offer["id"], infos, filters={"refuse_seconds": 0})
    return offer


def running(driver, task_id: str) -> dict:
    rec = driver.recorder
    driver.acknowledgeStatusUpdate(rec.update(task_id, "TASK_STARTING"))
    status = rec.update(task_id, "TASK_RUNNING")
    driver.acknowledgeStatusUpdate(status)
    return status


def test_pymesos_subscribes_launches_acknowledges_kills_and_reconciles(sim, driver):
    rec = driver.recorder
    _, framework_id, master_info = rec.wait("registered")
    assert master_info["version"] == "1.11.0" and master_info["port"] == sim.port
    offer = launch(driver, ("long", {}), ("short", {"sim_duration": "2"}))
    assert offer["framework_id"]["value"] == framework_id

    status = running(driver, "long")
    assert status["uuid"] and status["agent_id"] == offer["agent_id"]
    assert status["source"] == "SOURCE_EXECUTOR"

    # "short": never acknowledge its STARTING; the driver sees it again, same uuid.
    first = rec.update("short", "TASK_STARTING")
    again = rec.update("short", "TASK_STARTING")
    assert again["uuid"] == first["uuid"]
    driver.acknowledgeStatusUpdate(first)
    driver.acknowledgeStatusUpdate(rec.update("short", "TASK_RUNNING"))
    finished = rec.update("short", "TASK_FINISHED")
    driver.acknowledgeStatusUpdate(finished)
    wait_until(lambda: task_view(sim.address, "short") is None, what="finished task removed")

    driver.killTask({"value": "long"})
    killing = rec.update("long")
    assert killing["state"] == "TASK_KILLING"
    driver.acknowledgeStatusUpdate(killing)
    killed = rec.update("long")
    assert killed["state"] == "TASK_KILLED"
    driver.acknowledgeStatusUpdate(killed)

    launch(driver, ("third", {}))
    running(driver, "third")
    driver.reconcileTasks([{"task_id": {"value": "third"}}, {"task_id": {"value": "ghost"}}])
    answer = rec.update("third")
    assert answer["state"] == "TASK_RUNNING"
    assert answer["reason"] == "REASON_RECONCILIATION" and "uuid" not in answer
    assert rec.update("ghost")["state"] == "TASK_UNKNOWN"
    driver.reconcileTasks([])  # implicit
    assert rec.update("third")["source"] == "SOURCE_MASTER"
    assert rec.heartbeats >= 1


def test_pymesos_survives_a_stream_drop_and_a_master_failover(sim, driver):
    rec = driver.recorder
    _, framework_id, _ = rec.wait("registered")
    launch(driver, ("t1", {}))
    running(driver, "t1")

    inject(sim.address, {"kind": "stream_drop"})
    rec.wait("disconnected")
    rec.wait("reregistered")
    assert driver.framework_id == framework_id

    # down 0.5 s (connections refused), agents back 0.25 s after the new master is up
    inject(sim.address, {"kind": "master_failover", "down_for": 10, "reregister_after": 5})
    rec.wait("disconnected")
    rec.wait("reregistered", timeout=15)  # pymesos backs off ~2 s after a refusal
    assert driver.framework_id == framework_id
    fw = state(sim.address)["frameworks"]
    assert [(f["id"], f["connected"]) for f in fw] == [(framework_id, True)]
    wait_until(
        lambda: all(a["status"] == "REGISTERED" for a in state(sim.address)["agents"]),
        what="agents re-registered",
    )
    driver.reconcileTasks([{"task_id": {"value": "t1"}}])
    assert rec.update("t1")["state"] == "TASK_RUNNING"
    # The new master offers again, and the driver can still launch.
    launch(driver, ("t2", {}))
    running(driver, "t2")
    assert get_json(sim.address, "/state")["master"]["epoch"] == 1

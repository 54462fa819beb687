"""Test helpers: a framework session against a running simulated master, over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from tools.sim_master.client import EventStream, call, get_json

PA_FRAMEWORK = {
    "user": "test",
    "name": "sim-protocol",
    "failover_timeout": 3600.0,
    "capabilities": [{"type": "PARTITION_AWARE"}, {"type": "TASK_KILLING_STATE"}],
}
PLAIN_FRAMEWORK = {"user": "test", "name": "sim-plain", "failover_timeout": 3600.0}


def subscribe_body(info: dict, framework_id: str | None = None) -> dict:
    info = dict(info)
    body: dict = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
    if framework_id is not None:
        info["id"] = {"value": framework_id}
        body["framework_id"] = {"value": framework_id}
    return body


def task_refs(tasks: tuple[tuple[str, str | None], ...]) -> list[dict]:
    """RECONCILE's `tasks` (and KILL's ids) for (task id, agent id or None) pairs."""
    refs = []
    for task_id, agent_id in tasks:
        ref: dict = {"task_id": {"value": task_id}}
        if agent_id is not None:
            ref["agent_id"] = {"value": agent_id}
        refs.append(ref)
    return refs


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what or predicate}")


class Session:
    """One subscribed framework: its stream, its calls, and the offers it holds."""

    def __init__(self, address: str, info: dict = PA_FRAMEWORK, framework_id: str | None = None):
        self.address = address
        self.stream = EventStream(address, subscribe_body(info, framework_id))
        assert self.stream.status == 200, self.stream.body
        first = self.stream.next(skip=())
        assert first["type"] == "SUBSCRIBED", first
        self.subscribed = first["subscribed"]
        self.framework_id = first["subscribed"]["framework_id"]["value"]
        self.stream_id = self.stream.stream_id
        self.offers: dict[str, dict] = {}  # agent id -> latest offer
        self.log: list[dict] = [first]

    # -- calls
    def post(self, typ: str, payload: dict | None = None, *, stream_id: str | None = None) -> int:
        body: dict = {"type": typ, "framework_id": {"value": self.framework_id}}
        if payload is not None:
            body[typ.lower()] = payload
        status, _ = call(self.address, body, stream_id=stream_id or self.stream_id)
        return status

    def ack(self, status: dict) -> int:
        return self.post(
            "ACKNOWLEDGE",
            {"agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]},
        )

    def reconcile(self, *tasks: tuple[str, str | None]) -> int:
        return self.post("RECONCILE", {"tasks": task_refs(tasks)})

    def kill(self, task_id: str) -> int:
        return self.post("KILL", {"task_id": {"value": task_id}})

    # -- events
    def next(self, predicate: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            event = self.stream.next(max(0.0, deadline - time.monotonic()), skip=())
            self.log.append(event)
            if event["type"] == "OFFERS":
                for offer in event["offers"]["offers"]:
                    self.offers[offer["agent_id"]["value"]] = offer
            elif event["type"] == "RESCIND":
                oid = event["rescind"]["offer_id"]["value"]
                self.offers = {a: o for a, o in self.offers.items() if o["id"]["value"] != oid}
            if predicate(event):
                return event

    def update(self, task_id: str, state: str | None = None, timeout: float = 5.0) -> dict:
        """The next UPDATE for the task (in `state`, if given); its TaskStatus."""

        def match(e: dict) -> bool:
            if e["type"] != "UPDATE":
                return False
            status = e["update"]["status"]
            return status["task_id"]["value"] == task_id and state in (None, status["state"])

        return self.next(match, timeout)["update"]["status"]

    def offer_on(self, agent_id: str, timeout: float = 5.0) -> dict:
        if agent_id not in self.offers:
            self.next(lambda e: agent_id in self.offers, timeout)
        return self.offers.pop(agent_id)

    def launch(
        self,
        task_id: str,
        agent_id: str,
        *,
        duration: float | None = None,
        outcome: str | None = None,
        cpus: float = 0.5,
    ) -> dict:
        offer = self.offer_on(agent_id)
        labels = []
        if duration is not None:
            labels.append({"key": "sim.duration", "value": str(duration)})
        if outcome is not None:
            labels.append({"key": "sim.outcome", "value": outcome})
        task = {
            "name": task_id,
            "task_id": {"value": task_id},
            "agent_id": {"value": agent_id},
            "command": {"value": "sleep 1000"},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}},
            ],
            "labels": {"labels": labels},
        }
        status = self.post(
            "ACCEPT",
            {
                "offer_ids": [offer["id"]],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
                "filters": {"refuse_seconds": 0},
            },
        )
        assert status == 202
        return offer

    def run_task(self, task_id: str, agent_id: str, **kw: object) -> dict:
        """Launch, acknowledge STARTING and RUNNING; the RUNNING status."""
        self.launch(task_id, agent_id, **kw)  # type: ignore[arg-type]
        assert self.ack(self.update(task_id, "TASK_STARTING")) == 202
        running = self.update(task_id, "TASK_RUNNING")
        assert self.ack(running) == 202
        return running

    def close(self) -> None:
        self.stream.close()


def state(address: str) -> dict:
    return get_json(address, "/state")


def agent_ids(address: str) -> list[str]:
    return [a["id"] for a in get_json(address, "/state?counts=1")["agents"]]


def task_view(address: str, task_id: str) -> dict | None:
    tasks = get_json(address, f"/state?task_id={task_id}&acknowledged=0")["tasks"]
    return tasks[0] if tasks else None


def inject(address: str, fault: dict | list) -> dict:
    status, text = call(address, fault, path="/admin/fault")
    assert status == 200, text
    return json.loads(text)

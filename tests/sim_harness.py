"""Test helper: the pure cluster model with one subscribed framework, driven by hand."""

from __future__ import annotations

from sim_session import task_refs

from tools.sim_master.cluster import Cluster, Emit, SimConfig

PA = [{"type": "PARTITION_AWARE"}, {"type": "TASK_KILLING_STATE"}]


class Harness:
    """A cluster with one subscribed framework, and every event it was sent."""

    def __init__(self, seed: int = 0, partition_aware: bool = True, agents: int = 2) -> None:
        self.cluster = Cluster(SimConfig(agents=agents, seed=seed))
        self.now = 0.0
        self.events: list[dict] = []
        self.acks: list[tuple[str, str]] = []  # (task id, uuid) sent, in order
        info = {"user": "u", "name": "n", "failover_timeout": 1e6}
        if partition_aware:
            info["capabilities"] = PA
        reply = self.cluster.subscribe(
            {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}, None, self.now
        )
        assert reply.status == 200
        self.stream = reply.stream_id
        self._take(reply.effects)
        self.fid = self.events[0]["subscribed"]["framework_id"]["value"]
        self.agents = list(self.cluster.agents)

    def _take(self, effects: list) -> None:
        self.events.extend(e.event for e in effects if isinstance(e, Emit))

    def resubscribe(self) -> None:
        info = {"user": "u", "name": "n", "failover_timeout": 1e6, "id": {"value": self.fid}}
        if self.cluster.frameworks[self.fid].partition_aware:
            info["capabilities"] = PA
        body = {
            "type": "SUBSCRIBE",
            "framework_id": {"value": self.fid},
            "subscribe": {"framework_info": info},
        }
        reply = self.cluster.subscribe(body, None, self.now)
        if reply.status == 200:
            self.stream = reply.stream_id
        self._take(reply.effects)

    def post(self, typ: str, payload: dict | None = None) -> int:
        body: dict = {"type": typ, "framework_id": {"value": self.fid}}
        if payload is not None:
            body[typ.lower()] = payload
        reply = self.cluster.call(body, self.stream, self.now)
        self._take(reply.effects)
        return reply.status

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self._take(self.cluster.tick(self.now))

    def inject(self, fault: dict) -> None:
        self._take(self.cluster.inject(fault, self.now))

    def offers(self) -> list[dict]:
        live = {o.id for o in self.cluster.offers.values() if o.framework_id == self.fid}
        return [
            o
            for e in self.events
            if e["type"] == "OFFERS"
            for o in e["offers"]["offers"]
            if o["id"]["value"] in live
        ]

    def launch(self, task_id: str, agent_index: int = 0, duration: float | None = None) -> bool:
        agent = self.agents[agent_index]
        offer = next((o for o in self.offers() if o["agent_id"]["value"] == agent), None)
        if offer is None:
            return False
        labels = [] if duration is None else [{"key": "sim.duration", "value": str(duration)}]
        task = {
            "name": task_id,
            "task_id": {"value": task_id},
            "agent_id": {"value": agent},
            "command": {"value": "true"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
            "labels": {"labels": labels},
        }
        op = {"type": "LAUNCH", "launch": {"task_infos": [task]}}
        accept = {"offer_ids": [offer["id"]], "operations": [op], "filters": {"refuse_seconds": 0}}
        return self.post("ACCEPT", accept) == 202

    def updates(self, task_id: str | None = None) -> list[dict]:
        return [
            e["update"]["status"]
            for e in self.events
            if e["type"] == "UPDATE"
            and (task_id is None or e["update"]["status"]["task_id"]["value"] == task_id)
        ]

    def ack(self, status: dict) -> None:
        self.acks.append((status["task_id"]["value"], status["uuid"]))
        ack = {k: status[k] for k in ("agent_id", "task_id", "uuid")}
        assert self.post("ACKNOWLEDGE", ack) == 202

    def run(self, task_id: str, agent_index: int = 0, duration: float | None = None) -> dict:
        """Launch, then acknowledge STARTING and RUNNING; the RUNNING status."""
        assert self.launch(task_id, agent_index, duration)
        self.advance(0.5)
        self.ack(self.updates(task_id)[-1])  # STARTING; RUNNING follows at 1.0 s
        self.advance(0.5)
        running = self.updates(task_id)[-1]
        assert running["state"] == "TASK_RUNNING", running
        self.ack(running)
        return running

    def since(self, mark: int) -> list[dict]:
        """The events sent after `mark` (a length of `events` taken earlier)."""
        return self.events[mark:]

    def reconcile(self, *tasks: tuple[str, str | None]) -> list[dict]:
        """An explicit (or, with no tasks, implicit) RECONCILE; the answers it got."""
        mark = len(self.events)
        assert self.post("RECONCILE", {"tasks": task_refs(tasks)}) == 202
        return [e["update"]["status"] for e in self.since(mark) if e["type"] == "UPDATE"]

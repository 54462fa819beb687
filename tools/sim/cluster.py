"""The simulated Mesos cluster: a master, its agents and their tasks, as a pure model.

No sockets and no clock: every entry point takes `now` (simulated seconds) and returns the
effects the transport must carry out (write an event to a stream, close a stream, stop or
start listening). Randomness comes from RNGs seeded by the config, so the same seed and the
same inputs give the same effects, byte for byte. The HTTP server in `server.py` is one
driver of this model; a single-process simulation on a virtual clock can be another.

Two views of every task are kept apart, as in Mesos:
- the agent's truth (`AgentTask`): the state the task is really in and the agent's status
  update stream (a queue whose head is the one outstanding update, re-sent with backoff);
- the master's view (`MasterTask`): what the master last learned, which is what
  reconciliation answers from. The master learns only while the agent is connected, and
  forgets everything on a failover until the agent re-registers.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import random
import uuid as uuidlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tools.sim import calls, protocol
from tools.sim.faults import Fault, InvalidFault, RuleBook, parse_fault
from tools.sim.resources import InvalidResources, Resources

# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes a simulated cluster. Durations are simulated seconds."""

    agents: int = 3
    seed: int = 0
    ip: str = "127.0.0.1"
    port: int = 5050
    hostname: str = "127.0.0.1"
    version: str = "1.11.0"
    # Wall-clock seconds at simulated time 0; TaskStatus.timestamp is epoch + now.
    epoch: float = 1_700_000_000.0
    heartbeat_interval: float = 15.0
    # SUBSCRIBED reports heartbeat_interval / wire_time_scale: a scheduler on the wall clock
    # then expects heartbeats at the rate they really arrive when the server compresses time.
    wire_time_scale: float = 1.0
    update_retry_initial: float = 10.0
    update_retry_max: float = 600.0
    agent_cpus: float = 4.0
    agent_mem: float = 8192.0
    agent_ports: tuple[int, int] = (31000, 32000)
    starting_delay: float = 0.5
    running_delay: float = 0.5
    kill_delay: float = 1.0
    allocation_interval: float = 1.0
    default_refuse_seconds: float = 5.0


# ---------------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Emit:
    """Write one event (a RecordIO record) to a subscriber's stream."""

    stream_id: str
    event: dict


@dataclass(frozen=True)
class CloseStream:
    """End a stream: cleanly after what was emitted, or (abort) by cutting the connection."""

    stream_id: str
    abort: bool = False


@dataclass(frozen=True)
class ListenerDown:
    """The master is gone: close every connection and the listening socket (clients get
    'connection refused' rather than 503, which pymesos would retry in a tight loop)."""


@dataclass(frozen=True)
class ListenerUp:
    """A new master is elected: listen again on the same address."""


Effect = Emit | CloseStream | ListenerDown | ListenerUp


@dataclass
class Reply:
    """The answer to one HTTP call: a status, a message for errors, effects, and for
    SUBSCRIBE the new stream's id. `delay` asks the transport to answer that much later."""

    status: int
    message: str = ""
    effects: list[Effect] = field(default_factory=list)
    stream_id: str | None = None
    delay: float = 0.0


# ------------------------------------------------------------------------------------ state

REGISTERED = "REGISTERED"
RECOVERED = "RECOVERED"  # known from the registry after a failover, not yet re-registered
UNREACHABLE = "UNREACHABLE"
REMOVED = "REMOVED"  # removed by the operator; never comes back

TaskKey = tuple[str, str]  # (framework id, task id)


@dataclass
class Stream:
    framework_id: str
    silent: bool = False


@dataclass
class Framework:
    id: str
    info: dict
    stream_id: str | None = None
    suppressed: bool = False
    removed: bool = False
    filters: dict[str, float] = field(default_factory=dict)  # agent id -> refused until
    gen: int = 0  # bumps on every (re)subscribe, disarming a pending removal timer

    @property
    def capabilities(self) -> set[str]:
        return {c.get("type") for c in self.info.get("capabilities", [])}

    @property
    def partition_aware(self) -> bool:
        return protocol.PARTITION_AWARE in self.capabilities

    @property
    def killing_state(self) -> bool:
        return protocol.TASK_KILLING_STATE in self.capabilities


@dataclass
class Agent:
    id: str
    index: int
    hostname: str
    total: Resources
    status: str = REGISTERED
    link_up: bool = True  # the network between this agent and the master
    unreachable_time: float | None = None
    link_gen: int = 0  # disarms a pending partition detection when the link heals


@dataclass
class AgentTask:
    """A task as its agent knows it, with the agent's status update stream."""

    framework_id: str
    task_id: str
    agent_id: str
    resources: Resources
    state: str = "TASK_STAGING"
    duration: float | None = None
    outcome: str = "TASK_FINISHED"
    queue: list[dict] = field(default_factory=list)  # head = the outstanding update
    backoff: float = 0.0
    retry_gen: int = 0
    step_gen: int = 0
    killing: bool = False
    rogue: bool = False

    @property
    def key(self) -> TaskKey:
        return (self.framework_id, self.task_id)


@dataclass
class MasterTask:
    """A task as the master knows it: what reconciliation answers from."""

    framework_id: str
    task_id: str
    agent_id: str
    resources: Resources
    state: str
    unreachable_time: float | None = None


@dataclass
class Offer:
    id: str
    framework_id: str
    agent_id: str
    resources: Resources


# ------------------------------------------------------------------------------------ model


class Cluster:
    """The master and its agents. Drive it with `subscribe`, `call`, `disconnected`,
    `inject` and `tick`; each returns effects. `next_deadline()` says when to tick next."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._id_rng = random.Random(config.seed)
        self.rules = RuleBook(random.Random(f"faults-{config.seed}"))
        self.clock = 0.0
        self._timers: list[tuple[float, int, str, tuple]] = []
        self._seq = itertools.count()
        self._out: list[Effect] = []
        self.master_up = True
        self.master_epoch = 0
        self.master_id = self._uuid()
        self.down_until: float | None = None
        self.frameworks: dict[str, Framework] = {}
        self.streams: dict[str, Stream] = {}
        self.agents: dict[str, Agent] = {}
        self.agent_tasks: dict[TaskKey, AgentTask] = {}
        self.master_tasks: dict[TaskKey, MasterTask] = {}
        self.lost_launches: dict[TaskKey, str] = {}  # the agent never got these launches
        self.offers: dict[str, Offer] = {}
        self.completed: deque[dict] = deque(maxlen=1000)
        # Every update the framework acknowledged (task, uuid, state), for tests that check
        # that nothing acknowledged is missing from the scheduler's log.
        self.acknowledged: deque[dict] = deque(maxlen=100_000)
        self.fault_log: deque[dict] = deque(maxlen=1000)
        self._held: tuple[str, dict, str] | None = None  # a reordered update, held back
        self._held_gen = 0
        self._counters = {"framework": itertools.count(), "offer": itertools.count()}
        self._rogues = itertools.count()
        lo, hi = config.agent_ports
        for i in range(config.agents):
            agent_id = f"{self.master_id}-S{i}"
            self.agents[agent_id] = Agent(
                agent_id,
                i,
                f"sim-agent-{i}",
                Resources(config.agent_cpus, config.agent_mem, ((lo, hi),)),
            )
        self._schedule(0.0, "allocate")

    # ------------------------------------------------------------------ driving the clock

    def next_deadline(self) -> float | None:
        """The simulated time of the earliest pending timer."""
        return self._timers[0][0] if self._timers else None

    def tick(self, now: float) -> list[Effect]:
        """Fire every timer due at or before `now`."""
        self._begin(now)
        return self._take()

    def _begin(self, now: float) -> None:
        self._out = []
        while self._timers and self._timers[0][0] <= now:
            due, _, kind, args = heapq.heappop(self._timers)
            self.clock = max(self.clock, due)
            self._TIMERS[kind](self, *args)
        self.clock = max(self.clock, now)

    def _take(self) -> list[Effect]:
        out, self._out = self._out, []
        return out

    def _schedule(self, due: float, kind: str, *args: Any) -> None:
        heapq.heappush(self._timers, (due, next(self._seq), kind, args))

    # ------------------------------------------------------------------------- identities

    def _uuid(self) -> str:
        return str(uuidlib.UUID(int=self._id_rng.getrandbits(128), version=4))

    def _update_uuid(self) -> str:
        return base64.b64encode(self._id_rng.getrandbits(128).to_bytes(16, "big")).decode()

    def _timestamp(self) -> float:
        return round(self.config.epoch + self.clock, 6)

    # ------------------------------------------------------------------------ subscribing

    def subscribe(self, body: dict, stream_id_header: str | None, now: float) -> Reply:
        """A SUBSCRIBE call. Status 200 opens a stream whose id the reply carries."""
        self._begin(now)
        if not self.master_up:
            return Reply(503, "No leading master", self._take())
        try:
            sub = calls.subscribe(body, stream_id_header)
        except calls.CallError as err:
            return Reply(err.status, err.message, self._take())
        failed = self.rules.fire("fail_calls", call="SUBSCRIBE")
        if failed:
            return Reply(failed.params["status"], "Injected failure", self._take())
        fid = sub.framework_id or f"{self.master_id}-{next(self._counters['framework']):04d}"
        sid = self._uuid()
        self.streams[sid] = Stream(fid)
        fw = self.frameworks.get(fid)
        if fw is not None and fw.removed:
            self._emit(sid, protocol.error("Framework has been removed"))
            self._close_stream(sid)
            return Reply(200, effects=self._take(), stream_id=sid)
        info = dict(sub.info, id=protocol.value(fid))
        if fw is None:
            fw = self.frameworks[fid] = Framework(fid, info)
        else:
            fw.info = info
            if fw.stream_id is not None:
                old = fw.stream_id
                self._emit(old, protocol.error("Framework failed over"))
                self._close_stream(old)
            self._drop_offers(fw.id, rescind=False)
        fw.stream_id = sid
        fw.suppressed = False
        fw.gen += 1
        master_info = protocol.master_info(
            self.master_id,
            self.config.ip,
            self.config.port,
            self.config.hostname,
            self.config.version,
        )
        interval = self.config.heartbeat_interval / self.config.wire_time_scale
        self._emit(sid, protocol.subscribed(fid, interval, master_info))
        self._emit(sid, protocol.heartbeat())
        self._schedule(self.clock + self.config.heartbeat_interval, "heartbeat", sid)
        self._allocate()
        return Reply(200, effects=self._take(), stream_id=sid)

    def disconnected(self, stream_id: str, now: float) -> list[Effect]:
        """The transport lost a stream (the client went away). Idempotent."""
        self._begin(now)
        self._lose_stream(stream_id)
        return self._take()

    def _lose_stream(self, stream_id: str) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        fw = self.frameworks.get(stream.framework_id)
        if fw is None or fw.stream_id != stream_id:
            return
        fw.stream_id = None
        fw.gen += 1
        self._drop_offers(fw.id, rescind=False)
        timeout = float(fw.info.get("failover_timeout", 0.0))
        self._schedule(self.clock + timeout, "framework_timeout", fw.id, fw.gen)

    def _close_stream(self, stream_id: str, *, abort: bool = False) -> None:
        self._out.append(CloseStream(stream_id, abort))
        self._lose_stream(stream_id)

    # ------------------------------------------------------------------------------ calls

    def call(self, body: object, stream_id_header: str | None, now: float) -> Reply:
        """Any call but SUBSCRIBE. 202 on success; 400/403 (or an injected status) if not."""
        self._begin(now)
        if not self.master_up:
            return Reply(503, "No leading master", self._take())
        try:
            typ = calls.call_type(body)
            assert isinstance(body, dict)
            if typ == "SUBSCRIBE":
                raise calls.bad("SUBSCRIBE opens a stream; it is not a plain call")
            fid = calls.framework_id(body)
            parsed = self._PARSERS[typ](body) if typ in self._PARSERS else None
            fw = self.frameworks.get(fid)
            if fw is None or fw.removed:
                raise calls.bad(f"Framework {fid!r} cannot be found")
            if fw.stream_id is None:
                raise calls.CallError(403, f"Framework {fid!r} is not subscribed")
            if stream_id_header is None:
                raise calls.bad(
                    "All non-subscribe calls should include the 'Mesos-Stream-Id' header"
                )
            if stream_id_header != fw.stream_id:
                raise calls.bad(
                    f"The stream ID {stream_id_header!r} included in this request didn't match "
                    f"the stream ID currently associated with framework ID {fid!r}"
                )
        except calls.CallError as err:
            return Reply(err.status, err.message, self._take())
        failed = self.rules.fire("fail_calls", call=typ)
        if failed:
            return Reply(failed.params["status"], "Injected failure", self._take())
        handler = self._HANDLERS.get(typ)
        if handler is not None:
            handler(self, fw, parsed)
        delayed = self.rules.fire("delay_calls", call=typ)
        return Reply(202, effects=self._take(), delay=delayed.params["seconds"] if delayed else 0.0)

    def _on_teardown(self, fw: Framework, _: None) -> None:
        self._remove_framework(fw)

    def _on_revive(self, fw: Framework, _: None) -> None:
        fw.suppressed = False
        fw.filters.clear()
        self._allocate()

    def _on_suppress(self, fw: Framework, _: None) -> None:
        fw.suppressed = True

    def _on_decline(self, fw: Framework, d: calls.Decline) -> None:
        refuse = self._refuse(d.refuse_seconds)
        for oid in d.offer_ids:
            offer = self.offers.get(oid)
            if offer is None or offer.framework_id != fw.id:
                continue
            del self.offers[oid]
            if refuse > 0:
                fw.filters[offer.agent_id] = self.clock + refuse

    def _refuse(self, seconds: float | None) -> float:
        return self.config.default_refuse_seconds if seconds is None else seconds

    def _on_accept(self, fw: Framework, acc: calls.Accept) -> None:
        task_infos = [
            ti
            for op in acc.operations
            if op["type"] == "LAUNCH"
            for ti in op["launch"]["task_infos"]
        ]
        task_ids = [str((ti.get("task_id") or {}).get("value")) for ti in task_infos]
        if self.rules.fire("lose_accept", task_id=task_ids[0] if task_ids else None):
            # The master never hears of it; the offers time out and are rescinded.
            for oid in acc.offer_ids:
                offer = self.offers.get(oid)
                if offer is not None and offer.framework_id == fw.id:
                    del self.offers[oid]
                    self._send(fw.id, protocol.rescind(oid))
            return
        found = [self.offers.get(oid) for oid in acc.offer_ids]
        valid = [o for o in found if o is not None and o.framework_id == fw.id]
        for o in valid:
            del self.offers[o.id]
        agents = {o.agent_id for o in valid}
        problem = None
        if not acc.offer_ids:
            problem = "No offers named in ACCEPT"
        elif len(valid) != len(found):
            bad_ids = [oid for oid, o in zip(acc.offer_ids, found, strict=True) if o not in valid]
            problem = f"Offers {bad_ids} are no longer valid"
        elif len(agents) > 1:
            problem = f"Offers span several agents: {sorted(agents)}"
        elif not self._connected(self.agents[next(iter(agents))]):
            problem = "The offers' agent is no longer registered"
        if problem is not None:
            state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
            for tid, ti in zip(task_ids, task_infos, strict=True):
                agent_id = (ti.get("agent_id") or {}).get("value")
                self._master_update(
                    fw.id, tid, state, "REASON_INVALID_OFFERS", problem, agent_id=agent_id
                )
            return
        agent = self.agents[next(iter(agents))]
        available = Resources()
        for o in valid:
            available = available + o.resources
        for tid, ti in zip(task_ids, task_infos, strict=True):
            checked = self._check_task(fw, ti, agent, available)
            if isinstance(checked, str):
                self._master_update(
                    fw.id, tid, "TASK_ERROR", "REASON_TASK_INVALID", checked, agent_id=agent.id
                )
                continue
            resources, duration, outcome = checked
            available = available - resources
            self._launch(fw, tid, agent, resources, duration, outcome)
        refuse = self._refuse(acc.refuse_seconds)
        if refuse > 0:
            fw.filters[agent.id] = self.clock + refuse

    def _check_task(
        self, fw: Framework, ti: dict, agent: Agent, available: Resources
    ) -> str | tuple[Resources, float | None, str]:
        """Why a TaskInfo cannot launch (a TASK_ERROR message), or what it asks for."""
        tid = (ti.get("task_id") or {}).get("value")
        if not isinstance(tid, str) or not tid:
            return f"TaskInfo needs a task_id, got {ti.get('task_id')!r}"
        if not isinstance(ti.get("name"), str):
            return f"Task {tid!r} needs a name"
        if (ti.get("agent_id") or {}).get("value") != agent.id:
            return f"Task {tid!r} names agent {ti.get('agent_id')!r}, the offers are on {agent.id}"
        key = (fw.id, tid)
        if key in self.master_tasks or key in self.agent_tasks:
            return f"Task {tid!r} already exists"
        if "command" not in ti and "executor" not in ti and "container" not in ti:
            return f"Task {tid!r} needs a command or an executor"
        try:
            resources = Resources.from_proto(ti.get("resources", []))
        except InvalidResources as err:
            return f"Task {tid!r}: {err}"
        if resources.cpus <= 0 and resources.mem <= 0:
            return f"Task {tid!r} uses no cpus or mem"
        if not available.contains(resources):
            return (
                f"Task {tid!r} uses {resources.to_json()}, more than offered {available.to_json()}"
            )
        labels = {
            lab.get("key"): lab.get("value")
            for lab in (ti.get("labels") or {}).get("labels", [])
            if isinstance(lab, dict)
        }
        duration = None
        if labels.get("sim.duration") is not None:
            try:
                duration = float(labels["sim.duration"])
            except (TypeError, ValueError):
                duration = -1.0
            if not duration >= 0:
                return f"Task {tid!r}: label sim.duration must be seconds >= 0"
        outcome = str(labels.get("sim.outcome") or "FINISHED").upper()
        if outcome not in ("FINISHED", "FAILED"):
            return f"Task {tid!r}: label sim.outcome must be FINISHED or FAILED, got {outcome!r}"
        return resources, duration, f"TASK_{outcome}"

    def _launch(
        self,
        fw: Framework,
        tid: str,
        agent: Agent,
        resources: Resources,
        duration: float | None,
        outcome: str,
    ) -> None:
        key = (fw.id, tid)
        self.master_tasks[key] = MasterTask(fw.id, tid, agent.id, resources, "TASK_STAGING")
        lost = self.rules.fire("lose_launch", task_id=tid)
        if lost is not None:
            self.lost_launches[key] = agent.id
            self._schedule(self.clock + lost.params["drop_after"], "launch_dropped", key)
            return
        task = AgentTask(fw.id, tid, agent.id, resources, duration=duration, outcome=outcome)
        self.agent_tasks[key] = task
        self._schedule(self.clock + self.config.starting_delay, "step", key, task.step_gen)

    def _on_kill(self, fw: Framework, ref: calls.TaskRef) -> None:
        key = (fw.id, ref.task_id)
        known = self.master_tasks.get(key)
        if known is None:
            # Mesos answers a kill of a task it does not know as a reconciliation would.
            answer = self.reconcile_answer(fw.id, ref.task_id, ref.agent_id)
            if answer is not None:
                self._send(fw.id, protocol.update(answer))
            return
        agent = self.agents[known.agent_id]
        if not self._connected(agent):
            return  # the kill cannot reach the agent; the master does not retry it
        if key in self.lost_launches:
            # The agent never had it: it says so through its own update stream.
            del self.lost_launches[key]
            state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
            self._ghost_update(fw, ref.task_id, agent.id, state, "Kill of a task unknown to agent")
            return
        task = self.agent_tasks.get(key)
        if task is None or protocol.is_terminal(task.state) or task.killing:
            return
        task.step_gen += 1
        task.killing = True
        if task.state == "TASK_STAGING":
            self._agent_update(
                task, "TASK_KILLED", "SOURCE_AGENT", "REASON_TASK_KILLED_DURING_LAUNCH"
            )
            return
        if fw.killing_state:
            self._agent_update(task, "TASK_KILLING", "SOURCE_EXECUTOR")
        self._schedule(self.clock + self.config.kill_delay, "step", key, task.step_gen)

    def _on_reconcile(self, fw: Framework, refs: list[calls.TaskRef]) -> None:
        if not refs:
            for key in sorted(k for k in self.master_tasks if k[0] == fw.id):
                self._send(fw.id, protocol.update(self._known_answer(self.master_tasks[key])))
            return
        for ref in refs:
            answer = self.reconcile_answer(fw.id, ref.task_id, ref.agent_id)
            if answer is not None:
                self._send(fw.id, protocol.update(answer))

    def _on_acknowledge(self, fw: Framework, ack: calls.Acknowledge) -> None:
        if self.rules.fire("lose_acks", task_id=ack.task_id):
            return
        agent = self.agents.get(ack.agent_id)
        task = self.agent_tasks.get((fw.id, ack.task_id))
        if agent is None or not self._connected(agent) or task is None:
            return
        if task.agent_id != agent.id or not task.queue or task.queue[0].get("uuid") != ack.uuid:
            return  # not the head of the stream: ignored, as Mesos does
        head = task.queue.pop(0)
        self.acknowledged.append(
            {"task_id": ack.task_id, "uuid": ack.uuid, "state": head["state"], "time": self.clock}
        )
        task.retry_gen += 1
        if protocol.is_terminal(head["state"]):
            self._forget(task)
        elif task.queue:
            task.backoff = self.config.update_retry_initial
            self._forward_head(task)

    _PARSERS: dict[str, Callable[[dict], Any]] = {
        "ACCEPT": calls.accept,
        "DECLINE": calls.decline,
        "KILL": calls.kill,
        "RECONCILE": calls.reconcile,
        "ACKNOWLEDGE": calls.acknowledge,
    }
    _HANDLERS: dict[str, Callable[[Cluster, Framework, Any], None]] = {
        "TEARDOWN": _on_teardown,
        "ACCEPT": _on_accept,
        "DECLINE": _on_decline,
        "REVIVE": _on_revive,
        "SUPPRESS": _on_suppress,
        "KILL": _on_kill,
        "RECONCILE": _on_reconcile,
        "ACKNOWLEDGE": _on_acknowledge,
    }

    # --------------------------------------------------------------------- reconciliation

    def reconcile_answer(
        self, framework_id: str, task_id: str, agent_id: str | None
    ) -> dict | None:
        """The master's answer to an explicit reconciliation of one task (None: no answer).

        1 known task: its latest state. 2 unknown, and its agent (or, with no agent named, any
        agent) not re-registered since a failover: no answer. 3 named agent registered:
        TASK_GONE. 4 unreachable: TASK_UNREACHABLE. 5 removed by the operator:
        TASK_GONE_BY_OPERATOR. 6 otherwise TASK_UNKNOWN. Cases 3-6 are TASK_LOST for
        frameworks without PARTITION_AWARE.
        """
        known = self.master_tasks.get((framework_id, task_id))
        if known is not None:
            return self._known_answer(known)
        agent = self.agents.get(agent_id) if agent_id is not None else None
        if agent_id is not None:
            if agent is not None and agent.status == RECOVERED:
                return None
        elif any(a.status == RECOVERED for a in self.agents.values()):
            return None
        status = agent.status if agent is not None else None
        state, unreachable = {
            REGISTERED: ("TASK_GONE", None),
            UNREACHABLE: ("TASK_UNREACHABLE", agent.unreachable_time if agent else None),
            REMOVED: ("TASK_GONE_BY_OPERATOR", None),
        }.get(status, ("TASK_UNKNOWN", None))  # type: ignore[arg-type]
        fw = self.frameworks.get(framework_id)
        if fw is None or not fw.partition_aware:
            state, unreachable = "TASK_LOST", None
        return protocol.task_status(
            task_id,
            state,
            source="SOURCE_MASTER",
            reason="REASON_RECONCILIATION",
            message="Reconciliation: task is unknown to the master",
            agent_id=agent_id,
            timestamp=self._timestamp(),
            unreachable_time=unreachable,
        )

    def _known_answer(self, task: MasterTask) -> dict:
        return protocol.task_status(
            task.task_id,
            task.state,
            source="SOURCE_MASTER",
            reason="REASON_RECONCILIATION",
            message="Reconciliation: Latest task state",
            agent_id=task.agent_id,
            timestamp=self._timestamp(),
            unreachable_time=task.unreachable_time,
        )

    # -------------------------------------------------------------- updates and delivery

    def _emit(self, stream_id: str, event: dict) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and not stream.silent:
            self._out.append(Emit(stream_id, event))

    def _send(self, framework_id: str, event: dict) -> None:
        """To the framework's current stream; lost if it has none (as Mesos loses them)."""
        fw = self.frameworks.get(framework_id)
        if fw is not None and fw.stream_id is not None and self.master_up:
            self._emit(fw.stream_id, event)

    def _master_update(
        self,
        framework_id: str,
        task_id: str,
        state: str,
        reason: str,
        message: str,
        *,
        agent_id: str | None = None,
        unreachable_time: float | None = None,
    ) -> None:
        """An update the master generates: no uuid, sent once, never acknowledged."""
        status = protocol.task_status(
            task_id,
            state,
            source="SOURCE_MASTER",
            reason=reason,
            message=message,
            agent_id=agent_id,
            timestamp=self._timestamp(),
            unreachable_time=unreachable_time,
        )
        self._send(framework_id, protocol.update(status))

    def _agent_update(
        self,
        task: AgentTask,
        state: str,
        source: str,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """A state change on the agent, queued on its update stream (with a uuid)."""
        task.state = state
        status = protocol.task_status(
            task.task_id,
            state,
            source=source,
            reason=reason,
            message=message,
            agent_id=task.agent_id,
            executor_id=task.task_id,
            timestamp=self._timestamp(),
            uuid=self._update_uuid(),
        )
        task.queue.append(status)
        if len(task.queue) == 1:
            task.backoff = self.config.update_retry_initial
            self._forward_head(task)

    def _ghost_update(
        self, fw: Framework, task_id: str, agent_id: str, state: str, message: str
    ) -> None:
        """An agent update for a task the agent never ran (a launch that got lost)."""
        task = AgentTask(fw.id, task_id, agent_id, Resources(), state=state)
        self.agent_tasks[task.key] = task
        self._agent_update(task, state, "SOURCE_AGENT", "REASON_AGENT_RESTARTED", message)

    def _forward_head(self, task: AgentTask) -> None:
        """Send the outstanding update (if the agent can reach the master) and arm a retry."""
        if not task.queue:
            return
        task.retry_gen += 1
        self._schedule(self.clock + task.backoff, "retry", task.key, task.retry_gen)
        task.backoff = min(task.backoff * 2, self.config.update_retry_max)
        if not self._connected(self.agents[task.agent_id]):
            return
        self._learn(task)
        self._deliver(task.framework_id, task.queue[0])

    def _deliver(self, framework_id: str, status: dict) -> None:
        """An agent update on its way to the framework, where the update faults strike."""
        task_id = status["task_id"]["value"]
        if self._held is not None and self._held[2] == task_id:
            # Only updates of different tasks overtake each other: one task's updates travel
            # one agent's stream in order, so a held one (a re-send whose acknowledgement
            # crossed it) goes out before the task's next.
            self._release_held()
        if self.rules.fire("drop_updates", task_id=task_id):
            return
        event = protocol.update(status)
        reorder = self._held is None and self.rules.fire("reorder_updates", task_id=task_id)
        if reorder:
            self._held = (framework_id, event, task_id)
            self._held_gen += 1
            self._schedule(self.clock + reorder.params["hold"], "release_held", self._held_gen)
            return
        self._send(framework_id, event)
        if self.rules.fire("duplicate_updates", task_id=task_id):
            self._send(framework_id, event)
        if self._held is not None and self._held[2] != task_id:
            self._release_held()

    def _release_held(self) -> None:
        if self._held is not None:
            framework_id, event, _ = self._held
            self._held = None
            self._send(framework_id, event)

    def _learn(self, task: AgentTask) -> None:
        """The master learns the agent's latest state of a task."""
        fw = self.frameworks.get(task.framework_id)
        if fw is None or fw.removed:
            return
        known = self.master_tasks.get(task.key)
        if known is None:
            self.master_tasks[task.key] = MasterTask(
                task.framework_id, task.task_id, task.agent_id, task.resources, task.state
            )
        else:
            known.state = task.state
            known.unreachable_time = None

    def _forget(self, task: AgentTask) -> None:
        """A terminal update was acknowledged: the task leaves the agent and the master."""
        self.agent_tasks.pop(task.key, None)
        self.master_tasks.pop(task.key, None)
        self.completed.append(
            {
                "framework_id": task.framework_id,
                "task_id": task.task_id,
                "agent_id": task.agent_id,
                "state": task.state,
                "time": self.clock,
            }
        )

    # ----------------------------------------------------------------- offers and agents

    def _connected(self, agent: Agent) -> bool:
        return self.master_up and agent.link_up and agent.status == REGISTERED

    def _used(self, agent: Agent) -> Resources:
        keys = {k for k, t in self.master_tasks.items() if t.agent_id == agent.id}
        keys |= {k for k, t in self.agent_tasks.items() if t.agent_id == agent.id}
        used = Resources()
        for key in keys:
            task = self.agent_tasks.get(key) or self.master_tasks[key]
            if not protocol.is_terminal(task.state):
                used = used + task.resources
        for offer in self.offers.values():
            if offer.agent_id == agent.id:
                used = used + offer.resources
        return used

    def _allocate(self) -> None:
        if not self.master_up:
            return
        batches: dict[str, list[dict]] = {}
        active = [
            fw
            for _, fw in sorted(self.frameworks.items())
            if fw.stream_id is not None and not fw.removed and not fw.suppressed
        ]
        for agent in self.agents.values():
            if not active or not self._connected(agent):
                continue
            free = agent.total - self._used(agent)
            if free.is_empty():
                continue
            for fw in active:
                if fw.filters.get(agent.id, float("-inf")) > self.clock:
                    continue
                oid = f"{self.master_id}-O{next(self._counters['offer'])}"
                self.offers[oid] = Offer(oid, fw.id, agent.id, free)
                batches.setdefault(fw.id, []).append(
                    protocol.offer(oid, fw.id, agent.id, agent.hostname, free.to_proto())
                )
                break
        for fid, batch in batches.items():
            self._send(fid, protocol.offers(batch))

    def _drop_offers(
        self, framework_id: str | None, *, agent_id: str | None = None, rescind: bool = True
    ) -> None:
        for oid, offer in sorted(self.offers.items()):
            if framework_id is not None and offer.framework_id != framework_id:
                continue
            if agent_id is not None and offer.agent_id != agent_id:
                continue
            del self.offers[oid]
            if rescind:
                self._send(offer.framework_id, protocol.rescind(oid))

    def _tasks_on(self, agent: Agent) -> list[AgentTask]:
        return [t for _, t in sorted(self.agent_tasks.items()) if t.agent_id == agent.id]

    def _master_tasks_on(self, agent: Agent) -> list[MasterTask]:
        return [t for _, t in sorted(self.master_tasks.items()) if t.agent_id == agent.id]

    def _notify_agent_lost(self, agent: Agent) -> None:
        for fid, fw in sorted(self.frameworks.items()):
            if fw.stream_id is not None:
                self._send(fid, protocol.agent_failure(agent.id))

    def _mark_unreachable(self, agent: Agent) -> None:
        if agent.status != REGISTERED or agent.link_up or not self.master_up:
            return
        agent.status = UNREACHABLE
        agent.unreachable_time = self._timestamp()
        self._drop_offers(None, agent_id=agent.id)
        for task in self._master_tasks_on(agent):
            fw = self.frameworks[task.framework_id]
            message = f"Agent {agent.id} is unreachable"
            if fw.partition_aware:
                task.state = "TASK_UNREACHABLE"
                task.unreachable_time = agent.unreachable_time
                self._master_update(
                    fw.id,
                    task.task_id,
                    "TASK_UNREACHABLE",
                    "REASON_AGENT_REMOVED",
                    message,
                    agent_id=agent.id,
                    unreachable_time=agent.unreachable_time,
                )
            else:
                del self.master_tasks[(fw.id, task.task_id)]
                self._master_update(
                    fw.id,
                    task.task_id,
                    "TASK_LOST",
                    "REASON_AGENT_REMOVED",
                    message,
                    agent_id=agent.id,
                )
        self._notify_agent_lost(agent)

    def _reregister(self, agent: Agent) -> None:
        """The agent (re-)registers: the master learns its tasks, its updates flow again."""
        was = agent.status
        agent.status = REGISTERED
        agent.unreachable_time = None
        tasks = self._tasks_on(agent)
        for task in tasks:
            self._learn(task)
            if was == UNREACHABLE and task.key in self.master_tasks:
                self._master_update(
                    task.framework_id,
                    task.task_id,
                    task.state,
                    "REASON_AGENT_REREGISTERED",
                    f"Agent {agent.id} re-registered",
                    agent_id=agent.id,
                )
        for task in tasks:
            if task.queue:
                self._forward_head(task)
        self._allocate()

    def _remove_framework(self, fw: Framework) -> None:
        """TEARDOWN or failover timeout: kill every task of the framework, forget it."""
        for key in [k for k in self.agent_tasks if k[0] == fw.id]:
            del self.agent_tasks[key]
        for key in [k for k in self.master_tasks if k[0] == fw.id]:
            del self.master_tasks[key]
        for key in [k for k in self.lost_launches if k[0] == fw.id]:
            del self.lost_launches[key]
        self._drop_offers(fw.id, rescind=False)
        if fw.stream_id is not None:
            self._close_stream(fw.stream_id)
        fw.removed = True
        fw.gen += 1

    # ------------------------------------------------------------------------------ timers

    def _t_allocate(self) -> None:
        self._allocate()
        self._schedule(self.clock + self.config.allocation_interval, "allocate")

    def _t_heartbeat(self, stream_id: str) -> None:
        if stream_id not in self.streams or not self.master_up:
            return
        self._emit(stream_id, protocol.heartbeat())
        self._schedule(self.clock + self.config.heartbeat_interval, "heartbeat", stream_id)

    def _t_step(self, key: TaskKey, gen: int) -> None:
        task = self.agent_tasks.get(key)
        if task is None or task.step_gen != gen or protocol.is_terminal(task.state):
            return
        if task.killing:
            self._agent_update(task, "TASK_KILLED", "SOURCE_EXECUTOR")
        elif task.state == "TASK_STAGING":
            self._agent_update(task, "TASK_STARTING", "SOURCE_EXECUTOR")
            self._schedule(self.clock + self.config.running_delay, "step", key, gen)
        elif task.state == "TASK_STARTING":
            self._agent_update(task, "TASK_RUNNING", "SOURCE_EXECUTOR")
            if task.duration is not None:
                self._schedule(self.clock + task.duration, "step", key, gen)
        elif task.state == "TASK_RUNNING":
            failed = task.outcome == "TASK_FAILED"
            self._agent_update(
                task,
                task.outcome,
                "SOURCE_EXECUTOR",
                "REASON_COMMAND_EXECUTOR_FAILED" if failed else None,
                "Command exited with status 1" if failed else "Command exited with status 0",
            )

    def _t_retry(self, key: TaskKey, gen: int) -> None:
        task = self.agent_tasks.get(key)
        if task is not None and task.retry_gen == gen:
            self._forward_head(task)

    def _t_framework_timeout(self, framework_id: str, gen: int) -> None:
        fw = self.frameworks[framework_id]
        if fw.gen == gen and fw.stream_id is None and not fw.removed:
            self._remove_framework(fw)

    def _t_launch_dropped(self, key: TaskKey) -> None:
        agent_id = self.lost_launches.pop(key, None)
        fw = self.frameworks.get(key[0])
        if agent_id is None or fw is None or fw.removed:
            return
        if self.agents[agent_id].status == REMOVED:
            return
        state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
        self._ghost_update(fw, key[1], agent_id, state, "Task launch was lost before the agent")

    def _t_release_held(self, gen: int) -> None:
        if gen == self._held_gen:
            self._release_held()

    def _t_detect_partition(self, agent_id: str, gen: int) -> None:
        agent = self.agents[agent_id]
        if agent.link_gen == gen:
            self._mark_unreachable(agent)

    def _t_master_up(self, epoch: int) -> None:
        if epoch != self.master_epoch or self.master_up:
            return
        self.master_up = True
        self.down_until = None
        self._out.append(ListenerUp())

    def _t_agent_reregister(self, agent_id: str, epoch: int) -> None:
        agent = self.agents[agent_id]
        # UNREACHABLE too: the re-registration timeout passed first, or the agent was
        # unreachable before the failover; an agent that can reach the master registers.
        reregisters = agent.status in (RECOVERED, UNREACHABLE)
        if epoch == self.master_epoch and reregisters and self._reachable(agent):
            self._reregister(agent)

    def _reachable(self, agent: Agent) -> bool:
        return self.master_up and agent.link_up

    def _t_reregister_timeout(self, epoch: int) -> None:
        if epoch != self.master_epoch:
            return
        for agent in self.agents.values():
            if agent.status == RECOVERED:
                agent.status = UNREACHABLE
                agent.unreachable_time = self._timestamp()

    def _t_fault(self, fault: Fault) -> None:
        try:
            self._apply(fault)
        except InvalidFault as err:
            self.fault_log.append({"time": self.clock, **fault.to_json(), "error": str(err)})

    _TIMERS: dict[str, Callable[..., None]] = {
        "allocate": _t_allocate,
        "heartbeat": _t_heartbeat,
        "step": _t_step,
        "retry": _t_retry,
        "framework_timeout": _t_framework_timeout,
        "launch_dropped": _t_launch_dropped,
        "release_held": _t_release_held,
        "detect_partition": _t_detect_partition,
        "master_up": _t_master_up,
        "agent_reregister": _t_agent_reregister,
        "reregister_timeout": _t_reregister_timeout,
        "fault": _t_fault,
    }

    # ------------------------------------------------------------------------------ faults

    def inject(self, fault: Fault | dict, now: float) -> list[Effect]:
        """Apply a fault now, arm a rule, or schedule either `after` seconds.

        Raises InvalidFault (naming the problem) for a bad description or a reference to an
        agent, framework or task that does not exist.
        """
        if isinstance(fault, dict):
            fault = parse_fault(fault)
        self._begin(now)
        self._resolve_refs(fault)
        if fault.after > 0:
            self._schedule(self.clock + fault.after, "fault", Fault(fault.kind, fault.params, 0.0))
            return self._take()
        self._apply(fault)
        return self._take()

    def _apply(self, fault: Fault) -> None:
        self._resolve_refs(fault)
        self.fault_log.append({"time": self.clock, **fault.to_json()})
        if fault.is_rule:
            self.rules.arm(fault)
            return
        self._ACTIONS[fault.kind](self, **fault.params)

    def _resolve_refs(self, fault: Fault) -> None:
        params = fault.params
        if params.get("agent_id") is not None:
            self._agent_ref(params["agent_id"])
        for ref in params.get("never_return") or []:
            self._agent_ref(ref)
        if params.get("framework_id") is not None and params["framework_id"] not in self.frameworks:
            raise InvalidFault(f"{fault.kind}: no framework {params['framework_id']!r}")

    def _agent_ref(self, ref: str | int) -> Agent:
        if isinstance(ref, int) and not isinstance(ref, bool):
            for agent in self.agents.values():
                if agent.index == ref:
                    return agent
        elif ref in self.agents:
            return self.agents[ref]
        raise InvalidFault(f"no agent {ref!r} (agents: {list(self.agents)} or indices 0..)")

    def _frameworks_ref(self, framework_id: str | None) -> list[Framework]:
        if framework_id is not None:
            return [self.frameworks[framework_id]]
        return [fw for _, fw in sorted(self.frameworks.items()) if fw.stream_id is not None]

    def _f_stream_drop(self, framework_id: str | None) -> None:
        for fw in self._frameworks_ref(framework_id):
            if fw.stream_id is not None:
                self._close_stream(fw.stream_id, abort=True)

    def _f_stream_silent(self, framework_id: str | None) -> None:
        for fw in self._frameworks_ref(framework_id):
            if fw.stream_id is not None:
                self.streams[fw.stream_id].silent = True

    def _f_master_failover(
        self,
        down_for: float,
        reregister_after: float,
        never_return: list,
        agent_reregister_timeout: float,
    ) -> None:
        if not self.master_up:
            raise InvalidFault("master_failover: the master is already down")
        for sid in sorted(self.streams):
            self._out.append(CloseStream(sid, abort=True))
        self.streams.clear()
        for fw in self.frameworks.values():
            fw.stream_id = None
            fw.gen += 1  # the new master starts no failover timers of its own
            fw.filters.clear()
        self._out.append(ListenerDown())
        self.master_up = False
        self.master_epoch += 1
        self.master_id = self._uuid()
        self.master_tasks.clear()
        self.offers.clear()
        self._held = None
        self.down_until = self.clock + down_for
        gone = {self._agent_ref(ref).id for ref in never_return}
        epoch = self.master_epoch
        self._schedule(self.down_until, "master_up", epoch)
        for agent in self.agents.values():
            if agent.status == REGISTERED:
                agent.status = RECOVERED
            if agent.id in gone:
                agent.link_up = False
                agent.link_gen += 1
            elif agent.status == RECOVERED:
                self._schedule(
                    self.down_until + reregister_after, "agent_reregister", agent.id, epoch
                )
        self._schedule(self.down_until + agent_reregister_timeout, "reregister_timeout", epoch)

    def _f_agent_partition(self, agent_id: str | int, detect_after: float) -> None:
        agent = self._agent_ref(agent_id)
        agent.link_up = False
        agent.link_gen += 1
        if detect_after <= 0:
            self._mark_unreachable(agent)
        else:
            self._schedule(self.clock + detect_after, "detect_partition", agent.id, agent.link_gen)

    def _f_agent_heal(self, agent_id: str | int) -> None:
        agent = self._agent_ref(agent_id)
        if agent.link_up:
            return
        agent.link_up = True
        agent.link_gen += 1
        if agent.status == REMOVED:
            return
        if not self.master_up:
            if agent.status in (RECOVERED, UNREACHABLE) and self.down_until is not None:
                # Back before the new master is up: it re-registers as soon as one is (also
                # an agent the old master had marked unreachable: it keeps trying).
                self._schedule(self.down_until, "agent_reregister", agent.id, self.master_epoch)
            return
        if agent.status in (UNREACHABLE, RECOVERED):
            self._reregister(agent)
        else:
            for task in self._tasks_on(agent):
                if task.queue:
                    self._forward_head(task)

    def _f_agent_remove(self, agent_id: str | int) -> None:
        agent = self._agent_ref(agent_id)
        if agent.status == REMOVED:
            return
        agent.status = REMOVED
        agent.link_up = False
        self._drop_offers(None, agent_id=agent.id)
        for task in self._master_tasks_on(agent):
            fw = self.frameworks[task.framework_id]
            del self.master_tasks[(fw.id, task.task_id)]
            self._master_update(
                fw.id,
                task.task_id,
                "TASK_GONE_BY_OPERATOR" if fw.partition_aware else "TASK_LOST",
                "REASON_AGENT_REMOVED_BY_OPERATOR",
                f"Agent {agent.id} was removed by the operator",
                agent_id=agent.id,
            )
        for task in self._tasks_on(agent):
            del self.agent_tasks[task.key]
        for key in [k for k, a in self.lost_launches.items() if a == agent.id]:
            del self.lost_launches[key]
        self._notify_agent_lost(agent)

    def _f_rogue_task(
        self, agent_id: str | int | None, framework_id: str | None, task_id: str | None
    ) -> None:
        owners = [fw for _, fw in sorted(self.frameworks.items()) if not fw.removed]
        if framework_id is not None:
            owners = [self.frameworks[framework_id]]
        if not owners:
            raise InvalidFault("rogue_task: no framework to own it (subscribe one first)")
        if agent_id is not None:
            agent = self._agent_ref(agent_id)
        else:
            up = [a for a in self.agents.values() if a.status == REGISTERED]
            if not up:
                raise InvalidFault("rogue_task: no registered agent to run it")
            agent = up[0]
        tid = task_id or f"rogue-{next(self._rogues)}"
        key = (owners[0].id, tid)
        if key in self.agent_tasks or key in self.master_tasks:
            raise InvalidFault(f"rogue_task: task {tid!r} already exists")
        task = AgentTask(
            owners[0].id, tid, agent.id, Resources(0.1, 32.0), state="TASK_RUNNING", rogue=True
        )
        self.agent_tasks[key] = task
        if self._connected(agent):
            self._learn(task)

    def _f_rescind_offers(self, agent_id: str | int | None) -> None:
        agent = self._agent_ref(agent_id).id if agent_id is not None else None
        self._drop_offers(None, agent_id=agent)

    def _f_executor_lost(self, task_id: str, framework_id: str | None) -> None:
        candidates = [
            t
            for (fid, tid), t in sorted(self.agent_tasks.items())
            if tid == task_id and (framework_id is None or fid == framework_id)
        ]
        live = [t for t in candidates if not protocol.is_terminal(t.state)]
        if not live:
            raise InvalidFault(f"executor_lost: no live task {task_id!r} on any agent")
        task = live[0]
        task.step_gen += 1
        if self._connected(self.agents[task.agent_id]):
            self._send(task.framework_id, protocol.executor_failure(task.agent_id, task_id, 137))
        self._agent_update(
            task, "TASK_FAILED", "SOURCE_AGENT", "REASON_EXECUTOR_TERMINATED", "Executor lost"
        )

    def _f_clear_rules(self) -> None:
        self.rules.clear()

    _ACTIONS: dict[str, Callable[..., None]] = {
        "stream_drop": _f_stream_drop,
        "stream_silent": _f_stream_silent,
        "master_failover": _f_master_failover,
        "agent_partition": _f_agent_partition,
        "agent_heal": _f_agent_heal,
        "agent_remove": _f_agent_remove,
        "rogue_task": _f_rogue_task,
        "rescind_offers": _f_rescind_offers,
        "executor_lost": _f_executor_lost,
        "clear_rules": _f_clear_rules,
    }

    # ------------------------------------------------------------------------------ state

    def snapshot(self) -> dict:
        """A JSON-ready picture of the cluster, for the state endpoint and tests."""
        tasks = []
        for key in sorted(set(self.master_tasks) | set(self.agent_tasks)):
            known = self.master_tasks.get(key)
            real = self.agent_tasks.get(key)
            tasks.append(
                {
                    "framework_id": key[0],
                    "task_id": key[1],
                    "agent_id": (known or real).agent_id,  # type: ignore[union-attr]
                    "master_state": known.state if known else None,
                    "agent_state": real.state if real else None,
                    "pending_updates": len(real.queue) if real else 0,
                    "launch_lost": key in self.lost_launches,
                    "rogue": bool(real and real.rogue),
                }
            )
        return {
            "master": {
                "id": self.master_id,
                "epoch": self.master_epoch,
                "up": self.master_up,
                "down_until": self.down_until,
                "clock": self.clock,
                "seed": self.config.seed,
                "version": self.config.version,
            },
            "frameworks": [
                {
                    "id": fw.id,
                    "name": fw.info.get("name"),
                    "connected": fw.stream_id is not None,
                    "stream_id": fw.stream_id,
                    "silent": bool(fw.stream_id and self.streams[fw.stream_id].silent),
                    "removed": fw.removed,
                    "suppressed": fw.suppressed,
                    "capabilities": sorted(c for c in fw.capabilities if c),
                }
                for _, fw in sorted(self.frameworks.items())
            ],
            "agents": [
                {
                    "id": a.id,
                    "index": a.index,
                    "hostname": a.hostname,
                    "status": a.status,
                    "link_up": a.link_up,
                    "resources": a.total.to_json(),
                    "used": self._used(a).to_json(),
                }
                for a in self.agents.values()
            ],
            "tasks": tasks,
            "completed_tasks": list(self.completed),
            "acknowledged": list(self.acknowledged),
            "offers": [
                {
                    "id": o.id,
                    "framework_id": o.framework_id,
                    "agent_id": o.agent_id,
                    "resources": o.resources.to_json(),
                }
                for _, o in sorted(self.offers.items())
            ],
            "rules": self.rules.to_json(),
            "fault_log": list(self.fault_log),
        }

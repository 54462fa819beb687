"""The simulated master: frameworks and their streams, the scheduler calls, the master's view
of every task, reconciliation answers, and the delivery of status updates to frameworks.

It answers as a Mesos master does (src/master/master.cpp): reconciliation from the tasks it
tracks, with the state of the last update it forwarded; tasks on unreachable agents kept
apart and answered only by what the agent's status says; a KILL of a task it does not track
answered as a reconciliation of that task.

Pure like the rest of the model: each entry point runs between the `Kernel.begin(now)` and
`take()` that `Cluster` brackets it with, and writes its effects to the kernel's `out`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tools.sim_master import calls, protocol
from tools.sim_master.effects import CloseStream, Emit, ListenerDown, ListenerUp, Reply
from tools.sim_master.kernel import Kernel
from tools.sim_master.records import (
    RECOVERED,
    REGISTERED,
    REMOVED,
    UNREACHABLE,
    Agent,
    AgentTask,
    Framework,
    MasterTask,
    Stream,
    TaskKey,
)
from tools.sim_master.resources import InvalidResources, Resources
from tools.sim_master.tables import TaskTable

if TYPE_CHECKING:
    from tools.sim_master.agents import Fleet
    from tools.sim_master.allocator import Allocator

# The answer to an explicit reconciliation of a task the master does not know, by the status
# of the agent the framework names (None: no agent, or one the master never heard of): the
# state for a partition-aware framework (TASK_LOST for the others), the message, and whether
# the answer carries the moment the agent was marked unreachable (for both kinds).
UNKNOWN_TASK_ANSWERS: dict[str | None, tuple[str, str, bool]] = {
    REGISTERED: ("TASK_GONE", "Reconciliation: Task is unknown to the agent", False),
    UNREACHABLE: ("TASK_UNREACHABLE", "Reconciliation: Task is unreachable", True),
    REMOVED: ("TASK_GONE_BY_OPERATOR", "Reconciliation: Task is gone", False),
    None: ("TASK_UNKNOWN", "Reconciliation: Task is unknown", False),
}


class Master:
    """The leading master: what it knows of frameworks, streams and tasks."""

    fleet: Fleet
    allocator: Allocator

    def __init__(self, kernel: Kernel, on_change: Callable[[TaskKey], None]) -> None:
        self.k = kernel
        self.up = True
        self.epoch = 0
        self.id = kernel.uuid()
        self.down_until: float | None = None
        self.frameworks: dict[str, Framework] = {}
        self.streams: dict[str, Stream] = {}
        self.tasks: TaskTable[MasterTask] = TaskTable(on_change)
        # Tasks on agents marked unreachable, of every framework: kept apart, as Mesos keeps
        # a framework's unreachable tasks, so that no reconciliation answers from them.
        self.unreachable: TaskTable[MasterTask] = TaskTable(on_change)
        self.recovering_until: float | None = None  # calls get 503 until then
        self.completed: deque[dict] = deque(maxlen=1000)
        # Every update the framework acknowledged (task, uuid, state), for tests that check
        # that nothing acknowledged is missing from the scheduler's log.
        self.acknowledged: deque[dict] = deque(maxlen=100_000)
        self._held: tuple[str, dict, str] | None = None  # a reordered update, held back
        self._held_gen = 0
        self._framework_ids = itertools.count()
        self._parsers: dict[str, Callable[[dict], Any]] = {
            "ACCEPT": calls.accept,
            "DECLINE": calls.decline,
            "KILL": calls.kill,
            "RECONCILE": calls.reconcile,
            "ACKNOWLEDGE": calls.acknowledge,
        }
        self._handlers: dict[str, Callable[[Framework, Any], None]] = {
            "TEARDOWN": self._on_teardown,
            "ACCEPT": self._on_accept,
            "DECLINE": self._on_decline,
            "REVIVE": self._on_revive,
            "SUPPRESS": self._on_suppress,
            "KILL": self._on_kill,
            "RECONCILE": self._on_reconcile,
            "ACKNOWLEDGE": self._on_acknowledge,
        }

    # ------------------------------------------------------------------------ subscribing

    def unavailable(self) -> Reply | None:
        """The 503 a master answers every request with while there is none to answer them
        (no leader) or while the new leader still recovers; None once it can answer."""
        if not self.up:
            return Reply(503, "No leader elected")
        if self.recovering_until is not None and self.k.clock < self.recovering_until:
            return Reply(503, "Master has not finished recovery")
        return None

    def subscribe(self, body: dict, stream_id_header: str | None, accept: str | None) -> Reply:
        """A SUBSCRIBE call (`accept`: its Accept header). Status 200 opens a stream whose
        id the reply carries."""
        k = self.k
        busy = self.unavailable()
        if busy is not None:
            return busy
        try:
            sub = calls.subscribe(body, stream_id_header, accept)
        except calls.CallError as err:
            return Reply(err.status, err.message)
        failed = k.rules.fire("fail_calls", call="SUBSCRIBE")
        if failed:
            return Reply(failed.params["status"], "Injected failure")
        fid = sub.framework_id or f"{self.id}-{next(self._framework_ids):04d}"
        sid = k.uuid()
        self.streams[sid] = Stream(fid)
        fw = self.frameworks.get(fid)
        if fw is not None and fw.removed:
            self.emit(sid, protocol.error("Framework has been removed"))
            self.close_stream(sid)
            return Reply(200, stream_id=sid)
        info = dict(sub.info, id=protocol.value(fid))
        if fw is None:
            fw = self.frameworks[fid] = Framework(fid, info)
        else:
            fw.info = info
            if fw.stream_id is not None:
                old = fw.stream_id
                self.emit(old, protocol.error("Framework failed over"))
                self.close_stream(old)
            self.allocator.drop(fw.id, rescind=False)
        fw.stream_id = sid
        fw.suppressed = False
        fw.gen += 1
        config = k.config
        master_info = protocol.master_info(
            self.id, config.ip, config.port, config.hostname, config.version
        )
        interval = config.heartbeat_interval / config.wire_time_scale
        self.emit(sid, protocol.subscribed(fid, interval, master_info))
        self.emit(sid, protocol.heartbeat())
        k.after(config.heartbeat_interval, "heartbeat", sid)
        self.allocator.allocate()
        return Reply(200, stream_id=sid)

    def lose_stream(self, stream_id: str) -> None:
        """The stream is gone (the client left, or we closed it). Idempotent."""
        stream = self.streams.pop(stream_id, None)
        if stream is None:
            return
        fw = self.frameworks.get(stream.framework_id)
        if fw is None or fw.stream_id != stream_id:
            return
        fw.stream_id = None
        fw.gen += 1
        self.allocator.drop(fw.id, rescind=False)
        timeout = float(fw.info.get("failover_timeout", 0.0))
        self.k.after(timeout, "framework_timeout", fw.id, fw.gen)

    def close_stream(self, stream_id: str, *, abort: bool = False) -> None:
        self.k.out.append(CloseStream(stream_id, abort))
        self.lose_stream(stream_id)

    # ------------------------------------------------------------------------------ calls

    def call(self, body: object, stream_id_header: str | None) -> Reply:
        """Any call but SUBSCRIBE. 202 on success; 400/403 (or an injected status) if not."""
        busy = self.unavailable()
        if busy is not None:
            return busy
        try:
            typ = calls.call_type(body)
            assert isinstance(body, dict)
            if typ == "SUBSCRIBE":
                raise calls.bad("SUBSCRIBE opens a stream; it is not a plain call")
            fid = calls.framework_id(body)
            parsed = self._parsers[typ](body) if typ in self._parsers else None
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
            return Reply(err.status, err.message)
        rules = self.k.rules
        failed = rules.fire("fail_calls", call=typ)
        if failed:
            return Reply(failed.params["status"], "Injected failure")
        handler = self._handlers.get(typ)
        if handler is not None:
            handler(fw, parsed)
        delayed = rules.fire("delay_calls", call=typ)
        return Reply(202, delay=delayed.params["seconds"] if delayed else 0.0)

    def _on_teardown(self, fw: Framework, _: None) -> None:
        self.remove_framework(fw)

    def _on_revive(self, fw: Framework, _: None) -> None:
        fw.suppressed = False
        fw.filters.clear()
        self.allocator.allocate()

    def _on_suppress(self, fw: Framework, _: None) -> None:
        fw.suppressed = True

    def _on_decline(self, fw: Framework, d: calls.Decline) -> None:
        self.allocator.decline(fw, d.offer_ids, d.refuse_seconds)

    def _on_accept(self, fw: Framework, acc: calls.Accept) -> None:
        task_infos = [
            ti
            for op in acc.operations
            if op["type"] == "LAUNCH"
            for ti in op["launch"]["task_infos"]
        ]
        task_ids = [str((ti.get("task_id") or {}).get("value")) for ti in task_infos]
        allocator = self.allocator
        offers = allocator.offers
        if self.k.rules.fire("lose_accept", task_id=task_ids[0] if task_ids else None):
            # The master never hears of it; the offers time out and are rescinded.
            for oid in acc.offer_ids:
                offer = offers.get(oid)
                if offer is not None and offer.framework_id == fw.id:
                    allocator.take(oid)
                    self.send(fw.id, protocol.rescind(oid))
            return
        found = [offers.get(oid) for oid in acc.offer_ids]
        valid = [o for o in found if o is not None and o.framework_id == fw.id]
        for o in valid:
            allocator.take(o.id)
        agents = {o.agent_id for o in valid}
        problem = None
        if not acc.offer_ids:
            problem = "No offers named in ACCEPT"
        elif len(valid) != len(found):
            bad_ids = [oid for oid, o in zip(acc.offer_ids, found, strict=True) if o not in valid]
            problem = f"Offers {bad_ids} are no longer valid"
        elif len(agents) > 1:
            problem = f"Offers span several agents: {sorted(agents)}"
        elif not self.fleet.connected(self.fleet.agents[next(iter(agents))]):
            problem = "The offers' agent is no longer registered"
        if problem is not None:
            state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
            for tid, ti in zip(task_ids, task_infos, strict=True):
                agent_id = (ti.get("agent_id") or {}).get("value")
                self.master_update(
                    fw.id, tid, state, "REASON_INVALID_OFFERS", problem, agent_id=agent_id
                )
            return
        agent = self.fleet.agents[next(iter(agents))]
        available = Resources()
        for o in valid:
            available = available + o.resources
        for tid, ti in zip(task_ids, task_infos, strict=True):
            checked = self._check_task(fw, ti, agent, available)
            if isinstance(checked, str):
                self.master_update(
                    fw.id, tid, "TASK_ERROR", "REASON_TASK_INVALID", checked, agent_id=agent.id
                )
                continue
            resources, duration, outcome = checked
            available = available - resources
            self.tasks.add(MasterTask(fw.id, tid, agent.id, resources, "TASK_STAGING"))
            self.fleet.launch(fw, tid, agent, resources, duration, outcome)
        self.allocator.refuse(fw, agent.id, acc.refuse_seconds)

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
        if key in self.tasks or key in self.fleet.tasks:
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

    def _on_kill(self, fw: Framework, ref: calls.TaskRef) -> None:
        known = self.tasks.get((fw.id, ref.task_id))
        if known is None:
            # Mesos answers a kill of a task it does not know (a task on an unreachable agent
            # included) as an explicit reconciliation of that task.
            answer = self.reconcile_answer(fw.id, ref.task_id, ref.agent_id)
            if answer is not None:
                self.send(fw.id, protocol.update(answer))
            return
        if ref.agent_id is not None and ref.agent_id != known.agent_id:
            return  # the task runs on another agent: Mesos ignores the kill
        agent = self.fleet.agents[known.agent_id]
        if not self.fleet.connected(agent):
            # Disconnected but not yet unreachable: the kill is sent when the agent is back.
            if known.key not in agent.pending_kills:
                agent.pending_kills.append(known.key)
            return
        self.fleet.kill(fw, ref.task_id, agent)

    def _on_reconcile(self, fw: Framework, refs: list[calls.TaskRef]) -> None:
        if not refs:
            for _, task in sorted(self.tasks.of_framework(fw.id).items()):
                self.send(fw.id, protocol.update(self._known_answer(task)))
            return
        recovering = any(r.agent_id is None for r in refs) and self._any_recovering()
        for ref in refs:
            answer = self._answer(fw.id, ref.task_id, ref.agent_id, recovering)
            if answer is not None:
                self.send(fw.id, protocol.update(answer))

    def _on_acknowledge(self, fw: Framework, ack: calls.Acknowledge) -> None:
        if self.k.rules.fire("lose_acks", task_id=ack.task_id):
            return
        self.fleet.acknowledge(fw, ack)

    # --------------------------------------------------------------------- reconciliation

    def reconcile_answer(
        self, framework_id: str, task_id: str, agent_id: str | None
    ) -> dict | None:
        """The master's answer to an explicit reconciliation of one task (None: no answer).

        1 known task: the state of the last update the master forwarded for it (its state,
        if none yet). 2 unknown, and its agent (or, with no agent named, any agent) not
        re-registered since a failover: no answer. 3 named agent registered: TASK_GONE. 4
        named agent unreachable: TASK_UNREACHABLE, with the time it was marked so. 5 named
        agent removed by the operator: TASK_GONE_BY_OPERATOR. 6 otherwise TASK_UNKNOWN.
        Cases 3-6 are TASK_LOST for frameworks without PARTITION_AWARE. A task on an
        unreachable agent is unknown to the master (case 4 or 6, by the agent named).
        """
        recovering = agent_id is None and self._any_recovering()
        return self._answer(framework_id, task_id, agent_id, recovering)

    def _any_recovering(self) -> bool:
        return any(a.status == RECOVERED for a in self.fleet.agents.values())

    def _answer(
        self, framework_id: str, task_id: str, agent_id: str | None, recovering: bool
    ) -> dict | None:
        """`reconcile_answer`, told whether any agent is still recovering (worked out once
        per call: a RECONCILE of many tasks costs what its tasks cost, not x agents)."""
        known = self.tasks.get((framework_id, task_id))
        if known is not None:
            return self._known_answer(known)
        agents = self.fleet.agents
        agent = agents.get(agent_id) if agent_id is not None else None
        if agent_id is not None:
            if agent is not None and agent.status == RECOVERED:
                return None
        elif recovering:
            return None
        state, message, timed = UNKNOWN_TASK_ANSWERS[agent.status if agent else None]
        fw = self.frameworks.get(framework_id)
        if fw is None or not fw.partition_aware:
            state = "TASK_LOST"
        return protocol.task_status(
            task_id,
            state,
            source="SOURCE_MASTER",
            reason="REASON_RECONCILIATION",
            message=message,
            agent_id=agent_id,
            timestamp=self.k.timestamp(),
            unreachable_time=agent.unreachable_time if timed and agent else None,
        )

    def _known_answer(self, task: MasterTask) -> dict:
        return protocol.task_status(
            task.task_id,
            task.answer_state,
            source="SOURCE_MASTER",
            reason="REASON_RECONCILIATION",
            message="Reconciliation: Latest task state",
            agent_id=task.agent_id,
            timestamp=self.k.timestamp(),
        )

    # -------------------------------------------------------------- updates and delivery

    def emit(self, stream_id: str, event: dict) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and not stream.silent:
            self.k.out.append(Emit(stream_id, event))

    def send(self, framework_id: str, event: dict) -> None:
        """To the framework's current stream; lost if it has none (as Mesos loses them)."""
        fw = self.frameworks.get(framework_id)
        if fw is not None and fw.stream_id is not None and self.up:
            self.emit(fw.stream_id, event)

    def master_update(
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
            timestamp=self.k.timestamp(),
            unreachable_time=unreachable_time,
        )
        self.send(framework_id, protocol.update(status))

    def forward(self, task: AgentTask) -> None:
        """The agent forwards the head of a task's update stream: the master learns the
        task's newest state and forwards the update to the framework if it is connected
        (which makes the update's state the task's status_update_state)."""
        self.learn(task)
        status = task.queue[0]
        fw = self.frameworks.get(task.framework_id)
        known = self.tasks.get(task.key)
        if known is not None and fw is not None and fw.stream_id is not None:
            known.status_update_state = status["state"]
        self.deliver(task.framework_id, status)

    def deliver(self, framework_id: str, status: dict) -> None:
        """An agent update on its way to the framework, where the update faults strike."""
        rules = self.k.rules
        task_id = status["task_id"]["value"]
        if self._held is not None and self._held[2] == task_id:
            # Only updates of different tasks overtake each other: one task's updates travel
            # one agent's stream in order, so a held one (a re-send whose acknowledgement
            # crossed it) goes out before the task's next.
            self._release_held()
        if rules.fire("drop_updates", task_id=task_id):
            return
        event = protocol.update(status)
        reorder = self._held is None and rules.fire("reorder_updates", task_id=task_id)
        if reorder:
            self._held = (framework_id, event, task_id)
            self._held_gen += 1
            self.k.after(reorder.params["hold"], "release_held", self._held_gen)
            return
        self.send(framework_id, event)
        if rules.fire("duplicate_updates", task_id=task_id):
            self.send(framework_id, event)
        if self._held is not None and self._held[2] != task_id:
            self._release_held()

    def _release_held(self) -> None:
        if self._held is not None:
            framework_id, event, _ = self._held
            self._held = None
            self.send(framework_id, event)

    def learn(self, task: AgentTask) -> None:
        """The master learns the agent's latest state of a task (from an update, or from
        the agent's re-registration, which also says the state it last forwarded)."""
        fw = self.frameworks.get(task.framework_id)
        if fw is None or fw.removed:
            return
        known = self.tasks.get(task.key)
        if known is None:
            self.unreachable.pop(task.key)
            self.tasks.add(
                MasterTask(
                    task.framework_id,
                    task.task_id,
                    task.agent_id,
                    task.resources,
                    task.state,
                    status_update_state=task.forwarded_state,
                )
            )
        else:
            self.tasks.set_state(known, task.state)

    def forget(self, task: AgentTask) -> None:
        """A terminal update was acknowledged: the task (gone from its agent) leaves the
        master, into the completed tasks."""
        self.tasks.pop(task.key)
        self.completed.append(
            {
                "framework_id": task.framework_id,
                "task_id": task.task_id,
                "agent_id": task.agent_id,
                "state": task.state,
                "time": self.k.clock,
            }
        )

    def acknowledged_update(self, task_id: str, uuid: str, state: str) -> None:
        self.acknowledged.append(
            {"task_id": task_id, "uuid": uuid, "state": state, "time": self.k.clock}
        )

    def tasks_on(self, agent: Agent) -> list[MasterTask]:
        return self.tasks.sorted_on_agent(agent.id)

    def notify_agent_lost(self, agent: Agent) -> None:
        for fid, fw in sorted(self.frameworks.items()):
            if fw.stream_id is not None:
                self.send(fid, protocol.agent_failure(agent.id))

    def remove_framework(self, fw: Framework) -> None:
        """TEARDOWN or failover timeout: kill every task of the framework, forget it."""
        self.fleet.remove_framework(fw.id)
        for key in list(self.tasks.of_framework(fw.id)):
            self.tasks.pop(key)
        self.allocator.drop(fw.id, rescind=False)
        if fw.stream_id is not None:
            self.close_stream(fw.stream_id)
        fw.removed = True
        fw.gen += 1

    # ------------------------------------------------------------------------------ timers

    def t_heartbeat(self, stream_id: str) -> None:
        if stream_id not in self.streams or not self.up:
            return
        self.emit(stream_id, protocol.heartbeat())
        self.k.after(self.k.config.heartbeat_interval, "heartbeat", stream_id)

    def t_framework_timeout(self, framework_id: str, gen: int) -> None:
        fw = self.frameworks[framework_id]
        if fw.gen == gen and fw.stream_id is None and not fw.removed:
            self.remove_framework(fw)

    def t_release_held(self, gen: int) -> None:
        if gen == self._held_gen:
            self._release_held()

    def t_master_up(self, epoch: int) -> None:
        if epoch != self.epoch or self.up:
            return
        self.up = True
        self.down_until = None
        self.k.out.append(ListenerUp())

    def fail_over(self, down_for: float, recover_for: float) -> None:
        """The leading master dies: every stream is cut, and the next master, elected
        `down_for` later, knows frameworks and agents (the registry) but no task; it answers
        503 for `recover_for` more seconds while it recovers."""
        k = self.k
        for sid in sorted(self.streams):
            k.out.append(CloseStream(sid, abort=True))
        self.streams.clear()
        for fw in self.frameworks.values():
            fw.stream_id = None
            fw.gen += 1  # the new master starts no failover timers of its own
            fw.filters.clear()
        k.out.append(ListenerDown())
        self.up = False
        self.epoch += 1
        self.id = k.uuid()
        self.tasks.clear()
        self.unreachable.clear()
        self.allocator.clear()
        self._held = None
        self.down_until = k.clock + down_for
        self.recovering_until = self.down_until + recover_for if recover_for > 0 else None
        k.schedule(self.down_until, "master_up", self.epoch)

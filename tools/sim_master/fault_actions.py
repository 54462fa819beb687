"""What each fault of the catalogue (faults.py) does to the simulated cluster.

`inject` applies an action now (or `after` simulated seconds, on a timer), or arms a rule in
the kernel's RuleBook, which the master and the agents consult where the rule can strike.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

from tools.sim_master import protocol
from tools.sim_master.agents import Fleet
from tools.sim_master.allocator import Allocator
from tools.sim_master.faults import Fault, InvalidFault, parse_fault
from tools.sim_master.kernel import Kernel
from tools.sim_master.master import Master
from tools.sim_master.records import (
    RECOVERED,
    REGISTERED,
    REMOVED,
    UNREACHABLE,
    Agent,
    AgentTask,
    Framework,
)
from tools.sim_master.resources import Resources


class FaultInjector:
    """Validates fault references against the cluster and carries the actions out."""

    def __init__(self, kernel: Kernel, master: Master, fleet: Fleet, allocator: Allocator):
        self.k = kernel
        self.master = master
        self.fleet = fleet
        self.allocator = allocator
        self.log: deque[dict] = deque(maxlen=1000)
        self._rogues = itertools.count()
        self._actions: dict[str, Callable[..., None]] = {
            "stream_drop": self._stream_drop,
            "stream_silent": self._stream_silent,
            "master_failover": self._master_failover,
            "agent_partition": self._agent_partition,
            "agent_heal": self._agent_heal,
            "agent_remove": self._agent_remove,
            "rogue_task": self._rogue_task,
            "rescind_offers": self._rescind_offers,
            "executor_lost": self._executor_lost,
            "clear_rules": self._clear_rules,
        }

    def inject(self, fault: Fault | dict) -> None:
        """Apply a fault now, arm a rule, or schedule either `after` seconds.

        Raises InvalidFault (naming the problem) for a bad description or a reference to an
        agent, framework or task that does not exist.
        """
        if isinstance(fault, dict):
            fault = parse_fault(fault)
        self._resolve_refs(fault)
        if fault.after > 0:
            self.k.after(fault.after, "fault", Fault(fault.kind, fault.params, 0.0))
            return
        self._apply(fault)

    def t_fault(self, fault: Fault) -> None:
        try:
            self._apply(fault)
        except InvalidFault as err:
            self.log.append({"time": self.k.clock, **fault.to_json(), "error": str(err)})

    def _apply(self, fault: Fault) -> None:
        self._resolve_refs(fault)
        self.log.append({"time": self.k.clock, **fault.to_json()})
        if fault.is_rule:
            self.k.rules.arm(fault)
            return
        self._actions[fault.kind](**fault.params)

    def _resolve_refs(self, fault: Fault) -> None:
        params = fault.params
        if params.get("agent_id") is not None:
            self._agent_ref(params["agent_id"])
        for ref in params.get("never_return") or []:
            self._agent_ref(ref)
        framework_id = params.get("framework_id")
        if framework_id is not None and framework_id not in self.master.frameworks:
            raise InvalidFault(f"{fault.kind}: no framework {framework_id!r}")

    def _agent_ref(self, ref: str | int) -> Agent:
        agents = self.fleet.agents
        if isinstance(ref, int) and not isinstance(ref, bool):
            for agent in agents.values():
                if agent.index == ref:
                    return agent
        elif ref in agents:
            return agents[ref]
        raise InvalidFault(f"no agent {ref!r} (agents: {list(agents)} or indices 0..)")

    def _frameworks_ref(self, framework_id: str | None) -> list[Framework]:
        frameworks = self.master.frameworks
        if framework_id is not None:
            return [frameworks[framework_id]]
        return [fw for _, fw in sorted(frameworks.items()) if fw.stream_id is not None]

    # ----------------------------------------------------------------------------- actions

    def _stream_drop(self, framework_id: str | None) -> None:
        for fw in self._frameworks_ref(framework_id):
            if fw.stream_id is not None:
                self.master.close_stream(fw.stream_id, abort=True)

    def _stream_silent(self, framework_id: str | None) -> None:
        for fw in self._frameworks_ref(framework_id):
            if fw.stream_id is not None:
                self.master.streams[fw.stream_id].silent = True

    def _master_failover(
        self,
        down_for: float,
        reregister_after: float,
        never_return: list,
        agent_reregister_timeout: float,
        recover_for: float,
    ) -> None:
        master = self.master
        if not master.up:
            raise InvalidFault("master_failover: the master is already down")
        master.fail_over(down_for, recover_for)
        assert master.down_until is not None
        ready = master.down_until + recover_for  # agents register once it has recovered
        gone = {self._agent_ref(ref).id for ref in never_return}
        epoch = master.epoch
        for agent in self.fleet.agents.values():
            agent.pending_kills.clear()
            if agent.status == REGISTERED:
                agent.status = RECOVERED
            if agent.id in gone:
                agent.link_up = False
                agent.link_gen += 1
            elif agent.status == RECOVERED:
                self.k.schedule(ready + reregister_after, "agent_reregister", agent.id, epoch)
        self.k.schedule(ready + agent_reregister_timeout, "reregister_timeout", epoch)

    def _agent_partition(self, agent_id: str | int, detect_after: float) -> None:
        agent = self._agent_ref(agent_id)
        agent.link_up = False
        agent.link_gen += 1
        if detect_after <= 0:
            self.fleet.mark_unreachable(agent)
        else:
            self.k.after(detect_after, "detect_partition", agent.id, agent.link_gen)

    def _agent_heal(self, agent_id: str | int) -> None:
        agent = self._agent_ref(agent_id)
        if agent.link_up:
            return
        agent.link_up = True
        agent.link_gen += 1
        if agent.status == REMOVED:
            return
        master = self.master
        if not master.up:
            if agent.status in (RECOVERED, UNREACHABLE) and master.down_until is not None:
                # Back before the new master is up: it re-registers as soon as one is (also
                # an agent the old master had marked unreachable: it keeps trying).
                ready = master.recovering_until or master.down_until
                self.k.schedule(ready, "agent_reregister", agent.id, master.epoch)
            return
        if agent.status in (UNREACHABLE, RECOVERED):
            self.fleet.reregister(agent)
        else:
            self.fleet.reconnect(agent)

    def _agent_remove(self, agent_id: str | int) -> None:
        agent = self._agent_ref(agent_id)
        if agent.status != REMOVED:
            self.fleet.remove(agent)

    def _rogue_task(
        self, agent_id: str | int | None, framework_id: str | None, task_id: str | None
    ) -> None:
        master, fleet = self.master, self.fleet
        owners = [fw for _, fw in sorted(master.frameworks.items()) if not fw.removed]
        if framework_id is not None:
            owners = [master.frameworks[framework_id]]
        if not owners:
            raise InvalidFault("rogue_task: no framework to own it (subscribe one first)")
        if agent_id is not None:
            agent = self._agent_ref(agent_id)
        else:
            up = [a for a in fleet.agents.values() if a.status == REGISTERED]
            if not up:
                raise InvalidFault("rogue_task: no registered agent to run it")
            agent = up[0]
        tid = task_id or f"rogue-{next(self._rogues)}"
        key = (owners[0].id, tid)
        if key in fleet.tasks or key in master.tasks:
            raise InvalidFault(f"rogue_task: task {tid!r} already exists")
        task = AgentTask(
            owners[0].id, tid, agent.id, Resources(0.1, 32.0), state="TASK_RUNNING", rogue=True
        )
        fleet.tasks.add(task)
        if fleet.connected(agent):
            master.learn(task)

    def _rescind_offers(self, agent_id: str | int | None) -> None:
        agent = self._agent_ref(agent_id).id if agent_id is not None else None
        self.allocator.drop(None, agent_id=agent)

    def _executor_lost(self, task_id: str, framework_id: str | None) -> None:
        fleet = self.fleet
        owners = sorted(self.master.frameworks) if framework_id is None else [framework_id]
        candidates = [fleet.tasks.get((fid, task_id)) for fid in owners]
        live = [t for t in candidates if t is not None and not protocol.is_terminal(t.state)]
        if not live:
            raise InvalidFault(f"executor_lost: no live task {task_id!r} on any agent")
        task = live[0]
        task.step_gen += 1
        if fleet.connected(fleet.agents[task.agent_id]):
            self.master.send(
                task.framework_id, protocol.executor_failure(task.agent_id, task_id, 137)
            )
        fleet.agent_update(
            task, "TASK_FAILED", "SOURCE_AGENT", "REASON_EXECUTOR_TERMINATED", "Executor lost"
        )

    def _clear_rules(self) -> None:
        self.k.rules.clear()

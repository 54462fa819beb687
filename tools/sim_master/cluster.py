"""The simulated Mesos cluster: a master, its agents and their tasks, as a pure model.

No sockets and no clock: every entry point takes `now` (simulated seconds) and returns the
effects the transport must carry out (write an event to a stream, close a stream, stop or
start listening). Randomness comes from RNGs seeded by the config, so the same seed and the
same inputs give the same effects, byte for byte. The HTTP server in `server.py` is one
driver of this model; a single-process simulation on a virtual clock can be another.

The parts, each in its own module: the master (master.py: frameworks, streams, calls,
reconciliation answers, delivery), the agents (agents.py: agent tasks and their update
streams), the allocator (allocator.py: offers), the fault actions (fault_actions.py), all
sharing one kernel (kernel.py: the clock, the timers, the effects going out). Each side's
tasks are a TaskTable (tables.py: indexed by agent and framework); the census (census.py)
keeps each agent's resources in use as tasks change; snapshot.py draws the state endpoint's
picture. This module wires them and is the model's one way in. Every entry point costs the
work it is asked for: nothing on a hot path scans every task.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from tools.sim_master.agents import Fleet
from tools.sim_master.allocator import Allocator
from tools.sim_master.census import Census
from tools.sim_master.config import SimConfig
from tools.sim_master.effects import CloseStream, Effect, Emit, ListenerDown, ListenerUp, Reply
from tools.sim_master.fault_actions import FaultInjector
from tools.sim_master.faults import Fault, RuleBook, parse_fault
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
    MasterTask,
    Offer,
    Stream,
    TaskKey,
)
from tools.sim_master.snapshot import StateQuery, snapshot

__all__ = [
    "RECOVERED",
    "REGISTERED",
    "REMOVED",
    "UNREACHABLE",
    "Agent",
    "AgentTask",
    "CloseStream",
    "Cluster",
    "Effect",
    "Emit",
    "Framework",
    "ListenerDown",
    "ListenerUp",
    "MasterTask",
    "Offer",
    "Reply",
    "SimConfig",
    "Stream",
    "TaskKey",
]


class Cluster:
    """The master and its agents. Drive it with `subscribe`, `call`, `disconnected`,
    `inject` and `tick`; each returns effects. `next_deadline()` says when to tick next."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.kernel = kernel = Kernel(config)
        self.census = census = Census()
        self.master = master = Master(kernel, census.changed)
        self.fleet = fleet = Fleet(kernel, master.id, census.changed)
        census.watch(
            agent_tasks=fleet.tasks,
            master_tasks=master.tasks,
            unreachable_tasks=master.unreachable,
        )
        self.allocator = allocator = Allocator(kernel, census)
        master.fleet, master.allocator = fleet, allocator
        fleet.master, fleet.allocator = master, allocator
        allocator.master, allocator.fleet = master, fleet
        self.faults = FaultInjector(kernel, master, fleet, allocator)
        timers: dict[str, Callable[..., None]] = {
            "allocate": allocator.t_allocate,
            "heartbeat": master.t_heartbeat,
            "step": fleet.t_step,
            "retry": fleet.t_retry,
            "framework_timeout": master.t_framework_timeout,
            "launch_dropped": fleet.t_launch_dropped,
            "release_held": master.t_release_held,
            "detect_partition": fleet.t_detect_partition,
            "master_up": master.t_master_up,
            "agent_reregister": fleet.t_agent_reregister,
            "reregister_timeout": fleet.t_reregister_timeout,
            "fault": self.faults.t_fault,
        }
        kernel.handlers = timers
        kernel.schedule(0.0, "allocate")

    # -------------------------------------------------------------------- entry points

    def next_deadline(self) -> float | None:
        """The simulated time of the earliest pending timer."""
        return self.kernel.next_deadline()

    def tick(self, now: float) -> list[Effect]:
        """Fire every timer due at or before `now`."""
        self.kernel.begin(now)
        return self.kernel.take()

    def subscribe(
        self, body: dict, stream_id_header: str | None, now: float, *, accept: str | None = None
    ) -> Reply:
        """A SUBSCRIBE call (`accept`: its Accept header, None if it has none). Status 200
        opens a stream whose id the reply carries."""
        self.kernel.begin(now)
        reply = self.master.subscribe(body, stream_id_header, accept)
        reply.effects = self.kernel.take()
        return reply

    def call(self, body: object, stream_id_header: str | None, now: float) -> Reply:
        """Any call but SUBSCRIBE. 202 on success; 400/403 (or an injected status) if not."""
        self.kernel.begin(now)
        reply = self.master.call(body, stream_id_header)
        reply.effects = self.kernel.take()
        return reply

    def availability(self, now: float) -> Reply:
        """Whether the master answers requests now: 200, or the 503 every request gets (no
        leader, or the new one still recovering). The transport asks before it looks at a
        request at all, as Mesos does."""
        self.kernel.begin(now)
        reply = self.master.unavailable() or Reply(200)
        reply.effects = self.kernel.take()
        return reply

    def disconnected(self, stream_id: str, now: float) -> list[Effect]:
        """The transport lost a stream (the client went away). Idempotent."""
        self.kernel.begin(now)
        self.master.lose_stream(stream_id)
        return self.kernel.take()

    def inject(self, fault: Fault | dict, now: float) -> list[Effect]:
        """Apply a fault now, arm a rule, or schedule either `after` seconds.

        Raises InvalidFault (naming the problem) for a bad description or a reference to an
        agent, framework or task that does not exist.
        """
        if isinstance(fault, dict):
            fault = parse_fault(fault)
        self.kernel.begin(now)
        self.faults.inject(fault)
        return self.kernel.take()

    def reconcile_answer(
        self, framework_id: str, task_id: str, agent_id: str | None
    ) -> dict | None:
        """The master's answer to an explicit reconciliation of one task (None: no answer)."""
        return self.master.reconcile_answer(framework_id, task_id, agent_id)

    # ------------------------------------------------------------- the parts' state, read

    @property
    def clock(self) -> float:
        return self.kernel.clock

    @property
    def rules(self) -> RuleBook:
        return self.kernel.rules

    @property
    def master_up(self) -> bool:
        return self.master.up

    @property
    def master_id(self) -> str:
        return self.master.id

    @property
    def frameworks(self) -> dict[str, Framework]:
        return self.master.frameworks

    @property
    def streams(self) -> dict[str, Stream]:
        return self.master.streams

    @property
    def master_tasks(self) -> dict[TaskKey, MasterTask]:
        return self.master.tasks

    @property
    def agents(self) -> dict[str, Agent]:
        return self.fleet.agents

    @property
    def agent_tasks(self) -> dict[TaskKey, AgentTask]:
        return self.fleet.tasks

    @property
    def lost_launches(self) -> dict[TaskKey, str]:
        return self.fleet.lost_launches

    @property
    def offers(self) -> dict[str, Offer]:
        return self.allocator.offers

    @property
    def acknowledged(self) -> deque[dict]:
        return self.master.acknowledged

    @property
    def fault_log(self) -> deque[dict]:
        return self.faults.log

    # ------------------------------------------------------------------------------ state

    def snapshot(self, query: StateQuery | None = None) -> dict:
        """A JSON-ready picture of the cluster, for the state endpoint and tests: whole by
        default; see snapshot.StateQuery for pages of tasks, one task id, counts only."""
        return snapshot(self, query)

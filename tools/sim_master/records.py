"""The simulated cluster's records: frameworks and their streams, agents, tasks and offers.

Two records of every task are kept apart, as in Mesos:
- the agent's truth (`AgentTask`): the state the task is really in and the agent's status
  update stream (a queue whose head is the one outstanding update, re-sent with backoff);
- the master's view (`MasterTask`): what the master last learned, which is what
  reconciliation answers from. The master learns only while the agent is connected, and
  forgets everything on a failover until the agent re-registers. A task's record carries
  two states, as Mesos's does: `state`, the agent's newest (each update from the agent
  carries it), and `status_update_state`, the state of the last update the master
  forwarded to the framework, which reconciliation answers so that an answer never runs
  ahead of the task's update stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tools.sim_master import protocol
from tools.sim_master.resources import Resources

# An agent's status as the master records it.
REGISTERED = "REGISTERED"
RECOVERED = "RECOVERED"  # known from the registry after a failover, not yet re-registered
UNREACHABLE = "UNREACHABLE"
REMOVED = "REMOVED"  # removed by the operator; never comes back

TaskKey = tuple[str, str]  # (framework id, task id)


@dataclass(slots=True)
class Stream:
    framework_id: str
    silent: bool = False


@dataclass(slots=True)
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


@dataclass(slots=True)
class Agent:
    id: str
    index: int
    hostname: str
    total: Resources
    status: str = REGISTERED
    link_up: bool = True  # the network between this agent and the master
    unreachable_time: float | None = None
    link_gen: int = 0  # disarms a pending partition detection when the link heals
    # KILLs of its tasks the master could not send while the agent was disconnected (not
    # yet marked unreachable): sent when it comes back, forgotten if it is marked unreachable.
    pending_kills: list[TaskKey] = field(default_factory=list)


@dataclass(slots=True)
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
    # The state of the last update the agent forwarded to the master: what it reports as
    # the task's status_update_state when it re-registers.
    forwarded_state: str | None = None

    @property
    def key(self) -> TaskKey:
        return (self.framework_id, self.task_id)


@dataclass(slots=True)
class MasterTask:
    """A task as the master knows it: what reconciliation answers from."""

    framework_id: str
    task_id: str
    agent_id: str
    resources: Resources
    state: str
    status_update_state: str | None = None
    unreachable_time: float | None = None

    @property
    def answer_state(self) -> str:
        """What reconciliation answers: the last forwarded update's state, else `state`."""
        return self.status_update_state or self.state

    @property
    def key(self) -> TaskKey:
        return (self.framework_id, self.task_id)


@dataclass(slots=True)
class Offer:
    id: str
    framework_id: str
    agent_id: str
    resources: Resources

"""The simulated agents: each agent's standing with the master (registered, recovering after a
failover, unreachable, removed), the tasks it runs, and each task's status update stream.

A task's updates queue on its agent; the head is the one outstanding update, forwarded to
the master while the agent is connected and re-sent with backoff (10 s doubling to 10 min)
until the framework acknowledges it, as Mesos's task status update manager does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tools.sim_master import calls, protocol
from tools.sim_master.kernel import Kernel
from tools.sim_master.records import (
    RECOVERED,
    REGISTERED,
    REMOVED,
    UNREACHABLE,
    Agent,
    AgentTask,
    Framework,
    TaskKey,
)
from tools.sim_master.resources import Resources
from tools.sim_master.tables import TaskTable

if TYPE_CHECKING:
    from tools.sim_master.allocator import Allocator
    from tools.sim_master.master import Master


class Fleet:
    """The agents (id -> Agent, in index order) and their tasks (key -> AgentTask)."""

    master: Master
    allocator: Allocator

    def __init__(
        self, kernel: Kernel, master_id: str, on_change: Callable[[TaskKey], None]
    ) -> None:
        self.k = kernel
        config = kernel.config
        self.agents: dict[str, Agent] = {}
        self.tasks: TaskTable[AgentTask] = TaskTable(on_change)
        self.lost_launches: dict[TaskKey, str] = {}  # the agent never got these launches
        lo, hi = config.agent_ports
        for i in range(config.agents):
            agent_id = f"{master_id}-S{i}"
            self.agents[agent_id] = Agent(
                agent_id,
                i,
                f"sim-agent-{i}",
                Resources(config.agent_cpus, config.agent_mem, ((lo, hi),)),
            )

    # ----------------------------------------------------------------------- connectivity

    def connected(self, agent: Agent) -> bool:
        return self.master.up and agent.link_up and agent.status == REGISTERED

    def reachable(self, agent: Agent) -> bool:
        return self.master.up and agent.link_up

    def tasks_on(self, agent: Agent) -> list[AgentTask]:
        return self.tasks.sorted_on_agent(agent.id)

    # ------------------------------------------------------------------- tasks' lifecycles

    def launch(
        self,
        fw: Framework,
        tid: str,
        agent: Agent,
        resources: Resources,
        duration: float | None,
        outcome: str,
    ) -> None:
        """The master sends a LAUNCH to the agent (which the lose_launch rule can lose)."""
        k = self.k
        key = (fw.id, tid)
        lost = k.rules.fire("lose_launch", task_id=tid)
        if lost is not None:
            self.lost_launches[key] = agent.id
            k.after(lost.params["drop_after"], "launch_dropped", key)
            return
        task = AgentTask(fw.id, tid, agent.id, resources, duration=duration, outcome=outcome)
        self.tasks.add(task)
        k.after(k.config.starting_delay, "step", key, task.step_gen)

    def kill(self, fw: Framework, task_id: str, agent: Agent) -> None:
        """A KILL reaches the task's (connected) agent."""
        key = (fw.id, task_id)
        if key in self.lost_launches:
            # The agent never had it: it says so through its own update stream.
            del self.lost_launches[key]
            state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
            self.ghost_update(fw, task_id, agent.id, state, "Kill of a task unknown to agent")
            return
        task = self.tasks.get(key)
        if task is None or protocol.is_terminal(task.state) or task.killing:
            return
        task.step_gen += 1
        task.killing = True
        if task.state == "TASK_STAGING":
            self.agent_update(
                task, "TASK_KILLED", "SOURCE_AGENT", "REASON_TASK_KILLED_DURING_LAUNCH"
            )
            return
        if fw.killing_state:
            self.agent_update(task, "TASK_KILLING", "SOURCE_EXECUTOR")
        self.k.after(self.k.config.kill_delay, "step", key, task.step_gen)

    def acknowledge(self, fw: Framework, ack: calls.Acknowledge) -> None:
        """An acknowledgement reaches the agent: the head of the task's stream goes."""
        agent = self.agents.get(ack.agent_id)
        task = self.tasks.get((fw.id, ack.task_id))
        if agent is None or not self.connected(agent) or task is None:
            return
        if task.agent_id != agent.id or not task.queue or task.queue[0].get("uuid") != ack.uuid:
            return  # not the head of the stream: ignored, as Mesos does
        head = task.queue.pop(0)
        self.master.acknowledged_update(ack.task_id, ack.uuid, head["state"])
        task.retry_gen += 1
        if protocol.is_terminal(head["state"]):
            self.tasks.pop(task.key)
            self.master.forget(task)
        elif task.queue:
            task.backoff = self.k.config.update_retry_initial
            self.forward_head(task)

    def remove_framework(self, framework_id: str) -> None:
        """The framework is gone: its tasks leave the agents."""
        for key in list(self.tasks.of_framework(framework_id)):
            self.tasks.pop(key)
        for key in [k for k in self.lost_launches if k[0] == framework_id]:
            del self.lost_launches[key]

    # ---------------------------------------------------------------------- update streams

    def agent_update(
        self,
        task: AgentTask,
        state: str,
        source: str,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """A state change on the agent, queued on its update stream (with a uuid)."""
        k = self.k
        self.tasks.set_state(task, state)
        status = protocol.task_status(
            task.task_id,
            state,
            source=source,
            reason=reason,
            message=message,
            agent_id=task.agent_id,
            executor_id=task.task_id,
            timestamp=k.timestamp(),
            uuid=k.update_uuid(),
        )
        task.queue.append(status)
        if len(task.queue) == 1:
            task.backoff = k.config.update_retry_initial
            self.forward_head(task)

    def ghost_update(
        self, fw: Framework, task_id: str, agent_id: str, state: str, message: str
    ) -> None:
        """An agent update for a task the agent never ran (a launch that got lost)."""
        task = AgentTask(fw.id, task_id, agent_id, Resources(), state=state)
        self.tasks.add(task)
        self.agent_update(task, state, "SOURCE_AGENT", "REASON_AGENT_RESTARTED", message)

    def forward_head(self, task: AgentTask) -> None:
        """Send the outstanding update (if the agent can reach the master) and arm a retry."""
        if not task.queue:
            return
        k = self.k
        task.retry_gen += 1
        k.after(task.backoff, "retry", task.key, task.retry_gen)
        task.backoff = min(task.backoff * 2, k.config.update_retry_max)
        if not self.connected(self.agents[task.agent_id]):
            return
        task.forwarded_state = task.queue[0]["state"]
        self.master.forward(task)

    # ------------------------------------------------------------------- agents' standing

    def mark_unreachable(self, agent: Agent) -> None:
        """The master's health checks of the agent failed: its tasks become unreachable
        (TASK_UNREACHABLE, or TASK_LOST for frameworks that are not partition-aware, both
        with the time), kept apart from the tasks reconciliation answers from; then every
        connected framework hears of the agent's loss (a FAILURE event)."""
        master = self.master
        if agent.status != REGISTERED or agent.link_up or not master.up:
            return
        agent.status = UNREACHABLE
        agent.unreachable_time = self.k.timestamp()
        agent.pending_kills.clear()  # the master forgets the agent's record with them
        self.allocator.drop(None, agent_id=agent.id)
        for task in master.tasks_on(agent):
            fw = master.frameworks[task.framework_id]
            state = "TASK_UNREACHABLE" if fw.partition_aware else "TASK_LOST"
            master.tasks.pop(task.key)
            task.state = state
            task.unreachable_time = agent.unreachable_time
            master.unreachable.add(task)
            master.master_update(
                fw.id,
                task.task_id,
                state,
                "REASON_AGENT_REMOVED",
                "health check timed out",
                agent_id=agent.id,
                unreachable_time=agent.unreachable_time,
            )
        master.notify_agent_lost(agent)

    def reregister(self, agent: Agent) -> None:
        """The agent (re-)registers: the master learns its tasks, its updates flow again.
        An agent the master had marked unreachable (not one recovering from a failover):
        each of its tasks' newest state goes to the task's framework, whatever its kind."""
        master = self.master
        was = agent.status
        agent.status = REGISTERED
        agent.unreachable_time = None
        for key in list(master.unreachable.on_agent(agent.id)):
            master.unreachable.pop(key)
        tasks = self.tasks_on(agent)
        for task in tasks:
            master.learn(task)
            if was == UNREACHABLE and task.key in master.tasks:
                master.master_update(
                    task.framework_id,
                    task.task_id,
                    task.state,
                    "REASON_AGENT_REREGISTERED",
                    "Unreachable agent re-reregistered",  # sic, Mesos's own words
                    agent_id=agent.id,
                )
        for task in tasks:
            if task.queue:
                self.forward_head(task)
        self.allocator.allocate()

    def reconnect(self, agent: Agent) -> None:
        """A registered agent whose link healed before the master marked it unreachable:
        the master sends the KILLs it held back, its updates flow again."""
        for task in self.tasks_on(agent):
            if task.queue:
                self.forward_head(task)
        kills, agent.pending_kills = agent.pending_kills, []
        for key in kills:
            fw = self.master.frameworks.get(key[0])
            task = self.tasks.get(key)
            alive = task is not None and not protocol.is_terminal(task.state)
            if fw is not None and not fw.removed and (alive or key in self.lost_launches):
                self.kill(fw, key[1], agent)

    def remove(self, agent: Agent) -> None:
        """The operator removes the agent (Mesos's 'mark gone'). A registered agent's tasks
        are gone (TASK_GONE_BY_OPERATOR, or TASK_LOST for frameworks that are not
        partition-aware) and frameworks hear of its loss; an unreachable agent's
        unreachable tasks get the same updates, without a FAILURE; an agent still
        recovering from a failover, of which the master knows no task, gets nothing."""
        master = self.master
        was = agent.status
        agent.status = REMOVED
        agent.link_up = False
        agent.pending_kills.clear()
        self.allocator.drop(None, agent_id=agent.id)
        table = master.unreachable if was == UNREACHABLE else master.tasks
        for task in table.sorted_on_agent(agent.id):
            fw = master.frameworks[task.framework_id]
            table.pop(task.key)
            pa = fw.partition_aware
            master.master_update(
                fw.id,
                task.task_id,
                "TASK_GONE_BY_OPERATOR" if pa else "TASK_LOST",
                "REASON_AGENT_REMOVED_BY_OPERATOR" if pa else "REASON_AGENT_REMOVED",
                "Agent has been marked gone",
                agent_id=agent.id,
            )
        for task in self.tasks_on(agent):
            self.tasks.pop(task.key)
        for key in [k for k, a in self.lost_launches.items() if a == agent.id]:
            del self.lost_launches[key]
        if was == REGISTERED:
            master.notify_agent_lost(agent)

    # ------------------------------------------------------------------------------ timers

    def t_step(self, key: TaskKey, gen: int) -> None:
        """The task moves on by itself: STAGING -> STARTING -> RUNNING -> its outcome, or
        a kill completes."""
        task = self.tasks.get(key)
        if task is None or task.step_gen != gen or protocol.is_terminal(task.state):
            return
        config = self.k.config
        if task.killing:
            self.agent_update(task, "TASK_KILLED", "SOURCE_EXECUTOR")
        elif task.state == "TASK_STAGING":
            self.agent_update(task, "TASK_STARTING", "SOURCE_EXECUTOR")
            self.k.after(config.running_delay, "step", key, gen)
        elif task.state == "TASK_STARTING":
            self.agent_update(task, "TASK_RUNNING", "SOURCE_EXECUTOR")
            if task.duration is not None:
                self.k.after(task.duration, "step", key, gen)
        elif task.state == "TASK_RUNNING":
            failed = task.outcome == "TASK_FAILED"
            self.agent_update(
                task,
                task.outcome,
                "SOURCE_EXECUTOR",
                "REASON_COMMAND_EXECUTOR_FAILED" if failed else None,
                "Command exited with status 1" if failed else "Command exited with status 0",
            )

    def t_retry(self, key: TaskKey, gen: int) -> None:
        task = self.tasks.get(key)
        if task is not None and task.retry_gen == gen:
            self.forward_head(task)

    def t_launch_dropped(self, key: TaskKey) -> None:
        agent_id = self.lost_launches.pop(key, None)
        fw = self.master.frameworks.get(key[0])
        if agent_id is None or fw is None or fw.removed:
            return
        if self.agents[agent_id].status == REMOVED:
            return
        state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
        self.ghost_update(fw, key[1], agent_id, state, "Task launch was lost before the agent")

    def t_detect_partition(self, agent_id: str, gen: int) -> None:
        agent = self.agents[agent_id]
        if agent.link_gen == gen:
            self.mark_unreachable(agent)

    def t_agent_reregister(self, agent_id: str, epoch: int) -> None:
        agent = self.agents[agent_id]
        # UNREACHABLE too: the re-registration timeout passed first, or the agent was
        # unreachable before the failover; an agent that can reach the master registers.
        reregisters = agent.status in (RECOVERED, UNREACHABLE)
        if epoch == self.master.epoch and reregisters and self.reachable(agent):
            self.reregister(agent)

    def t_reregister_timeout(self, epoch: int) -> None:
        """Agents that did not re-register within the timeout after a failover are marked
        unreachable (the master knows none of their tasks) and frameworks hear of each."""
        if epoch != self.master.epoch:
            return
        for agent in self.agents.values():
            if agent.status == RECOVERED:
                agent.status = UNREACHABLE
                agent.unreachable_time = self.k.timestamp()
                self.master.notify_agent_lost(agent)

"""The census of the cluster's tasks, kept as they change rather than counted when asked:
the resources each agent's live tasks hold, and every task either side knows (the master's
view or the agents' truth) in the order it was first heard of.

A task holds resources while it is live: the agent's record decides when the agent has one
(a task the agent reports terminal frees its resources at once, acknowledged or not), the
master's record otherwise (a launch the agent never received still holds its offer's share),
be it among the tasks it answers for or among those on unreachable agents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tools.sim_master import protocol
from tools.sim_master.records import TaskKey
from tools.sim_master.resources import Resources

_NOTHING = Resources()


class Census:
    """Call `changed(key)` after any change to a task's record on either side."""

    def __init__(self) -> None:
        self.agent_tasks: Mapping[TaskKey, Any] = {}
        self.master_tasks: Mapping[TaskKey, Any] = {}
        self.unreachable_tasks: Mapping[TaskKey, Any] = {}
        # Every key either table holds; a dict keeps the order keys were first added.
        self.keys: dict[TaskKey, None] = {}
        self._held: dict[TaskKey, tuple[str, Resources]] = {}  # live task -> (agent, what)
        self._used: dict[str, Resources] = {}  # agent id -> what its live tasks hold

    def watch(
        self,
        *,
        agent_tasks: Mapping[TaskKey, Any],
        master_tasks: Mapping[TaskKey, Any],
        unreachable_tasks: Mapping[TaskKey, Any],
    ) -> None:
        self.agent_tasks, self.master_tasks = agent_tasks, master_tasks
        self.unreachable_tasks = unreachable_tasks

    def used(self, agent_id: str) -> Resources:
        """What the agent's live tasks hold."""
        return self._used.get(agent_id, _NOTHING)

    def changed(self, key: TaskKey) -> None:
        task = self.agent_tasks.get(key)
        if task is None:
            task = self.master_tasks.get(key)
        if task is None:
            task = self.unreachable_tasks.get(key)
        if task is None:
            self.keys.pop(key, None)
        elif key not in self.keys:
            self.keys[key] = None
        now = None
        if task is not None and not protocol.is_terminal(task.state):
            now = (task.agent_id, task.resources)
        before = self._held.get(key)
        if before == now:
            return
        used = self._used
        if before is not None:
            agent_id, resources = before
            used[agent_id] = used[agent_id] - resources
            del self._held[key]
        if now is not None:
            agent_id, resources = now
            used[agent_id] = used.get(agent_id, _NOTHING) + resources
            self._held[key] = now

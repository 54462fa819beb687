"""A table of tasks with the indexes the model's hot paths need, kept as tasks change.

The master's view and the agents' truth are each one `TaskTable`: read it as a mapping
(key -> task); change it only with `add`, `pop`, `set_state` and `clear`, so that the
indexes (by agent, by framework, counts by state) stay true and `on_change` hears of every
change (the census that keeps each agent's resources in use).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, Protocol, TypeVar

from tools.sim_master.records import TaskKey


class _Task(Protocol):
    framework_id: str
    agent_id: str
    state: str

    @property
    def key(self) -> TaskKey: ...


T = TypeVar("T", bound=_Task)


class TaskTable(Mapping[TaskKey, T], Generic[T]):
    """Tasks by (framework id, task id), indexed by agent and by framework."""

    def __init__(self, on_change: Callable[[TaskKey], None]) -> None:
        self._tasks: dict[TaskKey, T] = {}
        self._by_agent: dict[str, dict[TaskKey, T]] = {}
        self._by_framework: dict[str, dict[TaskKey, T]] = {}
        self.states: Counter[str] = Counter()  # state -> how many tasks are in it
        self._on_change = on_change

    # -- the mapping
    def __getitem__(self, key: TaskKey) -> T:
        return self._tasks[key]

    def __iter__(self) -> Iterator[TaskKey]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def get(self, key: TaskKey, default: T | None = None) -> T | None:  # type: ignore[override]
        return self._tasks.get(key, default)

    # -- the indexes
    def on_agent(self, agent_id: str) -> Mapping[TaskKey, T]:
        """The tasks on one agent (in the order they came)."""
        return self._by_agent.get(agent_id, {})

    def of_framework(self, framework_id: str) -> Mapping[TaskKey, T]:
        """One framework's tasks (in the order they came)."""
        return self._by_framework.get(framework_id, {})

    def sorted_on_agent(self, agent_id: str) -> list[T]:
        """The tasks on one agent in key order: the order every pass over them keeps."""
        tasks = self._by_agent.get(agent_id)
        return [t for _, t in sorted(tasks.items())] if tasks else []

    # -- changes
    def add(self, task: T) -> None:
        key = task.key
        if key in self._tasks:
            self._unlink(self._tasks[key])
        self._tasks[key] = task
        self._by_agent.setdefault(task.agent_id, {})[key] = task
        self._by_framework.setdefault(task.framework_id, {})[key] = task
        self.states[task.state] += 1
        self._on_change(key)

    def pop(self, key: TaskKey) -> T | None:
        task = self._tasks.pop(key, None)
        if task is not None:
            self._unlink(task)
            self._on_change(key)
        return task

    def set_state(self, task: T, state: str) -> None:
        """The task moves to `state` (a task not in the table just takes the state)."""
        if self._tasks.get(task.key) is not task:
            task.state = state
            return
        if state == task.state:
            return
        self._count(task.state, -1)
        self.states[state] += 1
        task.state = state
        self._on_change(task.key)

    def clear(self) -> None:
        keys = list(self._tasks)
        self._tasks.clear()
        self._by_agent.clear()
        self._by_framework.clear()
        self.states.clear()
        for key in keys:
            self._on_change(key)

    def _unlink(self, task: T) -> None:
        key = task.key
        for index, name in (
            (self._by_agent, task.agent_id),
            (self._by_framework, task.framework_id),
        ):
            group = index[name]
            del group[key]
            if not group:
                del index[name]
        self._count(task.state, -1)

    def _count(self, state: str, delta: int) -> None:
        left = self.states[state] + delta
        if left:
            self.states[state] = left
        else:
            del self.states[state]

"""Helpers for the operator tests: a running scheduler's interface over a real Ledger (no
Mesos), and a job of running tasks written with the Ledger API."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

from builders import mesos_uuid, task_status

from engine.ledger import Ledger
from engine.mesos.core import JobSpec
from tools.operator.handle import Facts

T0 = 1714532400.0  # 2024-05-01T03:00:00Z
_UUIDS = itertools.count(1)  # every update a new uuid, whichever Job wrote it


class LedgerScheduler:
    """tools.operator.handle.Scheduler over a Ledger and a clock the test moves: what the
    runtime provides, without Mesos (the tests' own side of the interface)."""

    def __init__(self, ledger: Ledger, job: JobSpec | None, *, now: float = T0) -> None:
        self._ledger = ledger
        self._job = job
        self.clock = now
        self.subscribed = True
        self.last_heartbeat: float | None = now

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    def facts(self) -> Facts:
        return Facts(
            subscribed=self.subscribed,
            last_heartbeat=self.last_heartbeat,
            heartbeat_interval=15.0,
            watchdog=45.0,
            master="127.0.0.1:5050",
            master_given="127.0.0.1:5050",
            framework_name="taskledger",
            driver_starts=1,
            callback_errors=0,
            last_error=None,
        )

    def job(self) -> JobSpec | None:
        return self._job

    def set_instances(self, instances: int) -> None:
        assert self._job is not None
        self._job = replace(self._job, instances=instances)

    def now(self) -> float:
        return self.clock


class Job:
    """A job's tasks written through the Ledger API: created, assigned, running."""

    def __init__(self, ledger: Ledger, name: str = "web") -> None:
        self.ledger, self.name = ledger, name

    def update(self, task: str, state: str, t: float, agent: str = "agent-1") -> Any:
        status = task_status(
            task,
            state,
            agent=agent,
            uuid=mesos_uuid(next(_UUIDS)),
            source="SOURCE_EXECUTOR",
            timestamp=t,
        )
        return self.ledger.status_update(status, time=t)

    def start(self, task: str, instance: int, t: float, agent: str = "agent-1") -> str:
        self.ledger.task_created(task, job=self.name, instance=instance, time=t)
        self.ledger.task_assigned(task, agent_id=agent, time=t)
        self.update(task, "TASK_RUNNING", t, agent)
        return task

    def run(self, instances: int, t: float = T0) -> list[str]:
        return [
            self.start(f"{self.name}/{i}/g{i}", i, t, agent=f"agent-{i % 2}")
            for i in range(instances)
        ]


def sent(commands: list[Any]):
    """A dispatcher `send` that records what it is handed (a Mesos that takes everything)."""

    def send(command: Any) -> None:
        commands.append(command)

    return send

"""What the operator API needs from a running scheduler, and where it gets it.

`Scheduler` is the whole of it: the Ledger (to read the log and append orders), a few health
facts, the job, and a clock. `RuntimeScheduler` provides it over the runtime of
`taskledger run` (engine/mesos/runtime.py); nothing else in tools/operator knows the
runtime's insides, so a change there is a change here only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from engine.ledger import Ledger
from engine.mesos.core import JobSpec


@dataclass(frozen=True)
class Facts:
    """The scheduler's connection to Mesos, as of the moment asked."""

    subscribed: bool
    last_heartbeat: float | None  # when the master last showed it is there (or we subscribed)
    heartbeat_interval: float  # what the master promised
    watchdog: float  # this much silence restarts the driver
    master: str | None  # HOST:PORT the driver talks to now (None between drivers)
    master_given: str  # --master as given (HOST:PORT or zk://...)
    framework_name: str
    driver_starts: int
    callback_errors: int
    last_error: str | None


class Scheduler(Protocol):
    """A running scheduler, as the operator API sees it."""

    @property
    def ledger(self) -> Ledger: ...

    def facts(self) -> Facts: ...

    def job(self) -> JobSpec | None: ...

    def set_instances(self, instances: int) -> None:
        """Keep this many instances of the job from now on (creating the missing ones is
        the scheduler's; killing the ones above is the order's)."""
        ...

    def now(self) -> float: ...


class RuntimeScheduler:
    """`Scheduler` over engine.mesos.runtime.Runtime (the runtime of `taskledger run`)."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime

    @property
    def ledger(self) -> Ledger:
        ledger = self._runtime.ledger
        if ledger is None:
            raise RuntimeError("the scheduler's log is not open")
        return ledger

    def facts(self) -> Facts:
        runtime = self._runtime
        config = runtime.config
        core = runtime.core
        driver = runtime.driver
        stats = None if core is None else core.stats
        return Facts(
            subscribed=bool(core is not None and core.subscribed),
            last_heartbeat=None if stats is None else stats.last_heartbeat,
            heartbeat_interval=config.heartbeat_interval,
            watchdog=config.watchdog_intervals * config.heartbeat_interval,
            master=None if driver is None else getattr(driver, "master", None),
            master_given=config.master,
            framework_name=config.framework_name,
            driver_starts=runtime.stats.driver_starts,
            callback_errors=0 if stats is None else stats.callback_errors,
            last_error=None if stats is None else stats.last_error,
        )

    def job(self) -> JobSpec | None:
        core = self._runtime.core
        return None if core is None else core.job

    def set_instances(self, instances: int) -> None:
        core = self._runtime.core
        if core is None or core.job is None:
            raise RuntimeError("the scheduler runs no job")
        # The core reads its job on every pass (ensure_instances): the next pass creates the
        # instances that never had a task.
        core.job = replace(core.job, instances=instances)

    def now(self) -> float:
        return self._runtime.clock()

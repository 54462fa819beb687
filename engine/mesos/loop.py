"""One pass of the scheduler's loop, with the clock and the driver injected.

`SchedulerLoop.step()` is what the runtime does every tick: supervise the driver, let the
saga decide, dispatch the outbox, answer offers left unanswered, keep the job's
instances, tell the observer. The runtime (engine/mesos/runtime.py) calls it with the wall
clock and a supervisor of the pymesos driver; the deterministic simulation
(tools/deterministic/world.py) calls the same code with its virtual clock, its stand-in for
pymesos's transport and a `pump` that delivers the stream's events where pymesos's IO thread
would have, so the simulation checks the loop that runs in production.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.ledger import Ledger
from engine.mesos.core import SchedulerCore

log = logging.getLogger("taskledger.runtime")


class Observer(Protocol):
    """Who is told what happens (tools.metrics.Metrics is one): as the Ledger's observer,
    every append, every commit and each committed event in order (on the committing
    thread); from the loop, about once a second, the ledger and the updates in flight for
    the gauges."""

    def observe_append(self, seconds: float, events: Any) -> None: ...

    def observe_commit(self, batch_size: int) -> None: ...

    def observe(self, event: Any) -> None: ...

    def update_from(self, ledger: Any, *, in_flight: int | None = None) -> None: ...


GAUGES_EVERY = 1.0  # seconds between two updates of the observer's gauges (a 100k-task scan)


def silent(now: float, last_heartbeat: float | None, limit: float) -> bool:
    """Whether a stream last heard from at ``last_heartbeat`` has been silent for longer than
    ``limit`` seconds at ``now`` (the heartbeat watchdog's test)."""
    return last_heartbeat is not None and now - last_heartbeat > limit


def _nothing() -> None:
    pass


@dataclass
class LoopStats:
    ticks: int = 0
    dispatch_errors: int = 0
    last_dispatch: Any = None


class SchedulerLoop:
    """The scheduler's work at each tick (see the module docstring).

    ``supervise(now)`` keeps a driver subscribed (starts, restarts on abort or silence);
    ``pump()`` delivers the events that arrived (a no-op under pymesos, whose IO thread
    delivers them itself); ``after_tick(now)`` runs right after the saga decided (the
    simulation's sabotages use it). A dispatch that raises is logged and counted, never
    fatal: the commands stay pending and the next pass tries again; with
    ``tolerate_dispatch_errors=False`` it raises instead (the simulation, where any such
    error is a bug to report).
    """

    def __init__(
        self,
        ledger: Ledger,
        core: SchedulerCore,
        dispatcher: Any,
        *,
        clock: Callable[[], float],
        supervise: Callable[[float], None],
        pump: Callable[[], None] = _nothing,
        after_tick: Callable[[float], None] | None = None,
        observer: Observer | None = None,
        tolerate_dispatch_errors: bool = True,
    ) -> None:
        self.ledger, self.core, self.dispatcher = ledger, core, dispatcher
        self.clock = clock
        self.supervise = supervise
        self.pump = pump
        self.after_tick = after_tick
        self.stats = LoopStats()
        self.observer = observer
        self.tolerate_dispatch_errors = tolerate_dispatch_errors
        self._gauges_at: float | None = None
        if observer is not None:
            ledger.observer = observer  # it counts what happens from now on

    def step(self) -> None:
        """One pass. The clock is read for each part: a slow call (the driver's) or a long
        decision moves it on, and what follows acts at the time it actually runs."""
        ledger, core, clock = self.ledger, self.core, self.clock
        self.stats.ticks += 1
        # Events first: a heartbeat that came while the clock moved is seen before the
        # watchdog looks (pymesos delivers it as it arrives).
        self.pump()
        self.supervise(clock())
        self.pump()
        ledger.tick(now=clock())
        if self.after_tick is not None:
            self.after_tick(clock())
        if core.subscribed:
            try:
                self.stats.last_dispatch = self.dispatcher.dispatch(now=clock())
            except Exception:
                if not self.tolerate_dispatch_errors:
                    raise
                self.stats.dispatch_errors += 1
                log.exception("dispatch failed")
            core.decline_unanswered()
        self.pump()
        core.ensure_instances()
        self._gauges(clock())

    def _gauges(self, now: float) -> None:
        observer = self.observer
        if observer is None:
            return
        if self._gauges_at is not None and now - self._gauges_at < GAUGES_EVERY:
            return
        self._gauges_at = now
        with self.ledger.reading():  # the gauges walk whole views: none may change meanwhile
            observer.update_from(self.ledger, in_flight=self.core.in_flight.count)

"""The runtime: the embedded scheduler as a long-running loop (the imperative shell).

It owns the clock and the pymesos driver. Every `tick` seconds it runs one pass of the
scheduler's loop (engine/mesos/loop.py: the saga's timers, the outbox's dispatch, the job's
instances, the observer) with the wall clock and a supervisor of the driver: a driver that
aborted, or whose stream went silent for longer than the heartbeat watchdog allows, is
stopped (failover: never a TEARDOWN) and a new one subscribes again with the framework id
kept in the log. The observer (tools.metrics.Metrics for `taskledger run --metrics-port`) is
handed in by the caller: the engine does not know how metrics are served.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eventsourcing.persistence import PersistenceError

from engine.clock_watch import DEFAULT_THRESHOLD, ClockWatch
from engine.gate import Gate
from engine.ledger import Ledger
from engine.mesos.core import MAX_LAUNCHING, JobSpec, SchedulerCore
from engine.mesos.driver import PymesosDriver
from engine.mesos.inflight import DEFAULT_LIMIT
from engine.mesos.loop import Observer, SchedulerLoop, silent
from engine.mesos.sender import MasterConnection, ThreadedSender
from engine.mesos.snapshotter import Snapshotter
from engine.mesos.tls import MasterTLS
from engine.reconciliation import check_kind
from engine.saga import SagaConfig


def saga_config(*, time_scale: float = 1.0, dry_run: bool = False) -> SagaConfig:
    """The saga's configuration for a runtime: every duration divided by ``time_scale``
    (the demo and the tests compress hours into seconds), the dispatcher's retry backoff
    after a failed send too (the master's answers come that much sooner)."""
    config = SagaConfig(dry_run=dry_run)
    if time_scale == 1.0:
        return config
    dispatch = config.dispatch
    return replace(
        config.compressed(time_scale),
        dispatch=replace(
            dispatch,
            retry_base=dispatch.retry_base / time_scale,
            retry_cap=dispatch.retry_cap / time_scale,
        ),
    )


log = logging.getLogger("taskledger.runtime")


def standing_orders(
    ledger: Ledger, saga_options: dict[str, Any], job: JobSpec | None
) -> tuple[dict[str, Any], JobSpec | None]:
    """The saga's options and the job as the log's operator orders leave them: the newest
    `ctl dry-run` (DryRunSet) and `ctl scale` of this job (JobScaled) outlive a restart,
    over --dry-run and --instances (they were given later, and a crash must not undo a dry
    run an operator turned on during an incident). Each overridden setting is logged."""
    saga = ledger.saga
    ordered = saga.dry_run_order
    if ordered is not None and bool(saga_options.get("dry_run", False)) != ordered:
        log.warning(
            "dry run is %s, as the log's newest operator order says (not as the command "
            "line); `taskledger ctl dry-run %s` changes it",
            "on" if ordered else "off",
            "off" if ordered else "on",
        )
        saga_options = {**saga_options, "dry_run": ordered}
    if job is not None:
        instances = saga.scaled.get(job.name)
        if instances is not None and instances != job.instances:
            log.warning(
                "job %s keeps %d instance(s), as the log's newest `ctl scale` says (not "
                "--instances %d); `taskledger ctl scale` changes it",
                job.name,
                instances,
                job.instances,
            )
            job = replace(job, instances=instances)
    return saga_options, job


@dataclass
class RuntimeConfig:
    master: str
    log_path: str
    job: JobSpec | None = None
    framework_name: str = "taskledger"
    user: str = "root"
    # How long the master keeps our tasks after we disconnect. pymesos's silent default is
    # 100 s; a scheduler restart must fit well inside it.
    failover_timeout: float = 7 * 24 * 3600.0
    http_timeout: float = 30.0
    tick: float = 0.25
    # Silence longer than this many heartbeat intervals means the stream is dead.
    watchdog_intervals: float = 3.0
    heartbeat_interval: float = 15.0
    durable: bool = True
    saga_options: dict[str, Any] = field(default_factory=dict)
    # On a clean stop, write a digest of the live state here (for audits: it must equal
    # the digest of a replay of the log from scratch).
    digest_path: str | None = None
    # A snapshot every this many events (0: never), the newest `snapshots_kept` kept: a
    # restart then folds the snapshot and a short tail instead of the whole log.
    snapshot_every: int = 100_000
    snapshots_kept: int = 2
    # A disagreement of the wall and monotonic clocks larger than this between two ticks is
    # a step of the wall clock, recorded as a ClockStepped event (engine/clock_watch.py).
    clock_step_threshold: float = DEFAULT_THRESHOLD
    # More FrameworkInfo fields (role, principal, webui_url) and the HTTP basic credential
    # (principal, secret) pymesos sends with every call (`taskledger run`'s options).
    framework_fields: dict[str, Any] = field(default_factory=dict)
    credential: tuple[str, str] | None = field(default=None, repr=False)
    # Every connection to the master over TLS with these settings (None: plain HTTP).
    tls: MasterTLS | None = field(default=None, repr=False)
    # At most this many status updates between arrival and acknowledgement; past it the
    # event stream is read only as fast as they are committed and acknowledged.
    max_in_flight: int = DEFAULT_LIMIT
    # At most this many of the job's tasks launching (ASSIGNED or STARTING) at once: a large
    # job launches in waves the cluster runs before the saga's transient timeout.
    max_launching: int = MAX_LAUNCHING
    # A replicated runtime (engine/replication.py: PostgreSQL the log of record, log_path
    # its local mirror, a ZooKeeper election): it follows until elected, then leads until
    # stopped or deposed. None: the single embedded LMDB log.
    replication: Any = None


@dataclass
class RuntimeStats:
    ticks: int = 0  # passes of the loop (its own stats: Runtime.loop.stats)
    driver_starts: int = 0
    watchdog_restarts: int = 0
    abort_restarts: int = 0


def _settle_the_heap() -> None:
    """After the log is loaded, and after each snapshot: the state (a kilobyte or so a
    task, millions of objects at 100k tasks) stays for the process's life. The cyclic
    collector would scan all of it every few hundred thousand allocations, which a burst of
    updates makes in a second; frozen, it is left out of every collection, and young objects
    are collected less often (what a burst allocates is freed by reference counting). A
    snapshot's fold is a whole second state in cycles: collected here, before the freeze,
    so each collection scans only what came since the previous one."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


GC_YOUNG_THRESHOLD = 50_000  # allocations between young collections (Python's default: 700)


class Runtime:
    """Runs the scheduler until ``stop()``; safe to stop from a signal handler.

    ``clock`` (the wall clock: event times, the saga's ``now``) and ``monotonic`` are read
    as a pair each tick to see the wall clock step; they must run at the same rate (a
    scaled or virtual clock needs its own monotonic, or None: steps go unrecorded).
    ``observer`` (e.g. tools.metrics.Metrics) is told of every append, commit and new event
    of the log while the runtime runs, and of the ledger once per tick."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] | None = time.monotonic,
        services: Sequence[Any] = (),
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        # Started with this runtime once it is ready, stopped before its log closes: each
        # has start(runtime) and stop() (the operator API, tools/operator).
        self.services = list(services)
        self.clock = clock
        self.monotonic = monotonic
        self.clock_watch = ClockWatch(config.clock_step_threshold)
        self.observer = observer
        self.stats = RuntimeStats()
        self._stop = threading.Event()
        self.ledger: Ledger | None = None
        self.core: SchedulerCore | None = None
        self.driver: Any = None
        self.loop: SchedulerLoop | None = None
        self.sender: ThreadedSender | None = None
        self.ready = threading.Event()
        self.snapshotter: Snapshotter | None = None
        self._requested: list[str] = []
        # Whether this replica may act (append, call Mesos): always open without
        # replication; a replicated one opens it while it leads (engine/gate.py).
        self.gate = Gate()
        if config.replication is None:
            self.gate.open()
        self.replica: Any = None
        self.status = 0  # run()'s exit status: DEPOSED_EXIT once deposed

    def stop(self) -> None:
        self._stop.set()

    def _deposed(self, reason: str) -> None:
        """The replica learned it does not lead any more: the gate is shut; stop."""
        from engine.replication import DEPOSED_EXIT

        self.status = DEPOSED_EXIT
        self._stop.set()

    def _follow_until_elected(self) -> bool:
        """Follows the replicated log until elected, then takes it over; False if stopped
        (or deposed) first."""
        from engine.replication import Replica

        assert self.ledger is not None
        self.replica = Replica(
            self.config.replication,
            self.ledger,
            gate=self.gate,
            on_deposed=self._deposed,
            observer=self.observer,
            clock=self.clock,
        ).start()
        epoch = self.replica.wait_elected(self._stop)
        if epoch is None:
            return False
        try:
            self.replica.lead(epoch)
        except Exception:
            if self.gate.shut:  # deposed while taking over: the reason is logged
                self._deposed(self.gate.reason or "")  # the status, if not told yet
                return False
            raise
        return True

    def request_reconciliation(self, kind: str) -> None:
        """An operator asks for a reconciliation run of ``kind`` ("explicit" or "implicit")
        now; the loop starts it at its next tick (trigger "operator"). Safe from a signal
        handler."""
        self._requested.append(check_kind(kind))

    # -- driver supervision ------------------------------------------------------------------
    def _framework(self) -> dict[str, Any]:
        assert self.core is not None
        info = self.core.framework_info(
            name=self.config.framework_name,
            user=self.config.user,
            failover_timeout=self.config.failover_timeout,
        )
        return {**info, **self.config.framework_fields}

    def _start_driver(self) -> None:
        from engine.mesos.scheduler import make_driver

        assert self.core is not None
        self.driver = make_driver(
            self.core,
            self.config.master,
            self._framework(),
            http_timeout=self.config.http_timeout,
            credential=self.config.credential,
            tls=self.config.tls,
        )
        self.core.stats.last_heartbeat = self.clock()
        self.driver.start()
        self.stats.driver_starts += 1

    def _stop_driver(self) -> None:
        driver, self.driver = self.driver, None
        if driver is not None:
            driver.stop(failover=True)
            driver.join()

    def _supervise(self, now: float) -> None:
        """The loop's supervisor of the pymesos driver: starts one, and restarts one that
        aborted or whose stream went silent."""
        assert self.core is not None
        if self.gate.reason is not None:
            return  # a paused leader neither appends nor calls Mesos
        # First thing each pass, with the clocks: a step is recorded before the saga or
        # the watchdog act on the new time.
        self._watch_clock()
        driver = self.driver
        if driver is None:
            self._start_driver()
            return
        if driver.aborted:
            log.warning("driver aborted; starting a new one")
            self.stats.abort_restarts += 1
            self._restart()
            return
        limit = self.config.watchdog_intervals * self.config.heartbeat_interval
        last = self.core.stats.last_heard
        # Silence the scheduler or the master's work on our calls explains is not a dead stream.
        busy = self.core.holding_the_stream or (
            self.sender is not None and self.sender.awaiting_master()
        )
        if silent(now, last, limit) and not busy:
            log.warning("no heartbeat for %.1f s; restarting the driver", now - last)
            self.stats.watchdog_restarts += 1
            self._restart()

    def _restart(self) -> None:
        assert self.core is not None
        if self.core.subscribed:
            self.core.disconnected()
        self._stop_driver()
        self._start_driver()

    def _watch_clock(self) -> None:
        """Records a step of the wall clock since the previous tick (a ClockStepped event),
        before anything acts on the new time."""
        if self.monotonic is None or self.ledger is None:
            return
        step = self.clock_watch.observe(self.clock(), self.monotonic())
        if step is not None:
            log.warning(
                "the wall clock stepped by %+.3f s (from %.3f to %.3f in %.3f s)",
                step.step,
                step.previous,
                step.time,
                step.elapsed,
            )
            self.ledger.clock_stepped(time=step.time, previous=step.previous, elapsed=step.elapsed)

    def _close_replica(self) -> None:
        if self.replica is not None:
            try:
                self.replica.close()
            except Exception:
                log.exception("closing the replica failed")

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Runs until stop(); returns an exit status. Nothing is acknowledged to the master
        that is not durable, also while stopping (appends finish before the driver stops)."""
        config = self.config
        self.ledger = Ledger.open(config.log_path, durable=config.durable, clock=self.clock)
        _settle_the_heap()
        if config.replication is not None:
            try:
                elected = self._follow_until_elected()
            except BaseException:
                self._close_replica()
                self.ledger.close()
                raise
            if not elected:
                self._close_replica()
                self.ledger.close(flush=False)
                gc.unfreeze()
                return self.status
        try:
            saga_options, job = standing_orders(self.ledger, config.saga_options, config.job)
            self.ledger.saga_config = saga_config(**saga_options)
            self.core = SchedulerCore(
                self.ledger,
                job,
                clock=self.clock,
                max_in_flight=config.max_in_flight,
                max_launching=config.max_launching,
            )
            self.sender = ThreadedSender(
                lambda: MasterConnection(
                    lambda: self.driver,
                    timeout=config.http_timeout,
                    credential=config.credential,
                    gate=self.gate,
                    tls=config.tls,
                )
            )
            self.core.driver = PymesosDriver(self.sender)
            self.core.ensure_instances()
            self.loop = SchedulerLoop(
                self.ledger,
                self.core,
                self.ledger.dispatcher(self.core.send_command, asynchronous=True),
                clock=self.clock,
                supervise=self._supervise,
                observer=self.observer,
            )
            if config.snapshot_every:
                self.snapshotter = Snapshotter(
                    self.ledger,
                    every=config.snapshot_every,
                    keep=config.snapshots_kept,
                    after=_settle_the_heap,
                ).start()
            self._start_driver()
            self.ready.set()
            for service in self.services:  # operator API (tools/operator)
                service.start(self)
            pause = config.tick
            while not self._stop.wait(pause):
                if self.gate.reason is not None:
                    continue  # paused (the ZooKeeper connection is suspended): no action
                started = time.monotonic()
                try:
                    while self._requested:
                        self.ledger.reconcile(
                            self._requested.pop(0), now=self.clock(), trigger="operator"
                        )
                    self.loop.step()
                except PersistenceError:
                    if self.gate.shut:
                        # Deposed while appending: stop (the reason is logged). The replica
                        # shuts the gate before it tells _deposed, from another thread:
                        # the status is set here too, or this could return 0 first.
                        self._deposed(self.gate.reason or "")
                        break
                    raise
                self.stats.ticks += 1
                # A pass that took long (the saga's decisions over 100k tasks) is not run again
                # at once: the loop then holds the interpreter at most about half the time,
                # and the stream, the commits and the sender keep the rest.
                pause = max(config.tick, time.monotonic() - started)
            return self.status
        finally:
            for service in reversed(self.services):  # operator API: before the log closes
                service.stop()
            self._stop_driver()
            # No update arrives any more: those in flight are committed, their
            # acknowledgements and the commands handed over are sent, and what the sender
            # reports is recorded, before the log closes.
            self.ledger.flush()
            if self.sender is not None:
                self.sender.stop()
            self.ledger.flush()
            if self.snapshotter is not None:
                self.snapshotter.stop()  # before the Ledger closes under it
            if config.digest_path:
                with open(config.digest_path, "w") as f:
                    f.write(self.ledger.digest() + "\n")
            self._close_replica()  # after the last append: a standby takes over at once
            self.ledger.close()
            gc.unfreeze()  # a runtime started again in this process loads a new state

"""One seed of the simulation: the cluster model, the scheduler process and the virtual clock.

`simulate_seed(seed, steps)` runs `steps` steps with faults, then a final phase (every fault
cleared, every partition healed, the scheduler up) until the job has converged or a bound of
virtual time has passed, and returns an `Outcome`: passed, or the invariant that broke, at
which step, and the command that replays it.

A step: advance the virtual clock (a draw from the seed), maybe inject a fault, fire the
model's due timers, then one pass of the runtime's own loop (engine/mesos/loop.py
`SchedulerLoop.step`, on the virtual clock): supervise the connection (subscribe, the
heartbeat watchdog), deliver the stream's events (each a pymesos callback into
SchedulerCore), let the saga decide (`Ledger.tick`), dispatch the outbox, keep the job's
instances; then the checks.

The production pipeline runs on three threads: pymesos's IO thread hands updates to the
group commit, the commit thread writes them and hands their acknowledgements to the sender,
the sender's lanes send calls. Here the Ledger's commits wait for the world
(`background_commits=False`) and the calls wait on a `SteppedSender`; wherever the stream is
delivered, the seed picks which of the three moves next (an event, a commit, a call), so
updates are committed late, many at a time, and acknowledged later still, as under load.
The bound on updates in flight is drawn too (small: it is reached often); reaching it
commits and sends until a slot frees, as the IO thread would wait for that.

A scheduler crash is a SIGKILL: the Ledger is closed where it stands (what was appended is in
the LMDB file; anything the dying process still tries to append fails, as it never would
have run), the in-memory core, driver and undelivered events are dropped, the master sees the
connection go, and a new process opens the log later and subscribes with the framework id
the log holds. Updates it never acknowledged are re-sent by the agents.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from engine.events import StatusUpdateReceived, TaskAssigned
from engine.ledger import Ledger
from engine.lifecycle import TERMINAL, ScheduleStatus
from engine.mesos.core import JobSpec, SchedulerCore
from engine.mesos.driver import PymesosDriver
from engine.mesos.loop import SchedulerLoop, silent
from engine.rules import RuleId, issue
from engine.saga import SagaConfig
from tools.deterministic import invariants as inv
from tools.deterministic.chaos import Chaos
from tools.deterministic.invariants import LogWatcher, Violation
from tools.deterministic.transport import CallRefused, SteppedSender, VirtualMesos, wire
from tools.sim_master import protocol
from tools.sim_master.cluster import REMOVED, CloseStream, Cluster, Emit, SimConfig
from tools.sim_master.faults import InvalidFault

# Every duration of the saga, and the master's, runs this many times faster than in
# production (an hour of reconciliation schedule is 6 virtual minutes): steps cost, virtual
# seconds do not, and the compression keeps the ratios between the timers.
TIME_SCALE = 10.0
HEARTBEAT = 15.0 / TIME_SCALE
WATCHDOG_INTERVALS = 3.0  # as RuntimeConfig: silence this many heartbeats restarts the driver
FAILOVER_TIMEOUT = 7 * 24 * 3600.0  # as RuntimeConfig
STEP_SECONDS = (0.1, 0.25, 0.5, 1.0, 1.0, 2.0, 3.0, 5.0)  # a step's clock advance, drawn
DIGEST_EVERY = 25  # steps between comparisons of the live state with the replay
MAX_DELIVERIES = 20_000  # events in one step: more is a livelock
_DONE = frozenset(s.value for s in TERMINAL) | {ScheduleStatus.DELETED.value}
_RUNNING = ScheduleStatus.RUNNING.value
_CLOSE = "close"
_EVENT, _COMMIT = "event", "commit"  # the pipeline's moves, beside the sender's lanes
_EXPECTED_CALLBACK_ERRORS = (CallRefused, ConnectionError)

SABOTAGES = ("ack-before-append", "kill-on-silence", "corrupt-state")


def settle_bound(config: SagaConfig) -> float:
    """Virtual seconds the job has to converge once the faults stop (650 s with the
    simulation's compression: 1.8 h of production time).

    The longest legitimate wait: the master's way back from a failover (downtime and
    re-registration delay, 50 s at most), the re-registration window, then a stale Mesos view
    that only a scheduled implicit run outside the window corrects (an interval, and the run's
    limit), then the rules on what it found (a transient timeout and grace, or a partition
    timeout) and the kills' backoff. The slowest of 2,600 seeds (600 of them with 500 steps)
    took 425 s.
    """
    runs = config.runs
    return (
        50.0
        + runs.reregister_window
        + max(runs.implicit_interval, runs.explicit_interval)
        + runs.implicit_limit
        + max(config.transient_timeout + config.transient_grace, config.partition_timeout)
        + config.kill_backoff_cap
    )


class SchedulerKilled(BaseException):  # noqa: N818 (a signal, not an error)
    """The simulated SIGKILL: unwinds the scheduler's stack past every `except Exception`."""


@dataclass
class Outcome:
    """What one seed did."""

    seed: int
    steps: int
    ok: bool
    invariant: str | None = None
    step: int | None = None
    detail: str | None = None
    log_hash: str | None = None
    events: int = 0
    virtual_time: float = 0.0
    settle_time: float | None = None
    agents: int = 0
    instances: int = 0
    sabotage: str | None = None
    faults: Counter = field(default_factory=Counter)
    stats: Counter = field(default_factory=Counter)

    @property
    def replay_command(self) -> str:
        command = f"taskledger simulate --seed {self.seed} --steps {self.steps}"
        return command + (f" --sabotage {self.sabotage}" if self.sabotage else "")


class _CallbackErrors(logging.Handler):
    """Collects the exceptions SchedulerCore swallows (it must never raise into pymesos)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _AckFirstCore(SchedulerCore):
    """Sabotage: acknowledges an update before appending it."""

    def _update(self, status: dict[str, Any]) -> None:
        if status.get("uuid") and isinstance(status.get("agent_id"), dict) and self.driver:
            self.driver.acknowledge(status)
        super()._update(status)


@dataclass
class _Process:
    """The scheduler process: its Ledger, core and loop (with the dispatcher), its driver."""

    ledger: Ledger
    core: SchedulerCore
    loop: SchedulerLoop
    sender: SteppedSender
    transport: VirtualMesos | None = None
    # Updates as they arrived, in order (task, uuid) -> arrival number: the log must hold a
    # task's updates in the order they came.
    arrivals: dict[tuple[str, str], int] = field(default_factory=dict)
    first_nid: int = 0  # what this process appended starts after this id
    order_checked: int = 0  # the log's updates are checked against arrivals up to here
    last_arrival: dict[str, int] = field(default_factory=dict)  # task -> its latest logged
    resubscribe_at: float = 0.0
    resume_at: float | None = None  # when the operator resumes a halted dispatch
    killed: bool = False


class World:
    """One seed's whole system (see the module docstring)."""

    def __init__(self, seed: int, folder: str, *, sabotage: str | None = None) -> None:
        if sabotage is not None and sabotage not in SABOTAGES:
            raise ValueError(f"unknown sabotage {sabotage!r}; known: {', '.join(SABOTAGES)}")
        self.seed = seed
        self.sabotage = sabotage
        self.path = os.path.join(folder, "log")
        self.rng = random.Random(f"taskledger-simulate/{seed}")
        # The pipeline's interleaving, from a stream of its own (the faults' draws stay).
        self.pipe = random.Random(f"taskledger-simulate/{seed}/pipeline")
        self.max_in_flight = self.pipe.choice((1, 2, 3, 5, 8, 1000))
        rng = self.rng
        self.agents = rng.randint(2, 4)
        self.job = JobSpec("web", rng.randint(3, 8), cpus=0.25, mem=32.0)
        self.cluster = Cluster(
            SimConfig(
                agents=self.agents,
                seed=seed,
                heartbeat_interval=HEARTBEAT,
                update_retry_initial=10.0 / TIME_SCALE,
                update_retry_max=600.0 / TIME_SCALE,
                allocation_interval=1.0,
                default_refuse_seconds=5.0 / TIME_SCALE,
            )
        )
        self.saga_config = SagaConfig().compressed(TIME_SCALE)
        self.now = 0.0
        self.step_no = 0
        self.inbox: deque[tuple[str, Any]] = deque()
        self.watch = LogWatcher()
        self.stats: Counter[str] = Counter()
        self.proc: _Process | None = None
        self.restart_at: float | None = 0.0
        self.crash_plan: list[Any] | None = None  # [where, countdown]
        self.chaos = Chaos(rng, self)
        self.errors = _CallbackErrors()
        self._silenced: set[str] = set()

    # -- the clock's client: the scheduler reads virtual time ------------------------------------
    def clock(self) -> float:
        return self.now

    # -- faults ------------------------------------------------------------------------------------
    def inject(self, fault: dict[str, Any]) -> bool:
        """Injects a fault into the master's model; False if it does not apply now."""
        try:
            self.route(self.cluster.inject(fault, self.now))
        except InvalidFault:
            return False
        return True

    def crash_now(self) -> bool:
        if self.proc is None:
            return False
        self._scheduler(lambda: self._kill("between steps"))
        return True

    def arm_crash(self, where: str, countdown: int) -> bool:
        if self.proc is None or self.crash_plan is not None:
            return False
        self.crash_plan = [where, countdown]
        return True

    def _crash_point(self, where: str) -> None:
        plan = self.crash_plan
        if plan is None or plan[0] != where:
            return
        plan[1] -= 1
        if plan[1] <= 0:
            self.crash_plan = None
            self._kill(where)

    def _kill(self, where: str) -> None:
        proc = self.proc
        assert proc is not None
        proc.killed = True
        # Nothing the dying process appends from here on is written, nor what it submitted
        # and had not committed yet.
        proc.ledger.close(flush=False)
        self.stats[f"crash {where}"] += 1
        raise SchedulerKilled(where)

    def _after_kill(self) -> None:
        proc = self.proc
        assert proc is not None and proc.killed
        sid = None if proc.transport is None else proc.transport.stream_id
        self.proc = None
        self.inbox.clear()
        self.crash_plan = None
        self.stats["crashes"] += 1
        if sid is not None:
            self.route(self.cluster.disconnected(sid, self.now))  # the TCP connection drops
        self.restart_at = self.now + self.rng.uniform(0.0, 15.0)

    # -- the wire ----------------------------------------------------------------------------------
    def route(self, effects: list[Any]) -> None:
        """The master's effects: events and closes of our current stream go to the inbox."""
        proc = self.proc
        sid = None if proc is None or proc.transport is None else proc.transport.stream_id
        for effect in effects:
            if sid is None:
                return
            if type(effect) is Emit and effect.stream_id == sid:
                self.inbox.append((sid, wire(effect.event)))
            elif type(effect) is CloseStream and effect.stream_id == sid:
                self.inbox.append((sid, _CLOSE))

    def _call(self, body: dict[str, Any], stream_id: str | None) -> int:
        """A call from the scheduler's driver to the master: the transport of VirtualMesos."""
        proc = self.proc
        assert proc is not None
        kind = body.get("type")
        self.stats[f"call {kind}"] += 1
        if kind == "ACKNOWLEDGE":
            ack = body["acknowledge"]
            self.watch.check_ack(ack["task_id"]["value"], ack["uuid"], proc.ledger)
        self._crash_point("before-call")
        reply = self.cluster.call(body, stream_id, self.now)
        self.route(reply.effects)
        if reply.delay > 0:  # a slow call: the caller waits, the virtual clock runs on
            self.now = round(self.now + reply.delay, 6)
            self.stats["slow calls"] += 1
        self._crash_point("after-call")
        return reply.status

    # -- the scheduler process -------------------------------------------------------------------
    def _scheduler(self, action: Any) -> None:
        """Runs scheduler code; a SIGKILL ends the process, anything else is a bug."""
        proc = self.proc
        try:
            action()
        except SchedulerKilled:
            self._after_kill()
        except Violation:
            raise
        except BaseException as e:
            if proc is not None and proc.killed:
                self._after_kill()  # the dying process touched its closed log: never ran
            else:
                raise Violation(inv.CALLBACK_ERRORS, f"the scheduler raised {e!r}") from e
        self._check_callback_errors()

    def _check_callback_errors(self) -> None:
        records, self.errors.records = self.errors.records, []
        for record in records:
            error = record.exc_info[1] if record.exc_info else None
            if error is None or isinstance(error, _EXPECTED_CALLBACK_ERRORS):
                self.stats["callback send errors"] += 1
                continue
            raise Violation(inv.CALLBACK_ERRORS, f"{record.getMessage()}: {error!r}")
        proc = self.proc
        if proc is not None and proc.core.stats.rejected:
            raise Violation(inv.CALLBACK_ERRORS, f"rejected: {proc.core.stats.last_error}")

    def _start(self) -> None:
        """A scheduler process starts: opens the log (recovering it) and subscribes."""
        ledger = Ledger.open(self.path, durable=False, clock=self.clock, background_commits=False)
        ledger.saga_config = self.saga_config
        core_class = _AckFirstCore if self.sabotage == "ack-before-append" else SchedulerCore
        core = core_class(
            ledger,
            self.job,
            clock=self.clock,
            max_in_flight=self.max_in_flight,
            relieve=self._relieve,
        )
        sender = SteppedSender(lambda: None if self.proc is None else self.proc.transport)
        core.driver = PymesosDriver(sender)
        loop = SchedulerLoop(
            ledger,
            core,
            ledger.dispatcher(core.send_command, asynchronous=True),
            clock=self.clock,
            supervise=self._supervise,
            pump=self._deliver,
            after_tick=self._kill_on_silence if self.sabotage == "kill-on-silence" else None,
            tolerate_dispatch_errors=False,
        )
        self.proc = _Process(ledger, core, loop, sender, first_nid=ledger.last_id)
        self.stats["starts"] += 1
        if self.watch.last_nid:
            self.watch.check_reopened(ledger)
        self.watch.check_views(ledger)
        core.ensure_instances()
        self._new_driver()

    def _new_driver(self) -> None:
        """As Runtime._start_driver: a new driver (pymesos's, here VirtualMesos) on the core."""
        from engine.mesos.scheduler import LedgerScheduler

        proc = self.proc
        assert proc is not None
        framework = proc.core.framework_info(
            name="taskledger-sim", user="root", failover_timeout=FAILOVER_TIMEOUT
        )
        proc.transport = VirtualMesos(LedgerScheduler(proc.core), framework, self._call)
        proc.core.stats.last_heartbeat = self.now
        proc.resubscribe_at = self.now
        self._subscribe()

    def _subscribe(self) -> None:
        proc = self.proc
        assert proc is not None and proc.transport is not None
        transport = proc.transport
        self.stats["subscribe calls"] += 1
        reply = self.cluster.subscribe(transport.subscribe_body(), None, self.now)
        if reply.status == 200 and reply.stream_id is not None:
            transport.stream_id = reply.stream_id
            self.route(reply.effects)
        else:
            proc.resubscribe_at = self.now + 1.0  # pymesos retries the master

    def _supervise(self, now: float) -> None:
        """The loop's supervisor here, as Runtime._supervise is under pymesos: resubscribe a
        lost stream (pymesos's IO thread does that itself); restart on a silent one."""
        proc = self.proc
        assert proc is not None and proc.transport is not None
        transport = proc.transport
        if not transport.connected and not transport.stopped:
            if self.now >= proc.resubscribe_at:
                self._subscribe()
            return
        limit = WATCHDOG_INTERVALS * HEARTBEAT
        if silent(now, proc.core.stats.last_heard, limit) and not proc.core.holding_the_stream:
            self.stats["watchdog restarts"] += 1
            if proc.core.subscribed:
                proc.core.disconnected()
            if transport.stream_id is not None:
                sid, transport.stream_id = transport.stream_id, None
                self.route(self.cluster.disconnected(sid, self.now))
            self._new_driver()

    def _deliver(self) -> None:
        """The pipeline's three threads, until all are idle: the stream's events, in order,
        into pymesos's callbacks (which may call back); the group commit; the sender's
        lanes. The seed picks which moves next."""
        delivered = 0
        while True:
            proc = self.proc
            if proc is None or proc.transport is None:
                self.inbox.clear()
                return
            moves = proc.sender.busy()
            if proc.ledger.pending_submissions():
                moves.append(_COMMIT)
            if self.inbox:
                moves += [_EVENT, _EVENT]  # the stream is read as fast as it comes
            if not moves:
                break
            move = self.pipe.choice(moves)
            if move == _COMMIT:
                proc.ledger.flush()
                self.stats["pipelined commits"] += 1
                continue
            if move != _EVENT:
                proc.sender.send_next(move)
                continue
            sid, item = self.inbox.popleft()
            transport = proc.transport
            if sid != transport.stream_id:
                continue  # an earlier stream's: that connection is gone
            delivered += 1
            if delivered > MAX_DELIVERIES:
                raise Violation(inv.PROGRESS, f"over {MAX_DELIVERIES} events in one step")
            self._crash_point("event")
            if item == _CLOSE:
                transport.on_close()
                proc.resubscribe_at = self.now + 0.5
            else:
                self._arrived(proc, item)
                transport.on_event(item)
        self.stats["events delivered"] += delivered

    def _arrived(self, proc: _Process, event: dict[str, Any]) -> None:
        status = (
            (event.get("update") or {}).get("status") if event.get("type") == "UPDATE" else None
        )
        if status and status.get("uuid"):
            key = (status["task_id"]["value"], status["uuid"])
            proc.arrivals.setdefault(key, len(proc.arrivals))

    def _relieve(self) -> None:
        """The bound on updates in flight is reached: what the IO thread waits for (the
        commits, the acknowledgements) happens."""
        proc = self.proc
        assert proc is not None
        self.stats["in-flight bound reached"] += 1
        proc.ledger.flush()
        for lane in proc.sender.busy():
            while proc.sender.lanes[lane]:
                proc.sender.send_next(lane)

    def _runtime_step(self) -> None:
        """One pass of the runtime's loop (engine/mesos/loop.py), then the operator."""
        proc = self.proc
        assert proc is not None
        proc.loop.step()
        self._operator()

    def _operator(self) -> None:
        """The breaker halted dispatch: an operator looks, and resumes a while later."""
        proc = self.proc
        assert proc is not None
        if proc.ledger.saga.outbox.halted is None:
            proc.resume_at = None
            return
        if proc.resume_at is None:
            proc.resume_at = self.now + self.rng.uniform(5.0, 30.0)
            self.stats["breaker trips"] += 1
        elif self.now >= proc.resume_at:
            proc.ledger.resume(now=self.now, operator="simulate", reason="simulated operator")
            proc.resume_at = None

    def _kill_on_silence(self, now: float) -> None:
        """Sabotage: a saga that kills a task Mesos has said nothing about for a while."""
        proc = self.proc
        assert proc is not None
        ledger = proc.ledger
        self.watch.refresh(ledger)
        for nid, event in enumerate(self.watch.events):
            unheard = (
                type(event) is TaskAssigned
                and ledger.mesos_view.get(event.task_id) is None
                and now - event.time > 3.0
                and event.task_id not in self._silenced
            )
            if unheard:
                self._silenced.add(event.task_id)
                kill = issue(
                    RuleId.IMPLICIT_KILL_UNKNOWN, now, evidence=[nid], task_id=event.task_id
                )
                ledger.append([kill])

    # -- a step ------------------------------------------------------------------------------------
    def step(self, *, faults: bool) -> None:
        self.step_no += 1
        self.now = round(self.now + self.rng.choice(STEP_SECONDS), 6)
        if faults:
            self.chaos.maybe()
        self.route(self.cluster.tick(self.now))
        if self.proc is None and self.restart_at is not None and self.now >= self.restart_at:
            self.restart_at = None
            self._scheduler(self._start)
        if self.proc is not None:
            self._scheduler(self._runtime_step)
        self._checks()

    def _checks(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if self.sabotage == "corrupt-state" and self.step_no == 30:
            proc.ledger.saga.rescheduled["sabotage/0/x"] = 1
        if self.step_no % DIGEST_EVERY == 0:
            self.watch.check_views(proc.ledger)
        else:
            self.watch.refresh(proc.ledger)
        self._check_order(proc)

    def _check_order(self, proc: _Process) -> None:
        """The updates this process recorded are in the log in the order they arrived, task
        by task (the pipeline keeps submissions in order)."""
        events = self.watch.events
        for nid in range(max(proc.first_nid, proc.order_checked) + 1, len(events)):
            event = events[nid]
            if type(event) is not StatusUpdateReceived or event.uuid is None:
                continue
            arrival = proc.arrivals.get((event.task_id, event.uuid))
            if arrival is None:
                raise Violation(
                    inv.ORDER_KEPT,
                    f"update {event.uuid} of {event.task_id} at id {nid} never arrived",
                )
            before = proc.last_arrival.get(event.task_id)
            if before is not None and arrival < before:
                raise Violation(
                    inv.ORDER_KEPT,
                    f"{event.task_id}'s update {event.uuid} (arrival {arrival}) is in the log "
                    f"after one that arrived later (arrival {before}), at id {nid}",
                )
            proc.last_arrival[event.task_id] = arrival
        proc.order_checked = len(events) - 1

    # -- the end -----------------------------------------------------------------------------------
    def calm(self) -> None:
        """The faults stop: rules cleared, partitions healed, the scheduler up."""
        self.inject({"kind": "clear_rules"})
        for agent in self.cluster.agents.values():
            if agent.status != REMOVED and not agent.link_up:
                self.inject({"kind": "agent_heal", "agent_id": agent.index})
        self.crash_plan = None
        if self.proc is None:
            self.restart_at = self.now

    def convergence(self) -> tuple[str, str] | None:
        """None once the job has converged, else the invariant not met yet and why."""
        proc = self.proc
        if proc is None or not proc.core.subscribed:
            return inv.CONVERGED, "the scheduler is not subscribed"
        ledger = proc.ledger
        drift = ledger.drift()
        if drift:
            first = drift[0]
            return inv.DRIFT_ZERO, (
                f"{len(drift)} disagreements, e.g. {first.task_id}: scheduler "
                f"{first.scheduler_state}, Mesos {first.mesos_state}"
            )
        live: Counter[int] = Counter()
        for record in ledger.scheduler_view.tasks.values():
            if record.job == self.job.name and record.state not in _DONE:
                if record.state != _RUNNING:
                    return inv.CONVERGED, f"instance {record.instance} is {record.state}"
                live[record.instance] += 1
        want = list(range(self.job.instances))
        if sorted(live) != want or any(n != 1 for n in live.values()):
            return inv.CONVERGED, f"the ledger runs instances {dict(sorted(live.items()))}"
        fid = ledger.mesos_view.framework_id
        running: Counter[int] = Counter()
        for (f, tid), task in self.cluster.agent_tasks.items():
            if f != fid or task.rogue or protocol.is_terminal(task.state):
                continue
            if self.cluster.agents[task.agent_id].status == REMOVED:
                continue
            running[int(tid.split("/")[1])] += 1
        if any(n > 1 for n in running.values()):
            twice = sorted(i for i, n in running.items() if n > 1)
            return inv.RUNS_ONCE, f"instances {twice} run more than once on the agents"
        if sorted(running) != want:
            return inv.CONVERGED, f"the agents run instances {sorted(running)}, want {want}"
        return None

    def finish(self) -> None:
        """Final checks: the live state equals a replay from scratch, and a crash now (close,
        reopen) recovers the same state from the log."""
        proc = self.proc
        assert proc is not None
        self.watch.check_views(proc.ledger)
        live = proc.ledger.digest()
        if self.watch.full_replay_digest(proc.ledger) != live:
            raise Violation(inv.VIEWS_REPLAY, "the live state differs from a full replay")
        proc.ledger.close()
        self.proc = None
        ledger = Ledger.open(self.path, durable=False, clock=self.clock)
        try:
            self.watch.check_reopened(ledger)
            if ledger.digest() != live:
                raise Violation(inv.VIEWS_REPLAY, "the reopened log's state differs")
        finally:
            ledger.close()


def simulate_seed(
    seed: int, steps: int, *, sabotage: str | None = None, folder: str | None = None
) -> Outcome:
    """Runs one seed (see the module docstring); the log lives in a temporary folder (or
    `folder`, kept afterwards), with LMDB_DURABLE=no: a crash here is a process crash, which
    loses nothing committed without an fsync."""
    own = folder is None
    folder = tempfile.mkdtemp(prefix=f"simulate-{seed}-") if own else folder
    logger = logging.getLogger("taskledger.scheduler")
    world = World(seed, folder, sabotage=sabotage)
    logger.addHandler(world.errors)
    propagate, logger.propagate = logger.propagate, False
    outcome = Outcome(seed, steps, ok=False, sabotage=sabotage)
    outcome.agents, outcome.instances = world.agents, world.job.instances
    try:
        world._scheduler(world._start)
        world.restart_at = None
        for _ in range(steps):
            world.step(faults=True)
        world.calm()
        settled_from = world.now
        bound = settle_bound(world.saga_config)
        while True:
            world.step(faults=False)
            unmet = world.convergence()
            if unmet is None:
                break
            if world.now - settled_from > bound:
                raise Violation(unmet[0], f"{unmet[1]} {bound:g} s after the faults stopped")
        outcome.settle_time = round(world.now - settled_from, 6)
        world.finish()
        outcome.ok = True
    except Violation as v:
        outcome.invariant, outcome.detail, outcome.step = v.invariant, v.detail, world.step_no
    finally:
        logger.removeHandler(world.errors)
        logger.propagate = propagate
        if world.proc is not None and not world.proc.killed:
            world.proc.ledger.close()
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    outcome.log_hash = world.watch.log_hash()
    outcome.events = world.watch.last_nid
    outcome.virtual_time = world.now
    outcome.faults = world.chaos.injected
    outcome.stats = world.stats
    outcome.stats["kills issued"] = world.watch.kills
    outcome.stats["commands issued"] = world.watch.commands
    outcome.stats["acknowledged"] = len(world.watch.acked)
    outcome.instances = world.job.instances
    return outcome

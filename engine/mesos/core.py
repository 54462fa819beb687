"""The scheduler's logic, independent of how Mesos is reached.

`SchedulerCore` turns what Mesos says (subscribed, offers, updates, errors) into Ledger
appends and driver calls, and keeps one job's instances running. It never raises into its
caller: under pymesos a raise on the IO thread aborts the driver (and with failover=False
tears down every task), so every entry point records the error and carries on.

Order of effects, always: append to the Ledger (durable) first, then act on Mesos. An update
is acknowledged only once its append is durable; a launch is sent only after its
TaskAssigned is durable.

Updates are pipelined: `update` hands the update to the Ledger's group commit without
waiting for it (Ledger.submit_status_update) and returns, so the stream is read while
earlier updates commit, many to one transaction. The commit's completion, on the committing
thread, hands the acknowledgement to the driver, whose sender sends it from a thread of its
own. At most `max_in_flight` updates are between their arrival and their end (engine/mesos/
inflight.py): past that, `update` waits, and the stream is read as fast as the log and the
master's calls allow. Every other call to the master goes the same way: handed over, its
outcome told later.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from engine.events import FrameworkError, SchedulerFault, TaskAssigned, TaskCreated
from engine.ledger import Ledger
from engine.lifecycle import ScheduleStatus
from engine.mesos.driver import Driver
from engine.mesos.inflight import DEFAULT_LIMIT, InFlight
from engine.task_status import MalformedStatus

log = logging.getLogger("taskledger.scheduler")

_PENDING = ScheduleStatus.PENDING.value
# A launch's states (transient: the saga times a task out of them, then asks, then gives
# it up): a task is launching from its assignment until it is RUNNING (or anything else).
_LAUNCHING = frozenset({ScheduleStatus.ASSIGNED.value, ScheduleStatus.STARTING.value})
# The most tasks launching at once (see SchedulerCore._offers): a wave the simulated master
# here starts in ten seconds or so, well inside the transient timeout even at --time-scale 10.
MAX_LAUNCHING = 5_000
# The states a task may be PENDING from later (None: a task the view holds no state of).
_MAY_BE_PENDING = frozenset({None, ScheduleStatus.INIT.value, ScheduleStatus.THROTTLED.value})


@dataclass(frozen=True)
class JobSpec:
    """One service job: ``instances`` copies of a command, each with these resources."""

    name: str
    instances: int
    cmd: str = "sleep 3600"
    cpus: float = 0.1
    mem: float = 32.0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class CoreStats:
    updates: int = 0
    duplicates: int = 0
    rejected: int = 0
    append_failures: int = 0  # updates that could not be written (so not acknowledged)
    launches: int = 0
    callback_errors: int = 0
    call_failures: int = 0  # calls the master did not take (503, timeout, ...)
    last_error: str | None = None
    heartbeats: int = 0
    last_heartbeat: float | None = None
    last_update: float | None = None  # when the stream last delivered an update

    @property
    def last_heard(self) -> float | None:
        """When the stream last showed it is alive: a heartbeat, or an update (a burst of
        updates can hold the heartbeats back in the stream for longer than the watchdog
        waits). While the IO thread waits for a slot in flight, the stream waits for us:
        see SchedulerCore.holding_the_stream."""
        if self.last_update is None or self.last_heartbeat is None:
            return self.last_heartbeat if self.last_update is None else self.last_update
        return max(self.last_heartbeat, self.last_update)


def _scalar(offer: dict[str, Any], name: str) -> float:
    for resource in offer.get("resources", []):
        if resource.get("name") == name and resource.get("type") == "SCALAR":
            return float(resource["scalar"]["value"])
    return 0.0


class SchedulerCore:
    """The embedded scheduler's decisions about Mesos events. Thread-safe."""

    def __init__(
        self,
        ledger: Ledger,
        job: JobSpec | None,
        *,
        clock: Callable[[], float],
        refuse_seconds: float = 5.0,
        max_in_flight: int = DEFAULT_LIMIT,
        relieve: Callable[[], None] | None = None,
        max_launching: int = MAX_LAUNCHING,
    ) -> None:
        self.ledger = ledger
        self.job = job
        self.clock = clock
        self.refuse_seconds = refuse_seconds
        if type(max_launching) is not int or max_launching < 1:
            raise ValueError(f"max_launching must be an int >= 1, got {max_launching!r}")
        self.max_launching = max_launching
        self._launching: dict[str, None] = {}  # tasks assigned here, maybe still ASSIGNED
        self.driver: Driver | None = None
        self.stats = CoreStats()
        self.subscribed = False
        # Updates between arrival and acknowledgement (``relieve``: see InFlight).
        self.in_flight = InFlight(max_in_flight, relieve=relieve)
        # Offers we failed to answer (ACCEPT or DECLINE failed): the master may still hold
        # them for us, and would never offer their resources again; declined again until a
        # DECLINE goes through, they are rescinded, or a new subscription drops them. The
        # sender's threads add to it: its own lock.
        self.unanswered_offers: set[str] = set()
        self._offers_lock = threading.Lock()
        self._acks_lock = threading.Lock()
        self._acking: set[tuple[Any, str]] = set()  # (task, uuid) acknowledgements on the lane
        self._lock = threading.RLock()
        self._instances_covered: tuple[str, int] | None = None  # see ensure_instances
        self._candidates_of: Any = None  # see pending_tasks
        self._rows_seen = 0
        self._candidates: dict[str, None] = {}

    # -- guarded entry points (called from pymesos's IO thread or a simulation) -------------
    def _guard(self, what: str, action: Callable[[], None]) -> None:
        try:
            with self._lock:
                action()
        except Exception as e:  # never into pymesos's thread: record and carry on
            self.stats.callback_errors += 1
            self.stats.last_error = f"{what}: {e!r}"
            log.exception("scheduler callback %s failed", what)
            self._record(SchedulerFault(self.clock(), None, what, repr(e)[:500]))

    def registered(self, framework_id: str, master_id: str) -> None:
        self._guard("registered", lambda: self._subscribed(framework_id, master_id, False))

    def reregistered(self, framework_id: str, master_id: str) -> None:
        self._guard("reregistered", lambda: self._subscribed(framework_id, master_id, True))

    def disconnected(self) -> None:
        def action() -> None:
            self.subscribed = False
            self.ledger.framework_disconnected(time=self.clock())

        self._guard("disconnected", action)

    def offers(self, offers: list[dict[str, Any]]) -> None:
        self._guard("offers", lambda: self._offers(offers))

    def offer_rescinded(self, offer_id: str) -> None:
        def action() -> None:
            with self._offers_lock:
                self.unanswered_offers.discard(offer_id)

        self._guard("rescind", action)

    def decline_unanswered(self) -> None:
        """Declines again the offers whose ACCEPT or DECLINE failed (the loop calls this
        every tick; a no-op when there are none)."""
        if self.unanswered_offers and self.subscribed:
            self._guard("decline", lambda: self._decline([]))

    @property
    def holding_the_stream(self) -> bool:
        """Whether the stream is not read now because updates in flight are at their bound
        (the log or the master's acknowledgements are behind): silence then is ours, and
        the watchdog must not take it for a dead stream."""
        return self.in_flight.waiting > 0

    def update(self, status: dict[str, Any]) -> None:
        """An update from the stream: handed to the log (see the module docstring). Waits,
        outside the core's lock, while ``max_in_flight`` updates are in flight."""
        self.stats.last_update = self.clock()
        self.in_flight.acquire()
        self.stats.last_update = self.clock()  # alive: it waited for us, not we for it
        self._guard("update", lambda: self._update(status))

    def heartbeat(self) -> None:
        self.stats.heartbeats += 1
        self.stats.last_heartbeat = self.clock()

    def error(self, message: str) -> None:
        self.stats.last_error = f"master error: {message}"
        log.error("master says: %s", message)
        self._record(FrameworkError(self.clock(), None, str(message)[:2000]))

    def _record(self, event: Any) -> None:
        """Appends a fault as a fact of the log; if even that fails (the log is full or
        closed), the log message above is all that is left: never raise from here."""
        try:
            self.ledger.append([event])
        except Exception:
            log.exception("could not record %s", type(event).__name__)

    # -- the logic ---------------------------------------------------------------------------
    def _subscribed(self, framework_id: str, master_id: str, again: bool) -> None:
        now = self.clock()
        self.subscribed = True
        self.stats.last_heartbeat = now
        with self._offers_lock:
            self.unanswered_offers.clear()  # a new subscription: the master dropped our offers
        if again:
            self.ledger.framework_reregistered(framework_id, master_id, time=now)
        else:
            self.ledger.framework_registered(framework_id, master_id, time=now)
        # Mesos's advice: reconcile after every (re)registration. The saga supersedes a
        # run in progress, so a flapping connection never stacks runs.
        self.ledger.reconcile(
            "explicit", now=now, trigger="reregistered" if again else "registered"
        )
        self.ensure_instances()

    def _update(self, status: dict[str, Any]) -> None:
        self.stats.updates += 1

        def recorded(nid: int | None, error: BaseException | None) -> None:
            self._recorded(status, nid, error)

        try:
            self.ledger.submit_status_update(status, time=self.clock(), done=recorded)
        except MalformedStatus as e:
            # Not a fact we can record. Acknowledging stops the agent re-sending it forever;
            # leaving it unacknowledged would stall the task's update stream.
            self.stats.rejected += 1
            self.stats.last_error = f"rejected update: {e}"
            log.error("rejected a malformed status update: %s", e)
            self._acknowledge(status)
        except BaseException:
            self.in_flight.release()  # nothing was queued: no completion will come
            raise

    def _recorded(self, status: dict[str, Any], nid: int | None, error: BaseException | None):
        """The update's append is durable (nid; None for a re-delivery) or failed (on the
        committing thread: only hands over, never waits)."""
        if error is not None:
            # Not in the log, so not acknowledged: its agent sends it again.
            self.stats.append_failures += 1
            self.stats.last_error = f"update not recorded: {error!r}"[:500]
            log.warning("an update could not be recorded: %r", error)
            self.in_flight.release()
            return
        if nid is None:
            self.stats.duplicates += 1
        self._acknowledge(status)

    def _acknowledge(self, status: dict[str, Any]) -> None:
        # Only updates that carry a uuid are acknowledged (master-generated ones must not be).
        driver = self.driver
        if not (status.get("uuid") and isinstance(status.get("agent_id"), dict) and driver):
            self.in_flight.release()
            return
        key = ((status.get("task_id") or {}).get("value"), status["uuid"])
        with self._acks_lock:
            # An agent re-sends an update while its acknowledgement waits on the sender's
            # lane (the master is slow to take them): one acknowledgement is enough, and a
            # second would only slow the lane further.
            repeated = key in self._acking
            if not repeated:
                self._acking.add(key)
        if repeated:
            self.in_flight.release()
            return
        driver.acknowledge(status, lambda error: self._acknowledged(key, error))

    def _acknowledged(self, key: tuple[Any, str], error: BaseException | None) -> None:
        with self._acks_lock:
            self._acking.discard(key)
        self.in_flight.release()
        if error is not None:
            # The agent re-sends an unacknowledged update: it will be a duplicate (same
            # uuid, recorded once) and acknowledged then.
            self._call_failed("ACKNOWLEDGE", error)

    def ensure_instances(self) -> list[str]:
        """Creates a task for every instance of the job that never had one (the job's
        start, or a scale-up).

        Replacements are not made here: a task that ends FAILED or LOST is replaced by the
        saga, from the lifecycle's RESCHEDULE side effect (Aurora's model), with the rule and
        the evidence recorded. Two authors of replacements would run an instance twice.
        """
        job = self.job
        if job is None:
            return []
        with self._lock:  # the IO thread (offers) and the loop both call this
            # A task, once created, stays in the view: once every instance had one, only a
            # new job (a scale-up) can need more, and the 100k-task scan is skipped.
            if self._instances_covered == (job.name, job.instances):
                return []
            had_task = {
                record.instance
                for record in self.ledger.scheduler_view.tasks.values()
                if record.job == job.name
            }
            now = self.clock()
            created = []
            generation = len(self.ledger.scheduler_view.tasks)
            for instance in range(job.instances):
                if instance not in had_task:
                    # Deterministic ids (no uuid4): the same history makes the same log.
                    created.append(f"{job.name}/{instance}/g{generation + len(created)}")
            if created:
                events = [
                    TaskCreated(now, None, t, job.name, int(t.split("/")[-2])) for t in created
                ]
                self.ledger.append(events)
            self._instances_covered = (job.name, job.instances)
            return created

    def framework_info(self, *, name: str, user: str, failover_timeout: float) -> dict[str, Any]:
        """The FrameworkInfo to subscribe with: partition-aware, with TASK_KILLING, and after
        a restart the framework id kept in the log (the master then keeps our tasks)."""
        framework: dict[str, Any] = {
            "user": user,
            "name": name,
            "failover_timeout": failover_timeout,
            "capabilities": [{"type": "PARTITION_AWARE"}, {"type": "TASK_KILLING_STATE"}],
        }
        framework_id = self.ledger.mesos_view.framework_id
        if framework_id:
            framework["id"] = {"value": framework_id}
        return framework

    def send_command(self, command: Any, done: Callable[[BaseException | None], None]) -> None:
        """Hands one pending remote command (engine/outbox.py) to the driver; the
        dispatcher's asynchronous `send`: ``done(error)`` is told whether it went (an error:
        it stays pending and is tried again)."""
        driver = self.driver
        if driver is None:
            done(ConnectionError(f"no driver: {command.kind} not sent"))
        elif command.kind == "KILL":
            driver.kill(command.task_id, command.agent_id, done)
        elif command.kind == "RECONCILE":
            # () is implicit. Each task goes with its agent: the master's answer for a task
            # it does not hold depends on the agent named (GONE, UNREACHABLE or silence).
            tasks = list(command.tasks or ())
            agents = list(command.agents or ()) or [self.agent_of(t) for t in tasks]
            driver.reconcile(list(zip(tasks, agents, strict=True)), done)
        else:
            raise ValueError(f"not a remote command: {command.kind}")

    def agent_of(self, task_id: str) -> str | None:
        """The agent a task is on, as far as the log knows (Mesos's word first)."""
        mesos = self.ledger.mesos_view.record(task_id)
        if mesos is not None and mesos.agent_id:
            return mesos.agent_id
        scheduler = self.ledger.scheduler_view.record(task_id)
        return None if scheduler is None else scheduler.agent_id

    def pending_tasks(self, limit: int | None = None) -> list[str]:
        """The job's PENDING tasks, oldest first (in the order they were created), at most
        ``limit`` of them.

        Looks only at tasks that may still be (or become) PENDING: every task the view
        added since the last look, and those of earlier looks still INIT, THROTTLED or
        PENDING (no task comes back to PENDING from anywhere else), and stops at ``limit``.
        Offers come many times a second; a scan of 100k task records each time would
        cost more than everything else the IO thread does.
        """
        if self.job is None or limit == 0:
            return []
        view = self.ledger.scheduler_view
        rows = view.index.rows
        if self._candidates_of is not view:
            self._candidates_of, self._rows_seen, self._candidates = view, 0, {}
        if len(rows) > self._rows_seen:
            self._candidates.update(dict.fromkeys(islice(rows, self._rows_seen, None)))
            self._rows_seen = len(rows)
        pending: list[str] = []
        settled = []
        for task_id in self._candidates:
            state = view.get(task_id)
            if state == _PENDING:
                record = view.record(task_id)
                if record is not None and record.job == self.job.name:
                    pending.append(task_id)
                    if limit is not None and len(pending) >= limit:
                        break
            elif state not in _MAY_BE_PENDING:
                settled.append(task_id)
        for task_id in settled:
            del self._candidates[task_id]
        return pending

    def _offers(self, offers: list[dict[str, Any]]) -> None:
        assert self.driver is not None
        self.ensure_instances()
        # A wave at a time: a task is ASSIGNED, then STARTING, until its RUNNING update is
        # in, and one that stays longer than the transient timeout is asked about, then
        # given up and replaced. A job of 100k tasks assigned at once would wait on the
        # master for minutes; in waves of max_launching each task runs within seconds, and
        # the offers not used now come back in a few seconds.
        room = self.max_launching - self._launching_now()
        pending = deque(self.pending_tasks(max(0, room)))
        declined = []
        launches: list[tuple[str, str, list[str]]] = []  # (offer, agent, tasks)
        for position, offer in enumerate(offers):
            offer_id = offer["id"]["value"]
            if not pending or self.job is None:
                declined.append(offer_id)
                continue
            cpus, mem = _scalar(offer, "cpus"), _scalar(offer, "mem")
            agent_id = offer["agent_id"]["value"]
            chosen: list[str] = []
            # Spread the job over the agents offered together, so that losing one agent
            # loses a fair share of it, not most of it.
            share = -(-len(pending) // (len(offers) - position))
            while pending and len(chosen) < share and cpus >= self.job.cpus and mem >= self.job.mem:
                chosen.append(pending.popleft())
                cpus -= self.job.cpus
                mem -= self.job.mem
            if not chosen:
                declined.append(offer_id)
                continue
            launches.append((offer_id, agent_id, chosen))
        if launches:
            now = self.clock()
            # Durable before the launches leave (one commit for the whole event): a crash
            # after this line leaves ASSIGNED tasks that reconciliation resolves, never a
            # task Mesos runs that we forgot.
            self.ledger.append(
                [TaskAssigned(now, None, t, agent) for _, agent, chosen in launches for t in chosen]
            )
            for _, _, chosen in launches:
                self._launching.update(dict.fromkeys(chosen))
        for offer_id, agent_id, chosen in launches:
            # Every task the offer fits, in one ACCEPT.
            infos = [self._task_info(t, agent_id) for t in chosen]
            self.driver.launch(offer_id, infos, self._launched(offer_id, len(chosen)))
        self._decline(declined)

    def _launching_now(self) -> int:
        """How many tasks this core assigned are still launching (ASSIGNED or STARTING)."""
        state_of = self.ledger.scheduler_view.get
        started = [t for t in self._launching if state_of(t) not in _LAUNCHING]
        for task_id in started:
            del self._launching[task_id]
        return len(self._launching)

    def _launched(self, offer_id: str, count: int) -> Callable[[BaseException | None], None]:
        def done(error: BaseException | None) -> None:
            if error is None:
                self.stats.launches += count
                return
            # Maybe launched, maybe not: the tasks stay ASSIGNED and the saga's transient
            # timeout asks Mesos about them (then replaces them if Mesos never heard).
            self._call_failed("ACCEPT", error)
            with self._offers_lock:
                self.unanswered_offers.add(offer_id)

        return done

    def _decline(self, offer_ids: list[str]) -> None:
        assert self.driver is not None
        with self._offers_lock:
            retry = sorted(self.unanswered_offers - set(offer_ids))
            batch = offer_ids + retry
            # Declining an offer the master no longer holds is harmless (it is ignored);
            # one whose DECLINE fails is unanswered again.
            self.unanswered_offers.difference_update(batch)
        if not batch:
            return

        def done(error: BaseException | None) -> None:
            if error is not None:
                self._call_failed("DECLINE", error)
                with self._offers_lock:
                    self.unanswered_offers.update(batch)

        self.driver.decline(batch, self.refuse_seconds, done)

    def _call_failed(self, call: str, error: BaseException) -> None:
        self.stats.call_failures += 1
        self.stats.last_error = f"{call} failed: {error!r}"[:500]
        log.warning("%s did not go through: %r", call, error)

    def _task_info(self, task_id: str, agent_id: str) -> dict[str, Any]:
        assert self.job is not None
        info: dict[str, Any] = {
            "name": task_id,
            "task_id": {"value": task_id},
            "agent_id": {"value": agent_id},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": self.job.cpus}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": self.job.mem}},
            ],
            "command": {"value": self.job.cmd, "shell": True},
        }
        if self.job.labels:
            info["labels"] = {
                "labels": [{"key": k, "value": v} for k, v in sorted(self.job.labels.items())]
            }
        return info

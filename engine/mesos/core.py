"""The scheduler's logic, independent of how Mesos is reached.

`SchedulerCore` turns what Mesos says (subscribed, offers, updates, errors) into Ledger
appends and driver calls, and keeps one job's instances running. It never raises into its
caller: under pymesos a raise on the IO thread aborts the driver (and with failover=False
tears down every task), so every entry point records the error and carries on.

Order of effects, always: append to the Ledger (durable) first, then act on Mesos. An update
is acknowledged only after its append returned; a launch is sent only after its
TaskAssigned is durable.
"""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.events import FrameworkError, SchedulerFault, TaskAssigned, TaskCreated
from engine.ledger import Ledger
from engine.lifecycle import ScheduleStatus
from engine.mesos.driver import Driver
from engine.task_status import MalformedStatus

log = logging.getLogger("taskledger.scheduler")

# What a call to the master raises when it does not go through: pymesos raises RuntimeError
# for a non-2xx answer or no connection, the socket layer OSError (refused, reset, timeout)
# or an HTTPException. In a callback these are the master's weather, not our bug: each is
# handled where the call is made (the agent re-sends an update we could not acknowledge,
# offers we could not answer are declined again, a launch that did not leave is reconciled).
CALL_FAILED = (RuntimeError, OSError, http.client.HTTPException)


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
    launches: int = 0
    callback_errors: int = 0
    call_failures: int = 0  # calls from callbacks the master did not take (503, timeout, ...)
    last_error: str | None = None
    heartbeats: int = 0
    last_heartbeat: float | None = None


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
    ) -> None:
        self.ledger = ledger
        self.job = job
        self.clock = clock
        self.refuse_seconds = refuse_seconds
        self.driver: Driver | None = None
        self.stats = CoreStats()
        self.subscribed = False
        # Offers we failed to answer (ACCEPT or DECLINE raised): the master may still hold
        # them for us, and would never offer their resources again; declined again until a
        # DECLINE goes through, they are rescinded, or a new subscription drops them.
        self.unanswered_offers: set[str] = set()
        self._lock = threading.RLock()

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
        self._guard("rescind", lambda: self.unanswered_offers.discard(offer_id))

    def decline_unanswered(self) -> None:
        """Declines again the offers whose ACCEPT or DECLINE failed (the runtime calls this
        every tick; a no-op when there are none)."""
        if self.unanswered_offers and self.subscribed:
            self._guard("decline", lambda: self._decline([]))

    def update(self, status: dict[str, Any]) -> None:
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
        try:
            nid = self.ledger.status_update(status, time=self.clock())
        except MalformedStatus as e:
            # Not a fact we can record. Acknowledging stops the agent re-sending it forever;
            # leaving it unacknowledged would stall the task's update stream.
            self.stats.rejected += 1
            self.stats.last_error = f"rejected update: {e}"
            log.error("rejected a malformed status update: %s", e)
        else:
            if nid is None:
                self.stats.duplicates += 1
        # Only updates that carry a uuid are acknowledged (master-generated ones must not be),
        # and only now that the append has returned: the update is durable.
        if status.get("uuid") and isinstance(status.get("agent_id"), dict) and self.driver:
            try:
                self.driver.acknowledge(status)
            except CALL_FAILED as e:
                # The agent re-sends an unacknowledged update: it will be a duplicate (same
                # uuid, recorded once) and acknowledged then.
                self._call_failed("ACKNOWLEDGE", e)

    def ensure_instances(self) -> list[str]:
        """Creates a task for every instance of the job that never had one (the job's
        start, or a scale-up).

        Replacements are not made here: a task that ends FAILED or LOST is replaced by the
        saga, from the lifecycle's RESCHEDULE side effect (Aurora's model), with the rule and
        the evidence recorded. Two authors of replacements would run an instance twice.
        """
        if self.job is None:
            return []
        had_task = {
            record.instance
            for record in self.ledger.scheduler_view.tasks.values()
            if record.job == self.job.name
        }
        now = self.clock()
        created = []
        generation = len(self.ledger.scheduler_view.tasks)
        for instance in range(self.job.instances):
            if instance not in had_task:
                # Deterministic ids (no uuid4): the same history makes the same log.
                created.append(f"{self.job.name}/{instance}/g{generation + len(created)}")
        if created:
            events = [
                TaskCreated(now, None, t, self.job.name, int(t.split("/")[-2])) for t in created
            ]
            self.ledger.append(events)
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

    def send_command(self, command: Any) -> None:
        """Carries one pending remote command (engine/outbox.py) to Mesos through the driver;
        the dispatcher's `send`. Raises if it could not be sent (it stays pending)."""
        driver = self.driver
        if driver is None:
            raise ConnectionError(f"no driver: {command.kind} not sent")
        if command.kind == "KILL":
            driver.kill(command.task_id, command.agent_id)
        elif command.kind == "RECONCILE":
            # () is implicit. Each task goes with its agent: the master's answer for a task
            # it does not hold depends on the agent named (GONE, UNREACHABLE or silence).
            tasks = list(command.tasks or ())
            agents = list(command.agents or ()) or [self.agent_of(t) for t in tasks]
            driver.reconcile(list(zip(tasks, agents, strict=True)))
        else:
            raise ValueError(f"not a remote command: {command.kind}")

    def agent_of(self, task_id: str) -> str | None:
        """The agent a task is on, as far as the log knows (Mesos's word first)."""
        mesos = self.ledger.mesos_view.record(task_id)
        if mesos is not None and mesos.agent_id:
            return mesos.agent_id
        scheduler = self.ledger.scheduler_view.record(task_id)
        return None if scheduler is None else scheduler.agent_id

    def pending_tasks(self) -> list[str]:
        if self.job is None:
            return []
        view = self.ledger.scheduler_view
        return sorted(
            t
            for t, r in view.tasks.items()
            if r.job == self.job.name and r.state == ScheduleStatus.PENDING.value
        )

    def _offers(self, offers: list[dict[str, Any]]) -> None:
        assert self.driver is not None
        self.ensure_instances()
        pending = self.pending_tasks()
        declined = []
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
                chosen.append(pending.pop(0))
                cpus -= self.job.cpus
                mem -= self.job.mem
            if not chosen:
                declined.append(offer_id)
                continue
            now = self.clock()
            # Durable before the launch leaves: a crash after this line leaves ASSIGNED
            # tasks that reconciliation resolves, never a task Mesos runs that we forgot.
            self.ledger.append([TaskAssigned(now, None, t, agent_id) for t in chosen])
            try:
                self.driver.launch(offer_id, [self._task_info(t, agent_id) for t in chosen])
            except CALL_FAILED as e:
                # Maybe launched, maybe not: the tasks stay ASSIGNED and the saga's transient
                # timeout asks Mesos about them (then replaces them if Mesos never heard).
                self._call_failed("ACCEPT", e)
                self.unanswered_offers.add(offer_id)
            else:
                self.stats.launches += len(chosen)
        self._decline(declined)

    def _decline(self, offer_ids: list[str]) -> None:
        assert self.driver is not None
        retry = sorted(self.unanswered_offers - set(offer_ids))
        batch = offer_ids + retry
        if not batch:
            return
        try:
            self.driver.decline(batch, self.refuse_seconds)
        except CALL_FAILED as e:
            self._call_failed("DECLINE", e)
            self.unanswered_offers.update(batch)
        else:
            # Declining an offer the master no longer holds is harmless (it is ignored).
            self.unanswered_offers.difference_update(batch)

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

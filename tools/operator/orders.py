"""The operator's orders to a running scheduler, each recorded in the log with who and why.

    resume     DispatchResumed (the breaker's own event: it approves the commands pending)
    reconcile  ReconciliationOrdered, then the run (trigger "operator")
    kill       KillOrdered, then the scheduler's KillRequested caused by it (the saga sends
               the KILL, with that as its evidence, and retries it until Mesos confirms) and,
               for a task of one of the job's instances, its replacement (TaskCreated caused
               by it; unless the order says not to: the instance then stays down until a
               scale-up)
    scale      JobScaled, then KillRequested for the live tasks of the instances at or above
               the new count and TaskCreated for instances below it whose tasks are all over
               (both caused by it); instances that never had a task get one from the
               scheduler's own pass, as at start-up. Scaling to the count the job has brings
               back the instances whose tasks are all over (killed without a replacement)
    dry-run    DryRunSet; the saga's configuration changes for every later decision

The order is appended before its effect, so a crash between the two leaves the order
recorded and its effect not (the operator's call got no answer and can be repeated). Scale
and dry run last while the process runs: at start-up the configuration (``--instances``,
``--dry-run``) decides again.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, NamedTuple

from engine.events import (
    DryRunSet,
    JobScaled,
    KillOrdered,
    KillRequested,
    ReconciliationOrdered,
    TaskCreated,
)
from engine.ledger_state import LedgerState
from engine.lifecycle import TERMINAL, TRANSITIONS, ScheduleStatus, SideEffect
from engine.reconciliation import EXPLICIT, IMPLICIT
from tools.operator.handle import Scheduler
from tools.operator.live import LiveState

_DONE = frozenset(s.value for s in TERMINAL) | {ScheduleStatus.DELETED.value}
_KILLING = ScheduleStatus.KILLING.value
# Scheduler states a kill can be ordered from: the lifecycle table says which (a pair
# absent from it is illegal).
KILLABLE = frozenset(
    src.value
    for (src, dst) in TRANSITIONS
    if dst is ScheduleStatus.KILLING and src.value != _KILLING
)
MAX_NAME = 100
MAX_REASON = 2000
MAX_INSTANCES = 100_000


class OrderError(Exception):
    """An order that cannot be carried out; ``status`` is its HTTP status."""

    status = 400


class BadOrder(OrderError):
    """The order itself is malformed (a missing operator, a negative count, ...)."""


class UnknownTask(OrderError):
    """The order names a task the scheduler does not know."""

    status = 404


class OrderConflict(OrderError):
    """The order does not fit the scheduler's state (a task already over, no job, ...)."""

    status = 409


def check_operator(operator: object, reason: object) -> tuple[str, str]:
    """The operator's name and reason, checked (one line each, bounded)."""
    if not isinstance(operator, str) or not operator.strip():
        raise BadOrder("say who you are: the operator's name is missing")
    if not isinstance(reason, str):
        raise BadOrder(f"the reason must be text, got {reason!r}")
    name = operator.strip()
    if len(name) > MAX_NAME or "\n" in name:
        raise BadOrder(f"the operator's name must be one line of at most {MAX_NAME} characters")
    if len(reason) > MAX_REASON:
        raise BadOrder(f"the reason is {len(reason)} characters long (at most {MAX_REASON})")
    return name, reason.strip()


class ScalePlan(NamedTuple):
    """What scaling a job to `instances` does to the tasks the log holds now."""

    kill: list[str]  # live tasks of the instances at or above the new count
    revive: list[int]  # instances below it whose every task is over, none replaced yet


def _owed_reschedule(state: LedgerState, task_id: str) -> bool:
    """Whether the saga still owes the task a replacement (decided or about to be)."""
    saga = state.saga
    if task_id in saga.replaced_by:
        return False
    cid = saga.rescheduled.get(task_id)
    if cid is not None:
        return cid in saga.outbox.pending
    return any(
        o.task_id == task_id and SideEffect.RESCHEDULE.value in o.effects for o in saga.obligations
    )


def scale_plan(state: LedgerState, job: str, instances: int) -> ScalePlan:
    """The kills and new tasks of scaling `job` to `instances` (pure)."""
    per: dict[int, list[tuple[str, Any]]] = {}
    for task_id, record in state.views.scheduler.tasks.items():
        if record.job == job and record.instance is not None:
            per.setdefault(record.instance, []).append((task_id, record))
    kill = sorted(
        task_id
        for instance, tasks in per.items()
        if instance >= instances
        for task_id, record in tasks
        if record.state in KILLABLE
    )
    revive = sorted(
        instance
        for instance, tasks in per.items()
        if instance < instances
        and all(record.state in _DONE for _, record in tasks)
        and not any(_owed_reschedule(state, task_id) for task_id, _ in tasks)
    )
    return ScalePlan(kill, revive)


def ordered_task_id(job: str, instance: int, order: int) -> str:
    """The id of a task an operator's order creates (deterministic, like a replacement's:
    the order's notification id is in it)."""
    return f"{job}/{instance}/o{order}"


class Orders:
    """Carries out orders against one running scheduler, one at a time."""

    def __init__(self, scheduler: Scheduler, live: LiveState) -> None:
        self.scheduler = scheduler
        self.live = live
        self._lock = threading.Lock()

    def resume(self, *, operator: str, reason: str = "") -> dict[str, Any]:
        name, why = check_operator(operator, reason)
        with self._lock:
            ledger = self.scheduler.ledger
            halted = ledger.saga.outbox.halted
            nid = ledger.resume(now=self.scheduler.now(), operator=name, reason=why)
        if nid is None:
            return {"changed": False, "detail": "dispatch was not halted: nothing to resume"}
        assert halted is not None
        return {
            "changed": True,
            "event": nid,
            "detail": f"dispatch resumed; it was halted because {halted.reason}",
        }

    def reconcile(self, *, kind: str, operator: str, reason: str = "") -> dict[str, Any]:
        name, why = check_operator(operator, reason)
        if kind not in (EXPLICIT, IMPLICIT):
            raise BadOrder(f"a reconciliation is 'explicit' or 'implicit', not {kind!r}")
        with self._lock:
            ledger = self.scheduler.ledger
            now = self.scheduler.now()
            order = ledger.append([ReconciliationOrdered(now, None, kind, name, why)])[0]
            run = ledger.reconcile(kind, now=now, trigger="operator")
        return {"changed": True, "event": order, "run": run, "detail": f"{kind} run {run} started"}

    def kill(
        self, *, task_id: str, operator: str, reason: str = "", replace: bool = True
    ) -> dict[str, Any]:
        name, why = check_operator(operator, reason)
        if not isinstance(task_id, str) or not task_id:
            raise BadOrder("name the task to kill")
        if type(replace) is not bool:
            raise BadOrder(f"replace is true or false, not {replace!r}")
        with self._lock:
            ledger = self.scheduler.ledger
            record = ledger.scheduler_view.record(task_id)
            if record is None:
                mesos = ledger.mesos_view.get(task_id)
                hint = (
                    f" (Mesos reports it {mesos}: the saga kills tasks the scheduler never "
                    "launched by itself)"
                    if mesos is not None
                    else ""
                )
                raise UnknownTask(
                    f"unknown task {task_id!r}: the scheduler holds no such task{hint}"
                )
            if record.state == _KILLING:
                return {"changed": False, "detail": f"{task_id} is being killed already"}
            if record.state not in KILLABLE:
                raise OrderConflict(f"task {task_id} is {record.state}: there is nothing to kill")
            job = self.scheduler.job()
            in_job = (
                job is not None
                and record.job == job.name
                and record.instance is not None
                and record.instance < job.instances
            )
            now = self.scheduler.now()
            order = ledger.append([KillOrdered(now, None, task_id, name, why)])[0]
            effects: list[Any] = [KillRequested(now, order, task_id)]
            new_task = None
            if replace and in_job:
                assert record.job is not None and record.instance is not None
                new_task = ordered_task_id(record.job, record.instance, order)
                effects.append(
                    TaskCreated(
                        now, order, new_task, record.job, record.instance, {"replaces": task_id}
                    )
                )
            ids = ledger.append(effects)
        detail = f"{task_id} ({record.state}) is being killed"
        if new_task is not None:
            detail += f"; {new_task} replaces it"
        elif in_job:
            detail += f"; instance {record.instance} stays down until the job is scaled up"
        return {
            "changed": True,
            "event": order,
            "kill": ids[0],
            "created": new_task,
            "detail": detail,
        }

    def scale(self, *, instances: int, operator: str, reason: str = "") -> dict[str, Any]:
        name, why = check_operator(operator, reason)
        if type(instances) is not int or not 0 <= instances <= MAX_INSTANCES:
            raise BadOrder(f"instances must be a whole number 0-{MAX_INSTANCES}, got {instances!r}")
        with self._lock:
            job = self.scheduler.job()
            if job is None:
                raise OrderConflict("this scheduler runs no job: there is nothing to scale")
            previous = job.instances
            ledger = self.scheduler.ledger
            with self.live.lock:
                plan = scale_plan(self.live.refresh(force=True), job.name, instances)
            if instances == previous and not plan.revive:
                detail = f"{job.name} has {previous} instance(s) already"
                return {"changed": False, "detail": detail}
            now = self.scheduler.now()
            scaled = JobScaled(now, None, job.name, instances, previous, name, why)
            order = ledger.append([scaled])[0]
            self.scheduler.set_instances(instances)
            created = [ordered_task_id(job.name, i, order) for i in plan.revive]
            effects: list[Any] = [KillRequested(now, order, t) for t in plan.kill]
            effects += [
                TaskCreated(now, order, t, job.name, i)
                for t, i in zip(created, plan.revive, strict=True)
            ]
            ledger.append(effects)
        return {
            "changed": True,
            "event": order,
            "killed": plan.kill,
            "created": created,
            "detail": f"{job.name}: {previous} -> {instances} instance(s); {len(plan.kill)} "
            f"task(s) killed, {len(created)} created for instances whose tasks were over",
        }

    def dry_run(self, *, on: bool, operator: str, reason: str = "") -> dict[str, Any]:
        name, why = check_operator(operator, reason)
        if type(on) is not bool:
            raise BadOrder(f"dry run is on (true) or off (false), not {on!r}")
        with self._lock:
            ledger = self.scheduler.ledger
            config = ledger.saga_config
            if config.dry_run == on:
                return {"changed": False, "detail": f"dry run is {'on' if on else 'off'} already"}
            order = ledger.append([DryRunSet(self.scheduler.now(), None, on, name, why)])[0]
            ledger.saga_config = replace(config, dry_run=on)
        detail = (
            "dry run on: commands are decided and recorded, never sent"
            if on
            else "dry run off: commands are sent again (those decided in the dry run are cancelled)"
        )
        return {"changed": True, "event": order, "detail": detail}

"""The log as the operator's pages see it: folded in the web server's own thread.

The Ledger's live views belong to its committing thread, which evolves them under a lock
while appends wait; building a page from them would hold that lock as long as the page
takes. `LiveState` keeps a state of its own instead: loaded the way a restart loads one (the
newest snapshot, then the events after it), then folded forward from the log's tail on each
refresh. LMDB readers never block the writer, so nothing the scheduler does waits for a page.

Every document carries the notification id it is as of (``as_of.id``); the forensic
commands with ``--as-of`` that id answer the same numbers (`query`, `drift`, `why`,
`history`), because they are computed by the same functions from the same fold.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine import reconciliation
from engine.events import (
    DispatchHalted,
    DispatchResumed,
    DryRunSet,
    JobScaled,
    KillOrdered,
    ReconciliationCompleted,
    ReconciliationOrdered,
    ReconciliationStarted,
    ReconciliationSuperseded,
    TaskCreated,
)
from engine.ledger_state import LedgerState
from engine.lifecycle import TERMINAL, ScheduleStatus
from engine.log_reader import LogReader
from engine.outbox import DISPATCHED, FAILED, ISSUED
from engine.outbox import plan as dispatch_plan
from engine.saga import SagaConfig
from projections import queries
from tools.commands.common import iso
from tools.commands.drift import by_cell, cells_json, since_times, task_json
from tools.commands.history import resolve_task, row_json
from tools.commands.why import explain
from tools.forensics.history import history
from tools.forensics.launches import split
from tools.readonly import ReadOnlyLedger

SCHEMA_VIEW = "taskledger.view/1"
SCHEMA_TASK = "taskledger.task/1"
COUNT_KEYS = ("state", "mesos_state", "cell")
_DONE = frozenset(s.value for s in TERMINAL) | {ScheduleStatus.DELETED.value}
# What the pages list at most (the counts always cover everything).
MAX_ROWS = 500
MAX_TASKS_PER_CELL = 20
MAX_COMMANDS = 100
KEPT_RUNS = 20
KEPT_ORDERS = 20
# On a first load, how far back the log is read for recent runs and operator orders.
LOOK_BACK = 200_000
_WINDOW = 20_000

_RUN_EVENTS = (ReconciliationStarted, ReconciliationCompleted, ReconciliationSuperseded)
# What the "operator" panel lists: the orders, and the breaker they answer.
ORDER_KINDS = (
    KillOrdered,
    ReconciliationOrdered,
    JobScaled,
    DryRunSet,
    DispatchResumed,
    DispatchHalted,
)
_TRACKED = frozenset(_RUN_EVENTS + ORDER_KINDS)


@dataclass
class RunRecord:
    """A reconciliation run as the pages show it."""

    run_id: str
    kind: str
    trigger: str
    started_id: int
    started: float
    deadline: float
    ended_id: int | None = None
    ended: float | None = None
    outcome: str | None = None  # None: running
    asked: int | None = None
    answered: int | None = None
    unanswered: int | None = None
    rounds: int | None = None
    duration: float | None = None
    by_cell: dict[str, int] = field(default_factory=dict)
    by_rule: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["started_iso"] = iso(self.started)
        data["ended_iso"] = iso(self.ended)
        return data


class Recent:
    """The latest runs and operator orders, folded from events in log order."""

    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self.orders: deque[tuple[int, Any]] = deque(maxlen=KEPT_ORDERS)

    def observe(self, nid: int, event: Any) -> None:
        kind = type(event)
        if kind not in _TRACKED:
            return
        if kind is ReconciliationStarted:
            self.runs[event.run_id] = RunRecord(
                event.run_id, event.kind, event.trigger, nid, event.time, event.deadline
            )
            while len(self.runs) > KEPT_RUNS:
                del self.runs[next(iter(self.runs))]
        elif kind is ReconciliationCompleted:
            run = self.runs.get(event.run_id)
            if run is not None:
                run.ended_id, run.ended, run.outcome = nid, event.time, event.outcome
                run.asked, run.answered, run.unanswered = (
                    event.asked,
                    event.answered,
                    event.unanswered,
                )
                run.rounds, run.duration = event.rounds, event.duration
                run.by_cell, run.by_rule = dict(event.by_cell), dict(event.by_rule)
        elif kind is ReconciliationSuperseded:
            run = self.runs.get(event.run_id)
            if run is not None:
                run.ended_id, run.ended, run.outcome = nid, event.time, "superseded"
        else:
            self.orders.append((nid, event))


class LiveState:
    """A LedgerState of its own, folded from the log up to where the Ledger has committed.

    ``reader`` reads the log (a ReadOnlyLedger over the Ledger's own datastore: the forensic
    commands' reader, no second environment, never closed here); ``last_id()`` is the id
    the Ledger has committed up to. Thread-safe: `refresh` and every reader of `state` hold
    `lock`. ``min_interval`` bounds how often a refresh reads the log (pages poll; the fold
    is only as fresh as needed)."""

    def __init__(self, reader: ReadOnlyLedger, *, last_id: Any, min_interval: float = 0.25) -> None:
        self.reader = reader
        self._last_id = last_id  # () -> the id the Ledger has committed up to
        self.min_interval = min_interval
        self.lock = threading.RLock()
        self.state: LedgerState | None = None
        self.recent = Recent()
        self._refreshed = 0.0

    @classmethod
    def of(cls, ledger: Any, *, min_interval: float = 0.25) -> LiveState:
        """The live state of a writing Ledger (engine.ledger.Ledger)."""
        reader = ReadOnlyLedger(ledger.datastore)
        return cls(reader, last_id=lambda: ledger.last_id, min_interval=min_interval)

    def refresh(self, *, force: bool = False) -> LedgerState:
        """The state, folded up to the Ledger's last committed id (at most every
        ``min_interval`` seconds unless ``force``)."""
        with self.lock:
            now = time.monotonic()
            if self.state is not None and not force and now - self._refreshed < self.min_interval:
                return self.state
            upto = self._last_id()
            if self.state is None:
                self.state = self.reader.load(upto)
                self._look_back(self.state.last_nid)
            elif upto > self.state.last_nid:
                for nid, event in self.reader.events(self.state.last_nid + 1, upto):
                    self.state.apply(nid, event)
                    self.recent.observe(nid, event)
            self._refreshed = time.monotonic()
            return self.state

    def _look_back(self, upto: int) -> None:
        """Recent runs and orders from before the load (a snapshot does not keep them):
        windows of the log read backwards until enough are found or LOOK_BACK is read."""
        found: list[tuple[int, Any]] = []
        high = upto
        while high >= 1 and upto - high < LOOK_BACK:
            low = max(1, high - _WINDOW + 1)
            window = [(n, e) for n, e in self.reader.events(low, high) if type(e) in _TRACKED]
            found[:0] = window
            runs = sum(1 for _, e in found if type(e) is ReconciliationStarted)
            if runs >= KEPT_RUNS:
                break
            high = low - 1
        for nid, event in found:
            self.recent.observe(nid, event)


# -- documents ---------------------------------------------------------------------------------


def as_of(state: LedgerState, reader: LogReader) -> dict[str, Any]:
    nid = state.last_nid
    event = reader.event_at(nid) if nid else None
    time_ = None if event is None else event.time
    return {"id": nid, "time": time_, "time_iso": iso(time_)}


def counts(state: LedgerState) -> dict[str, dict[str, int]]:
    """Tasks by scheduler state, Mesos state and drift cell: `taskledger query --json`'s
    ``counts`` (the key "null" counts tasks with no value)."""
    return {
        key: {
            ("null" if k is None else k): v for k, v in queries.count_by(state.views, key).items()
        }
        for key in COUNT_KEYS
    }


def drift(state: LedgerState, reader: ReadOnlyLedger) -> dict[str, Any]:
    """The disagreements by cell and the launches in flight apart: `taskledger drift
    --json`'s total, cells and in_flight (each list of tasks cut to MAX_TASKS_PER_CELL)."""
    found, flying = split(state, state.views.drift.drift())
    groups = by_cell(found)
    shown = [d for _, items in groups for d in items[:MAX_TASKS_PER_CELL]]
    shown += flying[:MAX_TASKS_PER_CELL]
    times = since_times(reader, state, shown)
    cells = cells_json(groups, times, MAX_TASKS_PER_CELL)
    for cell in cells:
        cell["more"] = cell["count"] - len(cell["tasks"])
    launches = [task_json(d, times) for d in flying[:MAX_TASKS_PER_CELL]]
    return {
        "total": len(found),
        "cells": cells,
        "in_flight": {"count": len(flying), "tasks": launches},
    }


def instances(state: LedgerState, job: str | None, wanted: int) -> dict[str, Any]:
    """The job's instances: for each, its live task(s) (or its latest), and how many tasks
    it has had."""
    per: dict[int, list[tuple[str, Any]]] = {}
    if job is not None:
        for task_id, record in state.views.scheduler.tasks.items():
            if record.job == job and record.instance is not None:
                per.setdefault(record.instance, []).append((task_id, record))
    mesos = state.views.mesos
    rows = []
    highest = max([wanted - 1, *per])
    for instance in range(highest + 1):
        tasks = sorted(per.get(instance, []), key=lambda t: t[1].nid)
        live = [t for t in tasks if t[1].state not in _DONE]
        shown = live or tasks[-1:]
        rows.append(
            {
                "instance": instance,
                "wanted": instance < wanted,
                "tasks": [
                    {
                        "task_id": task_id,
                        "scheduler_state": record.state,
                        "mesos_state": mesos.get(task_id),
                        "agent_id": record.agent_id,
                        "since": record.nid,
                    }
                    for task_id, record in shown
                ],
                "generations": len(tasks),
                "live": len(live),
            }
        )
    return {
        "total": len(rows),
        "running": sum(
            1 for r in rows if any(t["scheduler_state"] == "RUNNING" for t in r["tasks"])
        ),
        "rows": rows[:MAX_ROWS],
        "more": max(0, len(rows) - MAX_ROWS),
    }


def _command(rec: Any) -> dict[str, Any]:
    return {
        "command": rec.command_id,
        "kind": rec.kind,
        "task_id": rec.task_id,
        "tasks": None if rec.tasks is None else len(rec.tasks),
        "rule": rec.rule,
        "status": rec.status,
        "run": rec.run_id,
        "attempt": rec.attempt,
        "issued": rec.issued_at,
        "issued_iso": iso(rec.issued_at),
        "dispatched": rec.dispatched_at,
        "not_before": rec.not_before,
        "failures": rec.failures,
        "last_error": rec.last_error,
        "dry_run": rec.dry_run,
    }


def commands(state: LedgerState, config: SagaConfig, now: float) -> dict[str, Any]:
    """The outbox: commands pending (issued, not yet sent), in flight (sent, awaiting their
    confirmation), failed (waiting to be sent again), and why those due are held."""
    outbox = state.saga.outbox
    groups: dict[str, list[Any]] = {"pending": [], "in_flight": [], "failed": []}
    for rec in outbox.pending.values():
        groups["failed" if rec.status == FAILED else "pending"].append(rec)
    for rec in outbox.commands.values():
        if rec.status == DISPATCHED and rec.kind == "KILL":
            groups["in_flight"].append(rec)
    held = dispatch_plan(outbox, state.views, now, config.dispatch).held
    by_status: dict[str, int] = {}
    for rec in outbox.commands.values():
        by_status[rec.status] = by_status.get(rec.status, 0) + 1
    doc: dict[str, Any] = {
        name: {"count": len(recs), "items": [_command(r) for r in recs[:MAX_COMMANDS]]}
        for name, recs in groups.items()
    }
    doc["held"] = [{"command": cid, "why": why} for cid, why in held[:MAX_COMMANDS]]
    doc["held_count"] = len(held)
    doc["by_status"] = by_status
    doc["issued_not_sent"] = by_status.get(ISSUED, 0)
    return doc


def breaker(outbox: Any) -> dict[str, Any]:
    """The blast-radius breaker of an outbox (engine/outbox.py): halted or not, and why."""
    halted = outbox.halted
    doc: dict[str, Any] = {
        "halted": halted is not None,
        "resumed_at": outbox.resumed_at,
        "resumed_iso": iso(outbox.resumed_at),
    }
    if halted is not None:
        doc |= {
            "since_id": outbox.halted_nid,
            "since": halted.time,
            "since_iso": iso(halted.time),
            "reason": halted.reason,
            "affected": halted.affected,
            "total": halted.total,
            "share": halted.share,
            "window": halted.window,
        }
    return doc


def runs(live: LiveState, state: LedgerState, config: SagaConfig, now: float) -> dict[str, Any]:
    """Reconciliation runs: the running ones, the last that ended, when the next are due."""
    active = state.saga.runs.active
    running = []
    for kind, run in active.items():
        running.append(
            {
                "run_id": run.run_id,
                "kind": kind,
                "trigger": run.trigger,
                "started": run.started_at,
                "started_iso": iso(run.started_at),
                "deadline": run.deadline,
                "rounds": run.rounds,
                "asked": len(run.asked),
                "remaining": len(run.remaining),
                "answers": run.answers,
                "next_round": run.next_at,
            }
        )
    recent = list(live.recent.runs.values())
    ended = [r for r in recent if r.outcome is not None]
    upcoming = {}
    for kind in (reconciliation.EXPLICIT, reconciliation.IMPLICIT):
        due = reconciliation.next_scheduled(state.saga.runs, kind, now, config.runs)
        upcoming[kind] = {"at": due, "at_iso": iso(due)}
    return {
        "running": running,
        "last": None if not ended else ended[-1].as_json(),
        "recent": [r.as_json() for r in reversed(recent)],
        "next": upcoming,
        "completed": state.saga.runs.completed,
        "superseded": state.saga.runs.superseded,
    }


def order_json(nid: int, event: Any) -> dict[str, Any]:
    """An operator order (or the breaker's halt) as the pages list it."""
    data = {k: v for k, v in event._asdict().items() if k not in ("time", "causation", "extra")}
    return {
        "id": nid,
        "kind": type(event).topic,
        "time": event.time,
        "time_iso": iso(event.time),
    } | data


def view_document(
    live: LiveState,
    *,
    scheduler: dict[str, Any],
    job: Any,
    config: SagaConfig,
    now: float,
) -> dict[str, Any]:
    """Everything the job page shows, as of one notification id."""
    with live.lock:
        state = live.refresh()
        wanted = 0 if job is None else job.instances
        return {
            "schema": SCHEMA_VIEW,
            "log": live.reader.path,
            "as_of": as_of(state, live.reader),
            "now": now,
            "scheduler": scheduler,
            "job": None
            if job is None
            else {"name": job.name, "instances": job.instances, "cmd": job.cmd},
            "dry_run": config.dry_run,
            "breaker": breaker(state.saga.outbox),
            "counts": counts(state),
            "tasks": len(state.views.drift.cells),
            "drift": drift(state, live.reader),
            "instances": instances(state, None if job is None else job.name, wanted),
            "runs": runs(live, state, config, now),
            "commands": commands(state, config, now),
            "orders": [order_json(n, e) for n, e in reversed(live.recent.orders)],
        }


# -- the task page -----------------------------------------------------------------------------


def _ordered_by(reader: LogReader, task_id: str) -> Any | None:
    """The operator's KillOrdered whose replacement ``task_id`` is, if it is one (an
    ordered task's id ends in /o<order id>, tools/operator/orders.py)."""
    tail = task_id.rsplit("/", 1)[-1]
    if not (tail.startswith("o") and tail[1:].isdigit()):
        return None
    order = reader.event_at(int(tail[1:]))
    return order if type(order) is KillOrdered else None


def _predecessor(state: LedgerState, reader: LogReader, task_id: str) -> tuple[str, dict] | None:
    saga = state.saga
    old = saga.ancestor.get(task_id)
    if old is not None:
        cid = saga.rescheduled.get(old)
        command = saga.outbox.commands.get(cid) if cid is not None else None
        rule = None if command is None else command.rule
        return old, {"by": "RESCHEDULE", "command": cid, "rule": rule}
    order = _ordered_by(reader, task_id)
    if order is not None:
        oid = int(task_id.rsplit("/o", 1)[1])
        return order.task_id, {
            "by": "operator",
            "order": oid,
            "operator": order.operator,
            "reason": order.reason,
        }
    return None


def lineage(state: LedgerState, reader: LogReader, task_id: str) -> list[dict[str, Any]]:
    """The task's generations, oldest first: the original, then each replacement with what
    made it (a RESCHEDULE command and its rule, or an operator's kill order)."""
    successors: dict[str, str] = {}
    record = state.views.scheduler.record(task_id)
    family = [task_id]
    if record is not None and record.job is not None and record.instance is not None:
        family = [
            t
            for t, r in state.views.scheduler.tasks.items()
            if r.job == record.job and r.instance == record.instance
        ]
    links: dict[str, dict] = {}  # task -> how it came to replace its predecessor
    previous: dict[str, str] = {}
    for tid in {*family, task_id}:
        found = _predecessor(state, reader, tid)
        if found is not None:
            previous[tid], links[tid] = found
            successors[found[0]] = tid
    first, seen = task_id, {task_id}
    while True:
        if first not in previous:
            found = _predecessor(state, reader, first)
            if found is None:
                break
            previous[first], links[first] = found
        if previous[first] in seen:
            break
        first = previous[first]
        seen.add(first)
    chain = [first]
    while chain[-1] in successors and successors[chain[-1]] not in chain:
        chain.append(successors[chain[-1]])
    if task_id not in chain:  # a loop or a gap: show the task alone rather than guess
        chain = [task_id]
    return [
        {
            "task_id": tid,
            "generation": position + 1,
            "scheduler_state": state.views.scheduler.get(tid),
            "mesos_state": state.views.mesos.get(tid),
            "replaces": chain[position - 1] if position else None,
            "link": links.get(tid) if position else None,
            "this": tid == task_id,
        }
        for position, tid in enumerate(chain)
    ]


def siblings(state: LedgerState, task_id: str, shown: set[str]) -> list[dict[str, Any]]:
    """The other tasks of the same job instance not in ``shown`` (tasks a scale-up made,
    earlier episodes), by id."""
    record = state.views.scheduler.record(task_id)
    if record is None or record.job is None or record.instance is None:
        return []
    return [
        {"task_id": t, "scheduler_state": r.state, "mesos_state": state.views.mesos.get(t)}
        for t, r in sorted(state.views.scheduler.tasks.items())
        if t not in shown and r.job == record.job and r.instance == record.instance
    ]


def creation(events: Iterable[tuple[int, Any]]) -> dict[str, Any] | None:
    """How the task came to be: its TaskCreated, and what caused it."""
    for nid, event in events:
        if type(event) is TaskCreated:
            extra = dict(event.extra)
            return {
                "id": nid,
                "time": event.time,
                "time_iso": iso(event.time),
                "causation": event.causation,
                "ancestor": extra.get("ancestor"),  # a RESCHEDULE's replacement
                "command": extra.get("command"),
                "replaces": extra.get("replaces"),  # an operator's kill's replacement
            }
    return None


def task_document(live: LiveState, task_id: str) -> dict[str, Any]:
    """Everything the task page shows: the task now, its generations, the other tasks of its
    instance, its history and its `why`, as of one notification id. CommandError (from the
    forensic commands) for a task no event names."""
    with live.lock:
        state = live.refresh()
        nid = state.last_nid
        row = queries.task(state.views, task_id)
        generations = lineage(state, live.reader, task_id)
        others = siblings(state, task_id, {g["task_id"] for g in generations})
        moment = as_of(state, live.reader)
    index = resolve_task(live.reader, nid, task_id).index
    rows = history(index, task_id)
    return {
        "schema": SCHEMA_TASK,
        "log": live.reader.path,
        "as_of": moment,
        "task": task_id,
        "row": None if row is None else row._asdict(),
        "lineage": generations,
        "siblings": others,
        "created": creation((e.nid, e.event) for e in index.task_events.get(task_id, ())),
        "history": [row_json(r) for r in rows],
        "why": explain(live.reader, index, nid, task_id),
    }

"""The runtime's Prometheus metrics (prometheus-client), defined in one place.

`taskledger run --metrics-port` hands a `Metrics` to the runtime as its observer (the
Ledger tells it of every append and commit, and of each committed event; the loop updates
the gauges about once a second) and serves `exposition()` on its /metrics endpoint:

    metrics = Metrics()
    started = time.perf_counter(); ids = ledger.append(events)
    metrics.observe_append(time.perf_counter() - started, events)    # per append call
    metrics.observe_commit(batch_size)                                # per group commit
    for nid, event in new_events: metrics.observe(event)              # runs, commands
    metrics.update_from(ledger, in_flight=n)                          # gauges

Counters and histograms count what happened while this process ran (as Prometheus
expects); gauges are recomputed from the ledger's state, so they are right after a restart.
Every name, label and meaning is documented in the README ("Metrics").
"""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from engine.drift_table import TABLE, FoundBy
from engine.events import (
    CommandIssued,
    ReconciliationCompleted,
    ReconciliationStarted,
    ReconciliationSuperseded,
)
from engine.lifecycle import ScheduleStatus
from tools.forensics import launches

PREFIX = "taskledger"
# An append waits for its group commit's fsync (~0.4 ms here) plus queueing.
APPEND_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
# A standby's lag, from the leader's stamp on an event to its being durable here.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5, 1, 2.5)
# Aurora expects a run to finish well within 30 minutes.
RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
DISAGREEING = [
    (cell.label, str(found)) for cell, found in TABLE.items() if found is not FoundBy.CONSISTENT
]
SCHEDULER_STATES = tuple(s.value for s in ScheduleStatus if s is not ScheduleStatus.DELETED)
COMMAND_STATUSES = ("issued", "dispatched", "failed", "retried", "confirmed", "cancelled")


class Metrics:
    """Every metric of the runtime, registered in one registry (its own by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        self.events_appended = Counter(
            f"{PREFIX}_events_appended",
            "Events appended durably to the log, by event kind.",
            ["kind"],
            registry=r,
        )
        self.append_seconds = Histogram(
            f"{PREFIX}_append_seconds",
            "Time from an append call to its events being durable (group commit included).",
            buckets=APPEND_BUCKETS,
            registry=r,
        )
        self.commit_batch_size = Histogram(
            f"{PREFIX}_group_commit_batch_size",
            "Events written by one group commit (one LMDB transaction, one fsync).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.drift_tasks = Gauge(
            f"{PREFIX}_drift_tasks",
            "Tasks in disagreement now, by drift cell (Mesos/scheduler) and who finds it.",
            ["cell", "found_by"],
            registry=r,
        )
        self.reconciliation_runs = Counter(
            f"{PREFIX}_reconciliation_runs",
            "Reconciliation runs ended, by kind (explicit/implicit) and outcome "
            "(answered, quiet, limit, superseded).",
            ["kind", "outcome"],
            registry=r,
        )
        self.reconciliation_run_seconds = Histogram(
            f"{PREFIX}_reconciliation_run_seconds",
            "Duration of completed reconciliation runs, by kind.",
            ["kind"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.answers_awaited = Gauge(
            f"{PREFIX}_reconciliation_answers_awaited",
            "Tasks an explicit run in progress asked about and has no answer for yet.",
            ["kind"],
            registry=r,
        )
        self.commands_issued = Counter(
            f"{PREFIX}_commands_issued",
            "Commands the saga issued while this process ran, by kind and rule.",
            ["kind", "rule"],
            registry=r,
        )
        self.commands = Gauge(
            f"{PREFIX}_commands",
            "Commands in the ledger's outbox state, by kind, rule and outcome (issued, retried, "
            "dispatched, failed, confirmed, cancelled).",
            ["kind", "rule", "outcome"],
            registry=r,
        )
        self.dispatch_halted = Gauge(
            f"{PREFIX}_dispatch_halted",
            "1 while the blast-radius breaker holds destructive commands, else 0.",
            registry=r,
        )
        self.launches_in_flight = Gauge(
            f"{PREFIX}_launches_in_flight",
            "Tasks launched that Mesos has not spoken of yet (not yet overdue): not counted "
            "in taskledger_drift_tasks, whose absent/non-terminal cell they would sit in.",
            registry=r,
        )
        self.tasks = Gauge(
            f"{PREFIX}_tasks",
            "Tasks the scheduler view holds, by scheduler state.",
            ["state"],
            registry=r,
        )
        self.updates_in_flight = Gauge(
            f"{PREFIX}_updates_in_flight",
            "Status updates received and not yet done with (committed, and acknowledged if "
            "they carry a uuid); at most taskledger run --max-in-flight.",
            registry=r,
        )
        self.leader = Gauge(
            f"{PREFIX}_leader",
            "1 while this replica leads (may append and call Mesos), else 0; a scheduler "
            "without replication always leads.",
            registry=r,
        )
        self.epoch = Gauge(
            f"{PREFIX}_epoch",
            "The leader epoch this replica last led or saw won (0: none yet).",
            registry=r,
        )
        self.follower_lag = Histogram(
            f"{PREFIX}_follower_lag_seconds",
            "A standby replica's lag: from the time the leader stamped on an event (when it "
            "received or decided it) to the event being durable in this replica's mirror "
            "and in its views; the newest event of each batch the replica applies.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._run_kinds: dict[str, str] = {}
        for label, found_by in DISAGREEING:
            self.drift_tasks.labels(label, found_by).set(0)
        for kind in ("explicit", "implicit"):
            self.answers_awaited.labels(kind).set(0)
        self.dispatch_halted.set(0)
        self.leader.set(1)

    # -- as things happen ----------------------------------------------------------------
    def observe_append(self, seconds: float, events: Iterable[Any]) -> None:
        """One append call: its latency and the kinds of the events it made durable."""
        self.append_seconds.observe(seconds)
        for kind, n in _Tally(type(e).topic for e in events).items():
            self.events_appended.labels(kind).inc(n)

    def observe_leadership(self, leading: bool, epoch: int | None) -> None:
        """A replica's change of role (engine/replication.py)."""
        self.leader.set(1 if leading else 0)
        if epoch is not None:
            self.epoch.set(epoch)

    def observe_follower_lag(self, seconds: float) -> None:
        """A standby applied events up to one the leader stamped ``seconds`` ago."""
        self.follower_lag.observe(seconds)

    def observe_commit(self, batch_size: int) -> None:
        """One group commit and how many events it wrote."""
        self.commit_batch_size.observe(batch_size)

    def observe(self, event: Any) -> None:
        """One event of the log, in order: counts runs and commands."""
        kind = type(event)
        if kind is ReconciliationStarted:
            self._run_kinds[event.run_id] = event.kind
        elif kind is ReconciliationCompleted:
            self._run_kinds.pop(event.run_id, None)
            self.reconciliation_runs.labels(event.kind, event.outcome).inc()
            self.reconciliation_run_seconds.labels(event.kind).observe(event.duration)
        elif kind is ReconciliationSuperseded:
            run_kind = self._run_kinds.pop(event.run_id, "unknown")
            self.reconciliation_runs.labels(run_kind, "superseded").inc()
        elif kind is CommandIssued:
            self.commands_issued.labels(event.kind, event.rule).inc()

    # -- from the ledger's state -----------------------------------------------------------
    def update_from(self, ledger: Any, *, in_flight: int | None = None) -> None:
        """Sets the gauges from a Ledger (or ReadOnlyLedger): drift by cell, commands by
        kind/rule/outcome, answers awaited, the breaker, tasks by state (and the updates in
        flight, if given). Cells, outcomes and states that are empty now read 0, so their
        series do not vanish."""
        if in_flight is not None:
            self.updates_in_flight.set(in_flight)
        by_state = ledger.views.scheduler.state_counts()
        for state in SCHEDULER_STATES:
            self.tasks.labels(state).set(by_state.get(state, 0))
        # Counted in the drift view's cell column: no Drift record built (100k when a
        # failover leaves every task disagreeing for a while).
        counts = {
            (cell.label, str(TABLE[cell])): n
            for cell, n in ledger.views.drift.disagreement_counts().items()
        }
        saga = _saga_of(ledger)
        if saga is not None:
            launching = launches.count(ledger.views, saga)
            self.launches_in_flight.set(launching)
            key = (launches.CELL.label, str(TABLE[launches.CELL]))
            if key in counts:
                counts[key] -= launching
        for label, found_by in DISAGREEING:
            self.drift_tasks.labels(label, found_by).set(counts.get((label, found_by), 0))
        if saga is None:
            return
        outbox = saga.outbox
        tally = _Tally((r.kind, r.rule, r.status) for r in outbox.commands.values())
        seen = {(k, rule) for k, rule, _ in tally}
        for kind, rule in seen:
            for status in COMMAND_STATUSES:
                self.commands.labels(kind, rule, status).set(tally.get((kind, rule, status), 0))
        awaited = _Tally()
        for run in saga.runs.active.values():
            awaited[run.kind] += len(run.remaining)
        for kind in ("explicit", "implicit"):
            self.answers_awaited.labels(kind).set(awaited.get(kind, 0))
        self.dispatch_halted.set(0 if outbox.halted is None else 1)

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format (what /metrics serves)."""
        return generate_latest(self.registry)


def _saga_of(ledger: Any) -> Any | None:
    saga = getattr(ledger, "saga", None)
    if saga is None:
        state = getattr(ledger, "state", None)
        saga = getattr(state, "saga", None)
    return saga

"""tools/metrics.py: the runtime's Prometheus metrics, scraped from a registry."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from engine.events import (
    CommandIssued,
    ReconciliationCompleted,
    ReconciliationStarted,
    ReconciliationSuperseded,
)
from tools.metrics import Metrics
from tools.readonly import ReadOnlyLedger


def scrape(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples


def test_metrics_after_updates(story_log):
    metrics = Metrics()
    events = [
        ReconciliationStarted(1.0, None, "r1", "explicit", "registered", 100.0),
        CommandIssued(1.0, None, "KILL", "t", "R-IMPLICIT-KILL-UNKNOWN", [1], "r1"),
        ReconciliationCompleted(
            41.0, None, "r1", "explicit", "answered", 3, 3, 3, 0, 2, 40.0, {}, {}
        ),
        ReconciliationStarted(50.0, None, "r2", "implicit", "schedule", 100.0),
        ReconciliationSuperseded(51.0, None, "r2", "r3", "reregistered"),
    ]
    metrics.observe_append(0.0004, events)
    metrics.observe_commit(5)
    for event in events:
        metrics.observe(event)
    with ReadOnlyLedger.open(story_log) as ledger:
        metrics.update_from(ledger)
    got = scrape(metrics)
    assert got["taskledger_events_appended_total", (("kind", "ReconciliationStarted"),)] == 2
    assert got["taskledger_append_seconds_count", ()] == 1
    assert got["taskledger_append_seconds_bucket", (("le", "0.0005"),)] == 1
    assert got["taskledger_group_commit_batch_size_sum", ()] == 5
    runs = "taskledger_reconciliation_runs_total"
    assert got[runs, (("kind", "explicit"), ("outcome", "answered"))] == 1
    assert got[runs, (("kind", "implicit"), ("outcome", "superseded"))] == 1
    assert got["taskledger_reconciliation_run_seconds_sum", (("kind", "explicit"),)] == 40.0
    issued = "taskledger_commands_issued_total"
    assert got[issued, (("kind", "KILL"), ("rule", "R-IMPLICIT-KILL-UNKNOWN"))] == 1
    # Gauges from the ledger: the story ends with web/1 in absent/non-terminal.
    drift = "taskledger_drift_tasks"
    assert got[drift, (("cell", "absent/non-terminal"), ("found_by", "explicit"))] == 1
    assert got[drift, (("cell", "non-terminal/absent"), ("found_by", "implicit"))] == 0
    commands = "taskledger_commands"
    kill = (("kind", "KILL"), ("outcome", "confirmed"), ("rule", "R-IMPLICIT-KILL-UNKNOWN"))
    assert got[commands, kill] == 1
    assert got["taskledger_dispatch_halted", ()] == 0
    # The explicit run of the story asked about web/0 and web/1; web/0 answered.
    assert got["taskledger_reconciliation_answers_awaited", (("kind", "explicit"),)] == 1


def test_two_metrics_objects_do_not_collide():
    first, second = Metrics(), Metrics()
    first.observe_commit(1)
    assert scrape(second)["taskledger_group_commit_batch_size_count", ()] == 0


def test_tasks_by_state_and_updates_in_flight(story_log):
    metrics = Metrics()
    with ReadOnlyLedger.open(story_log) as ledger:
        metrics.update_from(ledger, in_flight=7)
        view = ledger.views.scheduler
        states = [r.state for r in view.tasks.values()]
    got = scrape(metrics)
    assert got["taskledger_updates_in_flight", ()] == 7
    for state in ("RUNNING", "PENDING", "LOST", "KILLED"):
        assert got["taskledger_tasks", (("state", state),)] == states.count(state)
    assert sum(v for (name, _), v in got.items() if name == "taskledger_tasks") == len(
        [s for s in states if s != "DELETED"]
    )


def test_the_drift_counts_are_the_disagreements_counted(story_log):
    from collections import Counter

    with ReadOnlyLedger.open(story_log) as ledger:
        drift = ledger.views.drift
        expected = Counter(cell for cell, _ in drift.disagreements.values())
        assert drift.disagreement_counts() == dict(expected) and expected


def test_launches_in_flight_are_not_drift_until_the_saga_asks_about_them(tmp_path):
    from engine.ledger import Ledger

    t0 = 1_714_532_400.0
    absent = ("cell", "absent/non-terminal"), ("found_by", "explicit")
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        ledger.framework_registered("fw", "master", time=t0)
        for n in range(5):
            ledger.task_created(f"web/{n}", job="web", time=t0 + 1)
            ledger.task_assigned(f"web/{n}", agent_id="agent-1", time=t0 + 1)
        metrics = Metrics()
        metrics.update_from(ledger)
        got = scrape(metrics)
        assert got["taskledger_launches_in_flight", ()] == 5
        assert got["taskledger_drift_tasks", absent] == 0
        ledger.status_update(
            {"task_id": {"value": "web/0"}, "state": "TASK_RUNNING", "uuid": "dTE="}, time=t0 + 2
        )
        # Long past the transient timeout the saga asks about the silent launches: from
        # then on the log says they are late, and they count as drift.
        ledger.tick(now=t0 + 3600)
        asked = set(ledger.saga.transient_asked)
        assert asked == {f"web/{n}" for n in range(1, 5)}
        metrics.update_from(ledger)
        got = scrape(metrics)
        assert got["taskledger_launches_in_flight", ()] == 0
        assert got["taskledger_drift_tasks", absent] == 4

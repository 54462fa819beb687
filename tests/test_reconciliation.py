"""Reconciliation runs as a pure state machine: backoff, batches, schedules, supersession."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from saga_cluster import FakeMaster, status, step, topics

from engine import reconciliation as rc
from engine.events import TaskAssigned, TaskCreated
from engine.ledger import Ledger
from engine.reconciliation import RunConfig, Runs


@given(st.text(min_size=1, max_size=10), st.integers(1, 40))
def test_backoff_is_truncated_exponential_with_seeded_jitter(run_id, round_):
    config = RunConfig()
    wait = rc.backoff(run_id, round_, config)
    base = min(config.backoff_cap, config.backoff_base * 2 ** (round_ - 1))
    assert base <= wait < base * (1 + config.jitter)
    assert wait == rc.backoff(run_id, round_, config)  # the same on replay


def test_jitter_differs_between_runs():
    config = RunConfig()
    assert len({rc.backoff(f"explicit-{i}", 1, config) for i in range(20)}) == 20


def test_schedules_are_non_overlapping_and_missed_slots_give_one_run():
    config = RunConfig()
    runs = Runs(first_time=0.0)
    assert not rc.scheduled_due(runs, "explicit", 59, config)
    assert rc.scheduled_due(runs, "explicit", 60, config)
    assert not rc.scheduled_due(runs, "implicit", 1859, config)
    assert rc.scheduled_due(runs, "implicit", 1860, config)
    runs.last_started_at["explicit"] = 60.0
    assert not rc.scheduled_due(runs, "explicit", 3659, config)
    assert rc.scheduled_due(runs, "explicit", 3660 + 5 * 3600, config)  # late: one run


def test_compressed_schedule_for_the_demo():
    config = RunConfig().compressed(60)
    assert config.explicit_interval == 60 and config.spread == 30
    assert config.batch_size == 1000


def test_unknown_kind_is_refused(tmp_path):
    with Ledger.open(tmp_path / "l") as ledger, pytest.raises(rc.UnknownRunKind, match="sideways"):
        ledger.reconcile("sideways", now=0)


def _cluster(ledger: Ledger, master: FakeMaster, count: int) -> list[str]:
    master.agent("a1")
    tasks = [f"job/{i}" for i in range(count)]
    ledger.append(
        [
            e
            for t in tasks
            for e in (TaskCreated(0.0, None, t, "job", 0), TaskAssigned(0.0, None, t, "a1"))
        ]
    )
    for t in tasks:
        master.tasks[t] = ("TASK_RUNNING", "a1")
    return tasks


def test_explicit_run_asks_in_batches_and_drops_the_answered(tmp_path):
    master = FakeMaster()
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        tasks = _cluster(ledger, master, 2500)
        run_id = ledger.reconcile("explicit", now=10)
        asks = [c for c in ledger.pending_commands() if c.kind == "RECONCILE"]
        assert [len(c.tasks) for c in asks] == [1000, 1000, 500]
        assert sorted(t for c in asks for t in c.tasks) == sorted(tasks)
        assert all(c.run_id == run_id and c.evidence for c in asks)
        # Only half the master's answers arrive.
        master.agents["a1"] = "failover"
        for t in tasks[:1250]:
            master.tasks[t] = ("TASK_RUNNING", "a1")
        ledger.dispatch(lambda c: None, now=10)
        for t in tasks[:1250]:
            ledger.status_update(status(t, "TASK_RUNNING", answer=True), time=11)
        rounds = []
        for now in range(11, 40):
            ledger.tick(now=now)
            rounds = topics(ledger, "ReconciliationRound")
            if len(rounds) > 1:
                break
        assert rounds[1].asked == 1250 and rounds[1].answered == 1250
        second = [c for c in ledger.pending_commands() if c.kind == "RECONCILE"]
        assert sorted(t for c in second for t in c.tasks) == sorted(tasks[1250:])


def test_registration_supersedes_the_explicit_run_in_progress(tmp_path):
    master = FakeMaster()
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        _cluster(ledger, master, 3)
        master.agents["a1"] = "failover"  # silent: the first run cannot finish
        first = ledger.reconcile("explicit", now=0)
        step(ledger, master, 5)
        ledger.framework_reregistered("fw", "m2", time=6)
        step(ledger, master, 6)
        superseded = topics(ledger, "ReconciliationSuperseded")
        assert [(s.run_id, s.by_run_id) for s in superseded] == [(first, "explicit-2")]
        started = topics(ledger, "ReconciliationStarted")
        assert [s.trigger for s in started] == ["operator", "registered"]
        assert list(ledger.saga.runs.active) == ["explicit"]  # never two of a kind
        cancelled = topics(ledger, "CommandCancelled")
        assert all(c.reason == "run superseded" for c in cancelled)


def test_implicit_run_collects_until_quiet(tmp_path):
    master = FakeMaster()
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        _cluster(ledger, master, 4)
        ledger.reconcile("implicit", now=100)
        for now in range(100, 200):
            step(ledger, master, now)
        (done,) = [c for c in topics(ledger, "ReconciliationCompleted") if c.kind == "implicit"]
        # The scheduled explicit run ran too: its answers look the same on the wire.
        assert done.outcome == "quiet" and done.answered == 4 and done.answers >= 4
        assert done.by_cell == {"consistent": 4}
        assert 30 <= done.duration <= 32


def test_explicit_run_stops_at_its_limit_and_counts_the_unanswered(tmp_path):
    master = FakeMaster()
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        ledger.saga_config = ledger.saga_config.__class__(runs=RunConfig(explicit_limit=300))
        _cluster(ledger, master, 3)
        master.agents["a1"] = "failover"
        ledger.reconcile("explicit", now=0)
        for now in range(0, 400, 5):
            step(ledger, master, now)
        (done,) = [c for c in topics(ledger, "ReconciliationCompleted") if c.run_id == "explicit-1"]
        assert done.outcome == "limit" and done.unanswered == 3 and done.answered == 0
        assert done.duration < 300 + RunConfig().backoff_cap * 1.2


def test_the_next_round_waits_while_answers_still_come(tmp_path):
    """A large round is answered over many seconds: while answers keep coming, the next
    round does not ask again (it would only repeat them); once they stop for one backoff,
    it asks about the tasks still unanswered."""
    master = FakeMaster()
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        tasks = _cluster(ledger, master, 300)
        ledger.reconcile("explicit", now=10)
        ledger.dispatch(lambda c: None, now=10)
        wait = rc.backoff("explicit-1", 1, RunConfig())
        # One answer a second, well past the first round's backoff (5-6 s).
        now = 10.0
        for task in tasks[:30]:
            now += 1.0
            ledger.status_update(status(task, "TASK_RUNNING", answer=True), time=now)
            ledger.tick(now=now)
        assert len(topics(ledger, "ReconciliationRound")) == 1
        # Quiet: the round comes one backoff after the last answer, not before.
        ledger.tick(now=now + wait - 0.01)
        assert len(topics(ledger, "ReconciliationRound")) == 1
        ledger.tick(now=now + wait)
        rounds = topics(ledger, "ReconciliationRound")
        assert len(rounds) == 2 and rounds[1].asked == 270

"""Every fault of the simulator's catalogue, end to end: the real pymesos driver over real HTTP
to the simulated master, the scheduler `Runtime` on a thread with a real LMDB log, and the
saga's timers compressed by the same time scale as the master's clock (as in the demo).

Each test injects one fault into a converged cluster and checks that the scheduler converges
again (every instance RUNNING once in the Ledger and live once on the cluster, no drift, no
other task of ours alive), that no callback error reached the core, that no agent update was
recorded twice, and that the live state equals a replay of the log (tests/e2e_support.py).
Where the saga decides, the rule ids of the CommandIssued events in the log are checked too.

Stream drop, silent stream and master failover are in tests/test_e2e_scheduler.py; a crash
between receiving an update and committing it in tests/test_crash_loop.py.
"""

from __future__ import annotations

import pytest
from e2e_support import (
    Scheduler,
    assert_converges,
    assert_no_update_recorded_twice,
    commands,
    live_on_cluster,
    now,
    replacement_of,
    rule_spent,
    rules_for,
    running_task_on,
    scheduled_run_done,
    updates_of,
)
from sim_session import inject, state, wait_until

from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

# The master's clock and the saga's schedules run this much faster than the wall clock: the
# 15-minute partition timeout takes 7.5 s, the 5-minute transient timeout 2.5 s, the agents'
# 10 s update re-send 83 ms.
SCALE = 120.0
HEARTBEAT = 60.0  # simulated seconds: 0.5 s real, a 1.5 s watchdog
INSTANCES = 6
TIMEOUT = 20.0  # generous: convergence takes 1-10 s here


@pytest.fixture
def cluster():
    config = SimConfig(agents=3, seed=11, heartbeat_interval=HEARTBEAT)
    with BackgroundSim(config, time_scale=SCALE) as sim:
        yield sim


@pytest.fixture
def scheduler(cluster, tmp_path):
    running = Scheduler(
        cluster.address,
        str(tmp_path / "log"),
        instances=INSTANCES,
        heartbeat_interval=HEARTBEAT / SCALE,
        saga_scale=SCALE,
    ).start()
    try:
        assert_converges(running, cluster.address, TIMEOUT)
        # The schedule's first explicit run (0.5 s in) is over: the next is 30 s away, so each
        # test sees only the reconciliation its fault causes.
        wait_until(lambda: scheduled_run_done(running.ledger), TIMEOUT, what="first run")
        yield running
    finally:
        running.stop()


def agent_index(address: str, agent_id: str) -> int:
    return next(a["index"] for a in state(address)["agents"] if a["id"] == agent_id)


def tasks_on_agent(address: str, agent_id: str) -> list[str]:
    return sorted(t for t, task in live_on_cluster(address).items() if task["agent_id"] == agent_id)


def lose_one_task(address: str) -> str:
    """Fail one running task of the job (its executor dies): the saga replaces it."""
    task_id = running_task_on(address)["task_id"]
    inject(address, {"kind": "executor_lost", "task_id": task_id})
    return task_id


def wait_spent(address: str, kind: str) -> None:
    """Every armed rule of this kind fired its `count` times."""
    wait_until(lambda: rule_spent(address, kind), TIMEOUT, what=f"{kind} spent")


def wait_replaced(scheduler: Scheduler, task_id: str, timeout: float = TIMEOUT) -> str:
    return wait_until(
        lambda: replacement_of(scheduler.ledger, task_id), timeout, what=f"{task_id} replaced"
    )


# ------------------------------------------------------------------------------ agents


def test_agent_partition_then_heal(cluster, scheduler):
    """The partitioned agent's tasks are UNREACHABLE (held, not killed), given up as LOST after
    the partition timeout and replaced; when the agent comes back, the originals (alive again)
    are killed by R-PARTITION-RETURNED-KILL: one task per instance, never two."""
    address, ledger = cluster.address, scheduler.ledger
    victim = running_task_on(address)["agent_id"]
    originals = tasks_on_agent(address, victim)
    assert originals
    since = ledger.last_id
    inject(address, {"kind": "agent_partition", "agent_id": agent_index(address, victim)})

    wait_until(
        lambda: all(ledger.scheduler_view.get(t) == "PARTITIONED" for t in originals),
        TIMEOUT,
        what="originals PARTITIONED",
    )
    # Held while partitioned (R-UNREACHABLE-HOLD): no kill, no loss yet.
    for task_id in originals:
        assert not [r for r in rules_for(ledger, task_id, since) if r[0] != "RECONCILE"]
    replacements = [wait_replaced(scheduler, t) for t in originals]
    # The replacements run on the other agents while the originals still run, unseen.
    wait_until(
        lambda: all(ledger.scheduler_view.get(r) == "RUNNING" for r in replacements),
        TIMEOUT,
        what="replacements RUNNING",
    )
    assert all(live_on_cluster(address)[t]["agent_id"] == victim for t in originals)

    inject(address, {"kind": "agent_heal", "agent_id": victim})
    assert_converges(scheduler, address, TIMEOUT)
    for task_id in originals:
        rules = rules_for(ledger, task_id, since)
        assert ("MARK_LOST", "R-PARTITION-TIMEOUT") in rules, rules
        assert ("RESCHEDULE", "R-LOST-RESCHEDULE") in rules, rules
        assert ("KILL", "R-PARTITION-RETURNED-KILL") in rules, rules
        # A kill not confirmed within its backoff is sent again (R-KILL-RETRY); no other.
        kills = {rule for kind, rule in rules if kind == "KILL"}
        assert kills <= {"R-PARTITION-RETURNED-KILL", "R-KILL-RETRY"}, rules
        assert task_id not in live_on_cluster(address)
    assert all(ledger.scheduler_view.get(r) == "RUNNING" for r in replacements)


def test_agent_removed_by_the_operator(cluster, scheduler):
    """TASK_GONE_BY_OPERATOR for every task of the removed agent: each replaced by
    R-GONE-RESCHEDULE on the agents that remain."""
    address, ledger = cluster.address, scheduler.ledger
    victim = running_task_on(address)["agent_id"]
    gone = tasks_on_agent(address, victim)
    since = ledger.last_id
    inject(address, {"kind": "agent_remove", "agent_id": victim})
    assert_converges(scheduler, address, TIMEOUT)
    for task_id in gone:
        states = [u.state for u in updates_of(ledger, task_id, since)]
        assert "TASK_GONE_BY_OPERATOR" in states, states
        assert rules_for(ledger, task_id, since) == [("RESCHEDULE", "R-GONE-RESCHEDULE")]
        assert ledger.scheduler_view.get(replacement_of(ledger, task_id)) == "RUNNING"
    assert not any(t["agent_id"] == victim for t in live_on_cluster(address).values())


def test_executor_lost(cluster, scheduler):
    """TASK_FAILED (REASON_EXECUTOR_TERMINATED): replaced by the lifecycle's RESCHEDULE."""
    address, ledger = cluster.address, scheduler.ledger
    since = ledger.last_id
    failed = lose_one_task(address)
    assert_converges(scheduler, address, TIMEOUT)
    [update] = [u for u in updates_of(ledger, failed, since) if u.state == "TASK_FAILED"]
    assert update.reason == "REASON_EXECUTOR_TERMINATED"
    assert rules_for(ledger, failed, since) == [("RESCHEDULE", "R-LIFECYCLE-RESCHEDULE")]
    assert ledger.scheduler_view.get(failed) == "FAILED"


# ------------------------------------------------------------------------------ a rogue


def test_rogue_task_is_killed_after_an_implicit_run(cluster, scheduler):
    """A task of our framework the scheduler never launched shows up only in an implicit
    reconciliation; R-IMPLICIT-KILL-UNKNOWN kills it, and nothing else is touched."""
    address, ledger = cluster.address, scheduler.ledger
    since = ledger.last_id
    inject(address, {"kind": "rogue_task", "task_id": "rogue-1", "agent_id": 0})
    assert "rogue-1" in live_on_cluster(address)
    # Nothing tells the scheduler (no update): only an implicit run asks about every task.
    run_id = ledger.reconcile("implicit", now=now(), trigger="test")
    assert_converges(scheduler, address, TIMEOUT)
    kills = [k for k in commands(ledger, since, "KILL") if k.retry_of is None]
    assert [(k.task_id, k.rule) for k in kills] == [("rogue-1", "R-IMPLICIT-KILL-UNKNOWN")]
    assert kills[0].run_id == run_id
    assert ledger.mesos_view.get("rogue-1") == "TASK_KILLED"
    assert "rogue-1" not in live_on_cluster(address)


# ------------------------------------------------------------------------------ updates


def test_dropped_updates_are_resent_by_the_agent(cluster, scheduler):
    """The agent re-sends what never reached the scheduler (unacknowledged): the failure and
    every update of the replacement arrive in the end, each recorded once."""
    address, ledger = cluster.address, scheduler.ledger
    since = ledger.last_id
    inject(address, {"kind": "drop_updates", "count": 4})
    failed = lose_one_task(address)
    assert_converges(scheduler, address, TIMEOUT)
    wait_spent(address, "drop_updates")
    assert [u.state for u in updates_of(ledger, failed, since)] == ["TASK_FAILED"]
    replacement = replacement_of(ledger, failed)
    assert [u.state for u in updates_of(ledger, replacement)] == [
        "TASK_STARTING",
        "TASK_RUNNING",
    ]


def test_duplicated_updates_are_recorded_once(cluster, scheduler):
    address, ledger = cluster.address, scheduler.ledger
    since = ledger.last_id
    before = scheduler.core.stats.duplicates
    # The failure, then the replacement's STARTING and RUNNING: each comes twice.
    inject(address, {"kind": "duplicate_updates", "count": 3})
    failed = lose_one_task(address)
    assert_converges(scheduler, address, TIMEOUT)
    wait_spent(address, "duplicate_updates")
    assert scheduler.core.stats.duplicates >= before + 3
    assert [u.state for u in updates_of(ledger, failed, since)] == ["TASK_FAILED"]
    assert rules_for(ledger, failed, since) == [("RESCHEDULE", "R-LIFECYCLE-RESCHEDULE")]


def test_reordered_updates_across_tasks(cluster, scheduler):
    """Updates of different tasks overtaking each other change nothing: each task's own
    updates stay in order, and both failures are replaced once."""
    address, ledger = cluster.address, scheduler.ledger
    since = ledger.last_id
    running = sorted(t for t, task in live_on_cluster(address).items())
    first, second = running[0], running[-1]
    # At one instant: the first failure is held back, the second overtakes it.
    inject(
        address,
        [
            {"kind": "reorder_updates", "count": 3, "hold": 30},
            {"kind": "executor_lost", "task_id": first},
            {"kind": "executor_lost", "task_id": second},
        ],
    )
    assert_converges(scheduler, address, TIMEOUT)
    wait_spent(address, "reorder_updates")
    [first_failed] = [
        nid
        for nid, e in _events(ledger, "StatusUpdateReceived", since)
        if e.task_id == first and not e.is_reconciliation_answer
    ]
    [second_failed] = [
        nid
        for nid, e in _events(ledger, "StatusUpdateReceived", since)
        if e.task_id == second and not e.is_reconciliation_answer
    ]
    assert second_failed < first_failed
    for task_id in (first, second):
        assert [u.state for u in updates_of(ledger, task_id, since)] == ["TASK_FAILED"]
        assert rules_for(ledger, task_id, since) == [("RESCHEDULE", "R-LIFECYCLE-RESCHEDULE")]
        replacement = replacement_of(ledger, task_id)
        assert [u.state for u in updates_of(ledger, replacement)] == [
            "TASK_STARTING",
            "TASK_RUNNING",
        ]


def test_lost_acknowledgements_mean_the_update_comes_again(cluster, scheduler):
    """The ACKNOWLEDGE never reaches the agent: it re-sends the update, the Ledger sees the
    same uuid and records it once, and the second acknowledgement ends it."""
    address, ledger = cluster.address, scheduler.ledger
    since = ledger.last_id
    task_id = running_task_on(address)["task_id"]
    before = scheduler.core.stats.duplicates
    inject(
        address,
        [
            {"kind": "lose_acks", "count": 2, "task_id": task_id},
            {"kind": "executor_lost", "task_id": task_id},
        ],
    )
    assert_converges(scheduler, address, TIMEOUT)
    wait_spent(address, "lose_acks")
    # Acknowledged in the end: the terminal update is no longer pending, the task is gone.
    wait_until(
        lambda: all(t["task_id"] != task_id for t in state(address)["tasks"]),
        TIMEOUT,
        what="the failed task forgotten by the master",
    )
    # Delivered three times (two acknowledgements lost), recorded once.
    assert scheduler.core.stats.duplicates >= before + 2
    assert [u.state for u in updates_of(ledger, task_id, since)] == ["TASK_FAILED"]
    assert_no_update_recorded_twice(ledger)


# ------------------------------------------------------------------------------ launches


def test_lost_accept_is_reconciled_then_replaced(cluster, scheduler):
    """An ACCEPT answered 202 that never reached the master: the replacement stays ASSIGNED
    until the transient timeout, is asked about (R-TRANSIENT-RECONCILE), the master has never
    heard of it (TASK_GONE on its registered agent) and R-GONE-RESCHEDULE replaces it."""
    address, ledger = cluster.address, scheduler.ledger
    inject(address, {"kind": "lose_accept", "count": 1})
    failed = lose_one_task(address)
    stuck = wait_replaced(scheduler, failed)
    assert_converges(scheduler, address, TIMEOUT)
    wait_spent(address, "lose_accept")
    rules = rules_for(ledger, stuck)
    assert rules[:2] == [
        ("RECONCILE", "R-TRANSIENT-RECONCILE"),
        ("RESCHEDULE", "R-GONE-RESCHEDULE"),
    ], rules
    # Aurora's lifecycle also kills an ASSIGNED task reported LOST (its launch may yet
    # arrive): harmless, the master answers the kill of a task it never heard of TASK_GONE.
    assert set(rules[2:]) <= {("KILL", "R-LIFECYCLE-KILL")}, rules
    # The master never heard of it: TASK_GONE (its agent is registered), to the question and
    # to the kill alike.
    assert {u.state for u in updates_of(ledger, stuck, answers=True)} == {"TASK_GONE"}
    assert ledger.scheduler_view.get(replacement_of(ledger, stuck)) == "RUNNING"


def test_lost_launch_is_reconciled_then_replaced(cluster, scheduler):
    """A LAUNCH the master accepted but the agent never got: the master says STAGING when
    asked (R-TRANSIENT-RECONCILE), until the agent reports it TASK_DROPPED; then
    R-GONE-RESCHEDULE replaces it."""
    address, ledger = cluster.address, scheduler.ledger
    # Dropped after 4 s (longer than the 2.5 s transient timeout): asked about first.
    inject(address, {"kind": "lose_launch", "count": 1, "drop_after": 4 * SCALE})
    failed = lose_one_task(address)
    stuck = wait_replaced(scheduler, failed)
    assert_converges(scheduler, address, TIMEOUT)
    wait_spent(address, "lose_launch")
    rules = rules_for(ledger, stuck)
    assert ("RECONCILE", "R-TRANSIENT-RECONCILE") in rules, rules
    assert ("RESCHEDULE", "R-GONE-RESCHEDULE") in rules, rules
    assert {r for r in rules if r[0] not in ("RECONCILE", "RESCHEDULE")} <= {
        ("KILL", "R-LIFECYCLE-KILL")
    }, rules
    states = [u.state for u in updates_of(ledger, stuck, answers=True)]
    assert "TASK_STAGING" in states and states[-1] == "TASK_DROPPED", states
    assert ledger.scheduler_view.get(replacement_of(ledger, stuck)) == "RUNNING"


def test_offers_rescinded_before_they_are_used(cluster, scheduler):
    """An offer rescinded while the scheduler decides on it: the ACCEPT names an offer that is
    no longer valid, the master answers TASK_DROPPED (REASON_INVALID_OFFERS) and
    R-GONE-RESCHEDULE replaces the task on a fresh offer."""
    address, ledger, core = cluster.address, scheduler.ledger, scheduler.core
    original = core.offers
    rescinded: list[list[str]] = []

    def rescind_first(offers: list[dict]) -> None:
        # The first offers that will launch something are rescinded on the master before the
        # scheduler answers them (a RESCIND racing the ACCEPT).
        if not rescinded and core.pending_tasks():
            inject(address, {"kind": "rescind_offers"})
            rescinded.append([o["id"]["value"] for o in offers])
        original(offers)

    core.offers = rescind_first
    failed = lose_one_task(address)
    dropped = wait_replaced(scheduler, failed)
    assert_converges(scheduler, address, TIMEOUT)
    assert rescinded
    [update] = updates_of(ledger, dropped)
    assert (update.state, update.reason) == ("TASK_DROPPED", "REASON_INVALID_OFFERS")
    rules = rules_for(ledger, dropped)
    assert rules[0] == ("RESCHEDULE", "R-GONE-RESCHEDULE"), rules
    assert set(rules[1:]) <= {("KILL", "R-LIFECYCLE-KILL")}, rules
    assert ledger.scheduler_view.get(replacement_of(ledger, dropped)) == "RUNNING"


# ------------------------------------------------------------------------------ calls


def test_failing_calls_are_recorded_and_retried(cluster, scheduler):
    """503s: a RECONCILE and a KILL that fail are recorded as CommandFailed and sent again
    until they get through; acknowledgements, launches and declines that fail are tried again
    by the master's re-sends and the next offers."""
    address, ledger = cluster.address, scheduler.ledger
    since = ledger.last_id
    inject(
        address,
        [
            {"kind": "fail_calls", "calls": ["RECONCILE"], "count": 1},
            {"kind": "fail_calls", "calls": ["KILL"], "count": 1},
            {"kind": "fail_calls", "calls": ["ACKNOWLEDGE", "ACCEPT", "DECLINE"], "count": 3},
            {"kind": "rogue_task", "task_id": "rogue-1", "agent_id": 1},
        ],
    )
    ledger.reconcile("implicit", now=now(), trigger="test")
    lose_one_task(address)
    assert_converges(scheduler, address, TIMEOUT)
    wait_spent(address, "fail_calls")
    # The three that failed inside callbacks were handled there, not raised into pymesos.
    assert scheduler.core.stats.call_failures >= 3
    wait_until(lambda: not scheduler.core.unanswered_offers, TIMEOUT, what="offers answered")
    failed = {e.command_id for _, e in _events(ledger, "CommandFailed", since)}
    dispatched = {e.command_id for _, e in _events(ledger, "CommandDispatched", since)}
    kinds = {_command(ledger, cid).kind for cid in failed}
    assert kinds == {"RECONCILE", "KILL"}, kinds
    assert failed <= dispatched  # each failed command got through later
    rogue_kills = [k.rule for k in commands(ledger, since, "KILL") if k.task_id == "rogue-1"]
    assert rogue_kills[0] == "R-IMPLICIT-KILL-UNKNOWN", rogue_kills
    assert "rogue-1" not in live_on_cluster(address)


def test_slow_calls(cluster, scheduler):
    """Calls answered late (within the HTTP timeout) slow the scheduler down, nothing more."""
    address, ledger = cluster.address, scheduler.ledger
    since = ledger.last_id
    inject(
        address,
        {
            "kind": "delay_calls",
            "seconds": 0.3 * SCALE,
            "count": 6,
            "calls": ["ACKNOWLEDGE", "ACCEPT", "KILL", "RECONCILE"],
        },
    )
    ledger.reconcile("explicit", now=now(), trigger="test")
    failed = lose_one_task(address)
    assert_converges(scheduler, address, TIMEOUT)
    wait_spent(address, "delay_calls")
    rules = [r for r in rules_for(ledger, failed, since) if r[0] != "RECONCILE"]
    assert rules == [("RESCHEDULE", "R-LIFECYCLE-RESCHEDULE")]
    assert not list(_events(ledger, "CommandFailed", since))


def test_failed_declines_are_declined_again(cluster, scheduler):
    """A DECLINE that fails leaves its offers with the scheduler as far as the master knows:
    their resources would never be offered again. The scheduler declines them again until it
    goes through, so a task lost later still finds an agent."""
    address, core = cluster.address, scheduler.core
    before = core.stats.call_failures
    # Twice every agent's offer: no agent left to offer anything unless they are re-declined.
    inject(address, {"kind": "fail_calls", "calls": ["DECLINE"], "count": 6})
    wait_spent(address, "fail_calls")
    failed = lose_one_task(address)
    assert_converges(scheduler, address, TIMEOUT)
    assert core.stats.call_failures >= before + 6
    assert scheduler.ledger.scheduler_view.get(replacement_of(scheduler.ledger, failed)) == (
        "RUNNING"
    )
    wait_until(lambda: not core.unanswered_offers, TIMEOUT, what="offers answered")


def test_calls_slower_than_the_http_timeout(cluster, tmp_path):
    """A call answered after the HTTP timeout failed as far as the scheduler knows, though the
    master acted on it: a KILL is recorded failed and sent again (harmless), an
    acknowledgement is made again when the agent re-sends the update."""
    address = cluster.address
    scheduler = Scheduler(
        address,
        str(tmp_path / "log"),
        instances=INSTANCES,
        heartbeat_interval=HEARTBEAT / SCALE,
        saga_scale=SCALE,
        http_timeout=1.0,
    ).start()
    try:
        assert_converges(scheduler, address, TIMEOUT)
        ledger = scheduler.ledger
        since = ledger.last_id
        inject(
            address,
            [
                {"kind": "delay_calls", "seconds": 1.3 * SCALE, "calls": ["KILL"], "count": 1},
                {"kind": "rogue_task", "task_id": "rogue-1", "agent_id": 2},
            ],
        )
        ledger.reconcile("implicit", now=now(), trigger="test")
        assert_converges(scheduler, address, TIMEOUT)
        wait_spent(address, "delay_calls")
        kills = commands(ledger, since, "KILL")
        assert {k.task_id for k in kills} == {"rogue-1"}
        assert kills[0].rule == "R-IMPLICIT-KILL-UNKNOWN"
        # The sender records the KILL's outcome when its call gives up (after the timeout),
        # maybe after the kill already took effect.
        wait_until(
            lambda: list(_events(ledger, "CommandFailed", since)), TIMEOUT, what="KILL failed"
        )
        failed = [e for _, e in _events(ledger, "CommandFailed", since)]
        assert [_command(ledger, f.command_id).kind for f in failed] == ["KILL"]
        assert "timed out" in failed[0].error
    finally:
        scheduler.stop()


def _events(ledger, topic, since=0):
    return ((nid, e) for nid, e in ledger.events(since + 1) if type(e).__name__ == topic)


def _command(ledger, command_id):
    [(_, event)] = list(ledger.events(command_id, command_id))
    return event


def test_every_fault_of_the_catalogue_is_covered():
    """A new fault kind needs an end-to-end test here (or in test_e2e_scheduler.py)."""
    from tools.sim_master.faults import ACTIONS, RULES

    covered = {
        "stream_drop",  # test_e2e_scheduler.py
        "stream_silent",  # test_e2e_scheduler.py
        "master_failover",  # test_e2e_scheduler.py
        "agent_partition",
        "agent_heal",
        "agent_remove",
        "rogue_task",
        "rescind_offers",
        "executor_lost",
        "clear_rules",  # not a fault: disarms the rules
        "drop_updates",
        "duplicate_updates",
        "reorder_updates",
        "lose_acks",
        "lose_accept",
        "lose_launch",
        "fail_calls",
        "delay_calls",
    }
    assert set(ACTIONS) | set(RULES) == covered

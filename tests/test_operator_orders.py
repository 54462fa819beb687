"""The operator's orders (tools/operator/orders.py) on a real Ledger: what each appends,
what it refuses, and what `taskledger why` then says about who gave it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from cli_log import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from operator_support import T0, Job, LedgerScheduler, sent

from engine.events import (
    DispatchResumed,
    DryRunSet,
    JobScaled,
    KillOrdered,
    KillRequested,
    ReconciliationOrdered,
    ReconciliationStarted,
    TaskCreated,
)
from engine.ledger import Ledger
from engine.mesos.core import JobSpec
from engine.mesos.runtime import standing_orders
from tools.operator.live import LiveState
from tools.operator.orders import (
    BadOrder,
    OrderConflict,
    Orders,
    UnknownTask,
    ordered_task_id,
)

DONE = {"FINISHED", "FAILED", "KILLED", "LOST", "DELETED"}


def orders_for(ledger: Ledger, instances: int) -> tuple[Orders, LedgerScheduler]:
    scheduler = LedgerScheduler(ledger, JobSpec("web", instances))
    live = LiveState.of(ledger, min_interval=0.0)
    return Orders(scheduler, live), scheduler


def events_after(ledger: Ledger, nid: int) -> list:
    return [e for _, e in ledger.events(nid + 1)]


def why(ledger: Ledger, task: str) -> dict:
    """`taskledger why TASK --json` of the log as it is now (read while it is open)."""
    return json.loads(run("why", task, "--log", ledger.path, "--json").output)


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        yield ledger


def test_kill_is_an_order_then_the_schedulers_kill_and_a_replacement(ledger):
    tasks = Job(ledger).run(3)
    orders, _ = orders_for(ledger, 3)
    before = ledger.last_id
    answer = orders.kill(task_id=tasks[1], operator="alice", reason="stuck")
    order, kill, created = events_after(ledger, before)
    assert order == KillOrdered(T0, None, tasks[1], "alice", "stuck")
    assert type(kill) is KillRequested and kill.causation == answer["event"] == before + 1
    assert type(created) is TaskCreated and created.causation == answer["event"]
    assert created.task_id == ordered_task_id("web", 1, answer["event"]) == answer["created"]
    assert (created.instance, dict(created.extra)) == (1, {"replaces": tasks[1]})
    assert ledger.scheduler_view.get(tasks[1]) == "KILLING"
    assert ledger.scheduler_view.get(created.task_id) == "PENDING"
    # `why` names who ordered it, and why.
    (decision,) = why(ledger, tasks[1])["scheduler_kills"]
    assert decision["operator"] == "alice" and decision["reason"] == "stuck"
    assert decision["order"] == answer["event"] and decision["what"] == "ordered it killed"


def test_kill_without_replacement_and_the_refusals(ledger):
    tasks = Job(ledger).run(2)
    orders, _ = orders_for(ledger, 2)
    answer = orders.kill(task_id=tasks[0], operator="bob", replace=False)
    assert answer["created"] is None and "stays down" in answer["detail"]
    before = ledger.last_id
    assert orders.kill(task_id=tasks[0], operator="bob")["changed"] is False  # KILLING already
    with pytest.raises(UnknownTask, match="unknown task 'web/9'"):
        orders.kill(task_id="web/9", operator="bob")
    with pytest.raises(BadOrder, match="who you are"):
        orders.kill(task_id=tasks[1], operator=" ")
    Job(ledger).update(tasks[0], "TASK_KILLED", T0 + 1)
    with pytest.raises(OrderConflict, match="is KILLED"):
        orders.kill(task_id=tasks[0], operator="bob")
    assert ledger.last_id == before + 1  # only the TASK_KILLED: refused orders write nothing


def test_scale_down_kills_the_instances_above_and_up_revives_those_whose_tasks_are_over(ledger):
    tasks = Job(ledger).run(4)
    orders, scheduler = orders_for(ledger, 4)
    before = ledger.last_id
    down = orders.scale(instances=2, operator="carol", reason="quiet night")
    scaled, *kills = events_after(ledger, before)
    assert scaled == JobScaled(T0, None, "web", 2, 4, "carol", "quiet night")
    assert [(type(k), k.task_id, k.causation) for k in kills] == [
        (KillRequested, t, down["event"]) for t in tasks[2:]
    ]
    assert scheduler.job().instances == 2
    for task in tasks[2:]:
        Job(ledger).update(task, "TASK_KILLED", T0 + 1)
    # Back up to 4: instances 2 and 3 had tasks, all over: new ones, caused by the order.
    before = ledger.last_id
    up = orders.scale(instances=4, operator="carol")
    scaled, *created = events_after(ledger, before)
    assert type(scaled) is JobScaled and (scaled.previous, scaled.instances) == (2, 4)
    assert [(c.task_id, c.instance, c.causation) for c in created] == [
        (ordered_task_id("web", i, up["event"]), i, up["event"]) for i in (2, 3)
    ]
    assert orders.scale(instances=4, operator="carol")["changed"] is False
    with pytest.raises(BadOrder):
        orders.scale(instances=-1, operator="carol")


def test_scale_leaves_an_owed_replacement_to_the_saga(ledger):
    """A task that just failed is the saga's to replace (R-LIFECYCLE-RESCHEDULE): scaling
    up over it must not make a second task for its instance."""
    job = Job(ledger)
    tasks = job.run(2)
    orders, _ = orders_for(ledger, 2)
    orders.scale(instances=1, operator="dan")
    job.update(tasks[1], "TASK_KILLED", T0 + 1)
    job.update(tasks[0], "TASK_FAILED", T0 + 1)  # below the count: its RESCHEDULE is owed
    answer = orders.scale(instances=2, operator="dan")
    assert answer["created"] == [ordered_task_id("web", 1, answer["event"])]
    ledger.tick(now=T0 + 2)
    ledger.dispatch(sent([]), now=T0 + 2)
    live = [
        (r.instance, t)
        for t, r in ledger.scheduler_view.tasks.items()
        if r.state not in DONE and r.job == "web"
    ]
    assert sorted(i for i, _ in live) == [0, 1], live


# Each instance's history: its earlier tasks (all over) and the state of its last one.
fates = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(["RUNNING", "KILLED", "PENDING", "NONE"])),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=fates, target=st.integers(0, 7))
def test_after_a_scale_and_the_saga_each_instance_below_has_one_task_and_none_above(
    tmp_path_factory, history, target
):
    folder = tmp_path_factory.mktemp("scale")
    with Ledger.open(folder / "log", durable=False) as ledger:
        job = Job(ledger)
        for instance, (earlier, last) in enumerate(history):
            for k in range(earlier):  # tasks killed and over
                task = job.start(f"web/{instance}/e{k}", instance, T0)
                ledger.kill_requested(task, time=T0)
                job.update(task, "TASK_KILLED", T0)
            task = f"web/{instance}/last"
            if last == "NONE":
                continue
            ledger.task_created(task, job="web", instance=instance, time=T0)
            if last in ("RUNNING", "KILLED"):
                ledger.task_assigned(task, agent_id="agent-1", time=T0)
                job.update(task, "TASK_RUNNING", T0)
            if last == "KILLED":
                ledger.kill_requested(task, time=T0)
                job.update(task, "TASK_KILLED", T0)
        ledger.tick(now=T0)
        orders, _ = orders_for(ledger, len(history))
        orders.scale(instances=target, operator="eve")
        for step in range(3):  # the saga carries the kills out
            ledger.tick(now=T0 + 1 + step)
            ledger.dispatch(sent([]), now=T0 + 1 + step)
        live: dict[int, list[str]] = {}
        had = {i for i, (earlier, last) in enumerate(history) if earlier or last != "NONE"}
        for task, record in ledger.scheduler_view.tasks.items():
            if record.state not in DONE and record.state != "KILLING":
                live.setdefault(record.instance, []).append(task)
        assert all(i < target for i in live), live
        for instance in range(min(target, len(history))):
            if instance in had:
                assert len(live.get(instance, [])) == 1, (instance, live)


def test_dry_run_and_reconcile_orders(ledger):
    Job(ledger).run(2)
    orders, scheduler = orders_for(ledger, 2)
    before = ledger.last_id
    assert orders.dry_run(on=True, operator="fay", reason="look first")["changed"]
    assert ledger.saga_config.dry_run is True
    assert orders.dry_run(on=True, operator="fay")["changed"] is False
    assert events_after(ledger, before) == [DryRunSet(T0, None, True, "fay", "look first")]
    orders.dry_run(on=False, operator="fay")
    assert ledger.saga_config.dry_run is False
    scheduler.clock = T0 + 5
    before = ledger.last_id
    answer = orders.reconcile(kind="implicit", operator="fay", reason="after the upgrade")
    order, *rest = events_after(ledger, before)
    assert order == ReconciliationOrdered(T0 + 5, None, "implicit", "fay", "after the upgrade")
    (started,) = [e for e in rest if type(e) is ReconciliationStarted]
    assert (started.run_id, started.trigger) == (answer["run"], "operator")
    with pytest.raises(BadOrder, match="'explicit' or 'implicit'"):
        orders.reconcile(kind="both", operator="fay")


def test_resume_releases_what_the_breaker_held_and_why_names_who(ledger):
    tasks = Job(ledger).run(10)
    orders, _ = orders_for(ledger, 10)
    assert orders.resume(operator="gus")["changed"] is False  # nothing halted: no event
    for task in tasks[:6]:
        orders.kill(task_id=task, operator="gus", replace=False)
    ledger.tick(now=T0 + 1)
    commands: list = []
    report = ledger.dispatch(sent(commands), now=T0 + 1)
    assert report.halted and not commands  # 6 of 10 alive tasks at once: the breaker trips
    answer = orders.resume(operator="hal", reason="the kills are mine")
    (resumed,) = [e for _, e in ledger.events(answer["event"], answer["event"])]
    assert resumed == DispatchResumed(T0, None, "hal", "the kills are mine")
    ledger.dispatch(sent(commands), now=T0 + 2)
    assert sorted(c.task_id for c in commands) == sorted(tasks[:6])
    (kill,) = why(ledger, tasks[0])["commands"]
    approval = [s for s in kill["chain"] if "approved" in s["what"]]
    assert approval == [
        {
            "step": "dispatch",
            "id": answer["event"],
            "time": T0,
            "time_iso": "2024-05-01T03:00:00Z",
            "what": "held by the blast-radius breaker; approved when hal resumed dispatch: "
            "the kills are mine",
            "epoch": None,  # one process wrote the log: no leader wrote the step's event
            "replica": None,
        }
    ]
    steps = [s["step"] for s in kill["chain"]]
    assert steps.index("dispatch") == steps.index("command") + 1  # before the send itself


@pytest.mark.parametrize("from_snapshot", [False, True], ids=["replayed", "from-a-snapshot"])
def test_scale_and_dry_run_outlive_a_restart(tmp_path, from_snapshot):
    """A restart with the start-up flags of before keeps the operator's later orders: the
    job's scale and the dry run come from the log (replayed, or read from a snapshot)."""
    path = tmp_path / "log"
    with Ledger.open(path, durable=False) as ledger:
        Job(ledger).run(3)
        orders, _ = orders_for(ledger, 3)
        options, job = standing_orders(ledger, {}, JobSpec("web", 3))
        assert (options, job.instances) == ({}, 3)  # no order yet: the flags stand
        orders.scale(instances=5, operator="fay", reason="traffic")
        orders.dry_run(on=True, operator="fay", reason="incident")
        if from_snapshot:
            ledger.snapshot()
    with Ledger.open(path, durable=False) as ledger:
        if from_snapshot:
            assert ledger.snapshots()  # the state was read from it
        options, job = standing_orders(ledger, {"time_scale": 2.0}, JobSpec("web", 3))
        assert options == {"time_scale": 2.0, "dry_run": True} and job.instances == 5
        _, other = standing_orders(ledger, {}, JobSpec("db", 2))
        assert other.instances == 2  # an order for one job is not another's
        ledger.saga_config = replace(ledger.saga_config, dry_run=True)  # as the runtime does
        orders, _ = orders_for(ledger, 5)
        assert orders.dry_run(on=False, operator="fay")["changed"]
        orders.scale(instances=1, operator="fay")
    with Ledger.open(path, durable=False) as ledger:
        options, job = standing_orders(ledger, {"dry_run": True}, JobSpec("web", 3))
        assert options == {"dry_run": False} and job.instances == 1  # the newest order wins

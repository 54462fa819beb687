"""The pure cluster model, without sockets or a clock: properties over random histories."""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_harness import Harness

from tools.sim_master.cluster import RECOVERED, REGISTERED, REMOVED, UNREACHABLE
from tools.sim_master.faults import InvalidFault, parse_fault
from tools.sim_master.protocol import is_terminal
from tools.sim_master.resources import Resources
from tools.sim_master.snapshot import InvalidQuery, StateQuery, snapshot

LIFECYCLE = ["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"]


# ---------------------------------------------------------------- random histories

one_op = st.one_of(
    st.tuples(st.just("launch"), st.integers(0, 1), st.sampled_from([None, 1.0, 30.0])),
    st.tuples(st.just("advance"), st.floats(0.1, 40.0)),
    st.tuples(st.just("ack_latest"), st.integers(0, 3)),
    st.tuples(st.just("ack_stale"), st.integers(0, 3)),
    st.tuples(st.just("kill"), st.integers(0, 3)),
    st.tuples(st.just("partition"), st.integers(0, 1)),
    st.tuples(st.just("heal"), st.integers(0, 1)),
    st.tuples(
        st.just("rule"),
        st.sampled_from(["drop_updates", "duplicate_updates", "lose_acks", "reorder_updates"]),
    ),
    st.tuples(st.just("drop_stream")),
    st.tuples(st.just("reconcile")),
)
ops = st.lists(one_op, max_size=40)


def run_op(h: Harness, launched: list[str], op: tuple) -> None:
    kind = op[0]
    if kind == "launch":
        tid = f"t{len(launched)}"
        if h.launch(tid, op[1], op[2]):
            launched.append(tid)
    elif kind == "advance":
        h.advance(op[1])
    elif kind in ("ack_latest", "ack_stale") and launched:
        tid = launched[op[1] % len(launched)]
        with_uuid = [u for u in h.updates(tid) if "uuid" in u]
        if with_uuid:
            h.ack(with_uuid[-1] if kind == "ack_latest" else with_uuid[0])
    elif kind == "kill" and launched:
        h.post("KILL", {"task_id": {"value": launched[op[1] % len(launched)]}})
    elif kind == "partition":
        h.inject({"kind": "agent_partition", "agent_id": op[1]})
    elif kind == "heal":
        h.inject({"kind": "agent_heal", "agent_id": op[1]})
    elif kind == "rule":
        h.inject({"kind": op[1], "probability": 0.5, "count": 3})
    elif kind == "drop_stream":
        h.inject({"kind": "stream_drop"})
        h.resubscribe()
    elif kind == "reconcile":
        h.post("RECONCILE", {"tasks": []})


def run_history(seed: int, history: list[tuple]) -> Harness:
    h = Harness(seed=seed)
    launched: list[str] = []
    for op in history:
        run_op(h, launched, op)
    h.advance(5.0)
    return h


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), history=ops)
def test_one_outstanding_update_per_task_and_in_order(seed, history):
    h = run_history(seed, history)
    by_task: dict[str, list[dict]] = {}
    for status in h.updates():
        if status["source"] == "SOURCE_MASTER":
            assert "uuid" not in status  # master-generated: never to be acknowledged
            assert status.get("reason")
            continue
        assert len(status["uuid"]) == 24  # base64 of 16 bytes
        by_task.setdefault(status["task_id"]["value"], []).append(status)
    for task_id, statuses in by_task.items():
        distinct: list[dict] = []
        for s in statuses:
            if not distinct or distinct[-1]["uuid"] != s["uuid"]:
                assert s["uuid"] not in {d["uuid"] for d in distinct}, "an old update came back"
                distinct.append(s)
        # A new update of a task only after the previous one was acknowledged.
        acked = [u for t, u in h.acks if t == task_id]
        for previous, _ in zip(distinct, distinct[1:], strict=False):
            assert previous["uuid"] in acked
        # The states never go back in the task's life, and nothing follows a terminal one.
        states = [d["state"] for d in distinct]
        ranks = [LIFECYCLE.index(s) if s in LIFECYCLE else len(LIFECYCLE) for s in states]
        assert ranks == sorted(ranks)
        assert all(not is_terminal(s) for s in states[:-1])
    for task in h.cluster.agent_tasks.values():
        assert all("uuid" in u for u in task.queue)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), history=ops)
def test_same_seed_same_history_same_events(seed, history):
    assert run_history(seed, history).events == run_history(seed, history).events


# ----------------------------------------------------------- reconciliation table


def expected_answer(known: bool, named: bool, named_status: str, other_recovering: bool):
    """The master's table (Master.reconcile_answer) for a partition-aware framework (None: no
    answer)."""
    if known:
        return "TASK_RUNNING"
    if named:
        return {
            RECOVERED: None,
            REGISTERED: "TASK_GONE",
            UNREACHABLE: "TASK_UNREACHABLE",
            REMOVED: "TASK_GONE_BY_OPERATOR",
            "MISSING": "TASK_UNKNOWN",
        }[named_status]
    any_recovering = other_recovering or named_status == RECOVERED
    return None if any_recovering else "TASK_UNKNOWN"


@settings(max_examples=80, deadline=None)
@given(
    known=st.booleans(),
    named=st.booleans(),
    named_status=st.sampled_from([REGISTERED, RECOVERED, UNREACHABLE, REMOVED, "MISSING"]),
    other_recovering=st.booleans(),
    partition_aware=st.booleans(),
)
def test_explicit_reconciliation_follows_the_table(
    known, named, named_status, other_recovering, partition_aware
):
    h = Harness(partition_aware=partition_aware, agents=3)
    cluster = h.cluster
    # Agent 0 runs the known task; agent 1 is the one named (in `named_status`); agent 2 is
    # another agent, recovering from a failover or not.
    if known:
        assert h.launch("t", 0)
        h.advance(1.0)
        h.ack(h.updates("t")[-1])  # STARTING: the master learns RUNNING with the next send
    a1, a2 = h.agents[1], h.agents[2]
    if named_status != "MISSING":
        cluster.agents[a1].status = named_status
    if other_recovering:
        cluster.agents[a2].status = RECOVERED
    agent_id = (a1 if named_status != "MISSING" else "no-such-agent") if named else None
    answer = cluster.reconcile_answer(h.fid, "t" if known else "x", agent_id)
    want = expected_answer(known, named, named_status, other_recovering)
    if want is None:
        assert answer is None
        return
    if not partition_aware and not known:
        want = "TASK_LOST"
    assert answer is not None
    assert answer["state"] == want
    assert answer["source"] == "SOURCE_MASTER"
    assert answer["reason"] == "REASON_RECONCILIATION"
    assert "uuid" not in answer


def test_implicit_reconciliation_answers_every_task_the_master_holds():
    h = Harness()
    assert h.launch("a", 0) and h.launch("b", 1)
    h.advance(2.0)
    h.inject({"kind": "rogue_task", "agent_id": 0, "task_id": "rogue"})
    before = len(h.updates())
    assert h.post("RECONCILE", {"tasks": []}) == 202
    answers = h.updates()[before:]
    assert sorted(a["task_id"]["value"] for a in answers) == ["a", "b", "rogue"]
    assert all(a["reason"] == "REASON_RECONCILIATION" for a in answers)


# ------------------------------------------------------------------- delivery details


def test_resend_backoff_doubles_from_10_seconds_to_10_minutes():
    h = Harness()
    assert h.launch("t", 0)
    h.advance(0.5)  # STARTING is sent at 0.5 s
    times = []
    for _ in range(9000):
        before = len(h.updates("t"))
        h.advance(1.0)
        if len(h.updates("t")) > before:
            times.append(h.now)
        if len(times) == 9:
            break
    gaps = [round(b - a) for a, b in zip([0.5, *times], times, strict=False)]
    assert gaps == [10, 20, 40, 80, 160, 320, 600, 600, 600]


def test_acknowledging_a_terminal_update_removes_the_task_from_the_master():
    h = Harness()
    assert h.launch("t", 0, duration=1.0)
    h.advance(1.0)
    h.ack(h.updates("t")[-1])  # STARTING; RUNNING follows at once
    assert h.updates("t")[-1]["state"] == "TASK_RUNNING"
    h.ack(h.updates("t")[-1])
    h.advance(2.0)
    final = h.updates("t")[-1]
    assert final["state"] == "TASK_FINISHED"
    assert (h.fid, "t") in h.cluster.master_tasks
    h.ack(final)
    assert (h.fid, "t") not in h.cluster.master_tasks
    assert (h.fid, "t") not in h.cluster.agent_tasks
    assert h.cluster.reconcile_answer(h.fid, "t", None)["state"] == "TASK_UNKNOWN"


def test_failover_forgets_tasks_until_the_agent_reregisters():
    h = Harness()
    assert h.launch("t", 0)
    h.advance(2.0)
    h.inject({"kind": "master_failover", "down_for": 5, "reregister_after": 10})
    assert not h.cluster.master_tasks
    assert h.cluster.reconcile_answer(h.fid, "t", None) is None  # agents recovering
    h.advance(6.0)  # master up, agents not yet back
    assert h.cluster.master_up and not h.cluster.master_tasks
    h.advance(10.0)
    assert h.cluster.master_tasks[(h.fid, "t")].state == "TASK_RUNNING"


def test_an_unreachable_agent_healed_while_the_master_is_down_reregisters():
    """Found by `taskledger simulate --seed 39`: an agent partitioned (marked unreachable),
    then a failover, then the partition heals while the master is down. The agent must
    re-register with the new master, not stay UNREACHABLE forever with its link up."""
    h = Harness()
    assert h.launch("t", 1)
    h.advance(2.0)
    h.inject({"kind": "agent_partition", "agent_id": 1})
    assert h.cluster.agents[h.agents[1]].status == UNREACHABLE
    h.inject({"kind": "master_failover", "down_for": 20, "reregister_after": 5})
    h.advance(10.0)
    h.inject({"kind": "agent_heal", "agent_id": 1})  # the master is still down
    h.advance(20.0)
    assert h.cluster.agents[h.agents[1]].status == REGISTERED
    assert h.cluster.master_tasks[(h.fid, "t")].state == "TASK_RUNNING"


def test_an_agent_back_after_the_reregistration_timeout_still_reregisters():
    h = Harness()
    assert h.launch("t", 0)
    h.advance(2.0)
    h.inject(
        {
            "kind": "master_failover",
            "down_for": 1,
            "reregister_after": 30,
            "agent_reregister_timeout": 10,
        }
    )
    h.advance(15.0)
    assert h.cluster.agents[h.agents[0]].status == UNREACHABLE
    h.advance(20.0)
    assert h.cluster.agents[h.agents[0]].status == REGISTERED
    assert h.cluster.master_tasks[(h.fid, "t")].state == "TASK_RUNNING"


def test_faults_are_validated_with_precise_messages():
    with pytest.raises(InvalidFault, match="unknown fault kind 'explode'"):
        parse_fault({"kind": "explode"})
    with pytest.raises(InvalidFault, match="'agent_id' is required"):
        parse_fault({"kind": "agent_remove"})
    with pytest.raises(InvalidFault, match="no agent 7"):
        Harness().inject({"kind": "agent_remove", "agent_id": 7})


def test_a_held_update_never_overtakes_the_same_tasks_next_one():
    """reorder_updates reorders across tasks only. A re-send of a task's update can be held
    while the acknowledgement of the original crosses it; the task's next update must then not
    go out before the held one (Mesos keeps a task's updates in order), or the scheduler would
    see STARTING after RUNNING."""
    h = Harness(seed=1)
    h.advance(1.0)
    assert h.launch("a", 0)
    h.advance(0.6)  # STARTING sent, not acknowledged; RUNNING queued behind it
    starting = h.updates("a")[-1]
    assert starting["state"] == "TASK_STARTING"
    h.inject({"kind": "reorder_updates", "task_id": "a", "count": 1, "hold": 30})
    h.advance(10.0)  # the re-send of STARTING is held
    h.ack(starting)  # the original's acknowledgement: RUNNING goes out
    h.advance(40.0)
    states = [u["state"] for u in h.updates("a")]
    assert states.index("TASK_RUNNING") > max(
        i for i, s in enumerate(states) if s == "TASK_STARTING"
    ), states


# ------------------------------------------------------------- indexes and the census

more_ops = st.lists(
    st.one_of(
        one_op,
        st.tuples(st.just("failover"), st.floats(0.5, 20.0), st.floats(0.0, 20.0)),
        st.tuples(st.just("remove"), st.integers(0, 1)),
        st.tuples(st.just("rogue"), st.integers(0, 1)),
        st.tuples(st.just("executor_lost"), st.integers(0, 3)),
        st.tuples(st.just("lose_launch")),
    ),
    max_size=40,
)


def recounted_use(cluster, agent) -> Resources:
    """What an agent's live tasks and offers hold, counted from scratch."""
    used = Resources()
    unreachable = cluster.master.unreachable
    for key in set(cluster.master_tasks) | set(cluster.agent_tasks) | set(unreachable):
        task = cluster.agent_tasks.get(key) or cluster.master_tasks.get(key) or unreachable[key]
        if task.agent_id == agent.id and not is_terminal(task.state):
            used = used + task.resources
    for offer in cluster.offers.values():
        if offer.agent_id == agent.id:
            used = used + offer.resources
    return used


def assert_indexes_true(cluster) -> None:
    for table in (cluster.master_tasks, cluster.agent_tasks, cluster.master.unreachable):
        assert table.states == Counter(t.state for t in table.values())
        for agent_id in cluster.agents:
            on = {k for k, t in table.items() if t.agent_id == agent_id}
            assert set(table.on_agent(agent_id)) == on
        for fid in cluster.frameworks:
            assert set(table.of_framework(fid)) == {k for k in table if k[0] == fid}
    unreachable = cluster.master.unreachable
    known = set(cluster.master_tasks) | set(cluster.agent_tasks) | set(unreachable)
    assert set(cluster.census.keys) == known
    assert not set(unreachable) & set(cluster.master_tasks)
    for agent in cluster.agents.values():
        assert cluster.allocator.used(agent) == recounted_use(cluster, agent), agent.id


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), history=more_ops)
def test_indexes_and_the_census_agree_with_a_recount(seed, history):
    h = Harness(seed=seed)
    launched: list[str] = []
    for op in history:
        kind = op[0]
        if kind == "failover":
            h.inject({"kind": "master_failover", "down_for": op[1], "reregister_after": op[2]})
            h.advance(op[1] + op[2] + 1.0)
            h.resubscribe()
        elif kind == "remove":
            h.inject({"kind": "agent_remove", "agent_id": op[1]})
        elif kind == "rogue":
            with contextlib.suppress(InvalidFault):
                h.inject({"kind": "rogue_task", "agent_id": op[1]})
        elif kind == "executor_lost" and launched:
            with contextlib.suppress(InvalidFault):
                tid = launched[op[1] % len(launched)]
                h.inject({"kind": "executor_lost", "task_id": tid})
        elif kind == "lose_launch":
            h.inject({"kind": "lose_launch", "drop_after": 5.0})
        else:
            run_op(h, launched, op)
        assert_indexes_true(h.cluster)
    h.advance(30.0)
    assert_indexes_true(h.cluster)


def test_pages_of_the_state_make_up_the_whole():
    h = Harness()
    for i in range(7):
        assert h.launch(f"t{i}", i % 2)
        h.advance(1.1)
    whole = snapshot(h.cluster)
    assert whole["tasks_total"] == len(whole["tasks"]) == 7
    pages, offset = [], 0
    while offset is not None:
        page = snapshot(h.cluster, StateQuery(offset=offset, limit=3, acknowledged=False))
        assert "acknowledged" not in page and page["tasks_total"] == 7
        pages += page["tasks"]
        offset = page["next_offset"]
    assert pages == whole["tasks"]
    counts = snapshot(h.cluster, StateQuery(counts=True))
    assert "tasks" not in counts and counts["task_counts"]["total"] == 7
    assert counts["task_counts"]["agent"] == {"TASK_RUNNING": 7}
    assert [a["tasks"] for a in counts["agents"]] == [4, 3]
    one = snapshot(h.cluster, StateQuery(task_id="t3"))["tasks"]
    assert [t["task_id"] for t in one] == ["t3"]
    with pytest.raises(InvalidQuery, match="limit must be an integer"):
        StateQuery.from_params({"limit": "-1"})
    with pytest.raises(InvalidQuery, match=r"unknown state parameter\(s\) \['page'\]"):
        StateQuery.from_params({"page": "2"})

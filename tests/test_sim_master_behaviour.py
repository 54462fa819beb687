"""The simulated master behaves as a real Mesos master does, row by row: reconciliation
answers, agents and partitions, KILL (the pure model; the HTTP rows are in
test_sim_protocol.py). Each test names the behaviour of src/master/master.cpp it holds the
simulator to."""

from __future__ import annotations

import pytest
from sim_harness import Harness

KINDS = [True, False]  # partition-aware, or not


def lost_unless(partition_aware: bool, state: str) -> str:
    return state if partition_aware else "TASK_LOST"


def assert_removed_by_operator(status: dict, partition_aware: bool) -> None:
    """What a task of an agent the operator removed is, by the framework's kind."""
    if partition_aware:
        assert status["state"] == "TASK_GONE_BY_OPERATOR"
        assert status["reason"] == "REASON_AGENT_REMOVED_BY_OPERATOR"
    else:
        assert (status["state"], status["reason"]) == ("TASK_LOST", "REASON_AGENT_REMOVED")


def states(statuses: list[dict]) -> list[tuple[str, str]]:
    return [(s["task_id"]["value"], s["state"]) for s in statuses]


# ---------------------------------------------------------------- reconciliation answers


def test_every_answer_is_from_the_master_for_reconciliation_without_a_uuid():
    h = Harness(agents=2)
    h.run("t", 0)
    answers = h.reconcile(("t", None), ("x", h.agents[1]), ("y", None)) + h.reconcile()
    assert len(answers) == 4
    for a in answers:
        assert (a["source"], a["reason"]) == ("SOURCE_MASTER", "REASON_RECONCILIATION")
        assert "uuid" not in a


def test_an_answer_never_runs_ahead_of_the_tasks_update_stream():
    """Mesos answers the state of the last update it forwarded (status_update_state), not the
    agent's newest state, which the agent's updates carry ahead of themselves."""
    h = Harness()
    assert h.launch("t", 0, duration=1.0)
    assert states(h.reconcile(("t", None))) == [("t", "TASK_STAGING")]  # nothing forwarded
    h.advance(0.5)  # STARTING forwarded, not acknowledged
    h.advance(1.5)  # the agent: RUNNING at 1 s, FINISHED at 2 s, queued behind STARTING
    assert h.cluster.agent_tasks[(h.fid, "t")].state == "TASK_FINISHED"
    h.advance(9.0)  # STARTING is sent again, carrying the agent's latest state
    assert h.cluster.master_tasks[(h.fid, "t")].state == "TASK_FINISHED"
    assert states(h.reconcile(("t", None))) == [("t", "TASK_STARTING")]
    assert states(h.reconcile()) == [("t", "TASK_STARTING")]
    h.ack([u for u in h.updates("t") if "uuid" in u][-1])  # RUNNING goes out
    assert states(h.reconcile(("t", None))) == [("t", "TASK_RUNNING")]


def test_after_a_failover_an_answer_is_the_state_the_agent_last_forwarded():
    h = Harness()
    assert h.launch("t", 0, duration=1.0)
    h.advance(0.5)
    h.ack(h.updates("t")[-1])
    h.advance(0.6)  # RUNNING forwarded, not acknowledged; FINISHED queued at 1.5
    h.advance(0.5)
    h.inject({"kind": "master_failover", "down_for": 1, "reregister_after": 1})
    h.advance(2.5)
    h.resubscribe()
    assert states(h.reconcile(("t", None))) == [("t", "TASK_RUNNING")]


@pytest.mark.parametrize("partition_aware", KINDS)
def test_an_unknown_task_on_a_registered_agent_is_gone(partition_aware):
    h = Harness(partition_aware=partition_aware)
    (a,) = h.reconcile(("x", h.agents[0]))
    assert a["state"] == lost_unless(partition_aware, "TASK_GONE")
    assert a["agent_id"]["value"] == h.agents[0]


@pytest.mark.parametrize("partition_aware", KINDS)
def test_an_unknown_agent_is_unknown_and_echoed(partition_aware):
    h = Harness(partition_aware=partition_aware)
    (a,) = h.reconcile(("x", "no-such-agent"))
    assert a["state"] == lost_unless(partition_aware, "TASK_UNKNOWN")
    assert a["agent_id"] == {"value": "no-such-agent"}


@pytest.mark.parametrize("partition_aware", KINDS)
def test_a_task_on_an_unreachable_agent(partition_aware):
    """Named with its agent: TASK_UNREACHABLE (or LOST), both with the time the agent was
    marked unreachable. Without its agent: TASK_UNKNOWN (or LOST). Left out of implicit."""
    h = Harness(partition_aware=partition_aware, agents=2)
    h.run("t", 0)
    h.run("u", 1)
    h.advance(1.0)
    h.inject({"kind": "agent_partition", "agent_id": 0})
    marked = h.cluster.agents[h.agents[0]].unreachable_time
    named, unnamed = h.reconcile(("t", h.agents[0]), ("t", None))
    assert named["state"] == lost_unless(partition_aware, "TASK_UNREACHABLE")
    assert named["unreachable_time"] == {"nanoseconds": int(marked * 1e9)}
    assert unnamed["state"] == lost_unless(partition_aware, "TASK_UNKNOWN")
    assert "unreachable_time" not in unnamed
    assert states(h.reconcile()) == [("u", "TASK_RUNNING")]


@pytest.mark.parametrize("partition_aware", KINDS)
def test_a_task_on_an_agent_removed_by_the_operator_is_gone_by_operator(partition_aware):
    h = Harness(partition_aware=partition_aware, agents=2)
    h.run("t", 0)
    h.inject({"kind": "agent_remove", "agent_id": 0})
    (a,) = h.reconcile(("t", h.agents[0]))
    assert a["state"] == lost_unless(partition_aware, "TASK_GONE_BY_OPERATOR")


@pytest.mark.parametrize("partition_aware", KINDS)
def test_no_answer_while_the_agent_recovers_from_a_failover(partition_aware):
    h = Harness(partition_aware=partition_aware, agents=2)
    h.run("t", 1)
    h.inject(
        {
            "kind": "master_failover",
            "down_for": 1,
            "reregister_after": 1,
            "never_return": [1],
            "agent_reregister_timeout": 100,
        }
    )
    h.advance(2.5)  # agent 0 is back, agent 1 still recovering
    h.resubscribe()
    assert h.reconcile(("t", h.agents[1]), ("t", None), ("x", None)) == []
    assert h.reconcile() == []  # the master knows no task of agent 1
    (gone,) = h.reconcile(("x", h.agents[0]))
    assert gone["state"] == lost_unless(partition_aware, "TASK_GONE")


# ------------------------------------------------------------------ agents and partitions


@pytest.mark.parametrize("partition_aware", KINDS)
def test_a_partitioned_agent_s_tasks_then_a_failure(partition_aware):
    h = Harness(partition_aware=partition_aware)
    h.run("t", 0)
    mark = len(h.events)
    h.inject({"kind": "agent_partition", "agent_id": 0})
    update, failure = [e for e in h.since(mark) if e["type"] in ("UPDATE", "FAILURE")]
    status = update["update"]["status"]
    assert status["state"] == lost_unless(partition_aware, "TASK_UNREACHABLE")
    assert (status["reason"], status["source"]) == ("REASON_AGENT_REMOVED", "SOURCE_MASTER")
    assert status["unreachable_time"]["nanoseconds"] > 0 and "uuid" not in status
    assert failure == {"type": "FAILURE", "failure": {"agent_id": {"value": h.agents[0]}}}


def test_agents_that_miss_the_reregistration_timeout_are_each_a_failure():
    h = Harness(agents=3)
    h.inject(
        {
            "kind": "master_failover",
            "down_for": 1,
            "reregister_after": 1,
            "never_return": [1, 2],
            "agent_reregister_timeout": 10,
        }
    )
    h.advance(2.0)
    h.resubscribe()
    mark = len(h.events)
    h.advance(10.0)
    failures = [e["failure"]["agent_id"]["value"] for e in h.since(mark) if e["type"] == "FAILURE"]
    assert failures == h.agents[1:]
    assert {h.cluster.agents[a].status for a in h.agents[1:]} == {"UNREACHABLE"}


@pytest.mark.parametrize("partition_aware", KINDS)
def test_a_registered_agent_removed_by_the_operator(partition_aware):
    h = Harness(partition_aware=partition_aware)
    h.run("t", 0)
    mark = len(h.events)
    h.inject({"kind": "agent_remove", "agent_id": 0})
    update, failure = [e for e in h.since(mark) if e["type"] in ("UPDATE", "FAILURE")]
    status = update["update"]["status"]
    assert_removed_by_operator(status, partition_aware)
    assert "unreachable_time" not in status
    assert failure["type"] == "FAILURE"


@pytest.mark.parametrize("partition_aware", KINDS)
def test_an_unreachable_agent_removed_by_the_operator_updates_each_unreachable_task(
    partition_aware,
):
    h = Harness(partition_aware=partition_aware)
    h.run("t", 0)
    h.inject({"kind": "agent_partition", "agent_id": 0})
    mark = len(h.events)
    h.inject({"kind": "agent_remove", "agent_id": 0})
    (update,) = h.since(mark)  # no FAILURE this time: the agent was already lost
    status = update["update"]["status"]
    assert status["task_id"]["value"] == "t"
    assert_removed_by_operator(status, partition_aware)


def test_an_agent_removed_while_it_recovers_from_a_failover_says_nothing():
    h = Harness(agents=2)
    h.run("t", 1)
    h.inject({"kind": "master_failover", "down_for": 1, "reregister_after": 1, "never_return": [1]})
    h.advance(2.0)
    h.resubscribe()
    mark = len(h.events)
    h.inject({"kind": "agent_remove", "agent_id": 1})
    assert [e for e in h.since(mark) if e["type"] != "HEARTBEAT"] == []


@pytest.mark.parametrize("partition_aware", KINDS)
def test_an_unreachable_agent_that_re_registers_says_each_tasks_state(partition_aware):
    h = Harness(partition_aware=partition_aware)
    h.run("t", 0)
    h.inject({"kind": "agent_partition", "agent_id": 0})
    mark = len(h.events)
    h.inject({"kind": "agent_heal", "agent_id": 0})
    (update,) = [e["update"]["status"] for e in h.since(mark) if e["type"] == "UPDATE"]
    assert (update["state"], update["reason"]) == ("TASK_RUNNING", "REASON_AGENT_REREGISTERED")
    assert update["source"] == "SOURCE_MASTER" and "uuid" not in update
    assert states(h.reconcile()) == [("t", "TASK_RUNNING")]


# -------------------------------------------------------------------------------- KILL


@pytest.mark.parametrize("partition_aware", KINDS)
def test_a_kill_of_an_unknown_task_is_answered_as_a_reconciliation(partition_aware):
    h = Harness(partition_aware=partition_aware)
    mark = len(h.events)
    assert h.post("KILL", {"task_id": {"value": "x"}, "agent_id": {"value": h.agents[0]}}) == 202
    (update,) = h.since(mark)
    status = update["update"]["status"]
    assert status["state"] == lost_unless(partition_aware, "TASK_GONE")
    assert status["reason"] == "REASON_RECONCILIATION"


@pytest.mark.parametrize("partition_aware", KINDS)
def test_a_kill_of_a_task_on_an_unreachable_agent_is_answered_as_a_reconciliation(
    partition_aware,
):
    h = Harness(partition_aware=partition_aware)
    h.run("t", 0)
    h.inject({"kind": "agent_partition", "agent_id": 0})
    for agent_id, want in ((h.agents[0], "TASK_UNREACHABLE"), (None, "TASK_UNKNOWN")):
        mark = len(h.events)
        kill: dict = {"task_id": {"value": "t"}}
        if agent_id is not None:
            kill["agent_id"] = {"value": agent_id}
        assert h.post("KILL", kill) == 202
        (update,) = h.since(mark)
        assert update["update"]["status"]["state"] == lost_unless(partition_aware, want)
    assert h.cluster.agent_tasks[(h.fid, "t")].state == "TASK_RUNNING"  # nothing killed


def test_a_kill_for_a_disconnected_agent_is_sent_when_it_is_back():
    h = Harness()
    h.run("t", 0)
    h.inject({"kind": "agent_partition", "agent_id": 0, "detect_after": 60})
    assert h.post("KILL", {"task_id": {"value": "t"}}) == 202
    h.advance(5.0)
    assert h.cluster.agent_tasks[(h.fid, "t")].state == "TASK_RUNNING"
    h.inject({"kind": "agent_heal", "agent_id": 0})
    killing = h.updates("t")[-1]
    assert killing["state"] == "TASK_KILLING"
    h.ack(killing)
    h.advance(1.0)
    assert h.updates("t")[-1]["state"] == "TASK_KILLED"


def test_a_kill_naming_another_agent_is_ignored():
    h = Harness(agents=2)
    h.run("t", 0)
    mark = len(h.events)
    assert h.post("KILL", {"task_id": {"value": "t"}, "agent_id": {"value": h.agents[1]}}) == 202
    h.advance(2.0)
    assert [e for e in h.since(mark) if e["type"] == "UPDATE"] == []
    assert h.cluster.agent_tasks[(h.fid, "t")].state == "TASK_RUNNING"

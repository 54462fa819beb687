"""The simulated master over real HTTP on 127.0.0.1: framing, errors, streams, delivery,
reconciliation answers and faults, checked byte-for-byte where pymesos cares."""

from __future__ import annotations

import base64
import json
import re
import socket
import time

import pytest
from sim_session import (
    PA_FRAMEWORK,
    PLAIN_FRAMEWORK,
    Session,
    agent_ids,
    inject,
    state,
    subscribe_body,
    task_view,
    wait_until,
)

from tools.sim_master.client import EventStream, call, get_json
from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

SCALE = 50.0  # 10 s update re-send -> 0.2 s; 15 s heartbeat -> 0.3 s


@pytest.fixture
def sim():
    with BackgroundSim(SimConfig(agents=2, seed=7), time_scale=SCALE) as running:
        yield running


@pytest.fixture
def session(sim):
    s = Session(sim.address)
    yield s
    s.close()


def answers_until_sentinel(s: Session, sentinel: str) -> list[dict]:
    """Reconciliation answers received before the answer about `sentinel` (which the caller
    asked about last): the stream is ordered, so anything missing got no answer at all."""
    got = []
    while True:
        status = s.next(lambda e: e["type"] == "UPDATE")["update"]["status"]
        if status["task_id"]["value"] == sentinel:
            return got
        got.append(status)


# ------------------------------------------------------------------------- connection


def test_version_is_json_with_integer_parts(sim):
    body = get_json(sim.address, "/version")
    assert body == {"version": "1.11.0"}


def test_subscribe_answers_a_chunked_recordio_stream(sim):
    stream = EventStream(sim.address, subscribe_body(PA_FRAMEWORK))
    try:
        assert stream.status == 200
        assert stream.headers["content-type"] == "application/json"
        assert stream.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in stream.headers
        assert re.fullmatch(r"[0-9a-f-]{36}", stream.headers["mesos-stream-id"])
        subscribed = stream.next(skip=())
        heartbeat = stream.next(skip=())
        offers = stream.next(skip=())
        # The raw body: hex chunk size CRLF, then records "<len>\n<json>" with no whitespace.
        assert re.match(rb"[0-9a-f]+\r\n\d+\n\{\"type\":\"SUBSCRIBED\"", stream.raw)
        chunks = re.findall(rb"([0-9a-f]+)\r\n", stream.raw[:20])
        assert chunks
        payloads = re.findall(rb"[0-9a-f]+\r\n(\d+)\n(\{.*?\})\r\n", stream.raw)
        for length, payload in payloads[:3]:
            assert int(length) == len(payload)
            compact = json.dumps(json.loads(payload), separators=(",", ":")).encode()
            assert payload == compact  # no whitespace around the JSON
        assert [json.loads(p)["type"] for _, p in payloads[:3]] == [
            "SUBSCRIBED",
            "HEARTBEAT",
            "OFFERS",
        ]
    finally:
        stream.close()

    info = subscribed["subscribed"]
    assert info["framework_id"]["value"]
    assert info["heartbeat_interval_seconds"] == pytest.approx(15.0 / SCALE)
    master = info["master_info"]
    assert master["ip"] == 16777343  # 127.0.0.1 in network order on a little-endian host
    assert master["port"] == sim.port
    assert master["hostname"] == "127.0.0.1" and master["version"] == "1.11.0" and master["id"]
    assert heartbeat == {"type": "HEARTBEAT"}
    assert offers["type"] == "OFFERS"
    offer = offers["offers"]["offers"][0]
    assert offer["framework_id"] == info["framework_id"]
    resources = {r["name"]: r for r in offer["resources"]}
    assert resources["cpus"]["scalar"]["value"] == 4.0
    assert resources["mem"]["type"] == "SCALAR"
    assert resources["ports"]["ranges"]["range"] == [{"begin": 31000, "end": 32000}]
    assert {o["agent_id"]["value"] for o in offers["offers"]["offers"]} == set(
        agent_ids(sim.address)
    )


def test_heartbeats_arrive_every_interval(session):
    start = time.monotonic()
    beats = 0
    while time.monotonic() - start < 1.0:
        try:
            event = session.stream.next(timeout=0.5, skip=())
        except TimeoutError:
            break
        beats += event["type"] == "HEARTBEAT"
    assert 2 <= beats <= 5  # 0.3 s apart


# ----------------------------------------------------------------------------- errors


def test_not_post_is_405(sim):
    status, _ = call(sim.address, None, method="GET", content_type=None)
    assert status == 405
    for method in ("PUT", "DELETE", "PATCH"):
        status, text = call(sim.address, {"type": "REVIVE"}, method=method)
        assert status == 405 and method in text, (method, status, text)


def test_subscribe_errors_are_answered_before_any_stream(sim):
    body = subscribe_body(PA_FRAMEWORK)
    assert call(sim.address, body, content_type="text/plain")[0] == 415
    assert call(sim.address, b"")[0] == 400
    assert call(sim.address, b'{"type": "SUBSCRIBE", ')[0] == 400


# Each row of "HTTP edges": what a real master answers (src/master/http.cpp, `scheduler`).


def test_no_content_type_is_400_expecting_it(sim, session):
    body = {"type": "REVIVE", "framework_id": {"value": session.framework_id}}
    for request in (subscribe_body(PA_FRAMEWORK), body):
        status, text = call(sim.address, request, content_type=None, stream_id=None)
        assert (status, text) == (400, "Expecting 'Content-Type' to be present")


def test_a_content_type_with_parameters_is_415_the_comparison_is_exact(sim, session):
    body = {"type": "REVIVE", "framework_id": {"value": session.framework_id}}
    for content_type in ("application/json; charset=utf-8", "Application/JSON", "text/json"):
        status, text = call(sim.address, body, content_type=content_type, stream_id=None)
        assert status == 415, (content_type, status, text)
        assert text == "Expecting 'Content-Type' of application/json or application/x-protobuf"
    assert session.post("REVIVE") == 202  # exactly application/json


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("text/html", 406),
        ("application/json;q=0", 406),
        ("text/*, application/xml", 406),
        ("application/x-protobuf", 406),  # Mesos would stream protobuf; this master cannot
        ("application/*", 200),
        ("*/*", 200),
        ("text/html, application/json;q=0.5", 200),
    ],
)
def test_subscribe_answers_406_unless_accept_allows_json(sim, accept, status):
    stream = EventStream(sim.address, subscribe_body(PA_FRAMEWORK), accept=accept)
    try:
        assert stream.status == status, stream.body
        if status == 406 and accept != "application/x-protobuf":
            assert stream.body == (
                "Expecting 'Accept' to allow 'application/x-protobuf' or 'application/json'"
            )
    finally:
        stream.close()


def test_a_recovering_master_answers_503():
    faults = [{"kind": "master_failover", "after": 5, "down_for": 5, "recover_for": 50}]
    with BackgroundSim(SimConfig(agents=1), time_scale=SCALE, faults=faults) as sim:
        wait_until(lambda: not _version_ok(sim.address), what="master down")
        wait_until(lambda: _version_ok(sim.address), what="master back")
        status, text = call(sim.address, subscribe_body(PA_FRAMEWORK))
        assert (status, text) == (503, "Master has not finished recovery")
        status, text = call(sim.address, None, method="GET", content_type=None)
        assert status == 503  # before the method is looked at, as Mesos does
        revive = {"type": "REVIVE", "framework_id": {"value": "nobody"}}
        wait_until(lambda: call(sim.address, revive)[0] == 400, timeout=5, what="recovered")


def test_bad_content_type_is_415(sim, session):
    body = {"type": "REVIVE", "framework_id": {"value": session.framework_id}}
    status, _ = call(sim.address, body, content_type="text/plain", stream_id=session.stream_id)
    assert status == 415
    status, _ = call(sim.address, body, content_type="application/x-protobuf")
    assert status == 415


def test_malformed_and_invalid_calls_are_400(sim, session):
    fid = {"value": session.framework_id}
    sid = session.stream_id
    cases = [
        b"{not json",
        b"[1, 2]",
        {"type": "NOPE", "framework_id": fid},
        {"type": "REVIVE"},  # no framework_id
        {"type": "KILL", "framework_id": fid},  # no kill
        {"type": "KILL", "framework_id": fid, "kill": {"task_id": "x"}},
        {"type": "ACKNOWLEDGE", "framework_id": fid, "acknowledge": {"uuid": "x"}},
        {
            "type": "ACKNOWLEDGE",
            "framework_id": fid,
            "acknowledge": {"agent_id": fid, "task_id": fid, "uuid": "c2hvcnQ="},  # 5 bytes
        },
        {"type": "RECONCILE", "framework_id": fid, "reconcile": {"tasks": [{"agent_id": fid}]}},
        {"type": "ACCEPT", "framework_id": fid, "accept": {"offer_ids": "x"}},
    ]
    for body in cases:
        status, text = call(sim.address, body, stream_id=sid)
        assert status == 400, (body, status, text)


def test_unknown_framework_and_stream_id_mismatch_are_400(sim, session):
    status, text = call(sim.address, {"type": "REVIVE", "framework_id": {"value": "nope"}})
    assert status == 400 and "cannot be found" in text
    body = {"type": "REVIVE", "framework_id": {"value": session.framework_id}}
    assert call(sim.address, body, stream_id="0" * 36)[0] == 400
    assert call(sim.address, body)[0] == 400  # no Mesos-Stream-Id header at all
    assert call(sim.address, body, stream_id=session.stream_id)[0] == 202


def test_subscribe_validation_is_400(sim):
    bad_bodies = [
        {"type": "SUBSCRIBE"},
        {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"name": "no user"}}},
        # top-level framework_id must equal framework_info.id
        {
            "type": "SUBSCRIBE",
            "framework_id": {"value": "a"},
            "subscribe": {"framework_info": {"user": "u", "name": "n", "id": {"value": "b"}}},
        },
    ]
    for body in bad_bodies:
        assert EventStream(sim.address, body).status == 400
    with_header = EventStream(
        sim.address, subscribe_body(PA_FRAMEWORK), extra_headers={"Mesos-Stream-Id": "x"}
    )
    assert with_header.status == 400


def test_framework_without_stream_is_403(sim):
    s = Session(sim.address)
    fid, sid = s.framework_id, s.stream_id
    s.close()
    body = {"type": "REVIVE", "framework_id": {"value": fid}}
    wait_until(lambda: call(sim.address, body, stream_id=sid)[0] == 403, what="403")


# ------------------------------------------------------------------ subscription life


def test_subscribe_keeps_a_given_framework_id(sim):
    s = Session(sim.address, framework_id="my-framework-1")
    try:
        assert s.framework_id == "my-framework-1"
    finally:
        s.close()


def test_second_subscribe_fails_over_the_first(sim, session):
    second = Session(sim.address, framework_id=session.framework_id)
    try:
        error = session.next(lambda e: e["type"] == "ERROR")
        assert error == {"type": "ERROR", "error": {"message": "Framework failed over"}}
        assert session.stream.ended.wait(2)
        assert session.stream.clean_end
        assert second.framework_id == session.framework_id
        assert second.stream_id != session.stream_id
        body = {"type": "REVIVE", "framework_id": {"value": session.framework_id}}
        assert call(sim.address, body, stream_id=session.stream_id)[0] == 400
        assert call(sim.address, body, stream_id=second.stream_id)[0] == 202
        assert second.next(lambda e: e["type"] == "OFFERS")  # offers go to the new stream
    finally:
        second.close()


def test_teardown_kills_every_task_and_removes_the_framework(sim, session):
    agent = agent_ids(sim.address)[0]
    session.run_task("t1", agent)
    assert session.post("TEARDOWN") == 202
    assert session.stream.ended.wait(2)
    # A removed framework is no framework at all: 400, not 403.
    status, text = call(
        sim.address,
        {"type": "REVIVE", "framework_id": {"value": session.framework_id}},
        stream_id=session.stream_id,
    )
    assert status == 400 and "cannot be found" in text
    wait_until(lambda: task_view(sim.address, "t1") is None, what="task gone")
    fw = state(sim.address)["frameworks"][0]
    assert fw["removed"] and not fw["connected"]
    again = EventStream(sim.address, subscribe_body(PA_FRAMEWORK, session.framework_id))
    try:
        assert again.next(skip=()) == {
            "type": "ERROR",
            "error": {"message": "Framework has been removed"},
        }
    finally:
        again.close()


# --------------------------------------------------------------------------- delivery


def test_updates_are_resent_until_acknowledged_one_outstanding_per_task(sim, session):
    agent = agent_ids(sim.address)[0]
    session.launch("t1", agent, duration=2)
    starting = session.update("t1")
    assert starting["state"] == "TASK_STARTING" and starting["source"] == "SOURCE_EXECUTOR"
    assert len(base64.b64decode(starting["uuid"])) == 16
    # Not acknowledged: the same update comes again (10 s -> 0.2 s real), and the RUNNING
    # behind it is held back meanwhile although the task is already running.
    again = session.update("t1", timeout=3)
    assert again["uuid"] == starting["uuid"] and again["state"] == "TASK_STARTING"
    wait_until(lambda: task_view(sim.address, "t1")["agent_state"] != "TASK_STARTING")
    # An acknowledgement that is not the head is ignored (still 202).
    bogus = dict(starting, uuid="AAAAAAAAAAAAAAAAAAAAAA==")
    assert session.ack(bogus) == 202
    assert session.update("t1", timeout=3)["uuid"] == starting["uuid"]
    assert session.ack(starting) == 202
    running = session.update("t1")
    assert running["state"] == "TASK_RUNNING" and running["uuid"] != starting["uuid"]
    assert session.ack(running) == 202
    finished = session.update("t1", "TASK_FINISHED")
    assert task_view(sim.address, "t1")["master_state"] == "TASK_FINISHED"
    assert session.ack(finished) == 202
    wait_until(lambda: task_view(sim.address, "t1") is None, what="acked task removed")
    done = state(sim.address)["completed_tasks"]
    assert [(t["task_id"], t["state"]) for t in done] == [("t1", "TASK_FINISHED")]
    # Every uuid-carrying update of t1, in order of arrival, never went back in the lifecycle.
    states = [
        e["update"]["status"]["state"]
        for e in session.log
        if e["type"] == "UPDATE" and e["update"]["status"]["task_id"]["value"] == "t1"
    ]
    order = ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states)


def test_kill_sends_killing_then_killed_and_unknown_kill_is_answered(sim, session):
    agent = agent_ids(sim.address)[0]
    session.run_task("t1", agent)
    assert session.kill("t1") == 202
    killing = session.update("t1")
    assert killing["state"] == "TASK_KILLING" and killing["uuid"]
    assert session.ack(killing) == 202
    killed = session.update("t1")
    assert killed["state"] == "TASK_KILLED"
    assert session.ack(killed) == 202
    assert session.kill("never-launched") == 202
    answer = session.update("never-launched")
    assert answer["state"] == "TASK_UNKNOWN" and "uuid" not in answer


def test_kill_without_killing_capability_goes_straight_to_killed(sim):
    s = Session(sim.address, info=PLAIN_FRAMEWORK)
    try:
        s.run_task("t1", agent_ids(sim.address)[0])
        s.kill("t1")
        assert s.update("t1")["state"] == "TASK_KILLED"
    finally:
        s.close()


def test_task_outcome_and_invalid_tasks(sim, session):
    agent = agent_ids(sim.address)[0]
    session.run_task("f1", agent, duration=1, outcome="FAILED")
    failed = session.update("f1", "TASK_FAILED")
    assert failed["reason"] == "REASON_COMMAND_EXECUTOR_FAILED"
    session.launch("big", agent, cpus=64)
    error = session.update("big")
    assert error["state"] == "TASK_ERROR" and error["reason"] == "REASON_TASK_INVALID"
    assert "uuid" not in error and error["source"] == "SOURCE_MASTER"


def test_accept_of_a_stale_offer_drops_the_tasks(sim, session):
    agent = agent_ids(sim.address)[0]
    offer = session.offer_on(agent)
    assert session.post("DECLINE", {"offer_ids": [offer["id"]]}) == 202
    task = {
        "name": "x",
        "task_id": {"value": "x"},
        "agent_id": {"value": agent},
        "command": {"value": "true"},
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}],
    }
    op = {"type": "LAUNCH", "launch": {"task_infos": [task]}}
    assert session.post("ACCEPT", {"offer_ids": [offer["id"]], "operations": [op]}) == 202
    dropped = session.update("x")
    assert dropped["state"] == "TASK_DROPPED" and dropped["reason"] == "REASON_INVALID_OFFERS"


def test_decline_filters_revive_and_suppress(sim, session):
    agent = agent_ids(sim.address)[0]
    offer = session.offer_on(agent)
    filt = {"refuse_seconds": 3600}
    assert session.post("DECLINE", {"offer_ids": [offer["id"]], "filters": filt}) == 202
    # The other agent keeps being offered after its own decline with a short filter; the
    # refused one does not come back until REVIVE.
    other = agent_ids(sim.address)[1]
    short = {"refuse_seconds": 1}
    session.post("DECLINE", {"offer_ids": [session.offer_on(other)["id"]], "filters": short})
    other_offer = session.offer_on(other, timeout=3)
    assert agent not in session.offers
    assert session.post("REVIVE") == 202
    session.offer_on(agent, timeout=3)
    assert session.post("SUPPRESS") == 202
    session.post("DECLINE", {"offer_ids": [other_offer["id"]], "filters": short})
    time.sleep(0.3)  # 15 simulated seconds: well past the 1 s filter
    session.stream.drain()
    with pytest.raises(TimeoutError):
        session.next(lambda e: e["type"] == "OFFERS", timeout=0.3)


# --------------------------------------------------------------------- reconciliation


@pytest.mark.parametrize("partition_aware", [True, False])
def test_reconciliation_answers_follow_the_table(sim, partition_aware):
    info = PA_FRAMEWORK if partition_aware else PLAIN_FRAMEWORK
    s = Session(sim.address, info=info)
    try:
        a0, a1 = agent_ids(sim.address)
        s.run_task("known", a0)
        lost = "TASK_LOST"

        def expect(state: str) -> str:
            return state if partition_aware else lost

        # 1 known; 3 named agent registered; 6 no agent named / unknown agent.
        s.reconcile(("known", None), ("gone", a0), ("unknown", None), ("nowhere", "no-such-agent"))
        got = [s.update(t) for t in ("known", "gone", "unknown", "nowhere")]
        assert [g["state"] for g in got] == [
            "TASK_RUNNING",
            expect("TASK_GONE"),
            expect("TASK_UNKNOWN"),
            expect("TASK_UNKNOWN"),
        ]
        for g in got:
            assert g["source"] == "SOURCE_MASTER"
            assert g["reason"] == "REASON_RECONCILIATION"
            assert "uuid" not in g
        # 4 named agent unreachable.
        inject(sim.address, {"kind": "agent_partition", "agent_id": a1})
        s.reconcile(("on-a1", a1))
        assert s.update("on-a1")["state"] == expect("TASK_UNREACHABLE")
        # 5 named agent removed by the operator.
        inject(sim.address, {"kind": "agent_remove", "agent_id": a1})
        s.reconcile(("on-a1", a1))
        assert s.update("on-a1")["state"] == expect("TASK_GONE_BY_OPERATOR")
        # implicit: one answer per task the master holds.
        s.run_task("known2", a0)
        assert s.post("RECONCILE", {"tasks": []}) == 202
        implicit = [s.update(t) for t in ("known", "known2")]
        assert [i["state"] for i in implicit] == ["TASK_RUNNING", "TASK_RUNNING"]
        assert all(i["reason"] == "REASON_RECONCILIATION" for i in implicit)
    finally:
        s.close()


@pytest.mark.parametrize("partition_aware", [True, False])
def test_no_answer_for_agents_not_reregistered_after_failover(sim, partition_aware):
    info = PA_FRAMEWORK if partition_aware else PLAIN_FRAMEWORK
    s = Session(sim.address, info=info)
    a0, a1 = agent_ids(sim.address)
    s.run_task("t0", a0)
    inject(
        sim.address,
        {
            "kind": "master_failover",
            "down_for": 10,
            "reregister_after": 5,
            "never_return": [1],
            "agent_reregister_timeout": 3600,
        },
    )
    assert s.stream.ended.wait(2) and not s.stream.clean_end
    wait_until(lambda: _version_ok(sim.address), what="master back")
    wait_until(
        lambda: {a["id"]: a["status"] for a in state(sim.address)["agents"]}[a0] == "REGISTERED",
        what="agent 0 re-registered",
    )
    s2 = Session(sim.address, info=info, framework_id=s.framework_id)
    try:
        # unknown task with no agent named while agent 1 still recovers: no answer; named
        # agent 1: no answer; named registered agent 0: TASK_GONE; t0 was re-learned.
        s2.reconcile(("silent-1", None), ("silent-2", a1), ("gone", a0), ("t0", None))
        got = [s2.update(t)["state"] for t in ("gone", "t0")]
        assert got == ["TASK_GONE" if partition_aware else "TASK_LOST", "TASK_RUNNING"]
        seen = {e["update"]["status"]["task_id"]["value"] for e in s2.log if e["type"] == "UPDATE"}
        assert "silent-1" not in seen and "silent-2" not in seen
    finally:
        s2.close()


# ----------------------------------------------------------------------------- faults


def _version_ok(address: str) -> bool:
    try:
        return get_json(address, "/version", timeout=1)["version"] == "1.11.0"
    except OSError:
        return False


def test_master_failover_refuses_connections_then_remembers_agents_not_tasks(sim, session):
    a0, _ = agent_ids(sim.address)
    session.run_task("t1", a0)
    inject(
        sim.address,
        {"kind": "master_failover", "down_for": 25, "reregister_after": 25},  # 0.5 s each
    )
    assert session.stream.ended.wait(2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sim.port), timeout=1).close()
    wait_until(lambda: _version_ok(sim.address), what="master back")
    # The new master knows the framework (from the registry) but it has not subscribed yet.
    status, text = call(
        sim.address,
        {"type": "REVIVE", "framework_id": {"value": session.framework_id}},
        stream_id=session.stream_id,
    )
    assert status == 403 and "not subscribed" in text
    snap = state(sim.address)
    assert {a["status"] for a in snap["agents"]} == {"RECOVERED"}
    assert snap["agents"][0]["id"] == a0  # agent ids survive
    assert task_view(sim.address, "t1")["master_state"] is None  # no tasks yet
    s2 = Session(sim.address, framework_id=session.framework_id)
    try:
        wait_until(lambda: task_view(sim.address, "t1")["master_state"] == "TASK_RUNNING")
        assert {a["status"] for a in state(sim.address)["agents"]} == {"REGISTERED"}
        s2.reconcile(("t1", None))
        assert s2.update("t1")["state"] == "TASK_RUNNING"
    finally:
        s2.close()


def test_agents_that_never_return_become_unreachable(sim, session):
    a0, a1 = agent_ids(sim.address)
    inject(
        sim.address,
        {
            "kind": "master_failover",
            "down_for": 5,
            "reregister_after": 1,
            "never_return": [a1],
            "agent_reregister_timeout": 30,
        },
    )
    wait_until(lambda: _version_ok(sim.address))
    statuses = wait_until(
        lambda: (
            (s := {a["id"]: a["status"] for a in state(sim.address)["agents"]})[a1] == "UNREACHABLE"
            and s
        ),
        what="agent 1 unreachable",
    )
    assert statuses[a0] == "REGISTERED"  # type: ignore[index]


def test_partition_and_heal(sim, session):
    a0, _ = agent_ids(sim.address)
    session.run_task("t1", a0)
    inject(sim.address, {"kind": "agent_partition", "agent_id": 0})
    unreachable = session.update("t1")
    assert unreachable["state"] == "TASK_UNREACHABLE"
    assert unreachable["reason"] == "REASON_AGENT_REMOVED" and "uuid" not in unreachable
    assert unreachable["unreachable_time"]["nanoseconds"] > 0
    failure = session.next(lambda e: e["type"] == "FAILURE")
    assert failure["failure"]["agent_id"]["value"] == a0
    inject(sim.address, {"kind": "agent_heal", "agent_id": 0})
    healed = session.update("t1")
    assert healed["state"] == "TASK_RUNNING" and healed["reason"] == "REASON_AGENT_REREGISTERED"


def test_partition_of_non_partition_aware_framework_is_lost(sim):
    s = Session(sim.address, info=PLAIN_FRAMEWORK)
    try:
        a0, _ = agent_ids(sim.address)
        s.run_task("t1", a0)
        inject(sim.address, {"kind": "agent_partition", "agent_id": a0})
        lost = s.update("t1")
        assert (lost["state"], lost["reason"]) == ("TASK_LOST", "REASON_AGENT_REMOVED")
    finally:
        s.close()


def test_agent_removed_by_operator(sim, session):
    a0, _ = agent_ids(sim.address)
    session.run_task("t1", a0)
    inject(sim.address, {"kind": "agent_remove", "agent_id": a0})
    gone = session.update("t1")
    assert gone["state"] == "TASK_GONE_BY_OPERATOR"
    assert gone["reason"] == "REASON_AGENT_REMOVED_BY_OPERATOR" and "uuid" not in gone


def test_stream_drop_cuts_the_connection(sim, session):
    inject(sim.address, {"kind": "stream_drop"})
    assert session.stream.ended.wait(2)
    assert not session.stream.clean_end
    again = Session(sim.address, framework_id=session.framework_id)
    again.close()


def test_silent_stream_stops_heartbeats_but_stays_open(sim, session):
    session.stream.next(skip=("SUBSCRIBED", "OFFERS"))  # a heartbeat flows
    inject(sim.address, {"kind": "stream_silent"})
    time.sleep(0.1)
    session.stream.drain()
    time.sleep(1.0)  # more than three heartbeat intervals
    assert session.stream.drain() == []
    assert not session.stream.ended.is_set()
    assert state(sim.address)["frameworks"][0]["silent"]


def test_dropped_and_duplicated_updates(sim, session):
    a0, _ = agent_ids(sim.address)
    inject(sim.address, {"kind": "drop_updates", "task_id": "t1"})
    session.launch("t1", a0)
    sent_at = time.monotonic()
    first = session.update("t1", timeout=3)
    assert time.monotonic() - sent_at > 0.15  # the first send was dropped; the retry came
    inject(sim.address, {"kind": "duplicate_updates", "task_id": "t1"})
    session.ack(first)
    running = session.update("t1", "TASK_RUNNING")
    twin = session.update("t1")
    assert twin == running


def test_lost_acknowledgement_means_the_update_comes_again(sim, session):
    a0, _ = agent_ids(sim.address)
    session.launch("t1", a0)
    starting = session.update("t1")
    inject(sim.address, {"kind": "lose_acks", "task_id": "t1"})
    assert session.ack(starting) == 202
    assert session.update("t1")["uuid"] == starting["uuid"]
    session.ack(starting)
    assert session.update("t1")["state"] == "TASK_RUNNING"


def test_reordered_updates_across_tasks(sim, session):
    a0, a1 = agent_ids(sim.address)
    inject(sim.address, {"kind": "reorder_updates", "task_id": "first"})
    session.launch("first", a0)
    time.sleep(0.05)
    session.launch("second", a1)
    order = [
        session.next(lambda e: e["type"] == "UPDATE")["update"]["status"]["task_id"]["value"]
        for _ in range(2)
    ]
    assert order == ["second", "first"]


def test_lost_accept_is_unknown_on_reconciliation(sim, session):
    a0, _ = agent_ids(sim.address)
    inject(sim.address, {"kind": "lose_accept"})
    offer = session.launch("t1", a0)
    rescind = session.next(lambda e: e["type"] == "RESCIND")
    assert rescind["rescind"]["offer_id"] == offer["id"]
    session.reconcile(("t1", None))
    assert session.update("t1")["state"] == "TASK_UNKNOWN"


def test_launch_lost_before_the_agent(sim, session):
    a0, _ = agent_ids(sim.address)
    inject(sim.address, {"kind": "lose_launch", "drop_after": 20})
    session.launch("t1", a0)
    session.reconcile(("t1", None))
    staging = session.update("t1")
    assert staging["state"] == "TASK_STAGING" and "uuid" not in staging
    dropped = session.update("t1", timeout=3)
    assert dropped["state"] == "TASK_DROPPED" and dropped["uuid"]
    assert session.ack(dropped) == 202
    wait_until(lambda: task_view(sim.address, "t1") is None, what="dropped task forgotten")


def test_failing_and_slow_calls(sim, session):
    inject(sim.address, {"kind": "fail_calls", "status": 503, "calls": ["REVIVE"], "count": 2})
    assert session.post("REVIVE") == 503
    assert session.post("SUPPRESS") == 202  # not a REVIVE
    assert session.post("REVIVE") == 503
    assert session.post("REVIVE") == 202
    # SUBSCRIBE fails with the injected status too, and opens no stream.
    inject(sim.address, {"kind": "fail_calls", "status": 500, "calls": ["SUBSCRIBE"]})
    refused = EventStream(sim.address, subscribe_body(PA_FRAMEWORK, session.framework_id))
    assert refused.status == 500
    assert session.post("REVIVE") == 202  # the old stream is still the framework's
    inject(sim.address, {"kind": "delay_calls", "seconds": 25})  # 0.5 s real
    start = time.monotonic()
    assert session.post("REVIVE") == 202
    assert time.monotonic() - start >= 0.45


def test_rogue_task_shows_up_only_in_implicit_reconciliation(sim, session):
    inject(sim.address, {"kind": "rogue_task", "agent_id": 1, "task_id": "rogue-1"})
    session.reconcile(("sentinel", None))
    assert answers_until_sentinel(session, "sentinel") == []
    session.post("RECONCILE", {"tasks": []})
    rogue = session.update("rogue-1")
    assert rogue["state"] == "TASK_RUNNING" and rogue["reason"] == "REASON_RECONCILIATION"
    assert task_view(sim.address, "rogue-1")["rogue"]


def test_executor_lost(sim, session):
    a0, _ = agent_ids(sim.address)
    session.run_task("t1", a0)
    inject(sim.address, {"kind": "executor_lost", "task_id": "t1"})
    failure = session.next(lambda e: e["type"] == "FAILURE")
    assert failure["failure"]["executor_id"]["value"] == "t1"
    failed = session.update("t1")
    assert failed["state"] == "TASK_FAILED" and failed["reason"] == "REASON_EXECUTOR_TERMINATED"


def test_bad_faults_are_400(sim):
    for fault in [
        {"kind": "nope"},
        {"kind": "agent_partition"},
        {"kind": "agent_partition", "agent_id": 99},
        {"kind": "drop_updates", "probability": 2},
        {"kind": "drop_updates", "colour": "red"},
    ]:
        status, text = call(sim.address, fault, path="/admin/fault")
        assert status == 400, (fault, text)
        assert json.loads(text)["error"]


def test_faults_from_the_command_line_apply_after_their_delay():
    faults = [{"kind": "master_failover", "after": 10, "down_for": 10}]
    with BackgroundSim(SimConfig(agents=1), time_scale=SCALE, faults=faults) as sim:
        assert state(sim.address)["master"]["up"]
        wait_until(lambda: not _version_ok(sim.address), what="master down")
        wait_until(lambda: _version_ok(sim.address), what="master back")
        assert state(sim.address)["master"]["epoch"] == 1


# ----------------------------------------------------------------------- state endpoint


def test_state_answers_counts_pages_and_one_task(sim, session):
    a0, a1 = agent_ids(sim.address)
    session.run_task("t1", a0)
    session.run_task("t2", a1)
    counts = get_json(sim.address, "/state?counts=1")
    assert "tasks" not in counts and "acknowledged" not in counts
    assert counts["task_counts"]["total"] == 2
    assert counts["task_counts"]["agent"] == {"TASK_RUNNING": 2}
    assert counts["acknowledged_total"] == 4  # STARTING and RUNNING of each
    first = get_json(sim.address, "/state?offset=0&limit=1&acknowledged=0")
    assert [t["task_id"] for t in first["tasks"]] == ["t1"] and first["next_offset"] == 1
    assert "acknowledged" not in first
    second = get_json(sim.address, "/state?offset=1&limit=1")
    assert [t["task_id"] for t in second["tasks"]] == ["t2"] and second["next_offset"] is None
    assert task_view(sim.address, "t2")["agent_id"] == a1
    assert task_view(sim.address, "nope") is None
    for bad in ("limit=x", "offset=-1", "counts=maybe", "colour=red"):
        status, text = call(
            sim.address, None, method="GET", content_type=None, path=f"/state?{bad}"
        )
        assert status == 400 and json.loads(text)["error"], (bad, text)

"""The simulated master's HTTP endpoints under malformed bodies, content types and methods.

Every request gets an answer below 500 (a 4xx carries a message saying what is wrong), and the
server keeps serving: after each one, /state answers, a valid fault injection succeeds, and
the framework subscribed at the start can still make a call.
"""

from __future__ import annotations

import http.client
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_session import Session, state

from tools.sim_master.cluster import SimConfig
from tools.sim_master.server import BackgroundSim

FUZZ = settings(
    max_examples=int(os.environ.get("TASKLEDGER_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PATHS = ["/api/v1/scheduler", "/admin/fault", "/state", "/version", "/nope", "/api/v1/"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-protobuf",
    "multipart/form-data",
    None,
]
# Faults that take the master or our stream down, or inject 5xx on purpose, are not fuzzed.
DISRUPTIVE = {"master_failover", "fail_calls", "delay_calls", "stream_drop", "stream_silent"}


def request(
    address: str,
    method: str,
    path: str,
    body: bytes,
    content_type: str | None,
    stream_id: str | None = None,
) -> tuple[int, str]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        headers = {} if content_type is None else {"Content-Type": content_type}
        if stream_id is not None:
            headers["Mesos-Stream-Id"] = stream_id
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        if response.status == 200 and path == "/api/v1/scheduler":
            return 200, ""  # a stream was opened after all: do not wait on it
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def _calls(session: Session) -> list[dict[str, Any]]:
    fid = {"value": session.framework_id}
    task = {"value": "web/0"}
    agent = {"value": "agent-x"}
    offer = {"value": "offer-x"}
    return [
        {
            "type": "ACKNOWLEDGE",
            "framework_id": fid,
            "acknowledge": {"agent_id": agent, "task_id": task, "uuid": "AAAAAAAAAAAAAAAAAAAAAA=="},
        },  # fmt: skip
        {"type": "RECONCILE", "framework_id": fid, "reconcile": {"tasks": [{"task_id": task}]}},
        {"type": "KILL", "framework_id": fid, "kill": {"task_id": task, "agent_id": agent}},
        {"type": "DECLINE", "framework_id": fid, "decline": {"offer_ids": [offer]}},
        {
            "type": "ACCEPT",
            "framework_id": fid,
            "accept": {
                "offer_ids": [offer],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": []}}],
            },
        },  # fmt: skip
        {"type": "REVIVE", "framework_id": fid},
        {"type": "SUPPRESS", "framework_id": fid},
    ]


FAULTS = [
    {"kind": "clear_rules"},
    {"kind": "drop_updates", "probability": 0.0},
    {"kind": "rescind_offers"},
    {"kind": "agent_partition", "agent": 0, "detect_after": 1000.0},
    {"kind": "agent_heal", "agent": 0},
]


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every place inside a JSON value, the value itself first."""
    out = [path]
    if isinstance(value, dict):
        for key, inner in value.items():
            out += _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += _paths(inner, (*path, index))
    return out


def _mutate(data: st.DataObject, value: Any) -> Any:
    """A copy of `value` with a few random changes at random places."""
    for _ in range(data.draw(st.integers(0, 3), label="changes")):
        paths = _paths(value)
        path = data.draw(st.sampled_from(paths), label="at")
        new = data.draw(json_values, label="new")
        if not path:
            value = new
            continue
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        if data.draw(st.booleans(), label="delete") and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
    return value


def _kinds(body: Any) -> set[str]:
    items = body if isinstance(body, list) else [body]
    return {str(i.get("kind")) for i in items if isinstance(i, dict)}


@pytest.fixture(scope="module")
def sim():
    with BackgroundSim(SimConfig(agents=2, seed=5), time_scale=1.0) as server:
        yield server


@pytest.fixture(scope="module")
def session(sim):
    s = Session(sim.address)
    yield s
    s.close()


def still_serving(sim: BackgroundSim, session: Session) -> None:
    assert state(sim.address)["master"]["up"]
    assert request(sim.address, "POST", "/admin/fault", b'{"kind": "clear_rules"}', None)[0] == 200
    assert session.post("RECONCILE", {"tasks": []}) == 202


@FUZZ
@given(data=st.data())
def test_malformed_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(
    sim, session, data
):
    path = data.draw(st.sampled_from(PATHS), label="path")
    method = data.draw(st.sampled_from(METHODS), label="method")
    content_type = data.draw(st.sampled_from(CONTENT_TYPES), label="content type")
    shape = data.draw(st.sampled_from(["bytes", "json", "call", "fault"]), label="body")
    if shape == "bytes":
        body = data.draw(st.binary(max_size=64), label="bytes")
    else:
        template = {
            "json": lambda: data.draw(json_values, label="json"),
            "call": lambda: data.draw(st.sampled_from(_calls(session)), label="call"),
            "fault": lambda: data.draw(st.sampled_from(FAULTS), label="fault"),
        }[shape]()
        value = _mutate(data, json.loads(json.dumps(template)))
        if isinstance(value, dict) and value.get("type") in ("SUBSCRIBE", "TEARDOWN"):
            return  # would replace or end our framework: not a malformed request
        if _kinds(value) & DISRUPTIVE:
            return
        body = json.dumps(value).encode()
    stream_id = data.draw(st.sampled_from([session.stream_id, None, "bogus"]), label="stream")
    status, text = request(sim.address, method, path, body, content_type, stream_id)
    assert status < 500, (method, path, content_type, body, status, text)
    if status >= 400:
        assert text.strip(), (method, path, status)
    still_serving(sim, session)


@FUZZ
@given(subscribe=json_values, framework_id=st.none() | json_values)
def test_malformed_subscribe_gets_a_400(sim, session, subscribe, framework_id):
    if isinstance(subscribe, dict):
        subscribe.pop("framework_info", None)  # never a valid one
    body: dict[str, Any] = {"type": "SUBSCRIBE", "subscribe": subscribe}
    if framework_id is not None:
        body["framework_id"] = framework_id
    status, text = request(
        sim.address, "POST", "/api/v1/scheduler", json.dumps(body).encode(), "application/json"
    )
    assert 400 <= status < 500 and text.strip(), (body, status, text)
    still_serving(sim, session)

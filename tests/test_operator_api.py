"""The operator API (tools/operator/server.py) over real HTTP and a real Ledger: health,
tokens, the guards, orders through the client `taskledger ctl` uses, and documents that
agree with the forensic commands' --json."""

from __future__ import annotations

import http.client
import json

import pytest
from cli_log import run
from operator_support import T0, Job, LedgerScheduler

from engine.ledger import Ledger
from engine.mesos.core import JobSpec
from tools.operator.client import Client, CtlError
from tools.operator.server import OPERATOR_HEADER, OperatorAPI, Tokens, bind

TOKEN = "0123456789abcdef-alice"


@pytest.fixture
def served(tmp_path):
    """(scheduler, api) of a served ledger holding a job of 4 running tasks."""
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        Job(ledger).run(4)
        scheduler = LedgerScheduler(ledger, JobSpec("web", 4))
        api = OperatorAPI(bind("127.0.0.1", 0))
        api.serve(scheduler)
        try:
            yield scheduler, api
        finally:
            api.stop()


def raw(api: OperatorAPI, method: str, path: str, body: bytes = b"", **headers: str):
    host, port = api.url[len("http://") :].rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def test_health_says_what_is_wrong(served):
    scheduler, api = served
    status, doc = raw(api, "GET", "/health")
    assert status == 200 and doc["ok"] and doc["problems"] == []
    assert doc["log"]["writable"] and doc["log"]["last_id"] == scheduler.ledger.last_id
    scheduler.last_heartbeat = T0 - 60  # older than the watchdog's 45 s
    status, doc = raw(api, "GET", "/health")
    assert status == 503 and doc["problems"] == ["no heartbeat for 60.0 s (limit 45 s)"]
    scheduler.subscribed = False
    assert raw(api, "GET", "/health")[1]["problems"] == ["not subscribed to the master"]


def test_the_url_file_is_left_while_serving_and_removed_after(tmp_path):
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        api = OperatorAPI(bind("127.0.0.1", 0))
        api.serve(LedgerScheduler(ledger, None))
        assert (tmp_path / "log" / "operator-api").read_text() == api.url + "\n"
        api.stop()
        assert not (tmp_path / "log" / "operator-api").exists()


def test_guards_host_content_type_and_origin(served):
    _, api = served
    # A page elsewhere that resolves its own name to 127.0.0.1 (DNS rebinding): refused.
    status, doc = raw(api, "GET", "/api/v1/status", Host="evil.example:80")
    assert status == 421 and "loopback" in doc["error"]
    status, doc = raw(api, "POST", "/api/v1/resume", b"reason=x", **{OPERATOR_HEADER: "x"})
    assert status == 415
    status, doc = raw(
        api,
        "POST",
        "/api/v1/resume",
        b"{}",
        **{"Content-Type": "application/json", "Origin": "http://evil.example"},
    )
    assert status == 403 and "another origin" in doc["error"]
    status, doc = raw(api, "POST", "/api/v1/kill", b"{}", **{"Content-Type": "application/json"})
    assert status == 400 and "who you are" in doc["error"]


def test_orders_through_the_client(served):
    scheduler, api = served
    client = Client(api.url, operator="ivy")
    answer = client.post("/api/v1/kill", {"task": "web/2/g2", "reason": "slow"})
    assert answer["changed"] and answer["created"].startswith("web/2/o")
    order = scheduler.ledger.event_at(answer["event"])
    assert (order.topic, order.operator, order.reason) == ("KillOrdered", "ivy", "slow")
    with pytest.raises(CtlError, match=r"unknown task 'web/7'.*\(HTTP 404 from http://127"):
        client.post("/api/v1/kill", {"task": "web/7"})
    assert client.post("/api/v1/scale", {"instances": 4})["changed"] is False
    Job(scheduler.ledger).update("web/2/g2", "TASK_KILLED", T0 + 1)
    with pytest.raises(CtlError, match=r"task web/2/g2 is KILLED.*\(HTTP 409"):
        client.post("/api/v1/kill", {"task": "web/2/g2"})
    status = client.get("/api/v1/status")
    assert status["job"] == {"name": "web", "instances": 4} and status["breaker"]["halted"] is False


def test_tokens_name_the_operator_and_are_required(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# operators\nalice {TOKEN}\n")
    with Ledger.open(tmp_path / "log", durable=False) as ledger:
        Job(ledger).run(1)
        api = OperatorAPI(bind("127.0.0.1", 0), tokens=Tokens.read(str(tokens)))
        api.serve(LedgerScheduler(ledger, JobSpec("web", 1)))
        try:
            assert raw(api, "GET", "/health")[0] == 200  # health needs no token
            assert raw(api, "GET", "/api/v1/view")[0] == 401
            with pytest.raises(CtlError, match="HTTP 401: it needs a token"):
                Client(api.url).get("/api/v1/status")
            with pytest.raises(CtlError, match="HTTP 401: the token was refused"):
                Client(api.url, token="x" * 20).get("/api/v1/status")
            # The token's name is who gave the order, whatever the client says it is.
            answer = Client(api.url, token=TOKEN, operator="mallory").post(
                "/api/v1/dry-run", {"dry_run": True}
            )
            assert ledger.event_at(answer["event"]).operator == "alice"
        finally:
            api.stop()


def test_a_bad_token_file_is_named(tmp_path):
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ValueError, match="at least 16 characters"):
        Tokens.read(str(short))
    with pytest.raises(ValueError, match="holds no token"):
        (tmp_path / "empty").write_text("# nothing\n")
        Tokens.read(str(tmp_path / "empty"))


def test_the_view_agrees_with_the_forensic_commands(served):
    scheduler, api = served
    ledger = scheduler.ledger
    job = Job(ledger)
    job.update("web/1/g1", "TASK_FAILED", T0 + 1)  # a failure: drift until the saga acts
    job.update("rogue/1", "TASK_RUNNING", T0 + 1)  # a task the scheduler never launched
    client = Client(api.url)
    view = client.get("/api/v1/view")
    at = str(view["as_of"]["id"])
    assert view["as_of"]["id"] == ledger.last_id
    query = json.loads(
        run(
            "query",
            "--log",
            ledger.path,
            "--as-of",
            at,
            "--json",
            "--count-by",
            "state",
            "--count-by",
            "mesos_state",
            "--count-by",
            "cell",
        ).output
    )
    assert view["counts"] == query["counts"]
    drift = json.loads(run("drift", "--log", ledger.path, "--as-of", at, "--json").output)
    assert view["drift"]["total"] == drift["total"] == 1
    assert [(c["cell"], c["count"]) for c in view["drift"]["cells"]] == [
        (c["cell"], c["count"]) for c in drift["cells"]
    ]
    page = client.get("/api/v1/task?id=rogue/1")
    why = json.loads(run("why", "rogue/1", "--log", ledger.path, "--as-of", at, "--json").output)
    history = json.loads(
        run("history", "rogue/1", "--log", ledger.path, "--as-of", at, "--json").output
    )
    assert page["why"]["commands"] == why["commands"] and page["why"]["now"] == why["now"]
    assert page["history"] == history["events"]
    with pytest.raises(CtlError, match="HTTP 404"):
        client.get("/api/v1/task?id=nope")

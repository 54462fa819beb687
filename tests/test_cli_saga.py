"""`why` and `history` on a log the real saga wrote (Ledger.reconcile / tick / dispatch)."""

from __future__ import annotations

import json

import pytest
from builders import mesos_uuid, task_status
from cli_log import T0, run

from engine.ledger import Ledger

MASTER = {"source": "SOURCE_MASTER", "reason": "REASON_RECONCILIATION"}
EXECUTOR = {"source": "SOURCE_EXECUTOR", "agent": "agent-3"}


@pytest.fixture(scope="module")
def saga_log(tmp_path_factory) -> tuple[str, dict[str, int]]:
    """An implicit run finds a task Mesos runs and the scheduler never created; the saga
    kills it; Mesos confirms."""
    path = str(tmp_path_factory.mktemp("saga") / "log")
    ids = {}
    with Ledger.open(path, durable=False) as ledger:
        ledger.framework_registered("fw-1", "master-1", time=T0)
        ledger.task_created("web/0", job="web", time=T0 + 1)
        ledger.task_assigned("web/0", agent_id="agent-1", time=T0 + 2)
        ledger.reconcile("implicit", now=T0 + 100)
        ledger.dispatch(lambda command: None, now=T0 + 100)
        ids["seen"] = ledger.status_update(
            task_status("rogue/1", "TASK_RUNNING", timestamp=T0 + 101, agent="agent-3", **MASTER),
            time=T0 + 101,
        )
        ledger.tick(now=T0 + 102)
        (kill,) = [c for c in ledger.pending_commands() if c.kind == "KILL"]
        ids["kill"] = kill.command_id
        ledger.dispatch(lambda command: None, now=T0 + 103)
        ids["killed"] = ledger.status_update(
            task_status(
                "rogue/1", "TASK_KILLED", timestamp=T0 + 105, uuid=mesos_uuid(9), **EXECUTOR
            ),
            time=T0 + 105,
        )
        ledger.tick(now=T0 + 106)
        ledger.tick(now=T0 + 200)
    return path, ids


def test_why_follows_the_saga_chain(saga_log):
    path, ids = saga_log
    result = run("why", "rogue/1", "--log", path, "--json")
    assert result.exit_code == 0, result.output
    (kill,) = json.loads(result.stdout)["commands"]
    assert kill["command"] == ids["kill"]
    assert kill["kind"] == "KILL" and kill["rule"] == "R-IMPLICIT-KILL-UNKNOWN"
    assert kill["run_ordinal"] is not None and kill["run"].startswith("implicit")
    assert kill["status"] == "confirmed"
    chain = kill["chain"]
    observations = [s for s in chain if s["step"] == "observation"]
    assert [s["id"] for s in observations] == [ids["seen"]]  # the evidence: the answer
    assert "TASK_RUNNING for rogue/1 on agent-3" in observations[0]["what"]
    assert [s["step"] for s in chain if s["step"] in ("dispatch", "outcome")] == [
        "dispatch",
        "outcome",
    ]
    assert f"by event #{ids['killed']}" in chain[-1]["what"]
    assert kill["sentence"].startswith(
        f"killed because the implicit run #{kill['run_ordinal']} at 03:01:40 found it "
        "TASK_RUNNING on agent-3 while the scheduler did not know it "
        "(rule R-IMPLICIT-KILL-UNKNOWN); confirmed at 03:01:4"
    )


def test_report_on_the_saga_log(saga_log, tmp_path):
    path, _ = saga_log
    out = tmp_path / "r.html"
    assert run("report", "--log", path, "--html", str(out)).exit_code == 0
    page = out.read_text()
    assert "R-IMPLICIT-KILL-UNKNOWN" in page and "R-IMPLICIT-ASK" in page

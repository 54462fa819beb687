"""A short run's log for the command-line tests, built with the Ledger API, and helpers.

The story (times UTC on 2024-05-01), ids as appended:
  1      framework registered
  2-5    web/0 created, assigned to agent-1, STARTING, RUNNING (message MARKER)
  6-8    web/1 created, assigned to agent-2, RUNNING          <- BEFORE_DRIFT (03:00:07)
  9-11   implicit run #1 starts, asks (RECONCILE, implicit), dispatched
  12     the master answers rogue/1 TASK_RUNNING on agent-3    <- drift: non-terminal/absent
  13-16  KILL rogue/1 by R-IMPLICIT-KILL-UNKNOWN (evidence 12), dispatched, TASK_KILLED,
         confirmed "killed"
  17     the implicit run completes                            <- SNAPSHOT taken here
  18-21  explicit run #2 asks about web/0 and web/1; web/0 answers RUNNING, web/1 TASK_UNKNOWN
                                                               <- drift: absent/non-terminal
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from typing import Any

import pytest
from click.testing import CliRunner

from engine.events import (
    CommandConfirmed,
    CommandDispatched,
    CommandIssued,
    ReconciliationCompleted,
    ReconciliationStarted,
)
from engine.ledger import Ledger
from tools.cli import cli

T0 = 1714532400.0  # 2024-05-01T03:00:00Z
MARKER = "MARKER-7f3a9c-unique"
BEFORE_DRIFT = 8  # the last id before the rogue task shows up
ROGUE_SEEN = 12
KILL = 13
SNAPSHOT_AT = 17
LAST = 21


def status(task: str, state: str, t: float, **more: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"task_id": {"value": task}, "state": state, "timestamp": t}
    s.update(more)
    return s


def uuid(n: int) -> str:
    return base64.b64encode(n.to_bytes(16, "big")).decode()


def build(path: str) -> None:
    """Writes the story above into a new log at `path`."""
    with Ledger.open(path, durable=False) as ledger:
        ledger.framework_registered("fw-1", "master-1", time=T0)
        ledger.task_created("web/0", job="web", time=T0 + 1)
        ledger.task_assigned("web/0", agent_id="agent-1", time=T0 + 2)
        executor = {"source": "SOURCE_EXECUTOR", "agent_id": {"value": "agent-1"}}
        ledger.status_update(
            status("web/0", "TASK_STARTING", T0 + 3, uuid=uuid(1), **executor), time=T0 + 3
        )
        ledger.status_update(
            status("web/0", "TASK_RUNNING", T0 + 4, uuid=uuid(2), message=MARKER, **executor),
            time=T0 + 4,
        )
        ledger.task_created("web/1", job="web", time=T0 + 5)
        ledger.task_assigned("web/1", agent_id="agent-2", time=T0 + 6)
        ledger.status_update(
            status(
                "web/1",
                "TASK_RUNNING",
                T0 + 7,
                uuid=uuid(3),
                source="SOURCE_EXECUTOR",
                agent_id={"value": "agent-2"},
            ),
            time=T0 + 7,
        )
        assert ledger.last_id == BEFORE_DRIFT
        t = T0 + 100
        (started,) = ledger.append(
            [ReconciliationStarted(t, None, "implicit-1", "implicit", "schedule", t + 600)]
        )
        (ask,) = ledger.append(
            [
                CommandIssued(
                    t, None, "RECONCILE", None, "R-IMPLICIT-ASK", [started], "implicit-1", []
                )
            ]
        )
        ledger.append([CommandDispatched(t + 1, None, ask)])
        answer = {"source": "SOURCE_MASTER", "reason": "REASON_RECONCILIATION"}
        seen = ledger.status_update(
            status("rogue/1", "TASK_RUNNING", t + 2, agent_id={"value": "agent-3"}, **answer),
            time=t + 2,
        )
        assert seen == ROGUE_SEEN
        (kill,) = ledger.append(
            [
                CommandIssued(
                    t + 3, None, "KILL", "rogue/1", "R-IMPLICIT-KILL-UNKNOWN", [seen], "implicit-1"
                )
            ]
        )
        assert kill == KILL
        ledger.append([CommandDispatched(t + 4, None, kill)])
        killed = ledger.status_update(
            status(
                "rogue/1",
                "TASK_KILLED",
                t + 10,
                uuid=uuid(4),
                source="SOURCE_EXECUTOR",
                agent_id={"value": "agent-3"},
            ),
            time=t + 10,
        )
        ledger.append([CommandConfirmed(t + 10, killed, kill, "killed")])
        ledger.append(
            [
                ReconciliationCompleted(
                    t + 20,
                    None,
                    "implicit-1",
                    "implicit",
                    "quiet",
                    0,
                    1,
                    1,
                    0,
                    1,
                    20.0,
                    {"non-terminal/absent": 1},
                    {"R-IMPLICIT-KILL-UNKNOWN": 1},
                )
            ]
        )
        assert ledger.last_id == SNAPSHOT_AT
        ledger.snapshot(time=t + 21)
        t = T0 + 200
        (explicit,) = ledger.append(
            [ReconciliationStarted(t, None, "explicit-2", "explicit", "registered", t + 600)]
        )
        ledger.append(
            [
                CommandIssued(
                    t,
                    None,
                    "RECONCILE",
                    None,
                    "R-EXPLICIT-ROUND",
                    [explicit],
                    "explicit-2",
                    ["web/0", "web/1"],
                )
            ]
        )
        ledger.status_update(status("web/0", "TASK_RUNNING", t + 1, **answer), time=t + 1)
        ledger.status_update(status("web/1", "TASK_UNKNOWN", t + 2, **answer), time=t + 2)
        assert ledger.last_id == LAST


_built: dict[str, str] = {}


def story(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The story's log, built once per test session: tests must only read it. Each test
    module wraps this in a `story_log` fixture (fixtures are not shared by import)."""
    if "path" not in _built:
        path = str(tmp_path_factory.mktemp("story") / "log")
        build(path)
        _built["path"] = path
    return _built["path"]


def private_copy(path: str, folder: Any) -> str:
    """A copy of a log, for tests that write or damage it."""
    target = str(folder / "log")
    shutil.copytree(path, target, ignore=shutil.ignore_patterns("ledger.lock"))
    return target


def run(*args: str, input: str | bytes | None = None) -> Any:
    """Runs `taskledger ARGS` in this process; the result has exit_code, stdout, stderr."""
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def fingerprint(path: str) -> tuple[str, int, list[str]]:
    """data.mdb's hash and mtime, and the folder's file names: what a read must not change."""
    data = os.path.join(path, "data.mdb")
    with open(data, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return digest, os.stat(data).st_mtime_ns, sorted(os.listdir(path))

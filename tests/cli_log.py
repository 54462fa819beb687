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

import hashlib
import json
import os
import shutil
from typing import Any

import msgpack
from builders import mesos_uuid, task_status
from click.testing import CliRunner
from eventsourcing.persistence import StoredEvent

from engine.events import (
    CommandConfirmed,
    CommandDispatched,
    CommandIssued,
    ReconciliationCompleted,
    ReconciliationStarted,
    StatusUpdateReceived,
)
from engine.ledger import LEDGER_STREAM, Ledger
from engine.wire import to_wire
from tools.cli import cli

T0 = 1714532400.0  # 2024-05-01T03:00:00Z
MARKER = "MARKER-7f3a9c-unique"
BEFORE_DRIFT = 8  # the last id before the rogue task shows up
ROGUE_SEEN = 12
KILL = 13
SNAPSHOT_AT = 17
LAST = 21


def build(path: str) -> None:
    """Writes the story above into a new log at `path`."""
    with Ledger.open(path, durable=False) as ledger:
        ledger.framework_registered("fw-1", "master-1", time=T0)
        ledger.task_created("web/0", job="web", time=T0 + 1)
        ledger.task_assigned("web/0", agent_id="agent-1", time=T0 + 2)
        executor = {"source": "SOURCE_EXECUTOR", "agent": "agent-1"}
        ledger.status_update(
            task_status("web/0", "TASK_STARTING", timestamp=T0 + 3, uuid=mesos_uuid(1), **executor),
            time=T0 + 3,
        )
        ledger.status_update(
            task_status(
                "web/0",
                "TASK_RUNNING",
                timestamp=T0 + 4,
                uuid=mesos_uuid(2),
                message=MARKER,
                **executor,
            ),
            time=T0 + 4,
        )
        ledger.task_created("web/1", job="web", time=T0 + 5)
        ledger.task_assigned("web/1", agent_id="agent-2", time=T0 + 6)
        ledger.status_update(
            task_status(
                "web/1",
                "TASK_RUNNING",
                timestamp=T0 + 7,
                uuid=mesos_uuid(3),
                source="SOURCE_EXECUTOR",
                agent="agent-2",
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
            task_status("rogue/1", "TASK_RUNNING", timestamp=t + 2, agent="agent-3", **answer),
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
            task_status(
                "rogue/1",
                "TASK_KILLED",
                timestamp=t + 10,
                uuid=mesos_uuid(4),
                source="SOURCE_EXECUTOR",
                agent="agent-3",
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
        ledger.status_update(
            task_status("web/0", "TASK_RUNNING", timestamp=t + 1, **answer), time=t + 1
        )
        ledger.status_update(
            task_status("web/1", "TASK_UNKNOWN", timestamp=t + 2, **answer), time=t + 2
        )
        assert ledger.last_id == LAST


def private_copy(path: str, folder: Any) -> str:
    """A copy of a log, for tests that write or damage it."""
    target = str(folder / "log")
    shutil.copytree(path, target, ignore=shutil.ignore_patterns("ledger.lock"))
    return target


def run(*args: str, input: str | bytes | None = None) -> Any:
    """Runs `taskledger ARGS` in this process; the result has exit_code, stdout, stderr."""
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def as_json(*args: str) -> dict:
    """`taskledger ARGS --json`, which must succeed, as the document it printed."""
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def fingerprint(path: str) -> tuple[str, int, list[str]]:
    """data.mdb's hash and mtime, and the folder's file names: what a read must not change."""
    data = os.path.join(path, "data.mdb")
    with open(data, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return digest, os.stat(data).st_mtime_ns, sorted(os.listdir(path))


# -- a partition the real saga handled, and a replacement --------------------------------------
#   ten tasks web/N/gN created and assigned (ten launches in flight), then RUNNING; web/7/g7's
#   agent is partitioned (the master says TASK_UNREACHABLE); after the partition timeout the
#   saga marks it LOST (R-PARTITION-TIMEOUT, its evidence naming the UNREACHABLE update twice:
#   both views' records), then replaces it (R-LOST-RESCHEDULE) with web/7/r<id>, which starts
#   RUNNING; then the original comes back (TASK_RUNNING from the master) and is killed
#   (R-PARTITION-RETURNED-KILL).
PARTITION_AT = T0 + 5000.0
JOB_SIZE = 10


def _send(command: Any) -> None:
    """The dispatcher's send: the fake cluster accepts every command."""


def build_partition(path: str) -> dict[str, Any]:
    """Writes the partition story into a new log at `path`; returns the ids that matter."""
    ids: dict[str, Any] = {}
    master = {"source": "SOURCE_MASTER"}
    with Ledger.open(path, durable=False) as ledger:
        ledger.framework_registered("fw-1", "master-1", time=T0)
        # A launch: every task created and assigned, then their first updates.
        for n in range(JOB_SIZE):
            ledger.task_created(f"web/{n}/g{n}", job="web", instance=n, time=T0 + 1)
            ledger.task_assigned(f"web/{n}/g{n}", agent_id=f"agent-{n % 3}", time=T0 + 2)
        for n in range(JOB_SIZE):
            ledger.status_update(
                task_status(
                    f"web/{n}/g{n}",
                    "TASK_RUNNING",
                    timestamp=T0 + 3,
                    uuid=mesos_uuid(100 + n),
                    agent=f"agent-{n % 3}",
                    source="SOURCE_EXECUTOR",
                ),
                time=T0 + 3,
            )
        t = PARTITION_AT
        ids["unreachable"] = ledger.status_update(
            task_status(
                "web/7/g7",
                "TASK_UNREACHABLE",
                timestamp=t,
                agent="agent-1",
                reason="REASON_AGENT_REMOVED",
                **master,
            ),
            time=t,
        )
        ledger.tick(now=t + 1)
        ledger.tick(now=t + 901)  # past the partition timeout: MARK_LOST
        ledger.dispatch(_send, now=t + 902)
        ledger.tick(now=t + 903)  # the loss's side effect: RESCHEDULE
        ledger.dispatch(_send, now=t + 904)
        (replacement,) = [x for x in ledger.scheduler_view.tasks if x.startswith("web/7/r")]
        ids["replacement"] = replacement
        ledger.task_assigned(replacement, agent_id="agent-2", time=t + 905)
        ledger.status_update(
            task_status(
                replacement,
                "TASK_RUNNING",
                timestamp=t + 906,
                uuid=mesos_uuid(200),
                agent="agent-2",
                source="SOURCE_EXECUTOR",
            ),
            time=t + 906,
        )
        ids["returned"] = ledger.status_update(
            task_status(
                "web/7/g7",
                "TASK_RUNNING",
                timestamp=t + 950,
                agent="agent-1",
                reason="REASON_AGENT_REREGISTERED",
                **master,
            ),
            time=t + 950,
        )
        ledger.tick(now=t + 951)  # the original is back: KILL
        ledger.dispatch(_send, now=t + 952)
        ids["killed"] = ledger.status_update(
            task_status(
                "web/7/g7",
                "TASK_KILLED",
                timestamp=t + 960,
                uuid=mesos_uuid(300),
                agent="agent-1",
                source="SOURCE_EXECUTOR",
            ),
            time=t + 960,
        )
        ledger.tick(now=t + 961)
        ids["last"] = ledger.last_id
    return ids


# -- times no calendar has ----------------------------------------------------------------------
#   ids 1-3 through Ledger.status_update (what `ingest` does): a status timestamp in
#   milliseconds, 1e300, -1e18, each also the event time; 4-8 appended as events (a log written
#   by anything): NaN, +inf and -inf times on a run, a KILL and its dispatch; 9 the kill's
#   confirming update at 0 (the epoch: plausible for a virtual clock).
ODD_TIMES = (1714532502000.0, 1e300, -1e18)


def build_odd_times(path: str) -> None:
    """Writes a log whose events carry times that make no date, as builds before the Ledger
    refused such times wrote them (straight through the store: the Ledger's door would now
    refuse every one), for the readers that must still print them."""
    nan, inf = float("nan"), float("inf")
    updates = [
        StatusUpdateReceived(
            t, None, f"odd/{n}", "TASK_RUNNING", source="SOURCE_MASTER", timestamp=t
        )
        for n, t in enumerate(ODD_TIMES)
    ]
    with Ledger.open(path, durable=False) as ledger:

        def write(*events: Any) -> list[int]:
            stored = [
                StoredEvent(LEDGER_STREAM, None, e.topic, msgpack.packb(to_wire(e))) for e in events
            ]
            return ledger.datastore.append(stored, context=events)

        for update in updates:
            write(update)
        write(StatusUpdateReceived(nan, None, "odd/3", "TASK_RUNNING"))
        write(ReconciliationStarted(inf, None, "implicit-1", "implicit", "schedule", inf))
        (kill,) = write(
            CommandIssued(-inf, None, "KILL", "odd/3", "R-IMPLICIT-KILL-UNKNOWN", [4], "implicit-1")
        )
        write(CommandDispatched(nan, None, kill))
        write(
            ReconciliationCompleted(
                nan, None, "implicit-1", "implicit", "quiet", 0, 1, 1, 0, 1, nan, {}, {}
            )
        )
        ledger.status_update(
            task_status("odd/3", "TASK_KILLED", timestamp=0.0, uuid=mesos_uuid(7)), time=0.0
        )

"""The forensic commands on a replicated log of record (`--log postgresql://...`).

The log is written by two real replicas (engine/replication.py's Replica over the fenced
PostgreSQL recorder, each with its own LMDB mirror; the election is played by hand: replica
a leads at epoch 1 and leaves a KILL pending, replica b takes over at epoch 2, reconciles
and dispatches it). Every command must answer on PostgreSQL exactly as on b's mirror, the
same events in an LMDB log; each event names its writer; `why` names the failover.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from builders import mesos_uuid, task_status
from cli_log import T0, run
from servers import PostgresServer

from engine.events import (
    CommandConfirmed,
    CommandDispatched,
    CommandIssued,
    ReconciliationStarted,
)
from engine.gate import Gate
from engine.ledger import Ledger
from engine.log_address import LogAddress
from engine.replication import Replica, ReplicationConfig, connect

A_LEFT_PENDING = 10  # the KILL replica a issued and never dispatched
B_ELECTED = 11  # replica b's LeaderElected
B_RUN = 13  # the run b started when it took over
B_KILL = 16  # the KILL that run issued


@dataclass
class Written:
    url: str
    mirror: str  # replica b's mirror: every event of the log, in an LMDB log
    password: str
    writers: dict[int, tuple[int, str]]  # notification id in the mirror -> PostgreSQL's row


def _leader(
    address: LogAddress, password: str, name: str, mirror: str, epoch: int, t: float
) -> tuple[Replica, Ledger]:
    """A replica that won ``epoch`` (the election by hand): it catches its mirror up and
    appends LeaderElected, as `taskledger run` does once elected."""
    ledger = Ledger.open(mirror, durable=False)
    config = ReplicationConfig(
        log=address, zk_hosts="", zk_path="", replica=name, password=password
    )
    gate = Gate()
    gate.open()
    replica = Replica(config, ledger, gate=gate, on_deposed=lambda why: None, clock=lambda: t)
    replica.recorder.create_table_if_missing()
    replica.lead(epoch)
    return replica, ledger


def _answer(task: str, state: str, t: float, agent: str = "agent-1") -> dict[str, Any]:
    return task_status(
        task,
        state,
        timestamp=t,
        agent=agent,
        source="SOURCE_MASTER",
        reason="REASON_RECONCILIATION",
    )


def _kill(ledger: Ledger, t: float, task: str, seen: int, run: str) -> int:
    """The saga's KILL of an orphan the run found (update ``seen``): its command id."""
    (kill,) = ledger.append(
        [CommandIssued(t, None, "KILL", task, "R-IMPLICIT-KILL-UNKNOWN", [seen], run)]
    )
    return kill


@pytest.fixture(scope="module")
def written(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Written]:
    folder = tmp_path_factory.mktemp("replicated")
    with postgres.fresh_schema() as schema:
        address = LogAddress(postgres.user, "127.0.0.1", postgres.port, postgres.dbname, schema)
        a, ledger = _leader(address, postgres.password, "a", str(folder / "a"), 1, T0)
        ledger.framework_registered("fw-1", "master-1", time=T0 + 1)
        ledger.task_created("web/0", job="web", time=T0 + 2)
        ledger.task_assigned("web/0", agent_id="agent-1", time=T0 + 3)
        running = task_status(
            "web/0", "TASK_RUNNING", timestamp=T0 + 4, uuid=mesos_uuid(1), agent="agent-1"
        )
        ledger.status_update(running, time=T0 + 4)
        t = T0 + 100
        (run_1,) = ledger.append(
            [ReconciliationStarted(t, None, "implicit-1", "implicit", "schedule", t + 600)]
        )
        (ask,) = ledger.append(
            [CommandIssued(t, None, "RECONCILE", None, "R-IMPLICIT-ASK", [run_1], "implicit-1", [])]
        )
        ledger.append([CommandDispatched(t + 1, None, ask)])
        seen = ledger.status_update(
            _answer("rogue/1", "TASK_RUNNING", t + 2, "agent-3"), time=t + 2
        )
        kill = _kill(ledger, t + 3, "rogue/1", seen, "implicit-1")
        assert kill == A_LEFT_PENDING
        a.close()  # replica a dies before dispatching the KILL
        ledger.close()

        t = T0 + 200
        b, ledger = _leader(address, postgres.password, "b", str(folder / "b"), 2, t)
        assert ledger.last_id == B_ELECTED
        ledger.framework_reregistered("fw-1", "master-1", time=t + 1)
        (run_2,) = ledger.append(
            [ReconciliationStarted(t + 2, None, "explicit-2", "explicit", "reregistered", t + 600)]
        )
        assert run_2 == B_RUN
        ledger.append(
            [
                CommandIssued(
                    t + 2,
                    None,
                    "RECONCILE",
                    None,
                    "R-EXPLICIT-ROUND",
                    [run_2],
                    "explicit-2",
                    ["web/0", "rogue/2"],
                )
            ]
        )
        found = ledger.status_update(
            _answer("rogue/2", "TASK_RUNNING", t + 3, "agent-4"), time=t + 3
        )
        assert _kill(ledger, t + 4, "rogue/2", found, "explicit-2") == B_KILL
        ledger.append([CommandDispatched(t + 5, None, kill)])
        killed = ledger.status_update(
            task_status(
                "rogue/1",
                "TASK_KILLED",
                timestamp=t + 6,
                uuid=mesos_uuid(2),
                agent="agent-3",
                source="SOURCE_EXECUTOR",
            ),
            time=t + 6,
        )
        ledger.append([CommandConfirmed(t + 6, killed, kill, "killed")])
        b.close()
        ledger.close()

        datastore, recorder = connect(address, postgres.password)
        try:
            rows = recorder.select_written(1, limit=1000)
        finally:
            datastore.close()
        writers = {r.originator_version + 1: (r.epoch, r.replica) for r in rows}
        yield Written(address.text, str(folder / "b"), postgres.password, writers)


@pytest.fixture
def no_copies(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Temporary copies go to a folder of the test's, which must be empty afterwards."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield
    assert os.listdir(folder) == []


def _json(log: str, password: str, *args: str) -> dict[str, Any]:
    os.environ["PGPASSWORD"] = password  # as a user would export it
    try:
        result = run(*args, "--log", log, "--json")
    finally:
        del os.environ["PGPASSWORD"]
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    document.pop("log")
    return document


# Fields that measure this run rather than the log (replay's timings).
_MEASURED = {"seconds", "events_per_second"}


def _unmeasured(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unmeasured(v) for k, v in value.items() if k not in _MEASURED}
    if isinstance(value, list):
        return [_unmeasured(v) for v in value]
    return value


COMMANDS = [
    ("history", "rogue/1"),
    ("history", "web/0", "--as-of", "10"),
    ("why", "rogue/1"),
    ("why", "rogue/2"),
    ("why", "web/0", "--as-of", "2024-05-01T03:02:30Z"),
    ("drift",),
    ("query",),
    ("query", "--count-by", "state"),
    ("replay", "--no-progress"),
    ("snapshot", "list"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_log_of_record_answers_as_its_mirror(written: Written, no_copies: None, args) -> None:
    if args[0] == "snapshot":
        result = run(*args, "--log", written.url)
        assert result.exit_code == 2
        assert "snapshots are not in a log of record" in result.stderr
        return
    on_postgres = _json(written.url, written.password, *args)
    on_lmdb = _json(written.mirror, written.password, *args)
    assert _unmeasured(on_postgres) == _unmeasured(on_lmdb)


def test_report_on_a_log_of_record_is_the_mirrors(
    written: Written, no_copies: None, tmp_path
) -> None:
    pages = []
    for log in (written.url, written.mirror):
        out = tmp_path / f"report-{len(pages)}.html"
        document = _json(log, written.password, "report", "--html", str(out))
        for measured in ("out", "bytes"):  # where it went, and the log's name's length
            document.pop(measured)
        pages.append((document, out.read_text().replace("<wbr>", "").replace(log, "LOG")))
    assert pages[0] == pages[1]


def test_each_event_names_the_epoch_and_replica_postgresql_recorded(written: Written) -> None:
    events = []
    for task in ("web/0", "rogue/1", "rogue/2"):
        events += _json(written.url, written.password, "history", task)["events"]
    assert {e["id"]: (e["epoch"], e["replica"]) for e in events} == {
        e["id"]: written.writers[e["id"]] for e in events
    }
    assert {e["replica"] for e in events} == {"a", "b"}
    os.environ["PGPASSWORD"] = written.password
    try:
        table = run("history", "rogue/1", "--log", written.url).stdout
    finally:
        del os.environ["PGPASSWORD"]
    assert "leader" in table and "a @1" in table and "b @2" in table


def test_a_log_one_process_wrote_shows_no_writer(story_log: str) -> None:
    events = _json(story_log, "", "history", "web/0")["events"]
    assert {(e["epoch"], e["replica"]) for e in events} == {(None, None)}
    for args in (("history", "web/0"), ("why", "rogue/1")):
        shown = run(*args, "--log", story_log).stdout
        assert "leader" not in shown and "None" not in shown


def test_why_names_the_failover_in_the_chain(written: Written) -> None:
    os.environ["PGPASSWORD"] = written.password
    try:
        pending_doc = run("why", "rogue/1", "--log", written.url, "--json").stdout
        started_doc = run("why", "rogue/2", "--log", written.url, "--json").stdout
        shown = run("why", "rogue/1", "--log", written.url).stdout
    finally:
        del os.environ["PGPASSWORD"]
    pending, started = as_chain(pending_doc), as_chain(started_doc)
    [leader] = [s for s in pending if s["step"] == "leader"]
    assert leader["id"] == B_ELECTED and (leader["epoch"], leader["replica"]) == (2, "b")
    assert leader["what"] == (
        "failover: replica b (epoch 2) took over (event #11) and dispatched what replica a "
        "(epoch 1) had left pending"
    )
    after = pending[pending.index(leader) + 1]
    assert after["step"] == "dispatch" and after["replica"] == "b"
    command = next(s for s in pending if s["step"] == "command")
    assert (command["id"], command["replica"]) == (A_LEFT_PENDING, "a")
    [leader] = [s for s in started if s["step"] == "leader"]
    assert leader["what"] == (
        "replica b (epoch 2) took over (event #11) from replica a (epoch 1) and started this "
        "run: a new leader reconciles first"
    )
    assert started[started.index(leader) + 1]["id"] == B_RUN
    assert "failover: replica b (epoch 2)" in " ".join(shown.split())
    [kill] = json.loads(pending_doc)["commands"]
    assert kill["sentence"].endswith(
        "(issued under replica a (epoch 1), carried on by replica b (epoch 2) after a failover)"
    )
    [kill] = json.loads(started_doc)["commands"]
    assert "failover" not in kill["sentence"]


def as_chain(stdout: str) -> list[dict[str, Any]]:
    [command] = json.loads(stdout)["commands"]
    return command["chain"]


def _fails(*args: str, env: dict[str, str] | None = None) -> str:
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        result = run(*args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    return line


def test_a_log_of_record_that_cannot_be_read_is_one_line(
    written: Written, postgres: PostgresServer, no_copies: None, tmp_path
) -> None:
    base = f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/{postgres.dbname}"
    line = _fails("history", "x", "--log", "postgresql://127.0.0.1/db")
    assert "expected postgresql://USER@HOST:PORT/DB" in line
    line = _fails("history", "x", "--log", f"postgresql://u:secret@127.0.0.1:{postgres.port}/d")
    assert "holds a password" in line and "secret" not in line
    closed = f"postgresql://{postgres.user}@127.0.0.1:1/{postgres.dbname}"
    assert "cannot connect to the log" in _fails("why", "x", "--log", closed)
    line = _fails("drift", "--log", written.url, env={"PGPASSWORD": "wrong"})
    assert "cannot connect to the log" in line and "password authentication failed" in line
    with postgres.fresh_schema() as empty:
        url = f"{base}?schema={empty}"
        line = _fails("query", "--log", url, env={"PGPASSWORD": postgres.password})
        assert "holds no taskledger log" in line and empty in line
        with psycopg.connect(postgres.dsn) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (empty,)
            ).fetchone()
        assert tables == (0,)  # nothing created there
    secret = tmp_path / "pw"
    secret.write_text(postgres.password + "\n")
    result = run("history", "rogue/1", "--log", written.url, "--password-file", str(secret))
    assert result.exit_code == 0 and "rogue/1" in result.stdout
    line = _fails("history", "x", "--log", written.url, "--password-file", str(tmp_path / "no"))
    assert "cannot read the secret file" in line
    result = run("verify", "--log", written.url, "--password-file", str(secret))
    assert result.exit_code == 0, result.output

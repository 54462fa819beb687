"""A forensic command on a PostgreSQL log of record beside the same command on a mirror.

    python -m benchmarks.forensic_postgres [--events N] [--json OUT]

One throwaway PostgreSQL server (tests/servers.py) holds a log of record written by a
replica (engine/replication.py's Replica, its LMDB mirror beside it): tasks created,
assigned and reported running, N events in all. Then, in one run:

* raw fetch: no project code: every row's state bytes read from PostgreSQL with one
  psycopg cursor, the floor for any reader that needs every event.
* copy (open_log): tools/readonly.py's door for a log of record: the events read in
  chunks into a temporary LMDB log, opened read-only (what every command pays first).
* history on PostgreSQL: `taskledger history TASK --log postgresql://...`, in process.
* history on the mirror: the same command on the replica's mirror folder: what a user
  asks instead when a replica's mirror is at hand.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import psycopg
from click.testing import CliRunner
from psycopg import sql

from benchmarks.common import Result, print_table, timed, write_json
from engine.events import StatusUpdateReceived, TaskAssigned, TaskCreated
from engine.gate import Gate
from engine.ledger import Ledger
from engine.log_address import LogAddress
from engine.replication import EVENTS_TABLE, Replica, ReplicationConfig
from tests.servers import PostgresServer
from tools.cli import cli
from tools.readonly import open_log

T0 = 1_700_000_000.0
BATCH = 1000


def _events(count: int) -> list:
    """Four events a task (created, assigned, STARTING, RUNNING), ``count`` in all."""
    out: list = []
    for n in range(count // 4):
        task, t = f"web/{n}/g{n}", T0 + n * 0.01
        out.append(TaskCreated(t, None, task, "web", n))
        out.append(TaskAssigned(t, None, task, f"agent-{n % 40}"))
        for state in ("TASK_STARTING", "TASK_RUNNING"):
            out.append(
                StatusUpdateReceived(
                    t, None, task, state, agent_id=f"agent-{n % 40}", source="SOURCE_EXECUTOR"
                )
            )
    return out


def _write(pg: PostgresServer, schema: str, mirror: str, count: int) -> LogAddress:
    address = LogAddress(pg.user, "127.0.0.1", pg.port, pg.dbname, schema)
    ledger = Ledger.open(mirror, durable=False)
    config = ReplicationConfig(
        log=address, zk_hosts="", zk_path="", replica="a", password=pg.password
    )
    gate = Gate()
    gate.open()
    replica = Replica(config, ledger, gate=gate, on_deposed=lambda why: None, clock=lambda: T0)
    replica.recorder.create_table_if_missing()
    replica.lead(1)
    events = _events(count - 1)  # and the LeaderElected
    for at in range(0, len(events), BATCH):
        ledger.append(events[at : at + BATCH])
    replica.close()
    ledger.close()
    return address


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args(argv)
    pg = PostgresServer().start()
    folder = tempfile.mkdtemp(prefix="tl-bench-forensic-")
    try:
        with pg.fresh_schema() as schema:
            mirror = os.path.join(folder, "mirror")
            address = _write(pg, schema, mirror, args.events)
            with open_log(mirror) as ledger:
                events = ledger.last_id
            task = f"web/{events // 8}/g{events // 8}"
            os.environ["PGPASSWORD"] = pg.password

            def fetch() -> None:
                table = sql.Identifier(schema, EVENTS_TABLE)
                with psycopg.connect(pg.dsn) as conn, conn.cursor() as cur:
                    cur.execute(
                        sql.SQL("SELECT state FROM {} ORDER BY notification_id").format(table)
                    )
                    assert len(cur.fetchall()) == events

            def copy() -> None:
                with open_log(address.text, password=pg.password) as ledger:
                    assert ledger.last_id == events

            def history(log: str) -> None:
                result = CliRunner().invoke(cli, ["history", task, "--log", log, "--json"])
                assert result.exit_code == 0, result.output

            results: list[Result] = [
                timed("raw fetch", events, fetch),
                timed("copy (open_log)", events, copy),
                timed("history on PostgreSQL", events, lambda: history(address.text)),
                timed("history on the mirror", events, lambda: history(mirror)),
            ]
        print_table(f"a forensic command on {events:,} events", results, "raw fetch")
        write_json(args.json_out, "forensic_postgres", results, {"events": events})
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`taskledger ingest FILE|-`: Mesos v1 TaskStatus records (JSON lines) into a log.

Each line is a TaskStatus as Mesos and pymesos give it (a uuid is optional), or a v1
scheduler event carrying one (``{"type": "UPDATE", "update": {"status": {...}}}``). Lines are
validated as the Ledger validates a live update, and appended in batches (group commit: one
durable transaction per batch). An update already in the log or earlier in the input (same
task and uuid) is counted as a duplicate and not appended, as ``Ledger.status_update``
does, so ingesting the same file twice appends, the second time, only the updates without
a uuid (nothing tells two of those apart).
The event time is the time of ingest: when the ledger recorded the update, as a live
scheduler's events carry the time it received each update, so "as of a time" means the same
in every log (engine/time_index.py) and the times of one ingest never go backwards. The
status's own ``timestamp`` (its agent's clock, which may be skewed) stays in the record; one
that is not finite, negative, or more than a day after the time of ingest is a bad line
(milliseconds are named as such: engine/times.py).
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

import click
from eventsourcing.persistence import OperationalError

from engine.dedup import update_key
from engine.events import StatusUpdateReceived
from engine.task_status import MalformedStatus, status_from_mesos
from tools.commands.common import (
    CommandError,
    console,
    emit_json,
    handle_errors,
    json_option,
    log_option,
    one_line,
    open_writer,
    schema,
)


class BadLine(ValueError):
    """A line that is not a TaskStatus; names the line number and what is wrong."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


def status_of(record: Any) -> Any:
    """The TaskStatus inside a line: the record itself, or a v1 UPDATE event's status."""
    if isinstance(record, dict) and "task_id" not in record:
        if record.get("type") == "UPDATE" and isinstance(record.get("update"), dict):
            return record["update"].get("status")
        if isinstance(record.get("status"), dict):
            return record["status"]
    return record


def parse_line(number: int, raw: bytes, now: float) -> StatusUpdateReceived | None:
    """The event of one line (None for a blank one) recorded at ``now``, or BadLine."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadLine(number, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadLine(number, f"not JSON: {e.msg} at column {e.colno}") from None
    except RecursionError:  # Python's JSON decoder nests about 1,000 levels at most
        raise BadLine(number, "not JSON this ingest can read: nested too deeply") from None
    status = status_of(record)
    try:
        return status_from_mesos(status, time=now, received=now)
    except MalformedStatus as e:
        raise BadLine(number, str(e)) from None


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # noqa: SIM115 (closed by the caller)
    except FileNotFoundError:
        raise CommandError(f"cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise CommandError(f"cannot read {path}: it is a folder, not a file") from None
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:  # a path no file system can hold: open() refuses a NUL byte
        raise CommandError(f"cannot read {path!r}: a path cannot contain a NUL byte") from None


@click.command("ingest")
@click.argument("file", metavar="FILE|-")
@click.option("--skip-bad", is_flag=True, help="count and skip bad lines instead of stopping")
@click.option("--batch", default=1000, show_default=True, help="lines per durable commit")
@log_option
@json_option
@handle_errors
def ingest_command(file: str, skip_bad: bool, batch: int, log_path: str, as_json: bool) -> None:
    """Append Mesos v1 TaskStatus records (JSON lines, from FILE or - for stdin) to the log
    (created if missing). A bad line stops the ingest with its line number and what is
    wrong; the lines before it are kept. With --skip-bad, bad lines are counted instead."""
    if batch < 1:
        raise CommandError(f"bad --batch {batch}: must be at least 1")
    stream = _open(file)
    counts = {"lines": 0, "appended": 0, "duplicates": 0, "skipped": 0, "blank": 0}
    bad: list[dict[str, Any]] = []
    ids: list[int] = []
    started = time.perf_counter()
    try:
        with open_writer(log_path) as ledger:
            path = ledger.path
            pending: list[StatusUpdateReceived] = []
            pending_lines: list[int] = []  # the line number of each pending event
            pending_keys: list[bytes | None] = []  # its unique key (dedup.update_key)
            batch_keys: set[bytes] = set()  # the pending batch's: not in the log yet

            def flush() -> None:
                if not pending:
                    return
                try:
                    ids.extend(ledger.append(pending, unique_keys=pending_keys))
                except OperationalError as e:
                    # The log is full (LogFull: map or disk) or cannot be written: nothing of
                    # this batch was written, everything before it is durable.
                    kept = counts["appended"]
                    span = f", ids {ids[0]}..{ids[-1]}" if ids else ""
                    raise CommandError(
                        f"{file}: line {pending_lines[0]}: not ingested: {one_line(e)} "
                        f"({kept} update(s) before it ingested{span})"
                    ) from None
                counts["appended"] += len(pending)
                pending.clear()
                pending_lines.clear()
                pending_keys.clear()
                batch_keys.clear()

            recorded = 0.0  # the time of ingest of the previous line: never gone back from
            for number, raw in enumerate(stream, start=1):
                counts["lines"] += 1
                recorded = max(recorded, time.time())
                try:
                    event = parse_line(number, raw, recorded)
                except BadLine as e:
                    if not skip_bad:
                        flush()
                        kept = counts["appended"]
                        span = f", ids {ids[0]}..{ids[-1]}" if ids else ""
                        raise CommandError(
                            f"{file}: {e} ({kept} update(s) before it ingested{span})"
                        ) from None
                    counts["skipped"] += 1
                    bad.append({"line": e.line, "error": e.problem})
                    continue
                if event is None:
                    counts["blank"] += 1
                    continue
                key = None if event.uuid is None else update_key(event.task_id, event.uuid)
                if key is not None:
                    if key in batch_keys or ledger.update_recorded(event.task_id, event.uuid):
                        counts["duplicates"] += 1
                        continue
                    batch_keys.add(key)
                pending.append(event)
                pending_lines.append(number)
                pending_keys.append(key)
                if len(pending) >= batch:
                    flush()
            flush()
    finally:
        if stream is not sys.stdin.buffer and file != "-":
            stream.close()
    seconds = time.perf_counter() - started
    if as_json:
        emit_json(
            {
                "schema": schema("ingest"),
                "log": path,
                **counts,
                "first_id": ids[0] if ids else None,
                "last_id": ids[-1] if ids else None,
                "seconds": round(seconds, 6),
                "bad": bad,
            }
        )
        return
    out = console()
    span = f" (ids {ids[0]}..{ids[-1]})" if ids else ""
    out.print(
        f"ingested {counts['appended']:,} update(s){span} from {counts['lines']:,} line(s) "
        f"into {path} in {seconds:.2f} s; {counts['duplicates']} duplicate(s), "
        f"{counts['skipped']} bad line(s) skipped"
    )
    for b in bad[:10]:
        click.echo(
            f"taskledger: skipped line {b['line']}: {one_line(ValueError(b['error']))}", err=True
        )
    if len(bad) > 10:
        click.echo(f"taskledger: ... and {len(bad) - 10} more bad line(s)", err=True)

"""`taskledger snapshot take|list|check|prune`."""

from __future__ import annotations

import click
from rich.table import Table

from engine.ledger import LedgerState
from engine.store import DamagedRecord
from projections.snapshots import SnapshotError
from tools.commands.common import (
    DAMAGE_FOUND,
    CommandError,
    console,
    emit_json,
    handle_errors,
    iso,
    json_option,
    local_only,
    log_option,
    open_readonly,
    open_writer,
    read_options,
    resolve_as_of,
    schema,
    when,
)

# A log of record holds events only: each replica snapshots its own mirror.
SNAPSHOTS_ARE_LOCAL = "snapshots are not in a log of record, each replica keeps its own"


@click.group("snapshot")
def snapshot_command() -> None:
    """Take, list, check and prune snapshots of the views."""


@snapshot_command.command("take")
@log_option
@json_option
@handle_errors
def take(log_path: str, as_json: bool) -> None:
    """Store the views as of the end of the log as a snapshot (a write: needs the log's
    writer lock, so not while a scheduler runs on it)."""
    local_only(log_path, SNAPSHOTS_ARE_LOCAL)
    with open_readonly(log_path):
        pass  # a missing log is an error here, not a new empty one
    with open_writer(log_path) as ledger:
        info = ledger.snapshot()
        path = ledger.path
    if as_json:
        emit_json(
            {
                "schema": schema("snapshot-take"),
                "log": path,
                "id": info.nid,
                "size": info.size,
                "seconds": round(info.seconds, 6),
            }
        )
        return
    console().print(
        f"snapshot at notification id {info.nid}: {info.size:,} bytes in {info.seconds:.3f} s"
    )


@snapshot_command.command("prune")
@click.option(
    "--keep", default=2, show_default=True, type=click.IntRange(1), help="newest snapshots kept"
)
@log_option
@json_option
@handle_errors
def prune(keep: int, log_path: str, as_json: bool) -> None:
    """Delete all but the newest --keep snapshots (never any of the log; a write: needs the
    log's writer lock, so not while a scheduler runs on it)."""
    local_only(log_path, SNAPSHOTS_ARE_LOCAL)
    with open_readonly(log_path):
        pass  # a missing log is an error here, not a new empty one
    with open_writer(log_path) as ledger:
        deleted = ledger.prune_snapshots(keep)
        kept = [s.nid for s in ledger.snapshots()]
        path = ledger.path
    if as_json:
        emit_json(
            {"schema": schema("snapshot-prune"), "log": path, "deleted": deleted, "kept": kept}
        )
        return
    which = f" ({', '.join(map(str, deleted))})" if deleted else ""
    kept_ids = ", ".join(map(str, kept)) or "none"
    console().print(f"deleted {len(deleted)} snapshot(s){which}; kept: {kept_ids}")


@snapshot_command.command("list")
@read_options
def list_snapshots(log_path: str, as_of: str | None, as_json: bool) -> None:
    """The stored snapshots, oldest first (with --as-of: those at or before it)."""
    local_only(log_path, SNAPSHOTS_ARE_LOCAL)
    with open_readonly(log_path) as ledger:
        at = resolve_as_of(ledger, as_of)
        stored = [s for s in ledger.stored_snapshots() if s.nid <= at.nid]
    if as_json:
        emit_json(
            {
                "schema": schema("snapshot-list"),
                "log": ledger.path,
                "as_of": at.as_json(),
                "snapshots": [
                    {"id": s.nid, "size": s.size, "time": s.time, "time_iso": iso(s.time)}
                    for s in stored
                ],
            }
        )
        return
    out = console()
    if not stored:
        out.print(f"no snapshots in {ledger.path}")
        return
    table = Table()
    for name, justify in (("id", "right"), ("taken (UTC)", "left"), ("bytes", "right")):
        table.add_column(name, justify=justify)
    for s in stored:
        table.add_row(str(s.nid), when(s.time) if s.time else "(unreadable)", f"{s.size:,}")
    out.print(table)


@snapshot_command.command("check")
@click.argument("ids", nargs=-1, type=int)
@read_options
def check(ids: tuple[int, ...], log_path: str, as_of: str | None, as_json: bool) -> None:
    """Check snapshots (all, or the given ids): checksum, shape, and that each equals the
    views replayed from scratch up to its id. Exit status 1 if one fails."""
    local_only(log_path, SNAPSHOTS_ARE_LOCAL)
    results = []
    with open_readonly(log_path) as ledger:
        at = resolve_as_of(ledger, as_of)
        known = [s.nid for s in ledger.snapshots() if s.nid <= at.nid]
        missing = [i for i in ids if i not in known]
        if missing:
            raise CommandError(
                f"no snapshot at notification id {missing[0]} in {ledger.path} "
                f"(snapshots: {', '.join(map(str, known)) or 'none'})"
            )
        wanted = sorted(ids) if ids else known
        state = LedgerState()
        for nid in wanted:
            # Replay forward to this snapshot's id (the ids are in order).
            ledger.replay(state, state.last_nid + 1, nid)
            try:
                stored = ledger.check_snapshot(nid)
            except (DamagedRecord, SnapshotError) as e:
                results.append({"id": nid, "ok": False, "problem": str(e)})
                continue
            same = stored.parts() == state.parts()
            results.append(
                {
                    "id": nid,
                    "ok": same,
                    "problem": None if same else "differs from the views replayed to its id",
                }
            )
    ok = all(r["ok"] for r in results)
    if as_json:
        emit_json(
            {
                "schema": schema("snapshot-check"),
                "log": ledger.path,
                "as_of": at.as_json(),
                "ok": ok,
                "snapshots": results,
            }
        )
    else:
        out = console()
        if not results:
            out.print(f"no snapshots in {ledger.path}")
        for r in results:
            text = "equals the replay to its id" if r["ok"] else r["problem"]
            out.print(f"{'ok  ' if r['ok'] else 'FAIL'} snapshot {r['id']}: {text}")
    if not ok:
        raise SystemExit(DAMAGE_FOUND)

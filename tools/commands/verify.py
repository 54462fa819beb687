"""`taskledger verify`: checksums, gap-free ids, the index, snapshots, views vs snapshot."""

from __future__ import annotations

import click
from rich.table import Table

from engine.log_address import is_log_url
from engine.store import LogOpenError
from tools.commands.common import (
    DAMAGE_FOUND,
    CommandError,
    console,
    dash,
    emit_json,
    log_password,
    one_line,
    open_readonly,
    read_options,
    resolve_as_of,
    schema,
)
from tools.forensics.verify import verify
from tools.readonly import log_of_record


@click.command("verify")
@read_options
def verify_command(log_path: str, as_of: str | None, as_json: bool) -> None:
    """Check every record's checksum, that notification ids have no gaps, that the index
    and snapshots are sound, and that the views rebuilt from scratch equal the newest
    snapshot. Exit status 1 when anything is damaged (each damaged record is named).
    Events with an implausible time are warnings: named, exit status unchanged."""
    if is_log_url(log_path):
        _verify_log_of_record(log_path, as_of, as_json)
        return
    with open_readonly(log_path) as ledger:
        at = resolve_as_of(ledger, as_of)
        report = verify(ledger, None if at.is_now else at.nid)
    if as_json:
        emit_json(
            {
                "schema": schema("verify"),
                "log": ledger.path,
                "as_of": at.as_json(),
                "ok": report.ok,
                "records": report.records,
                "ledger_events": report.ledger_events,
                "last_id": report.last_id,
                "snapshots": report.snapshots,
                "checks": [c._asdict() for c in report.checks],
                "problems": [p._asdict() for p in report.problems],
                "warnings": [p._asdict() for p in report.warnings],
                "implausible_times": report.implausible,
            }
        )
    else:
        out = console()
        for c in report.checks:
            out.print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
        if report.problems:
            table = Table(title="problems", title_justify="left")
            for name in ("check", "id", "database", "key", "what failed"):
                table.add_column(name)
            for p in report.problems:
                table.add_row(p.check, dash(p.id), dash(p.database), dash(p.key), p.problem)
            out.print(table)
            for p in report.problems:
                where = f"notification id {p.id}" if p.id is not None else "the log"
                click.echo(
                    f"taskledger: damaged: {where}, database {p.database}, key {p.key}: "
                    f"{p.problem}",
                    err=True,
                )
        else:
            out.print(f"log {ledger.path} is sound ({report.records:,} records)")
        if report.warnings:
            table = Table(title="warnings (the log is sound; these are odd)", title_justify="left")
            for name in ("check", "id", "what"):
                table.add_column(name, overflow="fold")
            for p in report.warnings:
                table.add_row(p.check, dash(p.id), p.problem)
            out.print(table)
            if report.implausible > len(report.warnings):
                out.print(f"... and {report.implausible - len(report.warnings):,} more")
    if not report.ok:
        raise SystemExit(DAMAGE_FOUND)


def _verify_log_of_record(url: str, as_of: str | None, as_json: bool) -> None:
    """`verify --log postgresql://...`: the replicated log of record (its epochs, positions
    and records; the password from --password-file or PGPASSWORD). The mirrors are LMDB
    logs: verify those by their folder. It reads PostgreSQL's rows straight (their stored
    epochs and replicas are what it checks), not the copy the other commands read
    (tools/readonly.py)."""
    from engine.replication import read_written
    from tools.forensics.log_of_record import ORDER, check_written

    if as_of is not None:
        raise CommandError("--as-of is for an LMDB log; a log of record is checked whole")
    try:
        with log_of_record(url, log_password()) as (address, recorder):
            report = check_written(read_written(recorder))
    except LogOpenError as e:
        raise CommandError(one_line(e)) from None
    if as_json:
        emit_json(
            {
                "schema": schema("verify"),
                "log": address.text,
                "ok": report.ok,
                "records": report.records,
                "ledger_events": report.ledger_events,
                "last_id": report.last_id,
                "checks": [c._asdict() for c in report.checks],
                "problems": [p._asdict() for p in report.problems],
            }
        )
    else:
        out = console()
        for c in sorted(report.checks, key=lambda c: ORDER.index(c.name)):
            out.print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
        for p in report.problems:
            click.echo(f"taskledger: {p.check}: notification id {p.id}: {p.problem}", err=True)
        if report.ok:
            out.print(f"log {address.text} is sound ({report.records:,} records)")
    if not report.ok:
        raise SystemExit(DAMAGE_FOUND)

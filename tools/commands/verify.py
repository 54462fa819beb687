"""`taskledger verify`: checksums, gap-free ids, the index, snapshots, views vs snapshot."""

from __future__ import annotations

import click
from rich.table import Table

from tools.commands.common import (
    DAMAGE_FOUND,
    console,
    dash,
    emit_json,
    open_readonly,
    read_options,
    resolve_as_of,
    schema,
)
from tools.forensics.verify import verify


@click.command("verify")
@read_options
def verify_command(log_path: str, as_of: str | None, as_json: bool) -> None:
    """Check every record's checksum, that notification ids have no gaps, that the index
    and snapshots are sound, and that the views rebuilt from scratch equal the newest
    snapshot. Exit status 1 when anything is damaged (each damaged record is named).
    Events with an implausible time are warnings: named, exit status unchanged."""
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

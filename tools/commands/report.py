"""`taskledger report --html OUT`: a self-contained HTML audit of the log."""

from __future__ import annotations

import os

import click

from tools.commands.common import (
    CommandError,
    console,
    emit_json,
    open_readonly,
    read_options,
    resolve_as_of,
    schema,
)
from tools.report.audit import collect
from tools.report.html import render


@click.command("report")
@click.option("--html", "out", required=True, metavar="OUT", help="the HTML file to write")
@click.option(
    "--all-tasks",
    is_flag=True,
    help="a section for every task, not only those that drifted or were acted on",
)
@click.option("--max-tasks", default=500, show_default=True, help="most task sections")
@read_options
def report_command(
    out: str, all_tasks: bool, max_tasks: int, log_path: str, as_of: str | None, as_json: bool
) -> None:
    """Write a self-contained HTML audit (no network, no scripts, inline SVG charts):
    reconciliation runs on a timeline, drift over time by cell, commands by rule and
    outcome, time to converge, and a section per task with its history and why."""
    if "\0" in out:  # before any work: no file system holds such a path
        raise CommandError(f"cannot write report {out!r}: a path cannot contain a NUL byte")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise CommandError(f"cannot write report {out}: no folder {folder}")
    with open_readonly(log_path) as ledger:
        at = resolve_as_of(ledger, as_of)
        if os.path.realpath(folder) == ledger.path:
            raise CommandError(f"will not write report {out} inside the log folder")
        audit = collect(ledger, at.nid, all_tasks=all_tasks, max_tasks=max_tasks)
    page = render(audit)
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as e:
        raise CommandError(f"cannot write report {out}: {e.strerror}") from None
    if as_json:
        emit_json(
            {
                "schema": schema("report"),
                "log": audit.log,
                "as_of": at.as_json(),
                "out": os.path.abspath(out),
                "bytes": len(page.encode()),
                "runs": len(audit.runs),
                "commands": len(audit.commands),
                "tasks": len(audit.pages),
                "tasks_left_out": audit.tasks_left_out,
                "tasks_drifted": audit.tasks_drifted,
                "tasks_acted_on": audit.tasks_acted_on,
            }
        )
        return
    console().print(
        f"wrote {out}: {len(audit.runs)} run(s), {len(audit.commands)} command(s), "
        f"{len(audit.pages)} task section(s), {at.label()}"
    )

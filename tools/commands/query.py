"""`taskledger query`: tasks by state, job, agent or drift cell, with counts."""

from __future__ import annotations

import click
from rich.table import Table

from projections import queries
from tools.commands.common import (
    CommandError,
    console,
    dash,
    emit_json,
    open_readonly,
    read_options,
    resolve_as_of,
    schema,
)
from tools.commands.drift import views_at


@click.command("query")
@click.option("--state", help="scheduler state, e.g. RUNNING (any case)")
@click.option("--mesos-state", help="Mesos state, e.g. TASK_RUNNING (any case)")
@click.option("--job", help="the task's job")
@click.option("--agent", help="the agent the scheduler assigned or Mesos last named")
@click.option("--cell", help="drift cell, Mesos first, e.g. non-terminal/absent")
@click.option("--found-by", type=click.Choice(["consistent", "explicit", "implicit"]))
@click.option(
    "--count-by",
    "count_keys",
    multiple=True,
    type=click.Choice(sorted(queries.KEYS)),
    help="count the matching tasks by this key (repeatable); default: state and cell",
)
@click.option("--limit", default=50, show_default=True, help="rows per page")
@click.option("--offset", default=0, show_default=True, help="rows to skip")
@click.option("--after", metavar="TASK", help="start after this task id (paging)")
@read_options
def query_command(
    state: str | None,
    mesos_state: str | None,
    job: str | None,
    agent: str | None,
    cell: str | None,
    found_by: str | None,
    count_keys: tuple[str, ...],
    limit: int,
    offset: int,
    after: str | None,
    log_path: str,
    as_of: str | None,
    as_json: bool,
) -> None:
    """Tasks matching every given filter (ordered by task id, numbers as numbers), and
    counts of the matching tasks."""
    filters = {
        "state": state,
        "mesos_state": mesos_state,
        "job": job,
        "agent": agent,
        "cell": cell,
        "found_by": found_by,
    }
    try:  # a bad filter is the user's mistake whatever the log holds: said before opening it
        filters = queries.canonical(**filters)
        queries.page([], offset=offset, limit=limit)
    except queries.InvalidQuery as e:
        option = "--" + e.argument.replace("_", "-")
        raise CommandError(f"bad {option} {e.value!r}: {str(e).split(': ', 1)[-1]}") from e
    with open_readonly(log_path) as ledger:
        at = resolve_as_of(ledger, as_of)
        rows = queries.select(views_at(ledger, at), **filters)
        page = queries.page(rows, offset=offset, limit=limit, after=after)
        counts = {key: queries.counts(rows, key) for key in (count_keys or ("state", "cell"))}
    if as_json:
        emit_json(
            {
                "schema": schema("query"),
                "log": ledger.path,
                "as_of": at.as_json(),
                "filters": {k: v for k, v in filters.items() if v is not None},
                "total": page.total,
                "items": [row._asdict() for row in page.items],
                "next_offset": page.next_offset,
                "next_after": page.next_after,
                "counts": {
                    key: {("null" if k is None else k): v for k, v in c.items()}
                    for key, c in counts.items()
                },
            }
        )
        return
    out = console()
    shown = ", ".join(f"{k}={v}" for k, v in filters.items() if v is not None) or "all tasks"
    out.print(f"{page.total} task(s) match {shown}, {at.label()}")
    table = Table()
    for name in ("task", "scheduler", "Mesos", "job", "agent", "cell", "found by", "since"):
        table.add_column(name)
    for r in page.items:
        table.add_row(
            r.task_id,
            dash(r.scheduler_state),
            dash(r.mesos_state),
            dash(r.job),
            dash(r.agent_id or r.mesos_agent_id),
            r.cell,
            r.found_by,
            f"#{r.since}",
        )
    if page.items:
        out.print(table)
    if page.next_after is not None:
        out.print(f"more: --after {page.next_after} (or --offset {page.next_offset})")
    for key, c in counts.items():
        ordered = sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0])))
        out.print(f"by {key}: " + ", ".join(f"{dash(k)} {v}" for k, v in ordered))

"""`taskledger replay`: rebuild every view from the log, from scratch, with a progress bar."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Mapping

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from engine.ledger import LedgerState
from tools.commands.common import (
    console,
    emit_json,
    open_readonly,
    read_options,
    resolve_as_of,
    schema,
)


@click.command("replay")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@read_options
def replay_command(no_progress: bool, log_path: str, as_of: str | None, as_json: bool) -> None:
    """Rebuild every view from the log (no snapshot used); print counts and the rate."""
    with open_readonly(log_path) as ledger:
        at = resolve_as_of(ledger, as_of)
        state = LedgerState()
        started = time.perf_counter()
        progress = Progress(
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console(stderr=True),
            transient=True,
            # Only on a terminal: into a pipe or a file it is noise (and on an error it
            # leaves an empty line before the one-line message).
            disable=no_progress or as_json or not sys.stderr.isatty(),
        )
        with progress:
            bar = progress.add_task("replay", total=at.nid, rate="")

            def show(events: int, nid: int) -> None:
                rate = events / max(time.perf_counter() - started, 1e-9)
                progress.update(bar, completed=nid, rate=f"{rate:,.0f} events/s")

            replayed = ledger.replay(state, 1, at.nid, progress=show)
            progress.update(bar, completed=at.nid)
        seconds = time.perf_counter() - started
    views = state.views
    scheduler = Counter(views.scheduler.get(t) or "DELETED" for t in views.scheduler.tasks)
    mesos = Counter(views.mesos.get(t) for t in views.mesos.tasks)
    tasks = len(set(views.scheduler.tasks) | set(views.mesos.tasks))
    drift = len(views.drift.drift())
    done = replayed.events
    kinds = replayed.by_topic
    rate = done / seconds if seconds > 0 else 0.0
    if as_json:
        emit_json(
            {
                "schema": schema("replay"),
                "log": ledger.path,
                "as_of": at.as_json(),
                "events": done,
                "seconds": round(seconds, 6),
                "events_per_second": round(rate, 1),
                "tasks": tasks,
                "scheduler_states": dict(sorted(scheduler.items())),
                "mesos_states": dict(sorted(mesos.items())),
                "drift": drift,
                "by_kind": dict(sorted(kinds.items())),
            }
        )
        return
    out = console()
    out.print(f"replayed {done:,} events in {seconds:.3f} s ({rate:,.0f} events/s), {at.label()}")
    table = Table(show_header=False)
    table.add_column("measure")
    table.add_column("value")
    table.add_row("tasks", f"{tasks:,}")
    table.add_row("scheduler view", _counts(scheduler))
    table.add_row("Mesos view", _counts(mesos))
    table.add_row("drift", f"{drift} task(s)")
    table.add_row("events by kind", _counts(kinds))
    out.print(table)


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "-"

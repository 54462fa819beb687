"""`taskledger why TASK`: each command about a task, from observation to outcome."""

from __future__ import annotations

import click
from rich.table import Table

from engine.events import StatusUpdateReceived
from tools.commands.common import (
    console,
    dash,
    emit_json,
    iso,
    open_readonly,
    read_options,
    resolve_as_of,
    schema,
    when,
)
from tools.commands.history import row_json, task_index
from tools.forensics.history import history
from tools.forensics.index import moment
from tools.forensics.why import Chain, chains, scheduler_decisions


def chain_json(c: Chain) -> dict:
    return {
        "command": c.command,
        "kind": c.kind,
        "rule": c.rule,
        "rule_reason": c.rule_reason,
        "run": c.run,
        "run_ordinal": c.run_ordinal,
        "status": c.status,
        "outcome": c.outcome,
        "sentence": c.sentence,
        "found": None if c.found is None else c.found._asdict(),
        "chain": [dict(s._asdict(), time_iso=iso(s.time)) for s in c.steps],
    }


@click.command("why")
@click.argument("task")
@read_options
def why_command(task: str, log_path: str, as_of: str | None, as_json: bool) -> None:
    """Why TASK was acted on: for every command about it, a sentence, then the chain
    observations -> run -> rule -> command -> dispatch -> outcome."""
    with open_readonly(log_path) as ledger:
        at = resolve_as_of(ledger, as_of)
        index = task_index(ledger, at.nid, task)
        found = chains(index, task, ledger.event_at)
        now = moment(index.state, at.nid, task)
        kills = scheduler_decisions(index, task)
        observations = [r for r in history(index, task) if r.kind == StatusUpdateReceived.topic]
        if as_json:
            emit_json(
                {
                    "schema": schema("why"),
                    "log": ledger.path,
                    "as_of": at.as_json(),
                    "task": task,
                    "now": now._asdict(),
                    "commands": [chain_json(c) for c in found],
                    "scheduler_kills": [{"id": n, "time": t, "time_iso": iso(t)} for n, t in kills],
                    "observations": [row_json(r) for r in observations],
                }
            )
            return
    out = console()
    out.print(
        f"[bold]{task}[/], {at.label()}: scheduler {dash(now.scheduler_state)}, "
        f"Mesos {dash(now.mesos_state)}, cell {dash(now.cell)} ({dash(now.found_by)})"
    )
    for nid, t in kills:
        out.print(f"the scheduler itself decided to kill it at {when(t)} (event #{nid})")
    if not found:
        out.print(f"no command was issued about {task}; what Mesos said of it:")
        table = Table()
        for name in ("id", "time (UTC)", "state", "source", "reason", "agent", "message"):
            table.add_column(name)
        for r in observations:
            table.add_row(
                str(r.id),
                when(r.time),
                dash(r.state),
                r.source,
                dash(r.reason),
                dash(r.agent),
                dash(r.message),
            )
        out.print(table)
        return
    for c in found:
        out.print()
        out.print(f"[bold]#{c.command} {c.kind}[/]: {c.sentence}")
        table = Table(show_header=True)
        for name in ("step", "id", "time (UTC)", "what"):
            table.add_column(name)
        for s in c.steps:
            table.add_row(s.step, "-" if s.id is None else str(s.id), when(s.time), s.what)
        out.print(table)

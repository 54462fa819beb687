"""`taskledger why TASK`: each command about a task, from observation to outcome.

TASK may also be a job's instance across its generations (`web/120` for web/120/g120,
web/120/r1760, ...): the answer is then given for each generation, the newest first.
"""

from __future__ import annotations

from typing import Any

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
from tools.commands.history import Resolved, leader_cell, resolve_task, row_json
from tools.forensics.found_by import cell_finder
from tools.forensics.history import history
from tools.forensics.index import LogIndex, moment
from tools.forensics.why import (
    Chain,
    chain,
    chains,
    lineage,
    ordered_by,
    scheduler_decisions,
)
from tools.readonly import ReadOnlyLedger


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
        "found_by": c.found_by,
        "answers": c.answers,
        "sentence": c.sentence,
        "found": None if c.found is None else c.found._asdict(),
        "chain": [dict(s._asdict(), time_iso=iso(s.time)) for s in c.steps],
    }


def explain(ledger: ReadOnlyLedger, index: LogIndex, upto: int, task: str) -> dict[str, Any]:
    """Everything `why` says about one task, as its JSON document's fields."""
    made = lineage(index, task)
    created = None
    if made is not None:
        created = {
            "command": made.command,
            "ancestor": made.ancestor,
            "ancestors": made.ancestors,
            **chain_json(chain(index, index.commands[made.command], ledger.event_at)),
        }
    return {
        "task": task,
        "now": moment(index.state, upto, task)._asdict(),
        "created_by": created,
        "commands": [chain_json(c) for c in chains(index, task, ledger.event_at)],
        "scheduler_kills": [
            {"id": n, "time": t, "time_iso": iso(t)}
            | ordered_by(ledger.event_at, index.event_of(task, n))
            for n, t in scheduler_decisions(index, task)
        ],
        "observations": [
            row_json(r) for r in history(index, task) if r.kind == StatusUpdateReceived.topic
        ],
    }


@click.command("why")
@click.argument("task")
@read_options
def why_command(task: str, log_path: str, as_of: str | None, as_json: bool) -> None:
    """Why TASK was acted on: for every command about it, a sentence, then the chain
    observations -> what found it -> rule -> command -> dispatch -> outcome. TASK may be
    JOB/INSTANCE: every generation of the instance, the newest first."""
    with open_readonly(log_path) as ledger:
        at = resolve_as_of(ledger, as_of)
        found: Resolved = resolve_task(ledger, at.nid, task)
        docs = [explain(ledger, found.index, at.nid, t) for t in found.tasks]
    if as_json:
        emit_json(
            {
                "schema": schema("why"),
                "log": ledger.path,
                "as_of": at.as_json(),
                **docs[0],
                "instance": found.instance_json(),
                "generations": docs if found.instance is not None else None,
            }
        )
        return
    out = console()
    if found.instance is not None:
        out.print(
            f"[bold]{task}[/] is instance {found.instance[1]} of job {found.instance[0]}: "
            f"{len(docs)} generation(s), the newest first: {', '.join(found.tasks)}"
        )
    for doc in docs:
        if found.instance is not None:
            out.print()
            out.print(f"[bold]── {doc['task']} ──[/]")
        _print(out, doc, at.label())


def _steps(out: Any, c: dict) -> None:
    table = Table(show_header=True)
    # A replicated log's steps name their writer; a log one process wrote shows no column.
    led = any(s["epoch"] is not None for s in c["chain"])
    for name in ("step", "id", "time (UTC)", "what", *(("leader",) if led else ())):
        table.add_column(name, overflow="fold")
    for s in c["chain"]:
        cells = [s["step"], dash(s["id"]), when(s["time"]), s["what"]]
        if led:
            cells.append(leader_cell(s["epoch"], s["replica"]))
        table.add_row(*cells)
    out.print(table)


def _print(out: Any, doc: dict, label: str) -> None:
    task, now = doc["task"], doc["now"]
    out.print(
        f"[bold]{task}[/], {label}: scheduler {dash(now['scheduler_state'])}, "
        f"Mesos {dash(now['mesos_state'])}, cell {dash(now['cell'])} "
        f"({cell_finder(now['found_by'])})"
    )
    for kill in doc["scheduler_kills"]:
        if kill["operator"] is None:
            who = "the scheduler itself decided to kill it"
        else:
            reason = f": {kill['reason']}" if kill["reason"] else ""
            who = f"operator {kill['operator']} {kill['what']} (order #{kill['order']}{reason})"
        out.print(f"{who} at {when(kill['time'])} (event #{kill['id']})")
    created = doc["created_by"]
    if created is not None:
        older = created["ancestors"][1:]
        line = f" (which replaced {' <- '.join(older)})" if older else ""
        out.print()
        out.print(
            f"[bold]created by #{created['command']} RESCHEDULE[/] of its ancestor "
            f"{created['ancestor']}{line}: {created['sentence']}"
        )
        _steps(out, created)
    if not doc["commands"]:
        other = "other " if created is not None else ""
        out.print(f"no {other}command was issued about {task}; what Mesos said of it:")
        table = Table()
        for name in ("id", "time (UTC)", "state", "source", "reason", "agent", "message"):
            table.add_column(name, overflow="fold")
        for r in doc["observations"]:
            table.add_row(
                str(r["id"]),
                when(r["time"]),
                dash(r["state"]),
                r["source"],
                dash(r["reason"]),
                dash(r["agent"]),
                dash(r["message"]),
            )
        out.print(table)
        return
    for c in doc["commands"]:
        out.print()
        out.print(f"[bold]#{c['command']} {c['kind']}[/]: {c['sentence']}")
        _steps(out, c)

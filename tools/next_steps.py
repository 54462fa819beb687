"""What to run next on a log, with its own task ids (the end of `taskledger demo`).

The commands name real tasks of the log: one a rule killed, one that was replaced and its
replacement, so that the first questions a newcomer asks (`why`, `history`) have answers.
"""

from __future__ import annotations

import shlex
from typing import Any

from engine.events import CommandIssued, TaskCreated


def _examples(events: Any) -> dict[str, str]:
    """The first task a KILL named, the first replaced task and its replacement."""
    found: dict[str, str] = {}
    for _, event in events:
        kind = type(event)
        if kind is CommandIssued and event.kind == "KILL" and event.task_id:
            found.setdefault("killed", event.task_id)
        elif kind is TaskCreated and event.extra.get("ancestor"):
            found.setdefault("replaced", event.extra["ancestor"])
            found.setdefault("replacement", event.task_id)
        if len(found) == 3:
            break
    return found


def next_steps(log: str) -> list[str]:
    """Commands to try on the log at ``log`` (read-only ones; they work while a scheduler
    writes it)."""
    from tools.readonly import ReadOnlyLedger

    with ReadOnlyLedger.open(log) as ledger:
        found = _examples(ledger.events())
    path = shlex.quote(log)
    steps = [
        f"taskledger drift --log {path}                 # what disagrees now, by cell",
        f"taskledger query --log {path} --count-by state  # tasks by state",
    ]
    if "killed" in found:
        task = shlex.quote(found["killed"])
        steps.append(f"taskledger why {task} --log {path}        # why it was killed")
    if "replaced" in found:
        old, new = shlex.quote(found["replaced"]), shlex.quote(found["replacement"])
        steps.append(f"taskledger why {old} --log {path}        # why it was replaced by {new}")
        steps.append(f"taskledger history {new} --log {path}    # its replacement's life")
    steps += [
        f"taskledger report --log {path} --html audit.html   # the whole audit, one page",
        f"taskledger verify --log {path}                 # checksums, ids, snapshots",
    ]
    return steps

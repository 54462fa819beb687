"""What to run next on a log, with its own task ids (the end of `taskledger demo`).

The commands name real tasks of the log: one a rule killed, one that was replaced and its
replacement, so that the first questions a newcomer asks (`why`, `history`) have answers.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from engine.events import CommandIssued, TaskCreated
from engine.rules import RuleId

# The kill whose why shows the most: an implicit run found a task no one launched.
_BEST_KILL = RuleId.IMPLICIT_KILL_UNKNOWN


def _examples(events: Any) -> dict[str, str]:
    """A task a rule killed (an orphan an implicit run found, if there is one), the first
    replaced task and its replacement."""
    found: dict[str, str] = {}
    for _, event in events:
        kind = type(event)
        if kind is CommandIssued and event.kind == "KILL" and event.task_id:
            if event.rule == _BEST_KILL or "killed" not in found:
                found["killed"] = event.task_id
        elif kind is TaskCreated and event.extra.get("ancestor") and "replaced" not in found:
            found["replaced"] = event.extra["ancestor"]
            found["replacement"] = event.task_id
    return found


def next_steps(log: str) -> list[str]:
    """Commands to try on the log at ``log`` (read-only ones; they work while a scheduler
    writes it)."""
    from tools.readonly import ReadOnlyLedger

    with ReadOnlyLedger.open(log) as ledger:
        found = _examples(ledger.events())
    relative = os.path.relpath(log)
    path = shlex.quote(log if relative.startswith("..") else relative)
    steps = [
        (f"taskledger drift --log {path}", "what disagrees now, by cell"),
        (f"taskledger query --log {path} --count-by state", "tasks by state"),
    ]
    if "killed" in found:
        steps.append(
            (f"taskledger why {shlex.quote(found['killed'])} --log {path}", "why it was killed")
        )
    if "replaced" in found:
        old, new = shlex.quote(found["replaced"]), shlex.quote(found["replacement"])
        steps.append((f"taskledger why {old} --log {path}", f"why it was replaced by {new}"))
        steps.append((f"taskledger history {new} --log {path}", "its replacement's life"))
    steps += [
        (f"taskledger report --log {path} --html audit.html", "the whole audit, one page"),
        (f"taskledger verify --log {path}", "checksums, ids, snapshots"),
    ]
    width = max(len(command) for command, _ in steps)
    return [f"{command.ljust(width)}  # {comment}" for command, comment in steps]

"""What became of a run or a command, in words that say what happened.

A run's recorded outcome ("answered", "quiet", "limit", "superseded") says why it stopped
waiting, not what it did: "ended quiet" for a run that found a rogue task and killed it
reads as "nothing happened". Here a run is told by its answers, its end and the commands it
issued; a RECONCILE command by whether its answers came. Pure: data in, data out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from engine.rules import CommandKind

# Why a run stopped waiting (engine/reconciliation.py's outcomes), as a clause.
RUN_ENDS: dict[str, str] = {
    "answered": "ended when every task it asked about had answered",
    "quiet": "ended when the answers stopped",
    "limit": "ended at its time limit",
    "superseded": "was superseded",
}
RECONCILE = CommandKind.RECONCILE.value
# A RECONCILE command's answers: every task asked answered (an implicit one: any answer),
# some, or none yet.
ANSWERED, PARTLY, UNANSWERED = "answered", "partly answered", "unanswered"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def acted(commands: list[Any]) -> str:
    """The commands other than RECONCILE as "issued KILL x1 (R-...), ...", or "acted on no
    task" (a run's own questions are not actions)."""
    counts = Counter((c.kind, c.rule) for c in commands if c.kind != RECONCILE)
    if not counts:
        return "acted on no task"
    return "issued " + ", ".join(f"{kind} x{n} ({rule})" for (kind, rule), n in counts.items())


def run_story(run: Any, commands: Mapping[int, Any]) -> str:
    """A run in one clause: its answers, how it ended, what it issued, what it left."""
    issued = acted([commands[c] for c in run.commands if c in commands])
    done = run.completed
    if run.outcome is None:
        return f"still running; {issued} so far"
    if run.outcome == "superseded":
        return f"superseded by {run.superseded_by}; {issued}"
    answers = "" if done is None else plural(done.answers, "answer") + ", "
    text = f"{answers}{RUN_ENDS.get(run.outcome, f'ended ({run.outcome})')}"
    if done is not None and done.unanswered:
        text += f" with {done.unanswered} unanswered"
    text += f"; {issued}"
    left = {} if done is None else {k: n for k, n in done.by_cell.items() if k != "consistent"}
    if left:
        cells = ", ".join(f"{cell} {n}" for cell, n in left.items())
        text += f"; in disagreement at its end: {cells}"
    return text


def reconcile_status(asked: int | None, answered: int) -> str:
    """ANSWERED, PARTLY or UNANSWERED for a dispatched RECONCILE that asked about `asked`
    tasks (None: an implicit one, about every task) and heard from `answered` of them."""
    if answered == 0:
        return UNANSWERED
    if asked is None or answered >= asked:
        return ANSWERED
    return PARTLY

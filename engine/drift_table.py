"""The reconciliation table: where a task's two copies of its state put it, and who finds it.

Rows are what Mesos holds for a task, columns what the scheduler holds; each cell is
consistent or names the reconciliation that reveals the disagreement. It is DATA, printable
(`describe`), and the one definition every layer imports: the drift view places tasks in its
cells, the decision table (engine/rules.py) is keyed by them.

How a task gets its row and column, and why:
- Mesos row: "absent" if Mesos never spoke of the task OR its latest answer is TASK_UNKNOWN
  (the master holds no state for it); "terminal" if Mesos's latest state is terminal
  (including the resurrectable TASK_LOST / TASK_GONE_BY_OPERATOR); else "non-terminal"
  (STAGING, STARTING, RUNNING, KILLING, UNREACHABLE).
- Scheduler column: "non-terminal" for the launched, live states (lifecycle.RECONCILED: what
  an explicit reconciliation asks about); "terminal" for lifecycle.TERMINAL; "absent" for a
  task the scheduler does not know, has DELETED, or has not launched yet (INIT, THROTTLED,
  PENDING): for those it claims nothing about the cluster, so Mesos knowing them is the
  drift (found by implicit reconciliation), and Mesos not knowing them is consistent.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from engine.lifecycle import RECONCILED, TERMINAL, ScheduleStatus
from engine.mesos_states import BY_NAME as MESOS_STATES


class Holds(StrEnum):
    """What one side holds for a task: a row or a column of the table."""

    NON_TERMINAL = "non-terminal"
    TERMINAL = "terminal"
    ABSENT = "absent"


class FoundBy(StrEnum):
    """Which reconciliation reveals a cell's disagreement (or that there is none)."""

    CONSISTENT = "consistent"
    EXPLICIT = "explicit"
    IMPLICIT = "implicit"


class Cell(NamedTuple):
    """A cell of the table: (what Mesos holds, what the scheduler holds)."""

    mesos: Holds
    scheduler: Holds

    @property
    def label(self) -> str:
        """E.g. "non-terminal/absent" (Mesos first)."""
        return f"{self.mesos}/{self.scheduler}"


H = Holds
# THE table: (Mesos holds, scheduler holds) -> who finds it.
TABLE: dict[Cell, FoundBy] = {
    Cell(H.NON_TERMINAL, H.NON_TERMINAL): FoundBy.CONSISTENT,
    Cell(H.NON_TERMINAL, H.TERMINAL): FoundBy.IMPLICIT,
    Cell(H.NON_TERMINAL, H.ABSENT): FoundBy.IMPLICIT,
    Cell(H.TERMINAL, H.NON_TERMINAL): FoundBy.EXPLICIT,
    Cell(H.TERMINAL, H.TERMINAL): FoundBy.CONSISTENT,
    Cell(H.TERMINAL, H.ABSENT): FoundBy.CONSISTENT,
    Cell(H.ABSENT, H.NON_TERMINAL): FoundBy.EXPLICIT,
    Cell(H.ABSENT, H.TERMINAL): FoundBy.CONSISTENT,
    Cell(H.ABSENT, H.ABSENT): FoundBy.CONSISTENT,
}

# State name -> row / column, as plain str keys (cheap lookups on the replay path).
MESOS_ROW: dict[str, Holds] = {
    name: H.ABSENT
    if not info.stored_by_master
    else (H.TERMINAL if info.terminal else H.NON_TERMINAL)
    for name, info in MESOS_STATES.items()
}
SCHEDULER_COLUMN: dict[str, Holds] = {
    state.value: H.NON_TERMINAL
    if state in RECONCILED
    else (H.TERMINAL if state in TERMINAL else H.ABSENT)
    for state in ScheduleStatus
}


# Cell code -> Cell (code 0: neither view knows the task), and whether it is a disagreement.
CELLS: tuple[Cell | None, ...] = (None, *TABLE)
CELL_CODE: dict[Cell, int] = {cell: code for code, cell in enumerate(CELLS) if cell is not None}
DISAGREES: tuple[bool, ...] = (False, *(TABLE[c] is not FoundBy.CONSISTENT for c in TABLE))


def as_rows() -> list[tuple[str, str, str]]:
    """The table as (Mesos holds, scheduler holds, found by) rows."""
    return [(str(c.mesos), str(c.scheduler), str(found)) for c, found in TABLE.items()]


def describe() -> str:
    """The table as Markdown: a row for each Mesos holding, a column for each scheduler one."""
    columns = list(Holds)
    lines = [
        "| Mesos \\ scheduler | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for row in Holds:
        cells = [str(TABLE[Cell(row, col)]) for col in columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""Checking a replicated log of record (PostgreSQL, engine/replication.py) end to end.

Each stored event carries the epoch and replica that wrote it. Fencing promises that, in
notification order, epochs never decrease: an event written at an epoch lower than one
already in the log before it is a stale write a deposed leader got through, and is named.
Also checked: the Ledger's stream holds positions 0, 1, 2, ... in notification order (what
every mirror applies), each LeaderElected was written by the leader it names at its own
epoch, and every record decodes.

Pure: rows in (``WrittenNotification``s, as the recorder's ``select_written`` returns
them), a Report out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.events import LeaderElected
from engine.ledger_state import LEDGER_STREAM, STREAM_WIRE, UnreadableEvent, decode_records
from tools.forensics.verify import Check, Problem, Report

ORDER = ("records", "epochs", "positions")


def check_written(rows: Iterable[Any]) -> Report:
    """Every check over the rows, in notification order."""
    report = Report()
    highest = 0  # the highest epoch seen so far, and where
    highest_at: int | None = None
    position = 0
    stale = gaps = damaged = 0

    def problem(check: str, row: Any, what: str) -> None:
        report.problems.append(Problem(check, row.id, "events", None, what))

    for row in rows:
        report.records += 1
        report.last_id = row.id
        if row.epoch < highest:
            stale += 1
            problem(
                "epochs",
                row,
                f"written at epoch {row.epoch} by {row.replica!r}, after epoch {highest} "
                f"(notification id {highest_at}): a stale write",
            )
        elif row.epoch > highest:
            highest, highest_at = row.epoch, row.id
        if row.originator_id not in (LEDGER_STREAM, str(LEDGER_STREAM)):
            continue
        report.ledger_events += 1
        if row.originator_version != position:
            gaps += 1
            problem("positions", row, f"position {row.originator_version} where {position} is next")
        position = row.originator_version + 1
        try:
            [(_, event)] = decode_records(
                [(row.id, [STREAM_WIRE, row.originator_version, row.topic, row.state])]
            )
        except UnreadableEvent as e:
            damaged += 1
            problem("records", row, str(e))
            continue
        if type(event) is LeaderElected and (event.epoch, event.replica) != (
            row.epoch,
            row.replica,
        ):
            stale += 1
            problem(
                "epochs",
                row,
                f"LeaderElected of epoch {event.epoch} by {event.replica!r} was written "
                f"at epoch {row.epoch} by {row.replica!r}",
            )
    report.checks += [
        Check("records", damaged == 0, f"{report.records:,} records read, {damaged} damaged"),
        Check(
            "epochs",
            stale == 0,
            f"epochs never decrease (last {highest})" if not stale else f"{stale} stale write(s)",
        ),
        Check(
            "positions",
            gaps == 0,
            f"positions 0..{position - 1} in order" if not gaps else f"{gaps} out of place",
        ),
    ]
    return report

"""`taskledger verify` on a replicated log of record (tools/forensics/log_of_record.py): every
event written at an epoch lower than one already before it is named; positions and the
LeaderElected events are checked too."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from engine.events import LeaderElected, TaskCreated
from engine.ledger_state import LEDGER_STREAM
from engine.postgres_log import WrittenNotification
from engine.wire import to_wire
from tools.forensics.log_of_record import check_written


def row(nid: int, position: int, epoch: int, event: Any, replica: str = "a") -> Any:
    return WrittenNotification(
        id=nid,
        originator_id=LEDGER_STREAM,
        originator_version=position,
        topic=type(event).topic,
        state=msgpack.packb(to_wire(event)),
        epoch=epoch,
        replica=replica,
    )


def log_of(epochs: list[int]) -> list[WrittenNotification]:
    """A log whose events are written at these epochs (ids with gaps, as PostgreSQL's)."""
    rows, led = [], 0
    for position, epoch in enumerate(epochs):
        if epoch != led:
            event: object = LeaderElected(1.0, None, epoch, f"r{epoch}")
            led = epoch
        else:
            event = TaskCreated(1.0, None, f"web/{position}/x", "web", position)
        rows.append(row(position * 3 + 1, position, epoch, event, replica=f"r{epoch}"))
    return rows


@given(st.lists(st.integers(1, 5), min_size=1, max_size=30).map(sorted))
def test_a_log_whose_epochs_never_decrease_is_sound(epochs: list[int]) -> None:
    report = check_written(log_of(epochs))
    assert report.ok, report.problems
    assert report.records == len(epochs)


@given(st.lists(st.integers(2, 5), min_size=2, max_size=30).map(sorted), st.data())
def test_each_stale_write_is_named(epochs: list[int], data: st.DataObject) -> None:
    rows = log_of(epochs)
    at = data.draw(st.integers(1, len(rows) - 1))
    lower = data.draw(st.integers(1, rows[at - 1].epoch - 1))
    stale = replace(rows[at], epoch=lower, replica="old")
    report = check_written([*rows[:at], stale, *rows[at + 1 :]])
    named = [p.id for p in report.problems if p.check == "epochs"]
    assert stale.id in named
    assert not report.ok


def test_a_gap_in_positions_and_a_misattributed_election_are_named() -> None:
    rows = log_of([1, 1, 1])
    skipped = replace(rows[2], originator_version=5)
    report = check_written([rows[0], rows[1], skipped])
    assert [(p.check, p.id) for p in report.problems] == [("positions", skipped.id)]
    forged = replace(rows[0], replica="someone-else")
    report = check_written([forged, rows[1], rows[2]])
    assert [(p.check, p.id) for p in report.problems] == [("epochs", forged.id)]

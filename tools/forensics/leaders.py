"""Who wrote each event of a replicated log: the leaderships its LeaderElected events mark.

A replicated `taskledger run` (engine/replication.py) writes a LeaderElected event as each
new leader's first; every later event up to the next LeaderElected was written at that
epoch by that replica (PostgreSQL's fence refuses anything else, and `taskledger verify
--log postgresql://...` checks the stored epochs against them). So the writer of an event
is read from the log itself, the same way in the log of record and in any replica's LMDB
mirror. A log one process wrote has no LeaderElected: no event has a writer.

Pure: LeaderElected events in (with their notification ids), answers out.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from typing import NamedTuple


class Leadership(NamedTuple):
    """One leader's tenure, from its LeaderElected event on."""

    nid: int  # the LeaderElected event's notification id
    time: float
    epoch: int
    replica: str

    def label(self) -> str:
        """The leader in the chain's words: "replica b (epoch 2)"."""
        return f"replica {self.replica} (epoch {self.epoch})"


class Leaders:
    """The leaderships of a log, in log order."""

    def __init__(self, leaderships: Iterable[Leadership] = ()) -> None:
        self.all: list[Leadership] = list(leaderships)

    def add(self, leadership: Leadership) -> None:
        """A LeaderElected folded (in log order)."""
        self.all.append(leadership)

    def __bool__(self) -> bool:
        return bool(self.all)

    def writer_of(self, nid: int) -> Leadership | None:
        """The leadership event ``nid`` was written under (its own LeaderElected's, for a
        LeaderElected), or None: before the first, or a log one process wrote."""
        at = bisect_right(self.all, nid, key=lambda leader: leader.nid)
        return self.all[at - 1] if at else None

    def before(self, leadership: Leadership) -> Leadership | None:
        """The leadership this one followed, or None for the log's first."""
        at = self.all.index(leadership)
        return self.all[at - 1] if at else None

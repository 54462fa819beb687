"""What the Ledger folds from its log, and how its events are read back.

The Ledger's events live in one stream of the log (one originator, version = position): the
Ledger is the single writer of its log, and other eventsourcing applications may share the
file under their own originators (decoding skips them). ``LedgerState`` is the one fold of
that stream (views, dedup memory, saga), used live, on replay, for snapshots and for as-of
questions alike. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import uuid as _uuid
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import msgpack

from engine import dedup, saga_snapshot
from engine import saga as _saga
from engine.dedup import LastUuids
from engine.events import EVENT_KINDS, StatusUpdateReceived
from engine.saga import SagaState
from engine.store import DamagedRecord
from engine.wire import WireError, from_wire
from projections import snapshots
from projections.views import Views

# The originator id of the Ledger's stream in the log.
LEDGER_STREAM = _uuid.UUID("5a5d6c1e-7a5c-4c1e-9d9e-000000000001")
STREAM_WIRE = LEDGER_STREAM.bytes  # as the store's records carry it


class SnapshotInfo(NamedTuple):
    """A stored snapshot: the notification id it covers, its size, how long it took."""

    nid: int
    size: int
    seconds: float


class LedgerState:
    """Everything the Ledger folds from its log: the views and the dedup memory.

    ``apply`` is the one place an event changes state, live, on replay, for snapshots and
    for as-of queries alike, so all four always agree. Pure: no I/O, no clock.
    """

    __slots__ = ("views", "last_uuid", "saga")

    def __init__(
        self,
        views: Views | None = None,
        last_uuid: LastUuids | dict[str, str] | list[Any] | None = None,
        saga: SagaState | None = None,
    ):
        self.views = Views() if views is None else views
        # The reconciliation saga's state: a view like the others (engine/saga.py).
        self.saga = SagaState() if saga is None else saga
        # The uuid of each task's latest agent/executor update: a re-sent update carries
        # the same uuid (agents re-send until acknowledged, one outstanding per task). A
        # column of the views' task index (engine/dedup.py); a dict or a snapshot's data is
        # read into one.
        if isinstance(last_uuid, LastUuids) and last_uuid.index is self.views.index:
            self.last_uuid = last_uuid
        else:
            if isinstance(last_uuid, LastUuids):
                last_uuid = dict(last_uuid.items())
            self.last_uuid = LastUuids(self.views.index, last_uuid)

    @property
    def last_nid(self) -> int:
        return self.views.drift.last_nid

    def apply(self, nid: int, event: Any) -> None:
        self.views.apply(nid, event)
        self.apply_beyond_views(nid, event)

    def apply_beyond_views(self, nid: int, event: Any) -> None:
        """The saga's and the dedup memory's part of ``apply`` (the views have the event:
        the replay kernel, engine/replay.py, applies it to them itself)."""
        _saga.evolve(self.saga, nid, event, self.views)
        if type(event) is StatusUpdateReceived:  # the only kind with a uuid
            uuid = event.uuid
            if uuid is not None:
                self.last_uuid.remember(event.task_id, uuid)

    def parts(self) -> dict[str, Any]:
        """The named parts a snapshot stores (see projections.snapshots.PARTS)."""
        return {"views": self.views, "dedup": self.last_uuid, "saga": self.saga}

    @classmethod
    def from_parts(cls, parts: dict[str, Any]) -> LedgerState:
        if not {"views", "dedup", "saga"} <= parts.keys():  # an older build's: replay instead
            raise snapshots.SnapshotError(f"snapshot has only the parts {sorted(parts)}")
        return cls(parts["views"], parts["dedup"], parts["saga"])


snapshots.PARTS.setdefault("dedup", (dedup.encode, dedup.decode))
snapshots.PARTS.setdefault("saga", (saga_snapshot.encode, saga_snapshot.decode))


def state_digest(state: LedgerState) -> str:
    """SHA-256 of the state's snapshot encoding: equal states give equal digests."""
    return hashlib.sha256(snapshots.encode(state.last_nid, 0.0, state.parts())).hexdigest()


# topic -> (kind, schema version, wire length): from_wire's fast path, inlined in
# decode_records (a call per event is measurable on a 10M-event replay).
_CURRENT_WIRE: dict[str, tuple[type, int, int]] = {
    kind.topic: (kind, kind.schema_version, len(kind._fields) + 1) for kind in EVENT_KINDS
}


def decode_records(records: Iterable[tuple[int, list]]) -> Iterator[tuple[int, Any]]:
    """(notification id, event) for the Ledger's events among stored records, as the
    store's ``scan`` yields them (the replay hot path).

    An array of the current schema version becomes its event directly (what from_wire does
    first, without the call); anything else goes through from_wire (other versions, errors).
    """
    unpack = msgpack.unpackb
    stream = STREAM_WIRE
    current = _CURRENT_WIRE
    new = tuple.__new__
    for nid, record in records:
        if record[0] != stream:
            continue
        topic = record[2]
        try:
            wire = unpack(record[3])
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as e:
            raise UnreadableEvent(nid, topic, f"its state is not msgpack ({e})") from e
        spec = current.get(topic) if type(topic) is str else None
        if spec is not None and type(wire) is list and len(wire) == spec[2]:
            version = wire[0]
            if version == spec[1] and type(version) is int and type(wire[-1]) is dict:
                yield nid, new(spec[0], wire[1:])
                continue
        try:
            yield nid, from_wire(topic, wire)
        except WireError as e:
            raise UnreadableEvent(nid, topic, e.problem) from e


class UnreadableEvent(DamagedRecord):
    """A record of the Ledger's stream that passed its checksum but holds no readable event
    (written by something else, or by a broken build): as unusable as a damaged record, and
    named the same way, by its notification id."""

    def __init__(self, nid: int, topic: object, problem: str) -> None:
        super().__init__(
            f"damaged record: notification id {nid}: event {topic!r} cannot be read: {problem}",
            database="notifications",
            key=nid.to_bytes(8, "big"),
            position=nid,
        )

"""A read-only Ledger: the log opened for questions, never for writes.

The forensic commands (history, why, drift, query, verify, report, ...) must leave the log
exactly as they found it, and must work while the scheduler that owns the log is running.
``ReadOnlyLedger`` therefore opens the LMDB environment read-only (no writer lock file, no
write transaction, no snapshot writes) and answers with the same names as
``engine.ledger.Ledger``: ``events``, ``views``, ``drift``, ``state_as_of``, ``views_as_of``,
``id_at``, ``snapshots``, ``check_snapshot``, ``last_id``, ``snapshot_problems``.

It reuses the Ledger's own state (``LedgerState``) and decoding, so a read-only answer is the
answer the writer would give. Meant to become ``Ledger.open_readonly`` in engine/ledger.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import msgpack

from engine.codec import CodecError, unframe
from engine.events import from_wire
from engine.ledger import _STREAM_WIRE, LedgerState, SnapshotInfo, _decode
from engine.store import DamagedRecord, LMDBApplicationRecorder, LMDBDatastore
from projections import snapshots
from projections.drift_view import Drift, Views

SNAPSHOTS_DB = "snapshots"


class StoredSnapshot(NamedTuple):
    """A snapshot as stored: the notification id it covers, its size and its time."""

    nid: int
    size: int
    time: float | None  # None when the snapshot cannot be read


class ReadOnlyLedger:
    """The Ledger's read surface over a log opened read-only. Not for appends."""

    def __init__(self, datastore: LMDBDatastore) -> None:
        self._store = datastore
        self._recorder = LMDBApplicationRecorder(datastore)
        self.snapshot_problems: list[str] = []
        self._state: LedgerState | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ReadOnlyLedger:
        """Opens the log in folder ``path`` for reading; raises LogOpenError (and its
        subclasses) naming the path when it is missing or not a taskledger log."""
        return cls(LMDBDatastore.open(os.fspath(path), readonly=True))

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> ReadOnlyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        return self._store.path

    @property
    def datastore(self) -> LMDBDatastore:
        return self._store

    @property
    def recorder(self) -> LMDBApplicationRecorder:
        return self._recorder

    # -- the log -------------------------------------------------------------------------
    @property
    def last_id(self) -> int:
        """The highest notification id in the log (0 if it is empty)."""
        return self._recorder.max_notification_id() or 0

    def events(self, first: int = 1, last: int | None = None) -> Iterator[tuple[int, Any]]:
        """(notification id, event) pairs of the Ledger's stream, in order."""
        return _decode(self._recorder.scan(first, last))

    def event_at(self, nid: int) -> Any | None:
        """The Ledger event with notification id ``nid``, or None."""
        for _, event in self.events(nid, nid):
            return event
        return None

    def id_at(self, timestamp: float) -> int:
        """The last notification id whose event time is at or before ``timestamp``."""
        low, high = 0, self.last_id
        while low < high:
            middle = (low + high + 1) // 2
            if self._event_time(middle) <= timestamp:
                low = middle
            else:
                high = middle - 1
        return low

    def _event_time(self, nid: int) -> float:
        for _, record in self._recorder.scan(nid, nid):
            if record[0] == _STREAM_WIRE:
                return from_wire(record[2], msgpack.unpackb(record[3])).time
        return float("-inf")

    # -- state -----------------------------------------------------------------------------
    @property
    def state(self) -> LedgerState:
        """The state as of the end of the log (loaded once, on first use)."""
        if self._state is None:
            self._state = self._load(None)
        return self._state

    @property
    def views(self) -> Views:
        return self.state.views

    def drift(self) -> list[Drift]:
        return self.views.drift.drift()

    def state_as_of(self, notification_id: int) -> LedgerState:
        """The state right after ``notification_id`` (nearest snapshot plus replay)."""
        return self._load(notification_id)

    def views_as_of(self, notification_id: int) -> Views:
        return self.state_as_of(notification_id).views

    # -- snapshots -------------------------------------------------------------------------
    def _snapshots_db(self) -> Any | None:
        # A read-only environment cannot create the database: a log never snapshotted has
        # none, which simply means "no snapshots".
        return self._store.dbs.get(SNAPSHOTS_DB)

    def _snapshot_items(self, upto: int | None = None) -> list[tuple[bytes, bytes]]:
        """(key, value) of stored snapshots at or before ``upto``, newest first."""
        db = self._snapshots_db()
        if db is None:
            return []
        limit = None if upto is None else upto.to_bytes(8, "big")

        def newest_first(txn: Any) -> list[tuple[bytes, bytes]]:
            cursor = txn.cursor(db=db)
            if not cursor.last():
                return []
            return [(k, v) for k, v in cursor.iterprev() if limit is None or k <= limit]

        return self._store.read(newest_first)

    def snapshots(self) -> list[SnapshotInfo]:
        """The stored snapshots, oldest first (size in bytes; seconds is 0)."""
        return [SnapshotInfo(int.from_bytes(k, "big"), len(v), 0.0) for k, v in self._raw()]

    def stored_snapshots(self) -> list[StoredSnapshot]:
        """The stored snapshots, oldest first, with the time each was taken."""
        out = []
        for key, value in self._raw():
            try:
                _, taken, _ = snapshots.decode(unframe(key, value))
            except (CodecError, snapshots.SnapshotError):
                taken = None
            out.append(StoredSnapshot(int.from_bytes(key, "big"), len(value), taken))
        return out

    def _raw(self) -> list[tuple[bytes, bytes]]:
        return list(reversed(self._snapshot_items()))

    def check_snapshot(self, nid: int) -> LedgerState:
        """Reads one snapshot, checksum and shape; raises DamagedRecord or SnapshotError."""
        key = nid.to_bytes(8, "big")
        db = self._snapshots_db()
        value = None if db is None else self._store.read(lambda txn: txn.get(key, db=db))
        if value is None:
            raise snapshots.SnapshotError(f"no snapshot at notification id {nid}")
        return self._decode_snapshot(key, value)

    def _decode_snapshot(self, key: bytes, value: bytes) -> LedgerState:
        try:
            payload = unframe(key, value)
        except CodecError as e:
            position = int.from_bytes(key, "big")
            raise DamagedRecord(
                f"damaged snapshot in log {self.path}: notification id {position}, "
                f"key {key.hex()}: {e}",
                database=SNAPSHOTS_DB,
                key=key,
                position=position,
            ) from e
        _, _, parts = snapshots.decode(payload)
        return LedgerState.from_parts(parts)

    def _load(self, upto: int | None) -> LedgerState:
        state = None
        for key, value in self._snapshot_items(upto):
            try:
                state = self._decode_snapshot(key, value)
                break
            except (DamagedRecord, snapshots.SnapshotError) as e:
                self.snapshot_problems.append(str(e))
        if state is None:
            state = LedgerState()
        for nid, event in self.events(state.last_nid + 1, upto):
            state.apply(nid, event)
        return state

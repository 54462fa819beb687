"""Reading a Ledger's log: events, times, snapshots, and states folded from them.

Shared by the Ledger (which also writes) and the read-only Ledger of the forensic commands
(which must leave the log exactly as it found it), so that both answer every question the
same way. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from engine import time_index
from engine.codec import CodecError, unframe
from engine.ledger_state import LedgerState, SnapshotInfo, decode_records
from engine.replay import Replayed, replay
from engine.store import DamagedRecord, LMDBApplicationRecorder, LMDBDatastore
from engine.times import check_time
from projections import snapshots
from projections.views import Views

SNAPSHOTS_DB = "snapshots"


class StoredSnapshot(NamedTuple):
    """A snapshot as stored: the notification id it covers, its size and its time."""

    nid: int
    size: int
    time: float | None  # None when the snapshot cannot be read


def snapshot_key(nid: int) -> bytes:
    return nid.to_bytes(8, "big")


class LogReader:
    """The read side of one log folder."""

    def __init__(self, datastore: LMDBDatastore) -> None:
        self._store = datastore
        self._recorder = LMDBApplicationRecorder(datastore)
        # Damaged or unreadable snapshots met while loading a state: reported, skipped.
        self.snapshot_problems: list[str] = []

    @property
    def path(self) -> str:
        return self._store.path

    @property
    def datastore(self) -> LMDBDatastore:
        return self._store

    @property
    def recorder(self) -> LMDBApplicationRecorder:
        return self._recorder

    # -- events ----------------------------------------------------------------------------
    def events(self, first: int = 1, last: int | None = None) -> Iterator[tuple[int, Any]]:
        """(notification id, event) pairs of the Ledger's stream, in order."""
        return decode_records(self._recorder.scan(first, last))

    def event_at(self, nid: int) -> Any | None:
        """The Ledger event with notification id ``nid``, or None."""
        for _, event in self.events(nid, nid):
            return event
        return None

    def max_id(self) -> int:
        """The highest notification id in the log (0 if it is empty)."""
        return self._recorder.max_notification_id() or 0

    def id_at(self, timestamp: float) -> int:
        """The last notification id whose event time is at or before ``timestamp`` (0 if
        none): "as of a time" means the state right after it. Exact whatever the order of
        the times in the log (engine/time_index.py says how, and why they may go back)."""
        moment = check_time("timestamp", timestamp)
        return time_index.id_at(self._store, self._recorder, moment)

    # -- snapshots ---------------------------------------------------------------------------
    def _snapshots_db(self) -> Any | None:
        # A read-only environment cannot create the database: a log never snapshotted has
        # none, which simply means "no snapshots".
        if self._store.readonly:
            return self._store.dbs.get(SNAPSHOTS_DB)
        return self._store.db(SNAPSHOTS_DB)

    def _snapshot_keys(self, upto: int | None = None) -> list[bytes]:
        """Keys of the stored snapshots at or before ``upto``, newest first."""
        db = self._snapshots_db()
        if db is None:
            return []
        limit = None if upto is None else snapshot_key(upto)

        def newest_first(txn: Any) -> list[bytes]:
            cursor = txn.cursor(db=db)
            if not cursor.last():
                return []
            keys = cursor.iterprev(keys=True, values=False)
            return [k for k in keys if limit is None or k <= limit]

        return self._store.read(newest_first)

    def _snapshot_value(self, key: bytes) -> bytes | None:
        db = self._snapshots_db()
        return None if db is None else self._store.read(lambda txn: txn.get(key, db=db))

    def snapshots(self) -> list[SnapshotInfo]:
        """The stored snapshots, oldest first (size in bytes; seconds is 0)."""
        out = []
        for key in reversed(self._snapshot_keys()):
            value = self._snapshot_value(key) or b""
            out.append(SnapshotInfo(int.from_bytes(key, "big"), len(value), 0.0))
        return out

    def stored_snapshots(self) -> list[StoredSnapshot]:
        """The stored snapshots, oldest first, with the time each was taken."""
        out = []
        for key in reversed(self._snapshot_keys()):
            value = self._snapshot_value(key) or b""
            try:
                _, taken, _ = snapshots.decode(unframe(key, value))
            except (CodecError, snapshots.SnapshotError):
                taken = None
            out.append(StoredSnapshot(int.from_bytes(key, "big"), len(value), taken))
        return out

    def check_snapshot(self, nid: int) -> LedgerState:
        """Reads one snapshot, checksum and shape; raises DamagedRecord or SnapshotError."""
        key = snapshot_key(nid)
        value = self._snapshot_value(key)
        if value is None:
            raise snapshots.SnapshotError(f"no snapshot at notification id {nid}")
        return self._decode_snapshot(key, value)

    def _decode_snapshot(self, key: bytes, value: bytes) -> LedgerState:
        position = int.from_bytes(key, "big")
        try:
            payload = unframe(key, value)
        except CodecError as e:
            raise DamagedRecord(
                f"damaged snapshot in log {self.path}: notification id {position}, "
                f"key {key.hex()}: {e}",
                database=SNAPSHOTS_DB,
                key=key,
                position=position,
            ) from e
        _, _, parts = snapshots.decode(payload)
        return LedgerState.from_parts(parts)

    # -- states ------------------------------------------------------------------------------
    def load(self, upto: int | None = None) -> LedgerState:
        """The state right after ``upto`` (None: the end of the log): the newest readable
        snapshot at or before it, plus a replay of the events between. Damaged snapshots
        are reported in ``snapshot_problems`` and skipped, never trusted."""
        for key in self._snapshot_keys(upto):
            value = self._snapshot_value(key)
            if value is None:
                continue
            try:
                state = self._decode_snapshot(key, value)
            except (DamagedRecord, snapshots.SnapshotError) as e:
                self.snapshot_problems.append(str(e))
                continue
            try:
                return self._replay_onto(state, upto)
            except DamagedRecord:
                raise  # the log itself is damaged (or unreadable): no snapshot helps
            except Exception as e:
                # The snapshot read back but the state it holds is not one replay can go
                # on from (a field of the wrong type): as untrustworthy as a damaged one.
                self.snapshot_problems.append(
                    f"snapshot at notification id {int.from_bytes(key, 'big')} in log "
                    f"{self.path} does not hold a usable state: {e!r}"
                )
        return self._replay_onto(LedgerState(), upto)

    def _replay_onto(self, state: LedgerState, upto: int | None) -> LedgerState:
        self.replay(state, state.last_nid + 1, upto)
        return state

    def replay(
        self,
        state: LedgerState,
        first: int = 1,
        last: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Replayed:
        """Applies the events with ids in [first, last] to ``state`` (engine/replay.py: the
        compiled kernel when built); ``progress(events, last id)`` after each chunk."""
        return replay(self._recorder, state, first, last, progress=progress)

    def state_as_of(self, notification_id: int) -> LedgerState:
        """The state right after ``notification_id`` (a fresh copy: nothing live is
        touched, and appends are not blocked)."""
        return self.load(notification_id)

    def views_as_of(self, notification_id: int) -> Views:
        """The views as they were right after ``notification_id``."""
        return self.load(notification_id).views

"""The Ledger: the embedded backend's public surface (see DESIGN.md).

    with Ledger.open("var/ledger") as ledger:
        ledger.task_created("job/0/abc", job="job")
        ledger.status_update(status)          # returns once durable: safe to acknowledge
        ledger.scheduler_view.get("job/0/abc")
        ledger.drift()

The imperative shell around the pure core: it owns the LMDB log (engine.store), turns calls
into events (engine.events), appends them with group commit, and keeps the views
(projections) up to date in notification order. The views are evolved by the committing
thread before any appender returns, so a caller always reads its own writes.

Every Ledger event lives in one stream of the log (one originator, version = position),
because the Ledger is the single writer of its log; other eventsourcing applications may
share the file under their own originators, and replay skips them.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time as _time
import uuid as _uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import msgpack
from eventsourcing.persistence import StoredEvent

from engine.codec import CodecError, frame, unframe
from engine.events import (
    FrameworkDisconnected,
    FrameworkRegistered,
    FrameworkReregistered,
    KillRequested,
    TaskAssigned,
    TaskCreated,
    from_wire,
    status_from_mesos,
    to_wire,
)
from engine.store import DamagedRecord, LMDBApplicationRecorder, LMDBDatastore, LogOpenError
from projections import snapshots
from projections.drift_view import Drift, Views

# The originator id of the Ledger's stream in the log.
LEDGER_STREAM = _uuid.UUID("5a5d6c1e-7a5c-4c1e-9d9e-000000000001")
_STREAM_WIRE = LEDGER_STREAM.bytes
_LOCK_FILE = "ledger.lock"


class LedgerLocked(LogOpenError):
    """Another process has the log open for writing."""


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

    __slots__ = ("views", "last_uuid")

    def __init__(self, views: Views | None = None, last_uuid: dict[str, str] | None = None):
        self.views = Views() if views is None else views
        # The uuid of each task's latest agent/executor update: a re-sent update carries
        # the same uuid (agents re-send until acknowledged, one outstanding per task).
        self.last_uuid: dict[str, str] = {} if last_uuid is None else last_uuid

    @property
    def last_nid(self) -> int:
        return self.views.drift.last_nid

    def apply(self, nid: int, event: Any) -> None:
        self.views.apply(nid, event)
        uuid = getattr(event, "uuid", None)
        if uuid is not None:
            self.last_uuid[event.task_id] = uuid

    def parts(self) -> dict[str, Any]:
        """The named parts a snapshot stores (see projections.snapshots.PARTS)."""
        return {"views": self.views, "dedup": self.last_uuid}

    @classmethod
    def from_parts(cls, parts: dict[str, Any]) -> LedgerState:
        return cls(parts["views"], parts["dedup"])


snapshots.PARTS.setdefault("dedup", (dict, dict))


class Ledger:
    """The task-state engine over one LMDB log folder. Thread-safe."""

    def __init__(
        self,
        datastore: LMDBDatastore,
        *,
        clock: Callable[[], float] = _time.time,
        lock_fd: int | None = None,
    ) -> None:
        self._store = datastore
        self._recorder = LMDBApplicationRecorder(datastore)
        self._clock = clock
        self._lock_fd = lock_fd
        self._packer_lock = threading.Lock()
        self._views_lock = threading.RLock()
        # Updates appended but not yet committed, so a concurrent re-delivery is a dup too.
        self._dedup_lock = threading.Lock()
        self._inflight: set[tuple[str, str]] = set()
        self.snapshot_problems: list[str] = []  # damaged snapshots skipped on open
        self._state = self._load(None)
        datastore.after_commit = self._after_commit

    # -- opening and closing ---------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        map_size: int = 1 << 30,
        max_map_size: int = 1 << 40,
        clock: Callable[[], float] = _time.time,
    ) -> Ledger:
        """Opens (creating if missing) the log in folder ``path`` for writing.

        Only one process may write a log: a second one gets ``LedgerLocked``.
        """
        path = os.fspath(path)
        datastore = LMDBDatastore.open(
            path, map_size=map_size, max_map_size=max_map_size, durable=durable
        )
        try:
            lock_fd = _lock(datastore.path)
            return cls(datastore, clock=clock, lock_fd=lock_fd)
        except BaseException:
            datastore.close()
            raise

    def close(self) -> None:
        """Closes the log; the Ledger cannot be used afterwards."""
        if self._store.after_commit == self._after_commit:
            self._store.after_commit = None
        self._store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> str:
        return self._store.path

    # -- the scheduler's facts ---------------------------------------------------------------
    def task_created(
        self, task_id: str, *, job: str, instance: int = 0, time: float | None = None
    ) -> int:
        """The scheduler created a task; returns its notification id once durable."""
        _check_text("task_id", task_id)
        _check_text("job", job)
        return self._append_one(TaskCreated(self._now(time), None, task_id, job, instance))

    def task_assigned(self, task_id: str, *, agent_id: str, time: float | None = None) -> int:
        """The scheduler assigned the task to an agent (a launch is on its way)."""
        _check_text("task_id", task_id)
        _check_text("agent_id", agent_id)
        return self._append_one(TaskAssigned(self._now(time), None, task_id, agent_id))

    def kill_requested(self, task_id: str, *, time: float | None = None) -> int:
        """The scheduler decided to kill the task."""
        _check_text("task_id", task_id)
        return self._append_one(KillRequested(self._now(time), None, task_id))

    # -- what Mesos says -----------------------------------------------------------------------
    def status_update(self, status: dict[str, Any], *, time: float | None = None) -> int | None:
        """Records a Mesos v1 TaskStatus dict exactly as pymesos delivers it.

        Returns the notification id once the update is durable (safe to acknowledge), or
        None if it is a re-delivery of an update already recorded (same uuid): that
        changes nothing and should be acknowledged again. A malformed status raises a
        ``MalformedStatus`` (a ValueError) naming the field; nothing is written.
        """
        event = status_from_mesos(status, time=self._now(time))
        key = None if event.uuid is None else (event.task_id, event.uuid)
        if key is not None:
            with self._dedup_lock:
                last = self._state.last_uuid.get(event.task_id)
                if key in self._inflight or last == event.uuid:
                    return None
                self._inflight.add(key)
        try:
            return self._append_one(event)
        finally:
            if key is not None:
                with self._dedup_lock:
                    self._inflight.discard(key)

    def framework_registered(
        self, framework_id: str, master_id: str, *, time: float | None = None
    ) -> int:
        return self._append_one(FrameworkRegistered(self._now(time), None, framework_id, master_id))

    def framework_reregistered(
        self, framework_id: str, master_id: str, *, time: float | None = None
    ) -> int:
        return self._append_one(
            FrameworkReregistered(self._now(time), None, framework_id, master_id)
        )

    def framework_disconnected(
        self, master_id: str | None = None, *, time: float | None = None
    ) -> int:
        return self._append_one(FrameworkDisconnected(self._now(time), None, master_id))

    # -- appending -----------------------------------------------------------------------------
    def append(self, events: Sequence[NamedTuple]) -> list[int]:
        """Appends events (engine.events records) durably; returns their ids."""
        if not events:
            return []
        with self._packer_lock:
            stored = [
                StoredEvent(LEDGER_STREAM, None, e.topic, msgpack.packb(to_wire(e))) for e in events
            ]
        return self._store.append(stored, context=events)

    def _append_one(self, event: NamedTuple) -> int:
        return self.append((event,))[0]

    def _after_commit(self, requests: list[Any]) -> None:
        """Runs in the committing thread, in commit order, before appenders return."""
        with self._views_lock:
            for request in requests:
                if request.context is None:
                    continue  # not a Ledger append (another application in the same log)
                for nid, event in zip(request.result, request.context, strict=True):
                    self._state.apply(nid, event)

    def _now(self, time: float | None) -> float:
        return self._clock() if time is None else float(time)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def views(self) -> Views:
        """The three views (scheduler, Mesos, drift), as of the last commit."""
        return self._state.views

    @property
    def scheduler_view(self) -> Any:
        return self._state.views.scheduler

    @property
    def mesos_view(self) -> Any:
        return self._state.views.mesos

    def drift(self) -> list[Drift]:
        """The current disagreements, each with its cell of the table (empty if none)."""
        with self._views_lock:
            return self._state.views.drift.drift()

    @property
    def last_id(self) -> int:
        """The notification id the views cover."""
        return self._state.last_nid

    def events(self, first: int = 1, last: int | None = None) -> Iterator[tuple[int, Any]]:
        """(notification id, event) pairs of the Ledger's stream, in order."""
        return _decode(self._recorder.scan(first, last))

    def state_as_of(self, notification_id: int) -> LedgerState:
        """The state right after ``notification_id``: the nearest snapshot at or before
        it, plus a replay of the events between (a fresh copy; the live state is not
        touched and appends are not blocked)."""
        return self._load(notification_id)

    def views_as_of(self, notification_id: int) -> Views:
        """The views as they were right after ``notification_id``."""
        return self.state_as_of(notification_id).views

    def id_at(self, timestamp: float) -> int:
        """The last notification id whose event time is at or before ``timestamp`` (0 if
        none). Event times are the callers'; this assumes they do not go backwards."""
        low, high = 0, self._recorder.max_notification_id() or 0
        while low < high:  # invariant: events up to `low` are at or before timestamp
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
        return float("-inf")  # another application's event: no time of ours

    # -- snapshots -------------------------------------------------------------------------------
    def snapshot(self, *, time: float | None = None) -> SnapshotInfo:
        """Stores the state as of the last commit as a snapshot; returns what it wrote.

        Built by folding the log (from the newest snapshot) in this thread, never from the
        live views, so appends go on meanwhile (LMDB readers do not block the writer).
        """
        started = _time.perf_counter()
        nid = self.last_id
        state = self._load(nid)
        payload = snapshots.encode(nid, self._now(time), state.parts())
        key = nid.to_bytes(8, "big")

        def put(txn: Any, batch: Any) -> None:
            txn.put(key, frame(key, payload), db=self._snapshots_db())

        self._store.write(put)
        return SnapshotInfo(nid, len(payload), _time.perf_counter() - started)

    def snapshots(self) -> list[SnapshotInfo]:
        """The stored snapshots, oldest first (size in bytes; seconds is 0)."""
        db = self._snapshots_db()
        return self._store.read(
            lambda txn: [
                SnapshotInfo(int.from_bytes(k, "big"), len(v), 0.0) for k, v in txn.cursor(db=db)
            ]
        )

    def check_snapshot(self, nid: int) -> LedgerState:
        """Reads one snapshot, checksum and shape; raises DamagedRecord or SnapshotError."""
        key = nid.to_bytes(8, "big")
        value = self._store.read(lambda txn: txn.get(key, db=self._snapshots_db()))
        if value is None:
            raise snapshots.SnapshotError(f"no snapshot at notification id {nid}")
        return self._decode_snapshot(key, value)[1]

    def _snapshots_db(self) -> Any:
        return self._store.db("snapshots")

    def _decode_snapshot(self, key: bytes, value: bytes) -> tuple[int, LedgerState]:
        try:
            payload = unframe(key, value)
        except CodecError as e:
            raise DamagedRecord(
                f"damaged snapshot in log {self.path}: notification id "
                f"{int.from_bytes(key, 'big')}, key {key.hex()}: {e}",
                database="snapshots",
                key=key,
                position=int.from_bytes(key, "big"),
            ) from e
        nid, _time_taken, parts = snapshots.decode(payload)
        return nid, LedgerState.from_parts(parts)

    def _load(self, upto: int | None) -> LedgerState:
        """The newest readable snapshot at or before ``upto`` (None: the end), plus the
        replay of the log after it. Damaged snapshots are reported and skipped."""
        db = self._snapshots_db()
        limit = None if upto is None else upto.to_bytes(8, "big")

        def newest_first(txn: Any) -> list[bytes]:
            cursor = txn.cursor(db=db)
            if not cursor.last():
                return []
            return [k for k in cursor.iterprev(keys=True, values=False) if not limit or k <= limit]

        state = None
        for key in self._store.read(newest_first):
            value = self._store.read(lambda txn, key=key: txn.get(key, db=db))
            try:
                _, state = self._decode_snapshot(key, value)
                break
            except (DamagedRecord, snapshots.SnapshotError) as e:
                self.snapshot_problems.append(str(e))
                state = None
        if state is None:
            state = LedgerState()
        for nid, event in self.events(state.last_nid + 1, upto):
            state.apply(nid, event)
        return state


def _decode(records: Iterable[tuple[int, list]]) -> Iterator[tuple[int, Any]]:
    """The Ledger's events among stored records (the replay hot path)."""
    unpack = msgpack.unpackb
    stream = _STREAM_WIRE
    for nid, record in records:
        if record[0] != stream:
            continue
        yield nid, from_wire(record[2], unpack(record[3]))


def _check_text(name: str, value: object) -> None:
    if type(value) is not str or not value:
        raise ValueError(f"{name} must be non-empty text, got {value!r}")


def _lock(folder: str) -> int:
    """Takes the log's writer lock (an flock, released by the OS if the process dies)."""
    path = os.path.join(folder, _LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        who = "this process" if holder == str(os.getpid()) else f"another process (pid {holder})"
        raise LedgerLocked(
            f"log {folder} is held by {who}; stop it or open the log read-only"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd

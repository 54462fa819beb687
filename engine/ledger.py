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
import hashlib
import os
import threading
import time as _time
import uuid as _uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import msgpack
from eventsourcing.persistence import StoredEvent

from engine import dedup, saga_snapshot
from engine import saga as _saga
from engine.codec import CodecError, frame, unframe
from engine.dedup import LastUuids
from engine.events import (
    EVENT_KINDS,
    DispatchResumed,
    FrameworkDisconnected,
    FrameworkRegistered,
    FrameworkReregistered,
    KillRequested,
    StatusUpdateReceived,
    TaskAssigned,
    TaskCreated,
    from_wire,
    status_from_mesos,
    to_wire,
)
from engine.outbox import Dispatcher, DispatchPlan, DispatchReport, PendingCommand
from engine.outbox import pending as _pending
from engine.outbox import plan as _plan_dispatch
from engine.saga import SagaConfig, SagaState
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
        if "saga" not in parts:  # written before the saga existed: replay instead
            raise snapshots.SnapshotError("snapshot has no 'saga' part (older build)")
        return cls(parts["views"], parts["dedup"], parts["saga"])


snapshots.PARTS.setdefault("dedup", (dedup.encode, dedup.decode))
snapshots.PARTS.setdefault("saga", (saga_snapshot.encode, saga_snapshot.decode))


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
        # The saga's decisions are serialised by this lock (tick, reconcile, dispatch,
        # resume); `saga_config` may be replaced at any time: it changes later decisions,
        # never the recorded ones.
        self._saga_lock = threading.RLock()
        self.saga_config = SagaConfig()
        self._state = self._load(None)
        # Told of every append (latency, kinds) and commit (batch size): tools.metrics.Metrics.
        self.observer: Any = None
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
        started = _time.perf_counter()
        with self._packer_lock:
            stored = [
                StoredEvent(LEDGER_STREAM, None, e.topic, msgpack.packb(to_wire(e))) for e in events
            ]
        ids = self._store.append(stored, context=events)
        if self.observer is not None:
            self.observer.observe_append(_time.perf_counter() - started, events)
        return ids

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
        if self.observer is not None:
            self.observer.observe_commit(sum(len(r.result) for r in requests))

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

    def digest(self) -> str:
        """A digest of the live state; a replay of the log must give the same (audits)."""
        with self._views_lock:
            return state_digest(self._state)

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

    # -- the reconciliation saga (engine/saga.py, engine/reconciliation.py, engine/outbox.py) --
    @property
    def saga(self) -> SagaState:
        """The saga's state (runs, outbox, open kills, ...), as of the last commit."""
        return self._state.saga

    def reconcile(self, kind: str, *, now: float, trigger: str = "operator") -> str:
        """Starts a reconciliation run ("explicit" or "implicit") at ``now``; returns its id.

        A run of the same kind in progress is superseded (its unsent requests cancelled).
        The first round's RECONCILE commands are in the outbox when this returns; later
        rounds, the counting of answers and the completion happen in ``tick``.
        """
        with self._saga_lock:
            with self._views_lock:
                state = self._state
                events = _saga.start_run(
                    state.saga, state.views, kind, trigger, float(now), self.saga_config
                )
            self.append(events)
            self.tick(now=now)
            return _saga.run_id_of_start(events)

    def tick(self, *, now: float) -> list[int]:
        """Lets the saga decide at ``now``: scheduled and post-(re)registration runs, rounds
        and completions, kill confirmations and retries, the rules on the current drift,
        timers, and the side effects of recent transitions. Appends what it decided
        (commands go to the outbox) and returns their ids; [] if there was nothing to do.
        The same log and the same ``now`` decide the same.
        """
        now = float(now)
        ids: list[int] = []
        with self._saga_lock:
            for _ in range(8):  # a run's start, then its first round: a few passes at most
                with self._views_lock:
                    state = self._state
                    events = _saga.decide(state.saga, state.views, now, self.saga_config)
                if not events:
                    break
                # Appended outside the views lock: the commit applies them under it.
                ids += self.append(events)
                if not any(type(e) in _saga.DECIDE_AGAIN for e in events):
                    break  # nothing appended can enable another decision at this `now`
        return ids

    def pending_commands(self) -> list[PendingCommand]:
        """The outbox: commands issued and not yet dispatched (or failed, waiting to be
        tried again), oldest first; each has kind, task_id, rule, evidence, run_id, ..."""
        with self._views_lock:
            return _pending(self._state.saga.outbox, self._state.views)

    def dispatcher(self, send: Callable[[PendingCommand], object]) -> Dispatcher:
        """A dispatcher that sends remote commands through ``send(command)`` and records
        the outcomes in this log (engine/outbox.py says what is sent when, and why a crash
        loses nothing)."""

        def plan_at(now: float) -> DispatchPlan:
            with self._views_lock:
                state = self._state
                return _plan_dispatch(
                    state.saga.outbox, state.views, now, self.saga_config.dispatch
                )

        def failures_of(command_id: int) -> int:
            return self._state.saga.outbox.commands[command_id].failures

        return Dispatcher(
            plan_at,
            self.append,
            send,
            config=self.saga_config.dispatch,
            failures_of=failures_of,
            lock=self._saga_lock,
        )

    def dispatch(self, send: Callable[[PendingCommand], object], *, now: float) -> DispatchReport:
        """One dispatch pass at ``now`` (see ``dispatcher``)."""
        return self.dispatcher(send).dispatch(now=float(now))

    def resume(self, *, now: float, operator: str, reason: str = "") -> int | None:
        """An operator resumes dispatch after the blast-radius breaker halted it; the
        commands pending now are approved. Returns the event's id, or None if dispatch was
        not halted."""
        _check_text("operator", operator)
        with self._saga_lock:
            if self._state.saga.outbox.halted is None:
                return None
            return self._append_one(DispatchResumed(float(now), None, operator, reason))

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


# topic -> (kind, schema version, wire length): from_wire's fast path, inlined in _decode.
_CURRENT_WIRE: dict[str, tuple[type, int, int]] = {
    kind.topic: (kind, kind.schema_version, len(kind._fields) + 1) for kind in EVENT_KINDS
}


def _decode(records: Iterable[tuple[int, list]]) -> Iterator[tuple[int, Any]]:
    """The Ledger's events among stored records (the replay hot path).

    An array of the current schema version becomes its event directly (what from_wire does
    first, without the call); anything else goes through from_wire (other versions, errors).
    """
    unpack = msgpack.unpackb
    stream = _STREAM_WIRE
    current = _CURRENT_WIRE
    new = tuple.__new__
    for nid, record in records:
        if record[0] != stream:
            continue
        topic = record[2]
        wire = unpack(record[3])
        spec = current.get(topic) if type(topic) is str else None
        if spec is not None and type(wire) is list and len(wire) == spec[2]:
            version = wire[0]
            if version == spec[1] and type(version) is int and type(wire[-1]) is dict:
                yield nid, new(spec[0], wire[1:])
                continue
        yield nid, from_wire(topic, wire)


def state_digest(state: LedgerState) -> str:
    """SHA-256 of the state's snapshot encoding: equal states give equal digests."""
    return hashlib.sha256(snapshots.encode(state.last_nid, 0.0, state.parts())).hexdigest()


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

"""The Ledger: the embedded backend's public surface (the README's "The embedded backend").

    with Ledger.open("var/ledger") as ledger:
        ledger.task_created("job/0/abc", job="job")
        ledger.status_update(status)          # returns once durable: safe to acknowledge
        ledger.scheduler_view.get("job/0/abc")
        ledger.drift()

The imperative shell around the pure core: it owns the LMDB log (engine.store), turns calls
into events (engine.events), appends them with group commit, and keeps the views
(projections) up to date in notification order. The views are evolved by the committing
thread before any appender returns, so a caller always reads its own writes.

Beside each waiting call there is one that does not wait: ``submit_status_update`` and
``submit`` queue their events for the group commit and return; the committing thread calls
their ``done`` once the events are durable (and in the views). A scheduler's ingest
pipelines on them (engine/mesos/core.py): the stream goes on while earlier updates commit,
many to a transaction, and each update is acknowledged from its ``done``.

Every Ledger event lives in one stream of the log (one originator, version = position),
because the Ledger is the single writer of its log; other eventsourcing applications may
share the file under their own originators, and replay skips them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import threading
import time as _time
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, NamedTuple, TypeAlias

import msgpack
from eventsourcing.persistence import PersistenceError, StoredEvent

from engine import saga as _saga
from engine import time_index
from engine.codec import frame
from engine.dedup import update_key
from engine.dispatcher import Dispatcher, DispatchReport
from engine.events import (
    ClockStepped,
    DispatchResumed,
    FrameworkDisconnected,
    FrameworkRegistered,
    FrameworkReregistered,
    KillRequested,
    StatusUpdateReceived,
    TaskAssigned,
    TaskCreated,
)
from engine.ledger_state import (  # noqa: F401  (re-exported: the Ledger's public names)
    LEDGER_STREAM,
    STREAM_WIRE,
    LedgerState,
    SnapshotInfo,
    decode_records,
    state_digest,
)
from engine.log_reader import LogReader, snapshot_key
from engine.outbox import DispatchPlan, PendingCommand
from engine.outbox import pending as _pending
from engine.outbox import plan as _plan_dispatch
from engine.saga import SagaConfig, SagaState
from engine.store import UNIQUE_UPTO, DuplicateKey, LMDBDatastore, LogOpenError
from engine.task_status import status_from_mesos
from engine.times import MAX_TIME, check_time
from engine.wire import to_wire
from projections import snapshots
from projections.drift_view import Drift
from projections.views import Views

_LOCK_FILE = "ledger.lock"
# Past this many ids after the time index, `id_at` writes what is noted rather than scan.
_UNINDEXED_SCAN = 65_536
_TIME_OF = itemgetter(0)

_log = logging.getLogger("taskledger.ledger")

# A status update's completion: its notification id (None for a re-delivery, or on
# failure) and the error (None once it is durable).
UpdateDone: TypeAlias = Callable[[int | None, BaseException | None], None]
# An append's completion: the ids (None on failure) and the error (None once durable).
AppendDone: TypeAlias = Callable[[list[int] | None, BaseException | None], None]


class LedgerLocked(LogOpenError):
    """Another process has the log open for writing."""


class TaskExists(ValueError):
    """``task_created`` for a task id the scheduler already holds (or another thread is
    creating right now): nothing was written. ``state`` is the task's scheduler state, or
    None while the other creation is still being appended."""

    def __init__(self, task_id: str, state: str | None) -> None:
        where = "is being created by another caller" if state is None else f"is {state}"
        super().__init__(f"task {task_id!r} exists already ({where}); task ids are never reused")
        self.task_id = task_id
        self.state = state


class Ledger(LogReader):
    """The task-state engine over one LMDB log folder. Thread-safe.

    Reading the log (events, times, snapshots, states as of a moment) is LogReader's, shared
    with the read-only Ledger of the forensic commands."""

    def __init__(
        self,
        datastore: LMDBDatastore,
        *,
        clock: Callable[[], float] = _time.time,
        lock_fd: int | None = None,
    ) -> None:
        super().__init__(datastore)
        self._clock = clock
        self._lock_fd = lock_fd
        self._packer_lock = threading.Lock()
        self._packer = msgpack.Packer()  # reused (half the cost of packb), under the lock
        self._views_lock = threading.RLock()
        # Agent updates appended or submitted and not yet committed, each with the
        # completions of its re-deliveries that came meanwhile: a re-delivery is answered
        # (as a duplicate) only once the update it repeats is durable.
        self._dedup_lock = threading.Lock()
        self._inflight: dict[tuple[str, str], list[UpdateDone]] = {}
        # Task ids whose TaskCreated is being appended: a concurrent creator of one loses.
        self._creating: set[str] = set()
        # The saga's decisions are serialised by this lock (tick, reconcile, dispatch,
        # resume); `saga_config` may be replaced at any time: it changes later decisions,
        # never the recorded ones.
        self._saga_lock = threading.RLock()
        self.saga_config = SagaConfig()
        self._state = self.load(None)
        self._unique = datastore.db("unique")
        self._index_update_keys()
        # "As of a time" (id_at): what is not indexed yet is scanned once now; from here
        # on the committing thread notes each append's smallest time (no scan).
        self._times = time_index.Minima(time_index.catch_up(datastore, self._recorder))
        # Told of every append (latency, kinds), commit (batch size) and, if it has
        # `observe`, each committed event in order: tools.metrics.Metrics.
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
        background_commits: bool = True,
    ) -> Ledger:
        """Opens (creating if missing) the log in folder ``path`` for writing.

        Only one process may write a log: a second one gets ``LedgerLocked``. With
        ``background_commits=False`` submissions (``submit``, ``submit_status_update``)
        are committed only by the next waiting call or ``flush()``, in its thread: a
        deterministic simulation steps the pipeline so.
        """
        path = os.fspath(path)
        datastore = LMDBDatastore.open(
            path,
            map_size=map_size,
            max_map_size=max_map_size,
            durable=durable,
            background_commits=background_commits,
        )
        lock_fd = None
        try:
            lock_fd = _lock(datastore.path)
            return cls(datastore, clock=clock, lock_fd=lock_fd)
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)  # releases the flock: a later open must not find it held
            datastore.close()
            raise

    def close(self, *, flush: bool = True) -> None:
        """Closes the log; the Ledger cannot be used afterwards. Submissions not committed
        yet are committed first, unless ``flush`` is False: then they are dropped, as a
        killed process drops them (their ``done`` is told the log is closed)."""
        if flush and not self._store.closed:
            self._store.flush()
        with contextlib.suppress(PersistenceError):  # a full log: the next open scans
            self._write_times()
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

    # -- the scheduler's facts ---------------------------------------------------------------
    def task_created(
        self, task_id: str, *, job: str, instance: int = 0, time: float | None = None
    ) -> int:
        """The scheduler created a task; returns its notification id once durable.

        A task id is created once: ``TaskExists`` (naming the task's state) if the scheduler
        holds it already, whatever its state, or if another thread is creating it now
        (exactly one concurrent creator wins); nothing is written then. A scheduler that
        retries after a crash reopens the log, whose views say what it created; a repeat is
        refused rather than ignored, so two instances given one id by a bug are caught.
        """
        _check_text("task_id", task_id)
        _check_text("job", job)
        event = TaskCreated(self._now(time), None, task_id, job, instance)
        with self._dedup_lock:
            if task_id in self._creating:
                raise TaskExists(task_id, None)
            state = self._state.views.scheduler.get(task_id)
            if state is not None:
                raise TaskExists(task_id, state)
            self._creating.add(task_id)
        try:
            return self._append_one(event)
        finally:
            with self._dedup_lock:
                self._creating.discard(task_id)

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
        None if it is a re-delivery of an update already recorded (same task and uuid, the
        latest or any earlier one): that changes nothing and should be acknowledged again.
        A malformed status raises a ``MalformedStatus`` (a ValueError) naming the field;
        nothing is written.
        """
        at = self._now(time)
        # A timestamp may lie at most a day after its receipt: after the event's time, or
        # the machine's clock when that is later (a virtual clock may run far behind it).
        event = status_from_mesos(status, time=at, received=max(at, _time.time()))
        if event.uuid is None:  # a master's answer: no identity to repeat
            return self._append_one(event)
        key = (event.task_id, event.uuid)
        with self._dedup_lock:
            waiters = self._inflight.get(key)
            if waiters is None:
                # The task's latest update (what agents re-send) is known without a lookup.
                if self._state.last_uuid.get(event.task_id) == event.uuid:
                    return None
                self._inflight[key] = []
            else:
                settled = _Settled()  # being appended already: wait until it is durable
                waiters.append(settled)
        if waiters is not None:
            return settled.wait()
        error: BaseException | None = None
        try:
            return self.append((event,), unique_keys=(update_key(*key),))[0]
        except DuplicateKey:
            return None  # an older update, recorded before: the log's unique index knew it
        except BaseException as e:
            error = e
            raise
        finally:
            self._settle(key, error)

    def submit_status_update(
        self, status: dict[str, Any], *, done: UpdateDone, time: float | None = None
    ) -> None:
        """``status_update`` without the wait: queues the update for the next group commit
        and returns. ``done(nid, error)`` is called once: with the id once the update is
        durable and in the views (safe to acknowledge), with None for a re-delivery once
        the update it repeats is durable (also when that one is still in flight: a
        re-delivery is never answered before its original), or with the error if it
        could not be written. Submissions are written in the order they are made, so a
        task's updates keep their order. ``done`` runs on the committing thread (see
        ``LMDBDatastore.submit``): quick, and it must not wait for an append. A malformed
        status raises ``MalformedStatus`` here, and nothing is queued.
        """
        event = status_from_mesos(status, time=self._now(time))
        if event.uuid is None:  # a master's answer: batched with its neighbours, never a dup

            def answered(ids: list[int] | None, error: BaseException | None) -> None:
                done(None if ids is None else ids[0], error)

            self.submit((event,), done=answered)
            return
        key = (event.task_id, event.uuid)
        with self._dedup_lock:
            waiters = self._inflight.get(key)
            if waiters is not None:
                waiters.append(done)  # told when the one in flight is durable
                return
            duplicate = self._state.last_uuid.get(event.task_id) == event.uuid
            if not duplicate:
                self._inflight[key] = []
        if duplicate:
            done(None, None)
            return

        def recorded(ids: list[int] | None, error: BaseException | None) -> None:
            if isinstance(error, DuplicateKey):
                error = None  # an older update, recorded before: a re-delivery
            try:
                done(None if ids is None else ids[0], error)
            finally:
                self._settle(key, error)

        try:
            self.submit((event,), done=recorded, unique_keys=(update_key(*key),))
        except BaseException as e:
            self._settle(key, e)
            raise

    def _settle(self, key: tuple[str, str], error: BaseException | None) -> None:
        """The update ``key`` is durable (or failed with ``error``): its re-deliveries that
        came meanwhile are answered."""
        with self._dedup_lock:
            waiters = self._inflight.pop(key, [])
        for waiter in waiters:
            try:
                waiter(None, error)
            except Exception:
                _log.exception("a status update's completion failed")

    def update_recorded(self, task_id: str, uuid: str) -> bool:
        """Whether the update of ``task_id`` with ``uuid`` is in the log (any of them, not
        only the latest)."""
        key = update_key(task_id, uuid)
        return self._store.read(lambda txn: txn.get(key, db=self._unique)) is not None

    def _index_update_keys(self) -> None:
        """Adds the unique keys of updates appended without one (by a build before the
        index, or after the last keyed batch): the index then covers the whole log."""
        stored = self._store.read(lambda txn: txn.get(UNIQUE_UPTO, db=self._unique))
        first = 1 if stored is None else int.from_bytes(stored, "big") + 1
        last = self.last_id
        if first > last:
            return
        items: list[tuple[bytes, bytes]] = []
        for nid, event in self.events(first, last):
            if type(event) is StatusUpdateReceived and event.uuid is not None:
                items.append((update_key(event.task_id, event.uuid), nid.to_bytes(8, "big")))
            if len(items) >= 100_000:  # in slices: a long log does not sit in memory
                self._put_update_keys(items, nid)
                items = []
        self._put_update_keys(items, last)

    def _put_update_keys(self, items: list[tuple[bytes, bytes]], upto: int) -> None:
        def put(txn: Any, batch: Any) -> None:
            # Keys already there (written with their update) are left as they are.
            txn.cursor(db=self._unique).putmulti(sorted(items), overwrite=False)
            txn.put(UNIQUE_UPTO, upto.to_bytes(8, "big"), db=self._unique)

        self._store.write(put)

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

    def clock_stepped(self, *, time: float, previous: float, elapsed: float) -> int:
        """The wall clock stepped from ``previous`` to ``time`` while a monotonic clock
        measured ``elapsed`` seconds (engine/clock_watch.py detects it): recorded for
        audits. Decisions do not depend on it (the schedules survive a step by
        themselves), so a replay decides nothing differently with or without it."""
        event = ClockStepped(
            check_time("time", time),
            None,
            check_time("previous", previous),
            check_time("elapsed", elapsed),
        )
        return self._append_one(event)

    # -- appending -----------------------------------------------------------------------------
    def append(
        self, events: Sequence[NamedTuple], unique_keys: Sequence[bytes | None] = ()
    ) -> list[int]:
        """Appends events (engine.events records) durably; returns their ids.

        ``unique_keys`` (one per event, None for events without one) are enforced: if one
        is in the log already, nothing of this call is written and ``DuplicateKey`` is
        raised (status_update and ingest pass ``dedup.update_key``s). Without them, every
        agent update (a StatusUpdateReceived with a uuid) still has its key recorded, not
        enforced: appending is recording facts, and the log's unique index then holds every
        update's key, whichever way it was appended."""
        if not events:
            return []
        _check_event_times(events)
        unique_keys, enforce = _keys_of(events, unique_keys)
        started = _time.perf_counter()
        ids = self._store.append(
            self._stored(events), context=events, unique_keys=unique_keys, enforce_unique=enforce
        )
        if self.observer is not None:
            self.observer.observe_append(_time.perf_counter() - started, events)
        return ids

    def submit(
        self,
        events: Sequence[NamedTuple],
        *,
        done: AppendDone,
        unique_keys: Sequence[bytes | None] = (),
    ) -> None:
        """``append`` without the wait: queues the events for the next group commit and
        returns; ``done(ids, error)`` is called once, on the committing thread, when they
        are durable and in the views (or failed: ``DuplicateKey``, ``LogFull``, ...).
        The events of one call are written together, in the order of the calls."""
        if not events:
            done([], None)
            return
        _check_event_times(events)
        unique_keys, enforce = _keys_of(events, unique_keys)
        # The observer hears of a commit's submissions together (_after_commit): one call
        # per answer of a 100k-task reconciliation would cost more than the answers.
        self._store.submit(
            self._stored(events),
            done=done,
            context=events,
            unique_keys=unique_keys,
            enforce_unique=enforce,
        )

    def submit_replicated(self, stored: Sequence[StoredEvent], *, done: AppendDone) -> None:
        """Queues events another replica wrote, exactly as it stored them (topic and state
        bytes), for the next group commit: a follower's copy of a replicated log
        (engine/replication.py). They are decoded here (``UnreadableEvent`` if one cannot
        be, and nothing is queued) for the views, and their agent updates' keys recorded,
        as ``submit`` does; positions are this log's own, in the order of the calls."""
        records = [(0, [STREAM_WIRE, s.originator_version, s.topic, s.state]) for s in stored]
        events = [event for _, event in decode_records(records)]
        if len(events) != len(stored):
            raise ValueError("a replicated event is not one of the Ledger's stream")
        unique_keys, enforce = _keys_of(events, ())
        self._store.submit(
            [StoredEvent(LEDGER_STREAM, None, s.topic, s.state) for s in stored],
            done=done,
            context=events,
            unique_keys=unique_keys,
            enforce_unique=enforce,
        )

    def flush(self) -> None:
        """Returns once everything submitted before is durable (commits it in this thread
        if no commit is in progress)."""
        self._store.flush()

    def pending_submissions(self) -> int:
        """Submissions queued and not committed yet."""
        return self._store.pending_submissions()

    def _stored(self, events: Sequence[NamedTuple]) -> list[StoredEvent]:
        with self._packer_lock:
            pack = self._packer.pack
            return [StoredEvent(LEDGER_STREAM, None, e.topic, pack(to_wire(e))) for e in events]

    def _append_one(self, event: NamedTuple) -> int:
        return self.append((event,))[0]

    def _after_commit(self, requests: list[Any]) -> None:
        """Runs in the committing thread, in commit order, before appenders return."""
        with self._views_lock:
            for request in requests:
                if request.context is None:
                    continue  # not a Ledger append (another application in the same log)
                ids, events = request.result, request.context
                for nid, event in zip(ids, events, strict=True):
                    self._state.apply(nid, event)
                if ids:  # one append's ids are consecutive; its times checked finite
                    self._times.note(ids[0], ids[-1], min(map(_TIME_OF, events)))
        observer = self.observer
        if observer is None:
            return
        try:
            # Events only: a write() in the batch (a snapshot, keys) has no ids.
            observer.observe_commit(sum(len(r.events) for r in requests if r.events is not None))
            submitted = [r for r in requests if r.callback is not None and r.context]
            if submitted:
                # One sample for the commit's submissions: the oldest one's wait.
                waited = _time.perf_counter() - min(r.submitted for r in submitted)
                observer.observe_append(waited, [e for r in submitted for e in r.context])
            observe = getattr(observer, "observe", None)
            if observe is not None:
                for request in requests:
                    for event in request.context or ():
                        observe(event)
        except Exception:  # the batch is durable and in the views: a metric is not worth more
            _log.exception("the ledger's observer failed")

    def _now(self, time: float | None) -> float:
        if time is None:
            return check_time("the ledger's clock", self._clock())
        return check_time("time", time)

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

    @contextlib.contextmanager
    def reading(self) -> Iterator[Ledger]:
        """Holds the views still while inside: no commit applies meanwhile (keep it short).
        For a reader that walks a whole view from another thread (the metrics' gauges)."""
        with self._views_lock:
            yield self

    def drift(self) -> list[Drift]:
        """The current disagreements, each with its cell of the table (empty if none). Every
        one of them: launches in flight too (ASSIGNED, Mesos silent so far), which
        `taskledger drift` and the metrics show apart (tools/forensics/launches.py)."""
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

    def id_at(self, timestamp: float) -> int:
        """As ``LogReader.id_at``; a long tail the time index does not cover yet (a Ledger
        that has not snapshotted for a while) is indexed first, so it is scanned once."""
        if time_index.unindexed(self._store, self._recorder) > _UNINDEXED_SCAN:
            self._write_times()
        return super().id_at(timestamp)

    def _write_times(self) -> None:
        """Writes the time index's bounds noted since the last write (engine/time_index.py)."""
        with self._views_lock:
            noted = self._times.take()
        try:
            time_index.write(self._store, self._recorder, noted)
        except BaseException:
            with self._views_lock:
                self._times.merge(noted)  # noted again: the next write or open has them
            raise

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
        now = check_time("now", now)
        with self._saga_lock:
            with self._views_lock:
                state = self._state
                events = _saga.start_run(
                    state.saga, state.views, kind, trigger, now, self.saga_config
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

        A bad ``now`` (not finite, negative, implausible: engine/times.py) is a ValueError
        naming it before anything is decided or appended. A tick takes up to a few passes (a
        run's start, then its first round), each appended as one transaction; should the log
        refuse a later pass (a full disk), the passes before it stay, and each is a complete
        decision on its own: the next tick continues from them as a restart after a crash
        there would.
        """
        now = check_time("now", now)
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

    def dispatcher(self, send: Callable[..., object], *, asynchronous: bool = False) -> Dispatcher:
        """A dispatcher that sends remote commands through ``send(command)`` and records
        the outcomes in this log (engine/outbox.py says what is sent when, and why a crash
        loses nothing). With ``asynchronous``, ``send(command, done)`` hands the command
        over and tells ``done(error)`` later (engine/mesos/core.py SchedulerCore.send_command):
        a dispatch pass never waits for the master."""

        def plan_at(now: float) -> DispatchPlan:
            now = check_time("now", now)  # before anything is sent or appended
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
            submit=self.submit if asynchronous else None,
            clock=(lambda: self._now(None)) if asynchronous else None,
        )

    def dispatch(self, send: Callable[[PendingCommand], object], *, now: float) -> DispatchReport:
        """One dispatch pass at ``now`` (see ``dispatcher``)."""
        return self.dispatcher(send).dispatch(now=check_time("now", now))

    def resume(self, *, now: float, operator: str, reason: str = "") -> int | None:
        """An operator resumes dispatch after the blast-radius breaker halted it; the
        commands pending now are approved. Returns the event's id, or None if dispatch was
        not halted."""
        now = check_time("now", now)
        _check_text("operator", operator)
        with self._saga_lock:
            if self._state.saga.outbox.halted is None:
                return None
            return self._append_one(DispatchResumed(now, None, operator, reason))

    # -- snapshots -------------------------------------------------------------------------------
    def snapshot(self, *, time: float | None = None) -> SnapshotInfo:
        """Stores the state as of the last commit as a snapshot; returns what it wrote.

        Built by folding the log (from the newest snapshot) in this thread, never from the
        live views, so appends go on meanwhile (LMDB readers do not block the writer).
        """
        started = _time.perf_counter()
        nid = self.last_id
        state = self.load(nid)
        payload = snapshots.encode(nid, self._now(time), state.parts())
        key = snapshot_key(nid)

        def put(txn: Any, batch: Any) -> None:
            txn.put(key, frame(key, payload), db=self._snapshots_db())

        self._store.write(put)
        with contextlib.suppress(PersistenceError):  # kept noted for the next write
            self._write_times()
        return SnapshotInfo(nid, len(payload), _time.perf_counter() - started)

    def prune_snapshots(self, keep: int) -> list[int]:
        """Deletes all but the newest ``keep`` (>= 1) snapshots; returns the ids deleted.
        Only snapshots go: the log itself is never pruned."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1 (the newest snapshot), got {keep!r}")
        doomed = self._snapshot_keys()[keep:]  # newest first
        if not doomed:
            return []

        def delete(txn: Any, batch: Any) -> None:
            db = self._snapshots_db()
            for key in doomed:
                txn.delete(key, db=db)

        self._store.write(delete)
        return sorted(int.from_bytes(key, "big") for key in doomed)


def _check_event_times(events: Sequence[NamedTuple]) -> None:
    """Every event's time is a number within times.MAX_TIME of the epoch (BadTime naming
    the event otherwise). A sum (NaN and infinities survive it), a min and a max over the
    batch in C; only when they fail, a look at each event to name the one at fault."""
    times = list(map(_TIME_OF, events))  # time is field 0 of every kind (engine/events.py)
    try:
        if (
            math.isfinite(sum(times))
            and min(times) >= -MAX_TIME
            and max(times) <= MAX_TIME
            and True not in times  # a bool is a number to sum(); 1.0 and 0.0 look again
            and False not in times
        ):
            return
    except TypeError:  # a time that is not a number: named below
        pass
    for position, event in enumerate(events):
        check_time(f"time of event {position} ({type(event).__name__})", event[0])


def _keys_of(
    events: Sequence[NamedTuple], unique_keys: Sequence[bytes | None]
) -> tuple[Sequence[bytes | None], bool]:
    """The unique keys an append stores, and whether it enforces them (see ``append``)."""
    if unique_keys:
        return unique_keys, True
    keys = [
        update_key(e.task_id, e.uuid)
        if type(e) is StatusUpdateReceived and e.uuid is not None
        else None
        for e in events
    ]
    return (keys if any(keys) else ()), False


class _Settled:
    """A waiting re-delivery: woken with the outcome of the update it repeats."""

    __slots__ = ("_event", "_error")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._error: BaseException | None = None

    def __call__(self, nid: int | None, error: BaseException | None) -> None:
        self._error = error
        self._event.set()

    def wait(self) -> None:
        self._event.wait()
        if self._error is not None:
            raise self._error


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

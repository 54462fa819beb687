"""The LMDB event log, as an eventsourcing persistence module.

``PERSISTENCE_MODULE=engine.store`` with ``LMDB_PATH`` makes any eventsourcing Application
store its events in LMDB, exactly as the library's POPO, SQLite and PostgreSQL modules do.
The Ledger uses the same recorders directly (no aggregate objects on its hot path).

Settings (environment of the Application, or ``LMDBFactory(env={...})``):

=====================  ===========  ==========================================================
key                    default      meaning
=====================  ===========  ==========================================================
LMDB_PATH              (required)   folder of the log; created if missing
LMDB_MAP_SIZE          1 GiB        initial LMDB map size; grows when full
LMDB_MAX_MAP_SIZE      1 TiB        the map never grows past this: the log is then "full"
LMDB_DURABLE           yes          fsync every commit; "no" keeps process-crash safety but
                                    an OS crash or power loss may undo the newest commits
LMDB_MAX_BATCH         10000        most events one group commit writes in one transaction
LMDB_COMMIT_DELAY_US   500          longest a group-commit leader waits for other recent
                                    writers to join its transaction (0: never waits)
TRANSCODER_TOPIC       msgpack      the transcoder of Applications (engine.codec)
=====================  ===========  ==========================================================

Layout inside the LMDB environment (named databases):

* ``meta``: the log's format version and a marker that this is a taskledger log.
* ``notifications``: notification id (8 bytes, big-endian) -> framed record
  ``[originator id, version, topic, state]``; ids are gap-free in commit order.
* ``index``: originator key + version -> notification id, for ``select_events``.
* ``agg:<purpose>``: originator key + version -> framed record, for aggregate recorders
  (snapshots) that are not part of the application sequence.
* ``tracking``: application name -> the highest notification id it has processed.

Group commit: every insert goes through one queue; whichever caller finds no commit in
progress becomes the leader, writes everything queued in one transaction with one fsync,
and wakes the others. Each caller returns only when its own events are durable, and a
conflicting batch fails alone (a nested transaction), writing nothing of itself.

``LMDBDatastore.submit`` queues events without waiting: a commit thread of the store's own
leads whenever the queue's head was submitted that way, and calls each submission's
``done(ids, error)`` once its transaction is durable (or failed), in commit order, after
the after-commit hook. So a stream of submissions is written while the next ones arrive,
many to a transaction: the pipeline the embedded scheduler's ingest is built on. With
``background_commits=False`` no thread is started: submissions wait for the next caller
that writes and waits, or for ``flush()`` (a deterministic simulation steps commits so).
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter
from typing import Any
from uuid import UUID

import lmdb
import msgpack
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DataError,
    InfrastructureFactory,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    OperationalError,
    PersistenceError,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
    Transcoder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from engine.codec import (
    FORMAT_VERSION,
    ChecksumMismatch,
    MsgpackTranscoder,
    NewerFormat,
    frame,
    unframe,
)

_U64 = struct.Struct(">Q")
_MAGIC = b"taskledger-log"
_KEY_FORMAT = b"format"
_KEY_MAGIC = b"magic"
_MAX_KEY = 511  # LMDB's default maximum key size
_SIBLING_WINDOW = 0.005  # a writer seen this recently (seconds) is likely to write again

log = logging.getLogger("taskledger.store")

# What a submission's ``done`` is called with: the notification ids (None on failure) and
# the error (None on success).
Done = Callable[[list[int] | None, BaseException | None], None]


# ----------------------------------------------------------------------------- errors
class LogOpenError(PersistenceError):
    """The log could not be opened; the message names the path and the reason."""


class LogFull(OperationalError):
    """The map reached its limit or the disk is full. Nothing of the failed batch was
    written and everything committed before it is intact; appends resume once there is
    room (raise LMDB_MAX_MAP_SIZE or free disk space)."""


# In the ``unique`` database: the last id of a batch that stored unique keys (a writer that
# derives keys from events indexes older appends from here on, see engine/ledger.py).
UNIQUE_UPTO = b"\x00upto"


class DuplicateKey(IntegrityError):
    """An append whose unique key the log already holds: nothing of it was written."""

    def __init__(self, message: str, *, key: bytes) -> None:
        super().__init__(message)
        self.key = key


class DamagedRecord(DataError):
    """A stored record failed its checksum or could not be decoded."""

    def __init__(self, message: str, *, database: str, key: bytes, position: int | None):
        super().__init__(message)
        self.database = database
        self.key = key
        self.position = position


class CommittedButNotApplied(OperationalError):
    """The append is durable, but what follows it in this process (the after-commit hook,
    e.g. the Ledger's views) failed. Do not append again: reopen to rebuild."""


class NewerLog(LogOpenError):
    """The log was written by a newer taskledger format than this build reads."""


# ----------------------------------------------------------------------------- keys
def encode_originator(originator_id: UUID | str) -> bytes:
    """A key prefix that sorts one originator's events together and never collides."""
    if isinstance(originator_id, UUID):
        return b"\x01" + originator_id.bytes
    raw = originator_id.encode("utf-8")
    # A length prefix, so that "ab" is never a prefix of "ab\x00c".
    return b"\x02" + len(raw).to_bytes(2, "big") + raw


def _originator_prefix(originator_id: UUID | str) -> bytes:
    prefix = encode_originator(originator_id)
    if len(prefix) + _U64.size > _MAX_KEY:
        raise DataError(f"originator id is too long for an LMDB key: {originator_id!r:.80}")
    return prefix


def _event_key(originator_id: UUID | str, version: int) -> bytes:
    if type(version) is not int or version < 0:
        raise IntegrityError(f"originator version must be an int >= 0, got {version!r}")
    return _originator_prefix(originator_id) + _U64.pack(version)


def _originator_from_wire(value: bytes | str) -> UUID | str:
    return UUID(bytes=value) if isinstance(value, bytes) else value


def _originator_to_wire(originator_id: UUID | str) -> bytes | str:
    return originator_id.bytes if isinstance(originator_id, UUID) else originator_id


# ----------------------------------------------------------------------------- datastore
class _ResizeLock:
    """Readers share it; a map resize takes it alone (LMDB forbids resizing while this
    process has any transaction open)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    def __enter__(self) -> None:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def exclusive(self, action: Callable[[], None]) -> None:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            action()
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class _Request:
    """One caller's share of a group commit: either plain events to append (which the
    leader merges with its neighbours' into one write) or an ``apply(txn, batch)``. A
    submitted one (``callback`` set) has no waiting caller: its callback is told instead."""

    __slots__ = (
        "callback",
        "submitted",
        "apply",
        "events",
        "context",
        "unique",
        "enforce",
        "size",
        "thread",
        "wake",
        "done",
        "result",
        "error",
    )

    def __init__(
        self,
        apply: Callable[[Any, _Batch], Any] | None,
        events: Sequence[StoredEvent] | None,
        size: int,
        context: Any = None,
        unique: Sequence[bytes | None] = (),
        enforce: bool = True,
    ) -> None:
        self.callback: Done | None = None
        self.submitted = 0.0  # a submission's time.perf_counter() when it was made
        self.apply = apply
        self.events = events
        self.context = context
        self.unique = unique
        self.enforce = enforce
        self.size = size
        self.thread = threading.get_ident()
        self.wake: Any = None  # a waiting caller's lock (``_submit`` makes it)
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


@dataclass
class _Batch:
    """State of one write transaction shared by the requests in it."""

    txn: Any
    next_id: int
    touched_notifications: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class LMDBDatastore:
    """One LMDB environment, shared by every recorder of one path in this process.

    py-lmdb refuses to open the same path twice in one process, so ``open`` hands out one
    shared instance per real path and closes it when the last user closes.
    """

    _registry: dict[str, LMDBDatastore] = {}
    _registry_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str,
        *,
        map_size: int = 1 << 30,
        max_map_size: int = 1 << 40,
        durable: bool = True,
        max_batch: int = 10_000,
        commit_delay: float = 0.0005,
        readonly: bool = False,
        background_commits: bool = True,
    ) -> LMDBDatastore:
        real = _check_path(path, readonly=readonly)
        with cls._registry_lock:
            store = cls._registry.get(real)
            if store is None:
                store = cls(
                    real, map_size, max_map_size, durable, max_batch, commit_delay, readonly
                )
                store.background_commits = background_commits
                cls._registry[real] = store
            elif store.durable != durable and not readonly:
                # Two users of one path with different durability would silently get the
                # weaker one; refuse instead.
                raise LogOpenError(
                    f"log {real} is already open in this process with "
                    f"LMDB_DURABLE={'yes' if store.durable else 'no'}"
                )
            store._users += 1
            return store

    def __init__(
        self,
        path: str,
        map_size: int,
        max_map_size: int,
        durable: bool,
        max_batch: int,
        commit_delay: float,
        readonly: bool,
    ) -> None:
        self.path = path
        self.durable = durable
        self.readonly = readonly
        self.max_map_size = max_map_size
        self.max_batch = max_batch
        self._users = 0
        self._resize_lock = _ResizeLock()
        self._queue: list[_Request] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # a gathering leader waits here
        self._leader_busy = False
        self._gathering = False
        self._gather_target = 0
        self._recent_writers: dict[int, float] = {}
        self.commit_delay = commit_delay
        # Submissions (``submit``) are led by this thread, started on the first one; it
        # takes the leadership as a token (one release per hand-over).
        self.background_commits = True
        self._committer: threading.Thread | None = None
        self._committer_token = threading.Semaphore(0)
        self._listeners: set[threading.Event] = set()
        self._closed = False
        # Called by the committing leader with the batch's successful requests (their
        # ``result`` holds the notification ids, ``context`` what the appender passed).
        # It must not raise: the batch is already durable.
        self.after_commit: Callable[[list[_Request]], None] | None = None
        # Called by the committing leader inside the batch's write transaction, after its
        # requests ran and before the commit, with the requests that added notifications
        # (their ``result`` holds the ids): a replicated log writes them to its log of
        # record here (engine/replication.py), so that this log holds nothing the other
        # does not. If it raises a PersistenceError, nothing of the batch is written and
        # every request of it fails with that error.
        self.before_commit: Callable[[list[_Request]], None] | None = None
        # Counters for tests and benchmarks: how well group commit batches.
        self.commits = 0
        self.record_packer = msgpack.Packer(use_bin_type=True)  # used by the leader only
        self.committed_requests = 0
        try:
            self.env = lmdb.open(
                path,
                map_size=map_size,
                max_dbs=32,
                subdir=True,
                sync=durable,
                metasync=durable,
                readonly=readonly,
                max_readers=1024,
                create=not readonly,
            )
        except lmdb.InvalidError as e:
            raise LogOpenError(f"{path} is not a taskledger log (not an LMDB file: {e})") from e
        except lmdb.VersionMismatchError as e:
            raise LogOpenError(f"{path} is not a taskledger log (LMDB version: {e})") from e
        except lmdb.Error as e:
            raise LogOpenError(f"cannot open log {path}: {e}") from e
        try:
            self._open_databases()
        except BaseException:
            self.env.close()
            raise

    def _open_databases(self) -> None:
        names = {"meta", "notifications", "index", "tracking"}
        with self.env.begin() as txn:
            existing = {key for key, _ in txn.cursor()}
        if existing and b"meta" not in existing:
            raise LogOpenError(
                f"{self.path} is not a taskledger log (an LMDB environment without "
                "taskledger's format marker)"
            )
        if self.readonly and not existing:
            raise LogOpenError(f"{self.path} is not a taskledger log (it is empty)")
        self.dbs: dict[str, Any] = {}
        if self.readonly:
            for name in names | {k.decode() for k in existing}:
                if name.encode() in existing:
                    self.dbs[name] = self.env.open_db(name.encode(), create=False)
        else:
            with self.env.begin(write=True) as txn:
                for name in names:
                    self.dbs[name] = self.env.open_db(name.encode(), txn=txn)
                meta = self.dbs["meta"]
                if txn.get(_KEY_MAGIC, db=meta) is None:
                    txn.put(_KEY_MAGIC, _MAGIC, db=meta)
                    txn.put(_KEY_FORMAT, bytes([FORMAT_VERSION]), db=meta)
        self._check_format()

    def _check_format(self) -> None:
        with self.env.begin() as txn:
            magic = txn.get(_KEY_MAGIC, db=self.dbs["meta"])
            fmt = txn.get(_KEY_FORMAT, db=self.dbs["meta"])
        if magic != _MAGIC or not fmt:
            raise LogOpenError(f"{self.path} is not a taskledger log (format marker missing)")
        if fmt[0] > FORMAT_VERSION:
            raise NewerLog(
                f"log {self.path} was written by taskledger log format {fmt[0]}; this build "
                f"reads formats up to {FORMAT_VERSION}: upgrade taskledger"
            )

    def db(self, name: str) -> Any:
        """A named database, created on first use (aggregate recorders add their own)."""
        handle = self.dbs.get(name)
        if handle is None:
            if self.readonly:
                raise LogOpenError(f"log {self.path} has no database {name!r}")
            handle = self.env.open_db(name.encode())
            self.dbs[name] = handle
        return handle

    # -- reading ---------------------------------------------------------------------
    def read(self, action: Callable[[Any], Any]) -> Any:
        """Runs ``action(txn)`` in a read transaction."""
        with self._resize_lock:
            try:
                with self.env.begin(buffers=False) as txn:
                    return action(txn)
            except lmdb.MapResizedError:
                pass  # another process grew the map: adopt its size, then try again
        self._resize_lock.exclusive(lambda: self.env.set_mapsize(0))
        with self._resize_lock, self.env.begin(buffers=False) as txn:
            return action(txn)

    def decode(self, database: str, key: bytes, value: bytes, position: int | None) -> list:
        """Checks and unpacks one stored record, naming it in any error."""
        try:
            record = msgpack.unpackb(unframe(key, value), raw=False, use_list=True)
        except NewerFormat as e:
            raise NewerLog(f"log {self.path}: {database} record {key.hex()}: {e}") from e
        except (ChecksumMismatch, ValueError, msgpack.ExtraData, msgpack.FormatError) as e:
            raise self.damaged(database, key, position, str(e)) from e
        # A well-framed record of another shape was not written by this store: as unusable
        # as a damaged one, and named the same way rather than failing later as a TypeError.
        if type(record) is not list or len(record) != 4 or type(record[3]) is not bytes:
            raise self.damaged(
                database, key, position, "not an [originator, version, topic, state] record"
            )
        return record

    def damaged(
        self, database: str, key: bytes, position: int | None, problem: str
    ) -> DamagedRecord:
        """The error for an unusable record, naming where it is."""
        where = f"notification id {position}, " if position is not None else ""
        return DamagedRecord(
            f"damaged record in log {self.path}: {where}database {database!r}, "
            f"key {key.hex()}: {problem}",
            database=database,
            key=key,
            position=position,
        )

    # -- writing: group commit ---------------------------------------------------------
    def append(
        self,
        stored_events: Sequence[StoredEvent],
        context: Any = None,
        unique_keys: Sequence[bytes | None] = (),
        enforce_unique: bool = True,
    ) -> list[int]:
        """Appends events to the application sequence; returns their notification ids
        once they are durable. Concurrent callers share one transaction and one fsync.

        An event whose ``originator_version`` is None gets ``notification id - 1``: a
        single writer's stream whose versions are its positions, assigned inside the
        transaction so that concurrent appenders need not agree on them first.
        ``context`` is handed to the ``after_commit`` hook with the ids.

        ``unique_keys``: none, or one idempotency key (or None) per event, stored in the
        ``unique`` database (opened with ``db("unique")`` first) in the same transaction,
        each mapped to its event's id; ``UNIQUE_UPTO`` there then holds the batch's last id.
        If a key is there already, nothing of this call is written and ``DuplicateKey`` is
        raised to this caller only (a re-delivered update, say); with ``enforce_unique``
        False the keys are only recorded (a key already there keeps its first id).
        """
        if unique_keys and len(unique_keys) != len(stored_events):
            raise ValueError("unique_keys needs one key (or None) per event")
        request = _Request(
            None, stored_events, max(1, len(stored_events)), context, unique_keys, enforce_unique
        )
        return self._submit(request)

    def submit(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        done: Done,
        context: Any = None,
        unique_keys: Sequence[bytes | None] = (),
        enforce_unique: bool = True,
    ) -> None:
        """Queues events for the group commit and returns at once (``append`` without the
        wait); the arguments mean what they mean there.

        ``done(ids, error)`` is called exactly once, by the thread that committed the
        transaction, once it is durable (the ids; the after-commit hook has run) or failed
        (the error, e.g. ``DuplicateKey`` or ``LogFull``: nothing of the submission was
        written). Submissions are written in the order they were made, and ``done`` calls
        come in commit order. ``done`` must be quick and must not wait for an append of
        this store (it runs while its thread leads the group commit); it may submit.
        A closed store fails what is still queued: ``done`` then gets an OperationalError.
        """
        if unique_keys and len(unique_keys) != len(stored_events):
            raise ValueError("unique_keys needs one key (or None) per event")
        request = _Request(
            None, stored_events, max(1, len(stored_events)), context, unique_keys, enforce_unique
        )
        request.callback = done
        request.submitted = time.perf_counter()
        self._check_writable()
        with self._lock:
            self._queue.append(request)
            if self._gathering and len(self._queue) >= self._gather_target:
                self._arrived.notify()
            if self._leader_busy or not self.background_commits:
                return  # the leader takes it in; or it waits for a writer or flush()
            self._leader_busy = True
            self._start_committer()
        self._committer_token.release()

    def flush(self) -> None:
        """Commits everything submitted before this call, in this thread if no commit is
        in progress; returns once it is durable."""
        self._submit(_Request(None, (), 1))

    @property
    def closed(self) -> bool:
        """Whether the store was closed (by its last user)."""
        return self._closed

    def pending_submissions(self) -> int:
        """Submissions queued and not yet committed (for tests and the simulation)."""
        with self._lock:
            return sum(1 for r in self._queue if r.callback is not None)

    def _start_committer(self) -> None:
        """Starts the commit thread if it is not running (called with the queue lock)."""
        if self._committer is None:
            self._committer = threading.Thread(
                target=self._commit_loop, name=f"group commit {self.path}", daemon=True
            )
            self._committer.start()

    def _commit_loop(self) -> None:
        while True:
            self._committer_token.acquire()
            if self._closed:
                return
            try:
                self._lead()
            except Exception:  # its requests were failed and told; the thread goes on
                log.exception("group commit failed")

    def write(self, apply: Callable[[Any, _Batch], Any], size: int = 1) -> Any:
        """Runs ``apply(txn, batch)`` in a shared, durable write transaction.

        If ``apply`` raises, nothing it wrote is kept and the error is raised to this
        caller only; the other callers of the same transaction are not affected.
        """
        return self._submit(_Request(apply, None, size))

    def _check_writable(self) -> None:
        if self._closed:
            raise OperationalError(f"log {self.path} is closed")
        if self.readonly:
            raise OperationalError(f"log {self.path} is open read-only")

    def _submit(self, request: _Request) -> Any:
        self._check_writable()
        # Each waiter sleeps on a lock of its own, released once by the leader, so a
        # commit wakes exactly its writers (no herd fighting over one condition).
        request.wake = threading.Lock()
        request.wake.acquire()
        with self._lock:
            self._queue.append(request)
            # Wake a gathering leader only when its batch is complete: waking it on every
            # arrival costs a thread switch each time.
            if self._gathering and len(self._queue) >= self._gather_target:
                self._arrived.notify()
            lead = not self._leader_busy
            self._leader_busy = True
        if not lead:
            request.wake.acquire()  # until our batch committed, or we are made leader
            if request.done:
                return _outcome(request)
        while not request.done:
            self._lead()
        return _outcome(request)

    def _lead(self) -> None:
        """Commits one batch of the queue, wakes its writers (tells its submitters), hands
        leadership on."""
        me = threading.get_ident()
        with self._lock:
            self._gather()
            queue, cut, total = self._queue, 0, 0
            while cut < len(queue) and (not cut or total + queue[cut].size <= self.max_batch):
                total += queue[cut].size
                cut += 1
            batch = queue[:cut]
            del queue[:cut]  # one move, not one per request (a pipeline queues thousands)
        try:
            self._commit(batch)
        finally:
            for req in batch:
                if req.callback is not None:
                    _tell(req)
                elif req.thread != me:
                    req.wake.release()
            with self._lock:
                # A leader whose own request did not fit in this batch leads the next one.
                mine = any(r.thread == me and r.callback is None for r in self._queue)
                if self._queue and not mine:
                    self._hand_over()
                elif not self._queue:
                    self._leader_busy = False

    def _hand_over(self) -> None:
        """Passes the leadership to the oldest request's side (called with the queue lock,
        leader_busy stays set): its waiting writer, or the commit thread for a submission.
        Without a commit thread, a submission waits for the next waiting writer (or
        flush); if there is none, nobody leads until one comes."""
        head = self._queue[0]
        if head.callback is None:
            head.wake.release()
        elif self.background_commits and not self._closed:
            self._start_committer()
            self._committer_token.release()
        else:
            writer = next((r for r in self._queue if r.callback is None), None)
            if writer is not None:
                writer.wake.release()
            else:
                self._leader_busy = False

    def _gather(self) -> None:
        """Waits briefly for the writers that are likely to come back (called with the
        queue lock held, as leader).

        Without this, concurrent writers split into two groups that alternate, each
        paying its own fsync. Like PostgreSQL's commit_delay/commit_siblings, the leader
        waits at most ``commit_delay`` seconds, and only when other threads wrote within
        the last few milliseconds, so a lone writer never waits.
        """
        now = time.monotonic()
        recent = self._recent_writers
        for request in self._queue:
            recent[request.thread] = now
        if len(recent) > 1024:
            self._recent_writers = recent = {
                t: seen for t, seen in recent.items() if now - seen < _SIBLING_WINDOW
            }
        expected = sum(1 for seen in recent.values() if now - seen < _SIBLING_WINDOW)
        if expected <= 1 or not self.durable or self.commit_delay <= 0:
            return
        deadline = now + self.commit_delay
        self._gathering = True
        self._gather_target = expected
        try:
            while len(self._queue) < expected:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
        finally:
            self._gathering = False

    def _commit(self, requests: list[_Request]) -> None:
        attempts = 0
        while True:
            attempts += 1
            try:
                touched = self._commit_once(requests)
                break
            except lmdb.MapFullError:
                for r in requests:
                    r.error, r.result = None, None
                if not self._grow():
                    _fail_all(
                        requests,
                        LogFull(
                            f"log {self.path} is full: its map reached LMDB_MAX_MAP_SIZE "
                            f"({self.max_map_size} bytes); nothing of this batch was written"
                        ),
                    )
                    return
            except lmdb.MapResizedError:
                self._resize_lock.exclusive(lambda: self.env.set_mapsize(0))
            except lmdb.Error as e:
                _fail_all(requests, _translate_write_error(self.path, e))
                return
            except PersistenceError as e:  # before_commit refused the batch
                _fail_all(requests, e)
                return
            except BaseException as e:
                _fail_all(requests, e)
                raise
            if attempts > 64:  # pragma: no cover - a map that never settles
                _fail_all(requests, OperationalError(f"log {self.path}: resize loop"))
                return
        self.commits += 1
        self.committed_requests += len(requests)
        if self.after_commit is not None:
            # In commit order (leaders take turns), before any writer of the batch returns:
            # what the hook maintains is up to date when an append returns.
            committed = [r for r in requests if r.error is None]
            try:
                self.after_commit(committed)
            except Exception as e:  # a bug in the hook: the batch is durable all the same
                for r in committed:
                    r.error = CommittedButNotApplied(
                        f"events {r.result} are durable in log {self.path}, but the "
                        f"after-commit hook failed: {e!r}"
                    )
        for r in requests:
            r.done = True
        if touched:
            for listener in list(self._listeners):
                listener.set()

    def _commit_once(self, requests: list[_Request]) -> bool:
        """One write transaction for the batch; returns whether notifications were added.

        Conflicts are rare, so every request first runs straight in the shared
        transaction. Only if one fails is the transaction thrown away and the batch run
        again with a nested transaction per request, so the failure stays its own.
        """
        with self._resize_lock:
            touched = self._run_batch(requests, isolate=False)
            if touched is None:
                for r in requests:
                    r.error, r.result = None, None
                touched = self._run_batch(requests, isolate=True)
            return bool(touched)

    def _run_batch(self, requests: list[_Request], *, isolate: bool) -> bool | None:
        txn = self.env.begin(write=True)
        try:
            cursor = txn.cursor(db=self.dbs["notifications"])
            batch = _Batch(
                txn=txn, next_id=(_U64.unpack(cursor.key())[0] if cursor.last() else 0) + 1
            )
            if isolate:
                self._run_isolated(txn, batch, requests)
            elif not self._run_merged(txn, batch, requests):
                txn.abort()
                return None  # a request failed: run again, isolated
            if self.before_commit is not None and batch.touched_notifications:
                self.before_commit([r for r in requests if r.error is None and r.events])
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        return batch.touched_notifications

    def _run_merged(self, txn: Any, batch: _Batch, requests: list[_Request]) -> bool:
        """Runs the requests straight in ``txn``; consecutive plain appends are merged
        into one write. Returns False if any request failed."""
        pending: list[_Request] = []
        try:
            for r in requests:
                if r.events is not None:
                    pending.append(r)
                    continue
                self._append_merged(txn, batch, pending)
                pending = []
                r.result = r.apply(txn, batch)  # type: ignore[misc]
            self._append_merged(txn, batch, pending)
        except (IntegrityError, DataError):
            return False
        return True

    def _append_merged(self, txn: Any, batch: _Batch, requests: list[_Request]) -> None:
        if not requests:
            return
        if len(requests) == 1:
            requests[0].result = self.insert(txn, batch, requests[0].events)  # type: ignore[arg-type]
        else:
            ids = self.insert(txn, batch, [e for r in requests for e in r.events])  # type: ignore[union-attr]
            at = 0
            for r in requests:
                n = len(r.events)  # type: ignore[arg-type]
                r.result = ids[at : at + n]
                at += n
        self._put_unique(txn, requests)

    def _put_unique(self, txn: Any, requests: list[_Request]) -> None:
        """Stores the requests' unique keys (-> their event's id). An enforcing request's
        key already there is a DuplicateKey (the batch is then run again, isolated, and
        only its request fails); a recording request's key already there keeps its id."""
        keyed = [r for r in requests if r.unique]
        if not keyed:
            return
        db = self.dbs.get("unique")
        if db is None:
            raise OperationalError(f"log {self.path}: open db('unique') before appending keys")
        for enforce in (True, False):
            items = [
                (key, _U64.pack(nid))
                for r in keyed
                if r.enforce is enforce
                for key, nid in zip(r.unique, r.result, strict=True)
                if key is not None
            ]
            if not items:
                continue
            _, added = txn.cursor(db=db).putmulti(sorted(items), overwrite=False)
            if enforce and added != len(items):
                # A key already there kept its own id; the ones just added hold ours.
                known = next((k for k, v in items if txn.get(k, db=db) != v), items[0][0])
                raise DuplicateKey(
                    f"log {self.path}: unique key {known.hex()} is already recorded", key=known
                )
        txn.put(UNIQUE_UPTO, _U64.pack(max(r.result[-1] for r in keyed)), db=db)

    def _run_isolated(self, txn: Any, batch: _Batch, requests: list[_Request]) -> None:
        """Each request in a nested transaction, so a failing one writes nothing and
        fails alone."""
        for r in requests:
            start_id = batch.next_id
            child = self.env.begin(write=True, parent=txn)
            try:
                if r.events is not None:
                    r.result = self.insert(child, batch, r.events)
                    self._put_unique(child, [r])
                else:
                    r.result = r.apply(child, batch)  # type: ignore[misc]
            except (IntegrityError, DataError) as e:
                child.abort()
                batch.next_id = start_id
                r.error = e
            else:
                child.commit()

    def _grow(self) -> bool:
        current = self.env.info()["map_size"]
        if current >= self.max_map_size:
            return False
        new = min(current * 2, self.max_map_size)
        self._resize_lock.exclusive(lambda: self.env.set_mapsize(new))
        return True

    def insert(self, txn: Any, batch: _Batch, stored_events: Sequence[StoredEvent]) -> list[int]:
        """Writes events into ``txn`` under the batch's next notification ids."""
        # The append hot path: keys and frames are built in one Python loop, then written
        # with one putmulti per database (a C loop), which is most of what makes batched
        # appends approach raw LMDB speed.
        store = self
        first = batch.next_id
        pack_id = _U64.pack
        pack = store.record_packer.pack  # one per store: a Packer is not thread-safe
        prefixes: dict[UUID | str, bytes] = {}
        index_items = []
        records = []
        nid = first
        for s in stored_events:
            originator, version = s.originator_id, s.originator_version
            if version is None:
                version = nid - 1  # a stream whose versions are its positions (see append)
            prefix = prefixes.get(originator)
            if prefix is None:
                prefix = prefixes[originator] = _originator_prefix(originator)
            if type(version) is not int or version < 0:
                raise IntegrityError(f"originator version must be an int >= 0, got {version!r}")
            nid_key = pack_id(nid)
            index_items.append((prefix + pack_id(version), nid_key))
            wire = originator.bytes if isinstance(originator, UUID) else originator
            records.append((nid_key, frame(nid_key, pack((wire, version, s.topic, s.state)))))
            nid += 1
        if not index_items:
            return []
        # Inserting in key order walks the B-tree once instead of jumping around it.
        index_cursor = txn.cursor(db=store.dbs["index"])
        _, added = index_cursor.putmulti(sorted(index_items), overwrite=False)
        if added != len(index_items):
            raise IntegrityError(_conflict_message(txn, store, index_items, stored_events))
        txn.cursor(db=store.dbs["notifications"]).putmulti(records, append=True)
        batch.next_id = nid
        batch.touched_notifications = True
        return list(range(first, nid))

    # -- notifications ---------------------------------------------------------------
    def listen(self, event: threading.Event) -> None:
        self._listeners.add(event)

    def unlisten(self, event: threading.Event) -> None:
        self._listeners.discard(event)

    def close(self) -> None:
        with self._registry_lock:
            self._users -= 1
            if self._users > 0:
                return
            self._registry.pop(self.path, None)
            self._closed = True
        with self._lock:
            # Submissions still queued are not written (the caller flushes first if it
            # wants them): their submitters are told.
            orphans = [r for r in self._queue if r.callback is not None]
            self._queue[:] = [r for r in self._queue if r.callback is None]
            committer, self._committer = self._committer, None
        _fail_all(orphans, OperationalError(f"log {self.path} is closed"))
        for request in orphans:
            _tell(request)
        if committer is not None:
            self._committer_token.release()  # it finishes its batch, then sees the close
            if committer is not threading.current_thread():
                committer.join()
        self.env.close()


def _tell(request: _Request) -> None:
    """Calls a submission's ``done``; a raising callback is the submitter's bug, logged, and
    must not stop the leader (the other requests of the batch are still to be told)."""
    assert request.callback is not None
    try:
        request.callback(request.result if request.error is None else None, request.error)
    except Exception:
        log.exception("a group-commit callback failed")


def _outcome(request: _Request) -> Any:
    if request.error is not None:
        raise request.error
    return request.result


def _fail_all(requests: list[_Request], error: BaseException) -> None:
    for r in requests:
        r.error, r.done = error, True


def _translate_write_error(path: str, error: lmdb.Error) -> PersistenceError:
    text = str(error)
    code = getattr(error, "errno", None)
    # LMDB flushes pages with pwrite and reports a short write as EIO, so a full disk
    # often arrives as "Input/output error": ask the file system before blaming the disk.
    full = "No space left" in text or code == errno.ENOSPC
    if not full and (code == errno.EIO or "Input/output error" in text):
        full = _free_bytes(path) < _LOW_SPACE
    if full:
        return LogFull(
            f"disk full writing log {path}: nothing of this batch was written; committed "
            "events are intact; free space and retry"
        )
    return OperationalError(f"cannot write log {path}: {text}")


_LOW_SPACE = 1 << 20  # less than this free on the log's file system counts as full


def _free_bytes(path: str) -> int:
    try:
        stat = os.statvfs(path)
    except OSError:
        return 1 << 62  # cannot tell: do not claim the disk is full
    return stat.f_bavail * stat.f_frsize


def _check_path(path: str, *, readonly: bool) -> str:
    """Turns a bad LMDB_PATH into one line that names it."""
    if not path:
        raise LogOpenError("no log path given (set LMDB_PATH)")
    if "\0" in path:  # no file system holds one; os.path would raise a bare ValueError
        raise LogOpenError(f"log path {path!r} contains a NUL byte")
    real = os.path.realpath(path)
    if os.path.exists(real) and not os.path.isdir(real):
        raise LogOpenError(f"log path {path} is a file, not a folder")
    if readonly:
        if not os.path.isdir(real):
            raise LogOpenError(f"no log at {path}: no such folder")
        if not os.path.exists(os.path.join(real, "data.mdb")):
            raise LogOpenError(f"{path} is not a taskledger log (no data.mdb)")
        if not os.access(real, os.R_OK | os.X_OK):
            raise LogOpenError(f"cannot read log {path}: permission denied")
        return real
    try:
        os.makedirs(real, exist_ok=True)
    except PermissionError:
        raise LogOpenError(f"cannot create log folder {path}: permission denied") from None
    except OSError as e:
        raise LogOpenError(f"cannot create log folder {path}: {e.strerror}") from None
    if not os.access(real, os.W_OK | os.X_OK):
        raise LogOpenError(f"cannot write to log folder {path}: permission denied")
    data = os.path.join(real, "data.mdb")
    if os.path.exists(data) and not os.access(data, os.R_OK | os.W_OK):
        raise LogOpenError(f"cannot open log {data}: permission denied")
    return real


# ----------------------------------------------------------------------------- recorders
class LMDBRecorder:
    def __init__(self, datastore: LMDBDatastore) -> None:
        self.datastore = datastore


class LMDBAggregateRecorder(LMDBRecorder, AggregateRecorder):
    """Events kept per originator only (e.g. snapshots): not in the application sequence."""

    def __init__(self, datastore: LMDBDatastore, purpose: str = "events") -> None:
        super().__init__(datastore)
        self.db_name = f"agg:{purpose}"
        # Created here, outside any transaction: LMDB opens a database with a write
        # transaction of its own, which would deadlock inside a group commit.
        self.datastore.db(self.db_name)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        def apply(txn: Any, batch: _Batch) -> None:
            db = self.datastore.db(self.db_name)
            for s in stored_events:
                key = _event_key(s.originator_id, s.originator_version)
                value = frame(key, _pack_record(s))
                if not txn.put(key, value, db=db, overwrite=False):
                    raise IntegrityError(f"Stored event already recorded: {s}")

        self.datastore.write(apply, len(stored_events))
        return None

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        store = self.datastore

        def action(txn: Any) -> list[StoredEvent]:
            out = []
            for key, value in _scan_versions(
                txn, store.db(self.db_name), originator_id, gt, lte, desc, limit
            ):
                out.append(_stored_event(store.decode(self.db_name, key, value, None)))
            return out

        return store.read(action)


class LMDBApplicationRecorder(LMDBRecorder, ApplicationRecorder):
    """Events in the application sequence: gap-free notification ids in commit order."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        if tracking is None:
            return self.datastore.append(stored_events)

        def apply(txn: Any, batch: _Batch) -> list[int]:
            ids = self.datastore.insert(txn, batch, stored_events)
            _insert_tracking(self.datastore, txn, tracking)
            return ids

        return self.datastore.write(apply, max(1, len(stored_events)))

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        store = self.datastore
        notifications = store.dbs["notifications"]

        def action(txn: Any) -> list[StoredEvent]:
            out = []
            for _key, nid in _scan_versions(
                txn, store.dbs["index"], originator_id, gt, lte, desc, limit
            ):
                value = txn.get(nid, db=notifications)
                position = _U64.unpack(nid)[0]
                if value is None:
                    raise DamagedRecord(
                        f"damaged log {store.path}: index points at missing notification "
                        f"id {position}",
                        database="notifications",
                        key=nid,
                        position=position,
                    )
                out.append(_stored_event(store.decode("notifications", nid, value, position)))
            return out

        return store.read(action)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        # start=None means from the beginning; exclusive starts move one along.
        first = 1 if start is None else (start if inclusive_of_start else start + 1)
        wanted = set(topics)
        out: list[Notification] = []
        for nid, record in self.scan(first, stop):
            if wanted and record[2] not in wanted:
                continue
            out.append(
                Notification(
                    id=nid,
                    originator_id=_originator_from_wire(record[0]),
                    originator_version=record[1],
                    topic=record[2],
                    state=record[3],
                )
            )
            if len(out) >= limit:
                break
        return out

    def scan(
        self, first: int = 1, last: int | None = None, chunk: int = 5000
    ) -> Iterator[tuple[int, list]]:
        """Yields ``(notification id, [originator id, version, topic, state])`` in order.

        The fast path for replay: no Notification objects. Reads in chunks so a long scan
        never holds a read transaction (and so a map resize) for long.
        """
        decode = self.datastore.decode
        for rows in self.scan_raw(first, last, chunk):
            for key, value in rows:
                nid = _U64.unpack(key)[0]
                yield nid, decode("notifications", key, value, nid)

    def scan_raw(
        self, first: int = 1, last: int | None = None, chunk: int = 5000
    ) -> Iterator[list[tuple[bytes, bytes]]]:
        """The notification records with ids in [first, last], as stored: lists of up to
        ``chunk`` (key, framed value) pairs, in order, each list read in one short read
        transaction. Nothing is checked: ``LMDBDatastore.decode`` checks and unpacks one
        (the replay kernel, engine/replay.py, checks the common ones itself)."""
        store = self.datastore
        notifications = store.dbs["notifications"]
        position = max(first, 1)
        bound = None if last is None else _U64.pack(last)
        while last is None or position <= last:

            def action(txn: Any, position: int = position) -> list[tuple[bytes, bytes]]:
                cursor = txn.cursor(db=notifications)
                if not cursor.set_range(_U64.pack(position)):
                    return []
                return list(islice(cursor, chunk))

            rows = store.read(action)
            complete = len(rows) == chunk
            if bound is not None and rows and rows[-1][0] > bound:
                del rows[bisect_right(rows, bound, key=itemgetter(0)) :]
                complete = False
            if rows:
                yield rows
            if not complete:
                return
            position = _U64.unpack(rows[-1][0])[0] + 1

    def max_notification_id(self) -> int | None:
        notifications = self.datastore.dbs["notifications"]

        def action(txn: Any) -> int | None:
            cursor = txn.cursor(db=notifications)
            return _U64.unpack(cursor.key())[0] if cursor.last() else None

        return self.datastore.read(action)

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return LMDBSubscription(recorder=self, gt=gt, topics=topics)


class LMDBSubscription(ListenNotifySubscription[LMDBApplicationRecorder]):
    """Delivers notifications as they commit. Appends from this process wake it at once;
    it also polls, so a follower in another process sees appends within a poll period."""

    poll_interval = 0.25

    def __init__(
        self, recorder: LMDBApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()
    ) -> None:
        # The listener must exist before the pull thread starts (in super().__init__).
        self._wakeup = threading.Event()
        recorder.datastore.listen(self._wakeup)
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._has_been_notified = self._wakeup

    def _loop_on_pull(self) -> None:
        try:
            self._pull()
            while not self._has_been_stopped:
                self._wakeup.wait(timeout=self.poll_interval)
                self._pull()
        except BaseException as e:
            if self._thread_error is None:
                self._thread_error = e
            self.stop()

    def _pull(self) -> None:
        # The base class clears its own event; ours is the one writers set.
        self._wakeup.clear()
        super()._pull()

    def stop(self) -> None:
        super().stop()
        self._wakeup.set()
        self._recorder.datastore.unlisten(self._wakeup)


class LMDBTrackingRecorder(LMDBRecorder, TrackingRecorder):
    def insert_tracking(self, tracking: Tracking) -> None:
        def apply(txn: Any, batch: _Batch) -> None:
            _insert_tracking(self.datastore, txn, tracking)

        self.datastore.write(apply)

    def max_tracking_id(self, application_name: str) -> int | None:
        tracking = self.datastore.dbs["tracking"]

        def action(txn: Any) -> int | None:
            value = txn.get(application_name.encode("utf-8"), db=tracking)
            return None if value is None else _U64.unpack(value)[0]

        return self.datastore.read(action)


class LMDBProcessRecorder(LMDBTrackingRecorder, LMDBApplicationRecorder, ProcessRecorder):
    pass


def _insert_tracking(store: LMDBDatastore, txn: Any, tracking: Tracking) -> None:
    db = store.dbs["tracking"]
    key = tracking.application_name.encode("utf-8")
    current = txn.get(key, db=db)
    if current is not None and _U64.unpack(current)[0] >= tracking.notification_id:
        raise IntegrityError(
            f"Tracking notification ID {tracking.notification_id} not greater than current "
            f"max tracking ID {_U64.unpack(current)[0]}"
        )
    txn.put(key, _U64.pack(tracking.notification_id), db=db)


def _conflict_message(
    txn: Any, store: LMDBDatastore, index_items: list, stored_events: Sequence[StoredEvent]
) -> str:
    """Names the first event of a failed batch that was already recorded (or repeated)."""
    seen: set[bytes] = set()
    index = store.dbs["index"]
    for (key, nid_key), s in zip(index_items, stored_events, strict=True):
        if key in seen or txn.get(key, db=index) != nid_key:
            return (
                f"Stored event already recorded: {s.originator_id!r} version {s.originator_version}"
            )
        seen.add(key)
    return "Stored events conflict with recorded events"  # pragma: no cover


def _pack_record(s: StoredEvent) -> bytes:
    return msgpack.packb(
        [_originator_to_wire(s.originator_id), s.originator_version, s.topic, bytes(s.state)],
        use_bin_type=True,
    )


def _stored_event(record: list) -> StoredEvent:
    return StoredEvent(
        originator_id=_originator_from_wire(record[0]),
        originator_version=record[1],
        topic=record[2],
        state=record[3],
    )


def _scan_versions(
    txn: Any,
    db: Any,
    originator_id: UUID | str,
    gt: int | None,
    lte: int | None,
    desc: bool,
    limit: int | None,
) -> Iterator[tuple[bytes, bytes]]:
    prefix = encode_originator(originator_id)
    low = prefix + _U64.pack(0 if gt is None else gt + 1)
    high = prefix + (_U64.pack(lte) if lte is not None else b"\xff" * 8)
    cursor = txn.cursor(db=db)
    if desc:
        # Position on the last key <= high, walking backwards.
        if cursor.set_range(high):
            if cursor.key() > high and not cursor.prev():
                return
        elif not cursor.last():
            return
        items = cursor.iterprev(keys=True, values=True)
        in_range = lambda k: low <= k <= high  # noqa: E731
    else:
        if not cursor.set_range(low):
            return
        items = cursor.iternext(keys=True, values=True)
        in_range = lambda k: k <= high  # noqa: E731
    for count, (key, value) in enumerate(items, start=1):
        if not key.startswith(prefix) or not in_range(key):
            break
        yield key, value
        if limit is not None and count >= limit:
            break


# ----------------------------------------------------------------------------- factory
class LMDBFactory(InfrastructureFactory[LMDBTrackingRecorder]):
    """The eventsourcing infrastructure factory for ``PERSISTENCE_MODULE=engine.store``."""

    LMDB_PATH = "LMDB_PATH"
    LMDB_MAP_SIZE = "LMDB_MAP_SIZE"
    LMDB_MAX_MAP_SIZE = "LMDB_MAX_MAP_SIZE"
    LMDB_DURABLE = "LMDB_DURABLE"
    LMDB_MAX_BATCH = "LMDB_MAX_BATCH"
    LMDB_COMMIT_DELAY_US = "LMDB_COMMIT_DELAY_US"

    aggregate_recorder_class = LMDBAggregateRecorder
    application_recorder_class = LMDBApplicationRecorder
    tracking_recorder_class = LMDBTrackingRecorder
    process_recorder_class = LMDBProcessRecorder

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        path = self.env.get(self.LMDB_PATH)
        if not path:
            keys = ", ".join(self.env.create_keys(self.LMDB_PATH))
            raise OSError(f"LMDB path not found in environment with keys: {keys}")
        self.datastore = LMDBDatastore.open(
            path,
            map_size=self._int(self.LMDB_MAP_SIZE, 1 << 30),
            max_map_size=self._int(self.LMDB_MAX_MAP_SIZE, 1 << 40),
            durable=bool(strtobool(self.env.get(self.LMDB_DURABLE, "yes") or "yes")),
            max_batch=self._int(self.LMDB_MAX_BATCH, 10_000),
            commit_delay=self._int(self.LMDB_COMMIT_DELAY_US, 500, zero_ok=True) / 1e6,
        )

    def _int(self, key: str, default: int, *, zero_ok: bool = False) -> int:
        text = (self.env.get(key) or "").strip()
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise OSError(f"{key} must be a whole number, got {text!r}") from None
        if value < 0 or (value == 0 and not zero_ok):
            raise OSError(f"{key} must be positive, got {value}")
        return value

    def transcoder(self) -> Transcoder:
        if self.env.get(self.TRANSCODER_TOPIC):
            return super().transcoder()
        return MsgpackTranscoder()

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return self.aggregate_recorder_class(self.datastore, purpose)

    def application_recorder(self) -> ApplicationRecorder:
        cls = self._topic_class(self.APPLICATION_RECORDER_TOPIC, self.application_recorder_class)
        return cls(self.datastore)

    def tracking_recorder(
        self, tracking_recorder_class: type[LMDBTrackingRecorder] | None = None
    ) -> LMDBTrackingRecorder:
        if tracking_recorder_class is None:
            tracking_recorder_class = self._topic_class(
                self.TRACKING_RECORDER_TOPIC, self.tracking_recorder_class
            )
        return tracking_recorder_class(self.datastore)

    def process_recorder(self) -> ProcessRecorder:
        cls = self._topic_class(self.PROCESS_RECORDER_TOPIC, self.process_recorder_class)
        return cls(self.datastore)

    def _topic_class(self, key: str, default: type) -> type:
        topic = self.env.get(key)
        return resolve_topic(topic) if topic else default

    def close(self) -> None:
        if self.datastore is not None:
            self.datastore.close()
            self.datastore = None  # type: ignore[assignment]


Factory = LMDBFactory

"""Leader election and the leader's epoch, over ZooKeeper (kazoo).

Every replica campaigns for one kazoo lock (ephemeral sequential znodes under
``<path>/candidates``; the lowest leads). The winner then bumps the epoch: one ZooKeeper
transaction that checks its own lock node still exists and sets ``<path>/epoch`` at the
version it read. The znode's version is the epoch: it grows by exactly one per successful
bump, and only a replica that still holds the lock can bump, so epochs are gap-free and
each has exactly one leader. The epoch is what the leader's appends carry
(engine/postgres_log.py refuses an older one); ZooKeeper alone cannot stop a deposed leader
that does not know it yet (a SIGSTOPped process resumes writing before kazoo notices), the
fence in the log does.

Changes are reported to ``on_change(Change)`` (engine/leadership.py: ELECTED, SUSPENDED,
RECONNECTED, LOST, RESIGNED and the role after each) from one thread of the election's own,
in order. On SUSPENDED the leader must stop acting at once (stop appending, stop calling
Mesos); on RECONNECTED it leads again at the same epoch; on LOST it is a standby and
campaigns again. ``resign()`` (for SIGTERM) deletes the lock node, so a standby wins at
once instead of after the session timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    CancelledError,
    ConnectionClosedError,
    KazooException,
    NoNodeError,
)
from kazoo.recipe.lock import Lock
from kazoo.retry import KazooRetry

from engine.leadership import Change, Leadership, Role, Signal

log = logging.getLogger(__name__)

_KAZOO_SIGNALS = {
    KazooState.SUSPENDED: Signal.SUSPENDED,
    KazooState.LOST: Signal.LOST,
    KazooState.CONNECTED: Signal.RECONNECTED,
}
_STOP = object()


class ElectionError(RuntimeError):
    """The election could not start (ZooKeeper unreachable, a bad path); says why."""


class Election:
    """One replica's campaign for leadership of ``path`` on the ZooKeeper ensemble
    ``hosts`` (``host:port,...``, optionally with a chroot: ``host:port/chroot``)."""

    def __init__(
        self,
        hosts: str,
        path: str,
        replica: str,
        on_change: Callable[[Change], None],
        *,
        session_timeout: float = 10.0,
        connect_timeout: float = 15.0,
    ) -> None:
        if not path.startswith("/") or path.endswith("/"):
            raise ElectionError(f"an election path is absolute, without a trailing /: {path!r}")
        if not replica or "/" in replica:
            raise ElectionError(f"a replica name is non-empty, without '/': {replica!r}")
        self.hosts = hosts
        self.path = path
        self.replica = replica
        self.connect_timeout = connect_timeout
        self.session_timeout = session_timeout
        self._on_change = on_change
        self.client = KazooClient(
            hosts=hosts,
            timeout=session_timeout,
            # Reconnect for ever: a replica outlives ZooKeeper's restarts.
            connection_retry=KazooRetry(max_tries=-1, max_delay=1.0),
            # Other commands give up after a session timeout: by then ZooKeeper has
            # expired the session, and its lock node with it.
            command_retry=KazooRetry(max_tries=-1, max_delay=1.0, deadline=session_timeout),
        )
        # The epoch bump waits out connection losses (a ZooKeeper restart) however long.
        self._patient = KazooRetry(max_tries=-1, max_delay=1.0)
        self._leadership = Leadership()
        self._signals: queue.Queue = queue.Queue()
        self._lock: Lock | None = None
        self._stopping = threading.Event()
        self._lost = threading.Condition()
        self._sessions_lost = 0
        self._was_disconnected = False
        self._campaign: threading.Thread | None = None
        self._dispatcher: threading.Thread | None = None

    @property
    def candidates_path(self) -> str:
        return f"{self.path}/candidates"

    @property
    def epoch_path(self) -> str:
        return f"{self.path}/epoch"

    @property
    def leadership(self) -> Leadership:
        """The role and epoch as last reported to ``on_change``."""
        return self._leadership

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Election:
        """Connects and starts campaigning (in a thread of its own); returns at once
        after the connection is made. Raises ``ElectionError`` if it cannot be."""
        self.client.add_listener(self._on_kazoo_state)
        try:
            self.client.start(timeout=self.connect_timeout)
            self.client.ensure_path(self.candidates_path)
            self.client.ensure_path(self.epoch_path)
        except (KazooException, self.client.handler.timeout_exception) as e:
            self.client.stop()
            self.client.close()
            raise ElectionError(
                f"cannot reach ZooKeeper at {self.hosts} for election {self.path}: "
                f"{type(e).__name__} {e}".rstrip()
            ) from None
        self._dispatcher = threading.Thread(
            target=self._dispatch, name=f"election-{self.replica}-changes", daemon=True
        )
        self._dispatcher.start()
        self._campaign = threading.Thread(
            target=self._run, name=f"election-{self.replica}", daemon=True
        )
        self._campaign.start()
        return self

    def resign(self) -> None:
        """Leaves the election: reports RESIGNED (and waits until ``on_change`` has taken
        it: the replica stops acting before anyone else can lead), deletes this replica's
        lock node (a standby wins at once), and closes the session. Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        lock = self._lock
        if lock is not None:
            lock.cancel()  # a campaign still waiting for the lock stops waiting
        if self._dispatcher is not None:
            reported = threading.Event()
            self._signals.put((Signal.RESIGNED, None, reported))
            reported.wait(10)
        if lock is not None and lock.node is not None:
            # Not lock.release(): kazoo's synchronous calls wait with no bound while the
            # connection is down (its retry deadline never starts), and a deposed leader
            # must still exit while ZooKeeper is. After a session timeout ZooKeeper has
            # expired the session, and the node with it; if the session is gone already,
            # so is the node.
            deleted = self.client.delete_async(f"{lock.path}/{lock.node}")
            with contextlib.suppress(KazooException, self.client.handler.timeout_exception):
                deleted.get(timeout=self.session_timeout)
        with self._lost:
            self._lost.notify_all()
        if self._campaign is not None:
            self._campaign.join(10)
        self._signals.put(_STOP)
        if self._dispatcher is not None:
            self._dispatcher.join(10)
        self.client.remove_listener(self._on_kazoo_state)
        self.client.stop()
        self.client.close()

    close = resign

    # -- kazoo's connection thread: must not block ----------------------------------------
    def _on_kazoo_state(self, state: str) -> None:
        if state == KazooState.CONNECTED and not self._was_disconnected:
            return  # the first connection: nothing to report
        self._was_disconnected = state != KazooState.CONNECTED
        if state == KazooState.LOST:
            with self._lost:
                self._sessions_lost += 1
                self._lost.notify_all()
        self._signals.put((_KAZOO_SIGNALS[state], None, None))

    # -- the campaign ------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                won = self._win()
            except CancelledError:
                return
            except Exception as e:
                # Connection trouble while queueing for the lock is retried inside kazoo's
                # recipe; anything else must not end the campaign for good.
                log.error("election %s: campaign interrupted: %r; again", self.path, e)
                self._abandon()
                self._stopping.wait(0.5)
                continue
            if won is None:
                continue  # lost the lock node before the bump: campaign again
            epoch, generation = won
            self._signals.put((Signal.ELECTED, epoch, self.client.client_id))
            # Lead until the session that won is lost (or we resign); then campaign again.
            with self._lost:
                while self._sessions_lost == generation and not self._stopping.is_set():
                    self._lost.wait()
            self._lock = None

    def _win(self) -> tuple[int, int] | None:
        """Blocks until this replica holds the lock; returns the epoch it bumped to and the
        count of sessions lost before the bump, or None if its lock node was gone before
        the bump (its session was lost)."""
        lock = self.client.Lock(self.candidates_path, identifier=self.replica)
        self._lock = lock
        if self._stopping.is_set():
            raise CancelledError()
        lock.acquire()
        if self._stopping.is_set():
            raise CancelledError()  # resigned while winning: resign() deletes the node
        # Counted before the bump: a session lost after this is one the bump ran in (the
        # bump checks the lock node, which dies with its session).
        with self._lost:
            generation = self._sessions_lost
        epoch = self._bump(f"{lock.path}/{lock.node}")
        return None if epoch is None else (epoch, generation)

    def _abandon(self) -> None:
        """Deletes the current lock node, if any: a new campaign must not queue behind it."""
        lock, self._lock = self._lock, None
        if lock is not None:
            with contextlib.suppress(KazooException):
                lock.release()

    def _bump(self, own_node: str) -> int | None:
        """Sets the epoch znode at the version read, if ``own_node`` still exists; returns
        the new version (the epoch), or None once the node is gone (its session was lost)
        or the election is resigning. Waits out connection losses."""
        while not self._stopping.is_set():
            try:
                data, stat = self._patient(self.client.get, self.epoch_path)
                if _bumped_by(data, own_node):
                    return stat.version  # an earlier try committed, but its reply was lost
                record = json.dumps(
                    {"epoch": stat.version + 1, "replica": self.replica, "node": own_node}
                ).encode()
                tx = self.client.transaction()
                tx.check(own_node, 0)  # a lock node is never modified: version 0 while it lives
                tx.set_data(self.epoch_path, record, version=stat.version)
                results = tx.commit()
            except ConnectionClosedError:
                return None  # the client was stopped
            except KazooException:
                self._stopping.wait(0.05)
                continue  # reread: the bump may have committed
            if results[0] is True and not isinstance(results[1], Exception):
                return results[1].version
            if isinstance(results[0], NoNodeError):
                return None
            if not isinstance(results[1], BadVersionError):  # that one: someone bumped; reread
                raise ElectionError(f"election {self.path}: epoch bump failed: {results!r}")
        return None

    # -- reporting ---------------------------------------------------------------------
    def _dispatch(self) -> None:
        while True:
            item = self._signals.get()
            if item is _STOP:
                return
            signal, epoch, extra = item
            if signal is Signal.RESIGNED:
                self._apply(signal, None)
                extra.set()  # resign() waits for this before it deletes the lock node
                continue
            if signal is Signal.ELECTED and extra != self.client.client_id:
                continue  # won in a session since lost: the campaign goes on
            self._apply(signal, epoch)
            if signal is Signal.ELECTED and self.client.state != KazooState.CONNECTED:
                # The connection was suspended between the win and this report: lead, but
                # paused, until it comes back.
                self._apply(Signal.SUSPENDED, None)

    def _apply(self, signal: Signal, epoch: int | None) -> None:
        if self._leadership.role is Role.RESIGNED:
            return
        self._leadership, change = self._leadership.apply(signal, epoch)
        try:
            self._on_change(change)
        except Exception:
            log.exception("election %s: on_change failed for %s", self.path, change)


def _bumped_by(data: bytes, own_node: str) -> bool:
    try:
        return json.loads(data or b"{}").get("node") == own_node
    except (ValueError, AttributeError):
        return False


def read_epoch(client: KazooClient, path: str) -> tuple[int, str | None]:
    """The election's current epoch and the replica that bumped to it (0, None before any)."""
    data, stat = client.get(f"{path}/epoch")
    try:
        replica = json.loads(data or b"{}").get("replica")
    except (ValueError, AttributeError):
        replica = None
    return stat.version, replica

"""A replica of a replicated scheduler: PostgreSQL is the log of record, the Ledger a mirror.

Several `taskledger run --log postgresql://... --zk ...` processes run one scheduler. Each
keeps the log it has applied in a local LMDB Ledger (its mirror: the views hot, snapshots,
the compiled replay and the forensic commands work on it unchanged); the log of record is
PostgreSQL, through engine/postgres_log.py (eventsourcing's recorder, fenced by epochs).
Every event's originator version in PostgreSQL is its position in the mirrors (one
stream, versions 0, 1, 2, ...): a mirror that applied ``n`` events applies version ``n``
next, and PostgreSQL's unique (originator, version) index refuses a second writer of a
position even before the epoch fence does.

* A **follower** tails PostgreSQL (a LISTEN/NOTIFY subscription that also polls) and
  appends what it reads to its mirror, in order.
* The **elected** replica (engine/election.py) takes the log over at its epoch (from then
  on the previous leader's appends are refused), stops tailing, catches up with everything
  recorded, and appends a LeaderElected event: its first. Only then does the runtime
  subscribe to Mesos, reconcile and dispatch what the old leader left pending.
* The **leader** appends through its mirror: inside each of the mirror's write
  transactions, before it commits, the batch goes to PostgreSQL (fenced, group-committed).
  A batch PostgreSQL refuses is not written to the mirror either, so a mirror never holds
  an event the log of record does not; a crash between the two commits leaves the mirror
  one batch behind, and the next start catches up.
* A leader whose ZooKeeper connection is suspended pauses (the gate, engine/gate.py: no
  append, no call to Mesos) until it is back in the same session. A leader that learns it
  was deposed (its session lost, suspended longer than the session, an append fenced or
  failed) shuts the gate for good and tells ``on_deposed``: the runtime stops and the
  process exits non-zero, for its supervisor to start it again as a follower. Exiting is
  simpler than stepping down in place, and as correct: the in-memory state of a leader
  (in-flight updates, the sender's queues, the saga's timers) is dropped with the process,
  and a new one starts from the log.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresDatastore

from engine.election import Election
from engine.events import LeaderElected
from engine.gate import Gate
from engine.leadership import Change, Role, Signal
from engine.ledger import LEDGER_STREAM, STREAM_WIRE, Ledger, decode_records
from engine.log_address import LogAddress
from engine.postgres_log import FencedApplicationRecorder

log = logging.getLogger("taskledger.run.replica")

EVENTS_TABLE = "taskledger_events"
CATCH_UP_CHUNK = 1000
DEPOSED_EXIT = 3  # `taskledger run`'s exit status once it learned it no longer leads


class NotLeading(PersistenceError):
    """An append refused because this replica may not act (paused or deposed); nothing of
    it was written."""


class Diverged(PersistenceError):
    """The log of record holds, at a position, something other than the mirror expects."""


def connect(
    address: LogAddress, password: str, *, table: str = EVENTS_TABLE, connections: int = 2
) -> tuple[PostgresDatastore, FencedApplicationRecorder]:
    """A datastore (at most ``connections`` connections) and the fenced recorder of the log
    at ``address``. Connects lazily: the first call that needs the server fails if it is
    unreachable."""
    datastore = PostgresDatastore(
        address.dbname,
        address.host,
        address.port,
        address.user,
        password,
        schema=address.schema,
        pool_size=max(1, connections // 2),
        max_overflow=connections - max(1, connections // 2),
        connect_timeout=5.0,
    )
    return datastore, FencedApplicationRecorder(datastore, events_table_name=table)


def read_written(recorder: FencedApplicationRecorder, chunk: int = 10_000) -> Iterator[Any]:
    """Every notification of the log of record with its writer, in order, in chunks."""
    start = 1
    while True:
        rows = recorder.select_written(start, limit=chunk)
        yield from rows
        if len(rows) < chunk:
            return
        start = rows[-1].id + 1


def _decoded(stored: StoredEvent) -> Any:
    """One event of the Ledger's stream, decoded from its stored form."""
    [(_, event)] = decode_records([(0, [STREAM_WIRE, 0, stored.topic, stored.state])])
    return event


@dataclass
class ReplicationConfig:
    """A replicated runtime's settings (`taskledger run --log postgresql://... --zk ...`)."""

    log: LogAddress
    zk_hosts: str
    zk_path: str
    replica: str
    password: str = field(default="", repr=False)
    session_timeout: float = 10.0
    table: str = EVENTS_TABLE


class Replica:
    """One replica's part in the replicated log: follows, campaigns, leads (see the module).

    ``on_deposed(reason)`` is told once, from whichever thread learns it first, that this
    replica led and does not any more; the gate is shut by then. ``observer`` (the metrics)
    is told each change of role with ``observe_leadership(leading, epoch)`` if it has it.
    """

    def __init__(
        self,
        config: ReplicationConfig,
        ledger: Ledger,
        *,
        gate: Gate,
        on_deposed: Callable[[str], None],
        observer: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.gate = gate
        self.epoch: int | None = None
        self._on_deposed = on_deposed
        self._observer = observer
        self._times_lag = hasattr(observer, "observe_follower_lag")
        self._clock = clock
        self._elected: int | None = None
        self._elected_event = threading.Event()
        self._leading = False
        self._role = Role.STANDBY
        self._suspended_at: float | None = None
        self._next = ledger.last_id  # the version the mirror applies next
        self._failed: BaseException | None = None
        self._subscription: Any = None
        self._follower: threading.Thread | None = None
        self._stop_following = threading.Event()
        # appends, the subscription's reader and LISTEN threads, take-over, catch-up
        self.datastore, self.recorder = connect(
            config.log, config.password, table=config.table, connections=8
        )
        self.election: Election | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Replica:
        """Creates the log's tables if missing, catches the mirror up, starts following and
        campaigning. Raises if PostgreSQL or ZooKeeper cannot be reached."""
        self.recorder.create_table_if_missing()
        if self._next and self.recorder.position_of(LEDGER_STREAM, self._next - 1) is None:
            raise Diverged(
                f"the mirror {self.ledger.path} holds {self._next} events, and the log "
                f"{self.config.log.text} has no event at position {self._next - 1}: it is "
                "not this log's mirror (give another --local folder)"
            )
        self._catch_up()
        self._report(None)
        self._follower = threading.Thread(target=self._follow, name="replica-follow", daemon=True)
        self._follower.start()
        self.election = Election(
            self.config.zk_hosts,
            self.config.zk_path,
            self.config.replica,
            self._changed,
            session_timeout=self.config.session_timeout,
        ).start()
        return self

    def wait_elected(self, stop: threading.Event) -> int | None:
        """Blocks until this replica wins the election (returns the epoch won) or ``stop``
        is set (returns None); raises what made following fail."""
        while not stop.is_set():
            if self._failed is not None:
                raise self._failed
            if self._elected_event.wait(0.1):
                return self._elected
        return None

    def lead(self, epoch: int) -> None:
        """Takes the log over at ``epoch``, catches up, installs the fenced append path and
        appends LeaderElected. Raises (a ``Fenced``, a ``NotLeading``) if this replica was
        deposed meanwhile: the runtime then exits as deposed."""
        started = time.monotonic()
        self._stop_follower()
        self.ledger.flush()
        self.recorder.take_over(epoch, self.config.replica)
        self._catch_up()
        self.ledger.flush()
        if self._failed is not None:
            raise self._failed
        self.epoch = epoch
        self._leading = True
        self.ledger._store.before_commit = self._replicate
        if self._role is Role.LEADER:
            self.gate.open()
        self.ledger.append((LeaderElected(self._clock(), None, epoch, self.config.replica),))
        log.warning(
            "replica %s: leading at epoch %d (caught up to %d events in %.3f s)",
            self.config.replica,
            epoch,
            self.ledger.last_id,
            time.monotonic() - started,
        )

    def close(self) -> None:
        """Leaves the election (a standby wins at once) and closes the connections. The
        mirror's appends stop first: call it after the runtime's last append."""
        self._stop_follower()
        if self._leading:
            self.gate.shut_for_good("stopped")
        if self.election is not None:
            self.election.resign()
        with contextlib.suppress(Exception):
            self.datastore.close()

    # -- following -----------------------------------------------------------------------
    def _catch_up(self) -> None:
        """Appends to the mirror everything the log of record holds past it, in order."""
        while True:
            chunk = self.recorder.select_events(
                LEDGER_STREAM, gt=self._next - 1, limit=CATCH_UP_CHUNK
            )
            if not chunk:
                return
            self._apply(chunk)
            self.ledger.flush()
            if self._failed is not None:
                raise self._failed

    def _follow(self) -> None:
        try:
            position = 0
            if self._next > 0:
                position = self.recorder.position_of(LEDGER_STREAM, self._next - 1) or 0
            with self.recorder.subscribe(gt=position) as subscription:
                self._subscription = subscription
                if self._stop_following.is_set():
                    return
                for notification in subscription:
                    if self._stop_following.is_set():
                        return
                    if notification.originator_id == LEDGER_STREAM:
                        self._apply([notification], timed=True)
        except Exception as e:
            if not self._stop_following.is_set():
                log.error("replica %s: following the log failed: %r", self.config.replica, e)
                self._failed = e

    def _stop_follower(self) -> None:
        self._stop_following.set()
        subscription = self._subscription
        if subscription is not None:
            subscription.stop()
        if self._follower is not None:
            self._follower.join(10)
            self._follower = None

    def _apply(self, stored: Sequence[StoredEvent], *, timed: bool = False) -> None:
        """Queues the events past the mirror's end for its next commit. ``timed`` (the
        follower's tail, not a catch-up of old events): the observer is told the lag of the
        newest once it is durable in the mirror and folded into the views."""
        fresh = [s for s in stored if s.originator_version >= self._next]
        for offset, s in enumerate(fresh):
            if s.originator_version != self._next + offset:
                raise Diverged(
                    f"log {self.config.log.text}: position {self._next + offset} expected "
                    f"next, found {s.originator_version}: the mirror {self.ledger.path} does "
                    "not follow this log"
                )
        if not fresh:
            return
        self._next += len(fresh)
        # Decoded twice (here and by the ledger) only when someone reads the lag.
        timed = timed and not self._leading and self._times_lag
        written_at = _decoded(fresh[-1]).time if timed else None
        self.ledger.submit_replicated(
            fresh, done=lambda ids, error: self._applied(ids, error, written_at)
        )
        elections = [s for s in fresh if s.topic == LeaderElected.topic]
        if elections and not self._leading:  # a follower's epoch: the leader's it follows
            self._report_leadership(False, _decoded(elections[-1]).epoch)

    def _applied(
        self, ids: list[int] | None, error: BaseException | None, written_at: float | None
    ) -> None:
        if error is not None:
            if self._failed is None:
                self._failed = error
            return
        if written_at is not None:
            # The leader's clock against ours: one machine, or clocks kept by NTP.
            self._observer.observe_follower_lag(self._clock() - written_at)

    # -- leading ---------------------------------------------------------------------------
    def _replicate(self, requests: list[Any]) -> None:
        """The mirror's before_commit: the batch to the log of record first (see module)."""
        while True:
            reason = self.gate.reason
            if reason is None:
                break
            if self.gate.shut:
                raise NotLeading(f"replica {self.config.replica} does not lead: {reason}")
            self.gate.wait(0.25)
        stored = [
            StoredEvent(
                s.originator_id,
                nid - 1 if s.originator_version is None else s.originator_version,
                s.topic,
                s.state,
            )
            for r in requests
            for s, nid in zip(r.events, r.result, strict=True)
        ]
        try:
            self.recorder.insert_events(stored)
        except PersistenceError as e:
            # Fenced (a newer leader), or the log of record failing: either way this
            # replica cannot be sure what it holds any more.
            self._depose(f"an append to the log of record failed: {e}")
            raise

    def _changed(self, change: Change) -> None:
        """The election's report (its own thread, in order)."""
        self._role = change.role
        if change.signal is Signal.ELECTED:
            self._elected = change.epoch
            self._elected_event.set()
        if change.role is Role.PAUSED:
            self.gate.close("the ZooKeeper connection is suspended")
            self._suspended_at = time.monotonic()
            timer = threading.Timer(self.config.session_timeout, self._check_suspended)
            timer.daemon = True
            timer.start()
        elif change.role is Role.LEADER and self._leading:
            self._suspended_at = None
            self.gate.open()
        elif change.role in (Role.STANDBY, Role.RESIGNED) and self._elected is not None:
            if change.role is Role.STANDBY:
                self._depose(f"the ZooKeeper session was lost ({change.signal.value})")
            else:
                self.gate.close("resigned")
        self._report(change)

    def _check_suspended(self) -> None:
        since = self._suspended_at
        if since is not None and time.monotonic() - since >= self.config.session_timeout:
            # ZooKeeper has expired the session by now, and someone else may lead.
            self._depose("the ZooKeeper connection was suspended longer than the session")

    def _depose(self, reason: str) -> None:
        if not self.gate.shut_for_good(reason):
            return
        log.error(
            "replica %s: no longer leading (epoch %s): %s", self.config.replica, self.epoch, reason
        )
        self._report_leadership(False)
        try:
            self._on_deposed(reason)
        except Exception:
            log.exception("replica %s: on_deposed failed", self.config.replica)

    def _report(self, change: Change | None) -> None:
        leading = change is not None and change.role is Role.LEADER
        epoch = None if change is None else change.epoch
        if change is not None:
            log.warning(
                "replica %s: %s (%s), epoch %s",
                self.config.replica,
                change.role.value,
                change.signal.value,
                epoch,
            )
        else:
            log.warning(
                "replica %s: following %s (%d events applied)",
                self.config.replica,
                self.config.log.text,
                self.ledger.last_id,
            )
        self._report_leadership(leading, epoch)

    def _report_leadership(self, leading: bool, epoch: int | None = None) -> None:
        observe = getattr(self._observer, "observe_leadership", None)
        if observe is not None:
            observe(leading, epoch if epoch is not None else self.epoch)

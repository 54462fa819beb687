"""The replicated log of record: eventsourcing's PostgreSQL module, fenced by leader epochs.

``PERSISTENCE_MODULE=engine.postgres_log`` with eventsourcing's ``POSTGRES_*`` settings makes
any eventsourcing Application store its events in PostgreSQL exactly as
``eventsourcing.postgres`` does (same tables, same LISTEN/NOTIFY subscriptions, same
tracking), with two differences, both for running several replicas of one scheduler:

* **Fencing.** Every append carries the epoch of the leader that makes it (and the
  replica's name), and is refused *inside its insert transaction* unless that epoch is the
  one recorded for the log: a deposed leader that wakes up (SIGSTOP, a long GC pause, a
  partition) writes nothing, even before it learns that it lost the election. A new leader
  records its epoch with ``take_over(epoch, replica)`` (a transaction of its own) before
  its first append. The refusal is ``Fenced``; the database raises it as SQLSTATE P0001,
  which eventsourcing's recorders do not retry.
* **Group commit.** Concurrent ``insert_events`` calls share one transaction (see
  engine/group_commit.py): one table lock, one round trip and one WAL flush per batch.

Tables, in the schema of the events (``POSTGRES_SCHEMA``, default ``public``):

* the events table (``<app>_events``) is eventsourcing's, with two more columns, ``epoch``
  and ``replica``: who wrote each event. They are filled by column defaults from two
  transaction-local settings that only the fence function sets, after it has checked the
  epoch: the recorded writer is by construction the one that was checked, the insert
  statement stays eventsourcing's own, and an insert that bypasses the fence (eventsourcing's
  plain module on the same table) fails on NOT NULL instead of writing unfenced events.
  Columns rather than a side table: the writer comes back with each event row in one read,
  at a dozen bytes per event and no extra statement per append.
* ``taskledger_epochs``: one row per log (keyed by the events table's name), the highest
  epoch recorded and the replica that leads it.
* ``taskledger_fence(log, epoch, replica)``: the check. It reads the log's row ``FOR
  SHARE``, so a ``take_over`` waits for appends in flight and every later append sees the
  new epoch: in notification-id order, epochs never decrease.

Notification ids come from PostgreSQL's sequence: increasing in commit order (the table
lock), but not gap-free. An insert that fails after taking ids (a duplicate originator
version, a lost connection before COMMIT) leaves their ids unused, and so does a crash (the
sequence jumps ahead by up to 32 after recovery). A fenced append takes no ids: the fence
raises before the insert runs. A follower must treat ids as positions, not counts: it
resumes after the last id it applied, and a gap is never filled later.

Settings, besides eventsourcing's (an Application's environment, or ``FencedPostgresFactory(
env={...})``):

==========================  =======  ===========================================================
key                         default  meaning
==========================  =======  ===========================================================
TASKLEDGER_REPLICA          (none)   this replica's name; with TASKLEDGER_EPOCH, the factory
TASKLEDGER_EPOCH            (none)   takes over the log at that epoch (a single writer without
                                     an election; an elected leader calls ``take_over`` itself)
TASKLEDGER_MAX_BATCH        1000     most events one group commit writes in one transaction
TASKLEDGER_COMMIT_DELAY_US  500      longest a group-commit leader waits for recent writers
TASKLEDGER_IDLE_TIMEOUT_MS  2000     an append or take-over whose client goes quiet inside its
                                     transaction this long is ended by the server (a stopped
                                     leader must not hold the log's locks)
==========================  =======  ===========================================================

``POSTGRES_ENABLE_DB_FUNCTIONS`` is refused: eventsourcing's insert function skips the table
lock and the hook where the fence runs.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg.errors
from eventsourcing import postgres as es_postgres
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    InterfaceError,
    Notification,
    OperationalError,
    PersistenceError,
    ProcessRecorder,
    ProgrammingError,
    StoredEvent,
    Subscription,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresProcessRecorder,
    PostgresSubscription,
)
from eventsourcing.utils import Environment, EnvType, retry
from psycopg.sql import SQL, Identifier, Literal

from engine.group_commit import GroupCommit, Request

_log = logging.getLogger("taskledger.postgres_log")

EPOCHS_TABLE = "taskledger_epochs"
FENCE_FUNCTION = "taskledger_fence"
# The transaction-local settings the fence sets and the events table's defaults read.
EPOCH_SETTING = "taskledger.epoch"
REPLICA_SETTING = "taskledger.replica"
# The fence's refusals carry this in their message, and what was recorded as JSON in DETAIL.
FENCE_MARKER = "taskledger fence:"
CREATE_LOCK = "taskledger create tables"


# ----------------------------------------------------------------------------- errors
class Fenced(PersistenceError):
    """An append or a take-over by a leader whose epoch is no longer the log's: a newer
    leader has recorded its own. Nothing of the refused call was written. The replica
    must stop acting as leader (stop appending, stop calling Mesos)."""

    def __init__(self, message: str, *, epoch: int, newer: int, holder: str) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.newer = newer
        self.holder = holder


class EpochNotRecorded(PersistenceError):
    """An append whose epoch was never recorded for the log (no ``take_over`` first)."""

    def __init__(self, message: str, *, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch


class NoEpoch(PersistenceError):
    """An append on a recorder that leads no epoch (a standby, or before ``take_over``)."""


@dataclass(frozen=True)
class Lead:
    """The fencing token an append carries: the leader's epoch and the replica's name."""

    epoch: int
    replica: str


@dataclass(frozen=True)
class WrittenNotification(Notification):
    """A notification and who wrote it: the leader's epoch and replica."""

    epoch: int
    replica: str


# ----------------------------------------------------------------------------- recorders
# As eventsourcing's recorder methods are: a connection the server ended (a restart, a
# failover) is replaced, and the call made again. take_over may run twice: the second finds
# its own epoch recorded and changes nothing.
_retried = retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)


class FencedApplicationRecorder(PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL application recorder with fenced, group-committed appends.

    ``take_over(epoch, replica)`` records the epoch and makes this recorder's appends carry
    it; until then appends raise ``NoEpoch``. ``insert_events`` returns the events'
    notification ids once they are committed, or raises ``Fenced`` (a newer epoch is
    recorded), ``IntegrityError`` (an originator version already recorded: only that
    caller fails), or whatever eventsourcing raises.
    """

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        events_table_name: str = "stored_events",
        max_batch: int = 1000,
        commit_delay: float = 0.0005,
        idle_timeout: float = 2.0,
        **kwargs: Any,
    ) -> None:
        if datastore.enable_db_functions:
            raise ProgrammingError(
                f"log {events_table_name}: POSTGRES_ENABLE_DB_FUNCTIONS is on, and "
                "eventsourcing's insert function skips the epoch fence: turn it off"
            )
        super().__init__(datastore, events_table_name=events_table_name, **kwargs)
        self.lead: Lead | None = None  # the fencing token appends carry; see take_over
        self.idle_timeout = idle_timeout
        self.group = GroupCommit(self._commit, max_batch=max_batch, commit_delay=commit_delay)
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.events_table_name)
        epochs = Identifier(self.datastore.schema, EPOCHS_TABLE)
        fence = Identifier(self.datastore.schema, FENCE_FUNCTION)
        # Replicas start together: without this, their CREATE ... IF NOT EXISTS and CREATE
        # OR REPLACE statements race ("tuple concurrently updated", duplicate pg_type rows).
        # The lock is the first statement of the transaction eventsourcing creates tables in.
        self.sql_create_statements.insert(
            0, SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(Literal(CREATE_LOCK))
        )
        self.sql_create_statements.extend(
            [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {epochs} ("
                    "log text PRIMARY KEY, epoch bigint NOT NULL, replica text NOT NULL, "
                    "recorded_at timestamptz NOT NULL DEFAULT now())"
                ).format(epochs=epochs),
                _fence_function(fence, epochs),
                _writer_columns(self.datastore.schema, self.events_table_name),
            ]
        )
        self._fence_statement = SQL("SELECT {fence}(%s, %s, %s)").format(fence=fence)
        self._idle_statement = SQL(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, true)"
        )
        self._tables_statement = SQL(
            "SELECT to_regclass({events}) AS events, to_regclass({epochs}) AS epochs"
        ).format(
            events=Literal(f'"{self.datastore.schema}"."{self.events_table_name}"'),
            epochs=Literal(f'"{self.datastore.schema}"."{EPOCHS_TABLE}"'),
        )
        self._lock_timeout_statement = SQL("SELECT set_config('lock_timeout', %s, true)")
        # Appends hold the epoch row FOR SHARE (ROW SHARE on the table) from the fence to
        # their COMMIT: a session that holds it still when a take-over gave up waiting is a
        # stalled append of an older leader.
        self._end_stalled_statement = SQL(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'relation' "
            "AND relation = (quote_ident({schema}) || '.' || quote_ident({table}))::regclass "
            "AND mode = 'RowShareLock' AND granted AND pid <> pg_backend_pid()"
        ).format(schema=Literal(self.datastore.schema), table=Literal(EPOCHS_TABLE))
        self._take_over_statement = SQL(
            "INSERT INTO {epochs} AS e (log, epoch, replica) VALUES (%s, %s, %s) "
            "ON CONFLICT (log) DO UPDATE SET epoch = EXCLUDED.epoch, "
            "replica = EXCLUDED.replica, recorded_at = now() WHERE e.epoch < EXCLUDED.epoch "
            "RETURNING epoch"
        ).format(epochs=epochs)
        self._recorded_statement = SQL("SELECT epoch, replica FROM {epochs} WHERE log = %s").format(
            epochs=epochs
        )
        self._position_statement = SQL(
            "SELECT notification_id FROM {schema}.{table} WHERE originator_id = %s "
            "AND originator_version = %s"
        ).format(schema=schema, table=table)
        self._select_written_statement = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state, epoch, "
            "replica FROM {schema}.{table} WHERE notification_id >= %s "
            "AND notification_id <= %s ORDER BY notification_id LIMIT %s"
        ).format(schema=schema, table=table)

    @_retried
    def tables_exist(self) -> bool:
        """Whether this log's tables are there already (read without taking any lock)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._tables_statement)
            row = curs.fetchone()
        return row is not None and row["events"] is not None and row["epochs"] is not None

    def create_table_if_missing(self) -> None:
        """``create_table`` unless the tables exist. A replica starting while a stopped
        leader holds the events table's lock would wait behind it in ``create_table``
        (CREATE ... IF NOT EXISTS locks the table even when it changes nothing), and never
        campaign to replace it."""
        if not self.tables_exist():
            self.create_table()

    def create_table(self) -> None:
        try:
            super().create_table()
        except IntegrityError:
            # Another replica created the composite type at the same moment (eventsourcing
            # creates it outside the locked transaction): it exists now, so again.
            super().create_table()

    # -- leadership --------------------------------------------------------------------
    @_retried
    def take_over(self, epoch: int, replica: str) -> None:
        """Records ``epoch`` as the log's, led by ``replica`` (in a transaction of its own),
        and makes this recorder's appends carry it. Appends in flight under an older epoch
        finish first (one stalled longer than the idle timeout has its session ended);
        every append after this returns sees the new epoch.

        Raises ``Fenced`` if a newer epoch (or this one, by another replica) is recorded.
        Taking over again at the recorded epoch and replica changes nothing.
        """
        if type(epoch) is not int or epoch < 1:
            raise ValueError(f"an epoch is an int >= 1, got {epoch!r}")
        if not replica:
            raise ValueError("a replica needs a name")
        try:
            with self.datastore.transaction(commit=True) as curs:
                self._bound_idle(curs)
                curs.execute(self._lock_timeout_statement, (self._millis(self.idle_timeout),))
                curs.execute(self._take_over_statement, (self.events_table_name, epoch, replica))
                advanced = curs.fetchone() is not None
        except OperationalError as e:
            if isinstance(e.__cause__, psycopg.errors.LockNotAvailable):
                self._end_stalled_appends()
            raise  # tried again (_retried)
        if not advanced:
            recorded = self.recorded_epoch()
            if recorded != Lead(epoch, replica):
                assert recorded is not None  # the insert found a row
                raise Fenced(
                    f"log {self.events_table_name}: replica {replica!r} cannot take over at "
                    f"epoch {epoch}: epoch {recorded.epoch} is recorded, led by "
                    f"{recorded.replica!r}",
                    epoch=epoch,
                    newer=recorded.epoch,
                    holder=recorded.replica,
                )
        self.lead = Lead(epoch, replica)

    def _end_stalled_appends(self) -> None:
        """Ends the sessions whose appends hold the epoch row longer than the idle timeout
        allows: the server ends a client that goes quiet between two statements of its
        transaction, but not one stopped in the middle of a pipeline (its statements sent,
        their Sync not yet), and a stopped deposed leader may be just there."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._end_stalled_statement)
            ended = [row["pid"] for row in curs.fetchall()]
        if ended:
            _log.warning(
                "log %s: ended %d stalled append session(s) holding the epoch: pids %s",
                self.events_table_name,
                len(ended),
                ended,
            )

    @staticmethod
    def _millis(seconds: float) -> str:
        return f"{max(1, round(seconds * 1000))}ms"

    def step_down(self) -> None:
        """Stops appending: later appends raise ``NoEpoch`` (a standby's state)."""
        self.lead = None

    @_retried
    def recorded_epoch(self) -> Lead | None:
        """The log's recorded epoch and its replica, or None before any take-over."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._recorded_statement, (self.events_table_name,), prepare=True)
            row = curs.fetchone()
        return None if row is None else Lead(row["epoch"], row["replica"])

    # -- appending ---------------------------------------------------------------------
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        lead = self.lead
        if lead is None:
            raise NoEpoch(
                f"log {self.events_table_name}: this recorder leads no epoch; the elected "
                "leader calls take_over(epoch, replica) before appending"
            )
        if kwargs or not stored_events:
            # Tracking records (a process recorder) are not merged with other callers'.
            return self._insert_fenced(stored_events, lead, **kwargs)
        return self.group.submit((stored_events, lead), len(stored_events))

    def _commit(self, batch: Sequence[Request[tuple[Sequence[StoredEvent], Lead]]]) -> None:
        """The group commit's leader: one transaction per run of requests with one lead."""
        start = 0
        while start < len(batch):
            lead = batch[start].item[1]
            end = start + 1
            while end < len(batch) and batch[end].item[1] == lead:
                end += 1
            self._commit_run(batch[start:end], lead)
            start = end

    def _commit_run(
        self, run: Sequence[Request[tuple[Sequence[StoredEvent], Lead]]], lead: Lead
    ) -> None:
        events = [e for r in run for e in r.item[0]]
        try:
            ids = self._insert_fenced(events, lead)
        except IntegrityError as e:
            if len(run) == 1:
                run[0].error = e
                return
            # Someone's event conflicts: each caller again in a transaction of its own, so
            # only the conflicting one fails (conflicts are rare; batches stay merged).
            for request in run:
                try:
                    request.result = self._insert_fenced(request.item[0], lead)
                except PersistenceError as own:
                    request.error = own
            return
        except PersistenceError as e:
            for request in run:
                request.error = e
            return
        if ids is None or len(ids) != len(events):
            raise ProgrammingError(
                f"log {self.events_table_name}: {len(events)} events inserted, "
                f"{0 if ids is None else len(ids)} notification ids returned"
            )
        at = 0
        for request in run:
            n = len(request.item[0])
            request.result = list(ids[at : at + n])
            at += n

    def _insert_fenced(
        self, stored_events: Sequence[StoredEvent], lead: Lead, **kwargs: Any
    ) -> Sequence[int] | None:
        try:
            return super().insert_events(stored_events, lead=lead, **kwargs)
        except ProgrammingError as e:
            raise self._fence_error(e, lead) from e

    def _insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        # eventsourcing's hook inside the insert transaction, before the table lock and the
        # insert: pipelined with them, so the fence costs no round trip of its own.
        lead: Lead = kwargs["lead"]
        self._bound_idle(curs)
        curs.execute(
            self._fence_statement, (self.events_table_name, lead.epoch, lead.replica), prepare=True
        )
        super()._insert_events(curs, stored_events, **kwargs)

    def _bound_idle(self, curs: Any) -> None:
        """Ends this transaction's session if the client goes quiet inside it for longer
        than ``idle_timeout``: a leader stopped (SIGSTOP, a pause) between its insert and
        its COMMIT holds the table lock and the epoch row's share lock, and would block
        the next leader's take-over, and every append, for as long as it stays stopped."""
        curs.execute(self._idle_statement, (self._millis(self.idle_timeout),), prepare=True)

    def _fence_error(self, error: ProgrammingError, lead: Lead) -> PersistenceError:
        """``Fenced`` or ``EpochNotRecorded`` for the fence's refusal; other errors as is."""
        cause = error.__cause__
        if not isinstance(cause, psycopg.errors.RaiseException):
            return error
        if not (cause.diag.message_primary or "").startswith(FENCE_MARKER):
            return error
        recorded = json.loads(cause.diag.message_detail or "{}")
        log = self.events_table_name
        if recorded.get("epoch") is None or recorded["epoch"] < lead.epoch:
            return EpochNotRecorded(
                f"log {log}: replica {lead.replica!r} appended at epoch {lead.epoch}, which "
                f"is not recorded (recorded: {recorded.get('epoch')}): take_over first; "
                "nothing of the append was written",
                epoch=lead.epoch,
            )
        return Fenced(
            f"log {log}: append refused: replica {lead.replica!r} leads epoch {lead.epoch}, "
            f"but epoch {recorded['epoch']} is recorded, led by {recorded['replica']!r}; "
            "nothing of the append was written",
            epoch=lead.epoch,
            newer=recorded["epoch"],
            holder=recorded["replica"],
        )

    # -- reading -----------------------------------------------------------------------
    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return PollingSubscription(self, gt=gt, topics=topics)

    @_retried
    def position_of(self, originator_id: Any, version: int) -> int | None:
        """The notification id of the event ``version`` of ``originator_id`` (None if
        there is none): where a follower that applied up to it resumes a subscription."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._position_statement, (originator_id, version), prepare=True)
            row = curs.fetchone()
        return None if row is None else row["notification_id"]

    @_retried
    def select_written(
        self, start: int = 1, limit: int = 1000, stop: int | None = None
    ) -> list[WrittenNotification]:
        """Notifications with ids in [start, stop], each with the epoch and replica that
        wrote it, in id order."""
        bound = (1 << 63) - 1 if stop is None else stop
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_written_statement, (start, bound, limit), prepare=True)
            return [
                WrittenNotification(
                    id=row["notification_id"],
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                    epoch=row["epoch"],
                    replica=row["replica"],
                )
                for row in curs.fetchall()
            ]


class PollingSubscription(PostgresSubscription):
    """eventsourcing's LISTEN/NOTIFY subscription, which also looks for new events every
    ``poll_interval`` seconds.

    eventsourcing's subscription reads what is recorded, then LISTENs on a connection of
    its own, from another thread: an event committed between the two sends its NOTIFY to
    nobody, and is delivered only with the next event's, however late that comes (a busy
    machine, a pool short of connections, makes the window long). Polling bounds that.
    """

    poll_interval = 0.5

    def __init__(self, recorder: PostgresApplicationRecorder, gt: int | None = None, **kw: Any):
        self._stopped = threading.Event()  # before the base starts threads that may stop()
        super().__init__(recorder, gt, **kw)
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stopped.wait(self.poll_interval):
            self._has_been_notified.set()

    def stop(self) -> None:
        super().stop()
        self._stopped.set()

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._ticker.join()


class FencedProcessRecorder(PostgresProcessRecorder, FencedApplicationRecorder, ProcessRecorder):
    """eventsourcing's PostgreSQL process recorder (events with tracking), fenced."""


def _fence_function(fence: Identifier, epochs: Identifier) -> Any:
    # RAISE EXCEPTION is SQLSTATE P0001: an error, not a serialization failure (40001) that
    # eventsourcing would retry for two seconds.
    return SQL(
        "CREATE OR REPLACE FUNCTION {fence}(log_name text, lead_epoch bigint, lead_replica text) "
        "RETURNS void LANGUAGE plpgsql AS $fence$ "
        "DECLARE recorded_epoch bigint; recorded_replica text; "
        "BEGIN "
        "SELECT epoch, replica INTO recorded_epoch, recorded_replica FROM {epochs} "
        "WHERE log = log_name FOR SHARE; "
        "IF recorded_epoch IS DISTINCT FROM lead_epoch "
        "OR recorded_replica IS DISTINCT FROM lead_replica THEN "
        "RAISE EXCEPTION USING ERRCODE = 'P0001', "
        "MESSAGE = format('{marker} log %s: epoch %s of %s refused', "
        "log_name, lead_epoch, lead_replica), "
        "DETAIL = json_build_object('epoch', recorded_epoch, 'replica', recorded_replica)::text; "
        "END IF; "
        "PERFORM set_config({epoch_setting}, lead_epoch::text, true); "
        "PERFORM set_config({replica_setting}, lead_replica, true); "
        "END $fence$"
    ).format(
        fence=fence,
        epochs=epochs,
        marker=SQL(FENCE_MARKER),
        epoch_setting=Literal(EPOCH_SETTING),
        replica_setting=Literal(REPLICA_SETTING),
    )


def _writer_columns(schema: str, table: str) -> Any:
    # Added only if missing: ALTER TABLE locks the table even when it changes nothing, and a
    # standby starting up must not stall the leader's appends.
    return SQL(
        "DO $columns$ BEGIN "
        "IF NOT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = {s} "
        "AND table_name = {t} AND column_name = 'epoch') THEN "
        "ALTER TABLE {schema}.{table} "
        "ADD COLUMN epoch bigint NOT NULL "
        "DEFAULT NULLIF(current_setting({epoch_setting}, true), '')::bigint, "
        "ADD COLUMN replica text NOT NULL "
        "DEFAULT NULLIF(current_setting({replica_setting}, true), ''); "
        "END IF; END $columns$"
    ).format(
        s=Literal(schema),
        t=Literal(table),
        schema=Identifier(schema),
        table=Identifier(table),
        epoch_setting=Literal(EPOCH_SETTING),
        replica_setting=Literal(REPLICA_SETTING),
    )


# ----------------------------------------------------------------------------- factory
# eventsourcing finds a module's factory by scanning its names for factory classes: the base
# is reached through its module, so that this module holds exactly one.
class FencedPostgresFactory(es_postgres.PostgresFactory):
    """The eventsourcing factory for ``PERSISTENCE_MODULE=engine.postgres_log``."""

    TASKLEDGER_REPLICA = "TASKLEDGER_REPLICA"
    TASKLEDGER_EPOCH = "TASKLEDGER_EPOCH"
    TASKLEDGER_MAX_BATCH = "TASKLEDGER_MAX_BATCH"
    TASKLEDGER_COMMIT_DELAY_US = "TASKLEDGER_COMMIT_DELAY_US"
    TASKLEDGER_IDLE_TIMEOUT_MS = "TASKLEDGER_IDLE_TIMEOUT_MS"

    application_recorder_class = FencedApplicationRecorder
    process_recorder_class = FencedProcessRecorder

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        try:
            self._read_settings()
        except BaseException:
            self.datastore.close()
            raise

    def _read_settings(self) -> None:
        if self.datastore.enable_db_functions:
            raise OSError(
                f"{self.POSTGRES_ENABLE_DB_FUNCTIONS} is on, and eventsourcing's insert "
                "function skips the epoch fence of engine.postgres_log: turn it off"
            )
        self.max_batch = self._int(self.TASKLEDGER_MAX_BATCH, 1000, minimum=1)
        self.commit_delay = self._int(self.TASKLEDGER_COMMIT_DELAY_US, 500, minimum=0) / 1e6
        self.idle_timeout = self._int(self.TASKLEDGER_IDLE_TIMEOUT_MS, 2000, minimum=1) / 1e3
        replica = (self.env.get(self.TASKLEDGER_REPLICA) or "").strip()
        epoch_text = (self.env.get(self.TASKLEDGER_EPOCH) or "").strip()
        if epoch_text and not replica:
            raise OSError(f"{self.TASKLEDGER_EPOCH} is set but {self.TASKLEDGER_REPLICA} is not")
        self.lead = (
            Lead(self._int(self.TASKLEDGER_EPOCH, 0, minimum=1), replica) if epoch_text else None
        )

    def _int(self, key: str, default: int, *, minimum: int) -> int:
        text = (self.env.get(key) or "").strip()
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            raise OSError(f"{key} must be a whole number, got {text!r}") from None
        if value < minimum:
            raise OSError(f"{key} must be at least {minimum}, got {value}")
        return value

    def application_recorder(self) -> ApplicationRecorder:
        recorder = super().application_recorder()
        return self._configure(recorder)

    def process_recorder(self) -> ProcessRecorder:
        recorder = super().process_recorder()
        return self._configure(recorder)

    def _configure(self, recorder: Any) -> Any:
        if isinstance(recorder, FencedApplicationRecorder):
            recorder.group.max_batch = self.max_batch
            recorder.group.commit_delay = self.commit_delay
            recorder.idle_timeout = self.idle_timeout
            if self.lead is not None:
                recorder.take_over(self.lead.epoch, self.lead.replica)
        return recorder


Factory = FencedPostgresFactory

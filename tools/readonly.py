"""A read-only Ledger: the log opened for questions, never for writes.

The forensic commands (history, why, drift, query, verify, report, ...) must leave the log
exactly as they found it, and must work while the scheduler that owns the log is running.
``ReadOnlyLedger`` therefore opens the LMDB environment read-only (no writer lock file, no
write transaction, no snapshot writes). Everything it answers is engine.log_reader's, the
same code the writing Ledger answers with.

``open_log(address)`` is the one door: an address is an LMDB folder or a replicated log of
record (``postgresql://USER@HOST:PORT/DB``, engine/log_address.py). A log of record is read
once, in position order, into a temporary LMDB copy (exactly what a replica's mirror holds,
engine/replication.py), which is opened read-only and removed on close: every command then
answers from the same code, indexes and compiled replay on both kinds of log, and reads
PostgreSQL in a few large chunks instead of a query per question.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from engine.ledger_state import LedgerState, decode_records
from engine.log_address import LogAddress, LogAddressError, is_log_url, parse_log_url
from engine.log_reader import LogReader, StoredSnapshot  # noqa: F401  (re-exported)
from engine.store import DamagedRecord, LMDBDatastore, LogOpenError
from projections.drift_view import Drift
from projections.views import Views


class ReadOnlyLedger(LogReader):
    """The Ledger's read surface over a log opened read-only. Not for appends."""

    def __init__(self, datastore: LMDBDatastore, *, name: str | None = None) -> None:
        super().__init__(datastore)
        self._state: LedgerState | None = None
        self._name = name  # what the log is called when it is not its folder (a URL)
        self._copy: str | None = None  # the temporary folder a log of record was copied to

    @property
    def path(self) -> str:
        """The log as the user named it: its folder, or the log of record's address."""
        return self._name or super().path

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ReadOnlyLedger:
        """Opens the log in folder ``path`` for reading; raises LogOpenError (and its
        subclasses) naming the path when it is missing or not a taskledger log."""
        return cls(LMDBDatastore.open(os.fspath(path), readonly=True))

    def close(self) -> None:
        self._store.close()
        if self._copy is not None:
            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None

    def __enter__(self) -> ReadOnlyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def last_id(self) -> int:
        """The highest notification id in the log (0 if it is empty)."""
        return self.max_id()

    @property
    def state(self) -> LedgerState:
        """The state as of the end of the log (loaded once, on first use)."""
        if self._state is None:
            self._state = self.load(None)
        return self._state

    @property
    def views(self) -> Views:
        return self.state.views

    def drift(self) -> list[Drift]:
        return self.views.drift.drift()

    def events_at(self, nids: Iterable[int]) -> dict[int, Any]:
        """The Ledger events with these notification ids (those the log holds), read by key
        in one read transaction: what a command needs for many scattered ids (a range scan
        per id reads a whole chunk of the log each time)."""
        wanted = sorted(set(nids))
        store = self.datastore
        db = store.dbs["notifications"]

        def read(txn: Any) -> list[tuple[bytes, bytes]]:
            found = []
            for nid in wanted:
                key = _U64.pack(nid)
                value = txn.get(key, db=db)
                if value is not None:
                    found.append((key, value))
            return found

        records = (
            (nid, store.decode("notifications", key, value, nid))
            for key, value in store.read(read)
            for nid in (_U64.unpack(key)[0],)
        )
        return dict(decode_records(records))

    def event_at(self, nid: int) -> Any | None:
        """The Ledger event with notification id ``nid``, or None (read by key)."""
        return self.events_at((nid,)).get(nid)


_U64 = struct.Struct(">Q")  # a notification id as the store keys it

COPY_CHUNK = 10_000  # events read from a log of record at a time


class LogOfRecordError(LogOpenError):
    """A log of record that cannot be read: a bad address, an unreachable server, a refused
    password, a database without taskledger's tables. The message names it and why."""


def open_log(address: str, *, password: str = "") -> ReadOnlyLedger:
    """The log at ``address`` opened for reading: an LMDB folder, or a log of record
    (``postgresql://...``, with ``password``) copied into a temporary LMDB log first (see
    the module). Raises LogOpenError (LogOfRecordError for a log of record) naming it."""
    if not is_log_url(address):
        return ReadOnlyLedger.open(address)
    folder = tempfile.mkdtemp(prefix="taskledger-copy-")
    try:
        with log_of_record(address, password) as (where, recorder):
            _copy(recorder, where, folder)
        reader = ReadOnlyLedger(LMDBDatastore.open(folder, readonly=True), name=where.text)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    reader._copy = folder
    return reader


@contextmanager
def log_of_record(address: str, password: str) -> Iterator[tuple[LogAddress, Any]]:
    """The log of record at ``address`` (a ``postgresql://`` URL): its parsed address and
    eventsourcing's recorder of it (engine/postgres_log.py), once the server answered and
    taskledger's tables are there. Raises LogOfRecordError naming what is wrong; creates
    nothing."""
    # PostgreSQL's clients are imported only for a log of record: an LMDB log's commands
    # start without them.
    import psycopg
    from eventsourcing.persistence import PersistenceError

    from engine.replication import EVENTS_TABLE, connect

    try:
        where = parse_log_url(address)
    except LogAddressError as e:
        raise LogOfRecordError(str(e)) from None
    # One plain connection first: libpq's own reason (refused, no such host, a wrong
    # password, no such database) at once, where the recorder's pool would retry for
    # seconds and then say only that it got no connection.
    try:
        psycopg.connect(
            host=where.host,
            port=where.port,
            user=where.user,
            password=password,
            dbname=where.dbname,
            connect_timeout=5,
        ).close()
    except psycopg.Error as e:
        raise LogOfRecordError(f"cannot connect to the log {where.text}: {_one_line(e)}") from None
    datastore, recorder = connect(where, password, connections=1)
    try:
        try:
            present = recorder.tables_exist()
        except PersistenceError as e:
            raise LogOfRecordError(
                f"cannot connect to the log {where.text}: {_one_line(e)}"
            ) from None
        if not present:
            raise LogOfRecordError(
                f"log {where.text}: the database holds no taskledger log (no table "
                f"{where.schema}.{EVENTS_TABLE}); is it the URL `taskledger run --log` was given?"
            )
        try:
            yield where, recorder
        except DamagedRecord:
            raise  # the log's damage, not the server's: said as damage (exit status 1)
        except PersistenceError as e:
            raise LogOfRecordError(f"cannot read the log {where.text}: {_one_line(e)}") from e
    finally:
        datastore.close()


def _copy(recorder: Any, where: LogAddress, folder: str) -> None:
    """Appends the Ledger's stream of the log of record to a new LMDB log in ``folder``, in
    position order, as a follower's mirror applies it. One query in one transaction (a
    consistent view of the log, however long the copy takes), streamed through a server-side
    cursor in chunks as plain tuples: eventsourcing's select_events, a query per chunk each
    row built as a dict, took two thirds of the copy."""
    from eventsourcing.persistence import StoredEvent
    from psycopg.rows import tuple_row
    from psycopg.sql import SQL, Identifier

    from engine.ledger import LEDGER_STREAM, Ledger

    statement = SQL(
        "SELECT originator_version, topic, state FROM {table} WHERE originator_id = %s "
        "ORDER BY originator_version"
    ).format(table=Identifier(where.schema, recorder.events_table_name))
    failed: list[BaseException] = []

    def applied(ids: list[int] | None, error: BaseException | None) -> None:
        if error is not None:
            failed.append(error)

    with (
        Ledger.open(folder, durable=False) as ledger,
        recorder.datastore.get_connection() as conn,
        conn.transaction(),
        conn.cursor(name="taskledger_copy", row_factory=tuple_row) as cursor,
    ):
        cursor.itersize = COPY_CHUNK
        cursor.execute(statement, (LEDGER_STREAM,))
        while rows := cursor.fetchmany(COPY_CHUNK):
            stored = [
                StoredEvent(LEDGER_STREAM, v, topic, bytes(state)) for v, topic, state in rows
            ]
            ledger.submit_replicated(stored, done=applied)
        ledger.flush()
    if failed:
        raise failed[0]


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__

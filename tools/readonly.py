"""A read-only Ledger: the log opened for questions, never for writes.

The forensic commands (history, why, drift, query, verify, report, ...) must leave the log
exactly as they found it, and must work while the scheduler that owns the log is running.
``ReadOnlyLedger`` therefore opens the LMDB environment read-only (no writer lock file, no
write transaction, no snapshot writes). Everything it answers is engine.log_reader's, the
same code the writing Ledger answers with.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import Any

from engine.ledger_state import LedgerState, decode_records
from engine.log_reader import LogReader, StoredSnapshot  # noqa: F401  (re-exported)
from engine.store import LMDBDatastore
from projections.drift_view import Drift
from projections.views import Views


class ReadOnlyLedger(LogReader):
    """The Ledger's read surface over a log opened read-only. Not for appends."""

    def __init__(self, datastore: LMDBDatastore) -> None:
        super().__init__(datastore)
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

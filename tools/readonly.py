"""A read-only Ledger: the log opened for questions, never for writes.

The forensic commands (history, why, drift, query, verify, report, ...) must leave the log
exactly as they found it, and must work while the scheduler that owns the log is running.
``ReadOnlyLedger`` therefore opens the LMDB environment read-only (no writer lock file, no
write transaction, no snapshot writes). Everything it answers is engine.log_reader's, the
same code the writing Ledger answers with.
"""

from __future__ import annotations

import os

from engine.ledger_state import LedgerState
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

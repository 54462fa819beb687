"""Snapshots taken while the scheduler runs, so that a restart replays a short tail.

Without them, opening a long-lived scheduler's log folds everything from the first event
(~3 us an event with the saga: 30 s for 10M events). A snapshot is built by folding the log
from the previous one, in this thread, never from the live views (Ledger.snapshot), so the
runtime's loop and the appends go on meanwhile. Older snapshots are deleted (the log is not).
A failed snapshot (a full map, a damaged record) is logged and counted, never fatal: the
scheduler's work does not depend on it.

The fold builds a second state as large as the live one (about a kilobyte a task). Its
views refer to one another, so only the cyclic collector frees it, and glibc then keeps the
freed pages unless asked: a scheduler of 100k tasks would carry each snapshot's peak. After
every snapshot the snapshotter calls ``after`` (the runtime collects and freezes its heap
there) and gives the C heap's free pages back (`release_freed_memory`, malloc_trim).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from engine.ledger import Ledger

log = logging.getLogger("taskledger.snapshots")


def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc: nothing to ask
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Gives the C heap's free pages back to the system (glibc's malloc_trim; a no-op
    elsewhere)."""
    if _TRIM is not None:
        _TRIM(0)


@dataclass
class SnapshotStats:
    taken: int = 0
    failed: int = 0
    pruned: int = 0
    last_nid: int = 0  # the id the newest snapshot covers (0: none yet)
    last_seconds: float = 0.0


class Snapshotter:
    """A thread that snapshots the Ledger every ``every`` events, keeping the ``keep``
    newest snapshots. ``poll`` is how often it looks, ``retry_after`` how long it waits
    after a failure before trying again (seconds)."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        every: int,
        keep: int = 2,
        poll: float = 1.0,
        retry_after: float = 30.0,
        after: Callable[[], None] | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"snapshot every must be at least 1 event, got {every!r}")
        if keep < 1:
            raise ValueError(f"snapshots kept must be at least 1, got {keep!r}")
        self.ledger, self.every, self.keep, self.poll = ledger, every, keep, poll
        self.retry_after = retry_after
        self.after = after
        self.stats = SnapshotStats()
        stored = ledger.snapshots()
        self.stats.last_nid = stored[-1].nid if stored else 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Snapshotter:
        self._thread = threading.Thread(target=self._loop, name="snapshots", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops looking; a snapshot in progress is finished first (the Ledger must stay
        open until this returns)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def due(self) -> bool:
        return self.ledger.last_id - self.stats.last_nid >= self.every

    def step(self) -> bool:
        """Takes a snapshot if one is due; True if it did."""
        if not self.due():
            return False
        try:
            info = self.ledger.snapshot()
            pruned = self.ledger.prune_snapshots(self.keep)
        except Exception:
            self.stats.failed += 1
            log.exception("snapshot failed (the log is unchanged; will try again)")
            self._stop.wait(self.retry_after)  # not a tight loop on a full disk
            return False
        if self.after is not None:
            self.after()
        release_freed_memory()
        self.stats.taken += 1
        self.stats.pruned += len(pruned)
        self.stats.last_nid, self.stats.last_seconds = info.nid, info.seconds
        log.info("snapshot at %d: %d bytes in %.2f s", info.nid, info.size, info.seconds)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            self.step()

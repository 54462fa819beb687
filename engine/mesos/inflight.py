"""The bound on status updates in flight: the scheduler's backpressure.

An update is in flight from the moment the driver hands it over until nothing is left to do
for it: its acknowledgement was sent (or failed), or, for one that is not acknowledged (a
master's answer, a failed append), its commit. Every update takes a slot on arrival; when
`limit` are taken, the thread that reads the event stream (pymesos's IO thread) waits for
one to free. So when the log or the master's calls fall behind, the stream is read more
slowly (the master's socket buffer fills, TCP slows the master down) and the scheduler's
memory stays bounded: at most `limit` updates, their pending commits and their queued
acknowledgements.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

DEFAULT_LIMIT = 10_000  # ~20 MB of updates in flight; a commit writes at most 10,000 events


class InFlight:
    """A counting bound (see the module docstring), thread-safe.

    ``relieve``, if given, is called instead of waiting when the bound is reached, until a
    slot is free: a single-threaded caller (the deterministic simulation) commits and sends
    there what a real thread would wait for.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT, *, relieve: Callable[[], None] | None = None):
        if type(limit) is not int or limit < 1:
            raise ValueError(f"the limit of updates in flight must be an int >= 1, got {limit!r}")
        self.limit = limit
        self._relieve = relieve
        self._cond = threading.Condition(threading.Lock())  # not an RLock: cheaper
        self.count = 0
        self.peak = 0
        self.waits = 0  # arrivals that found the bound reached
        self.waiting = 0  # threads waiting for a slot now

    def acquire(self) -> None:
        """Takes a slot, waiting (or relieving) while none is free."""
        with self._cond:
            if self.count < self.limit:
                self._take()
                return
            self.waits += 1
            if self._relieve is None:
                self.waiting += 1
                try:
                    while self.count >= self.limit:
                        self._cond.wait()
                finally:
                    self.waiting -= 1
                self._take()
                return
        while True:
            self._relieve()
            with self._cond:
                if self.count < self.limit:
                    self._take()
                    return

    def _take(self) -> None:
        self.count += 1
        if self.count > self.peak:
            self.peak = self.count

    def release(self) -> None:
        """Frees a slot (an update's work is done)."""
        with self._cond:
            if self.count <= 0:
                raise RuntimeError("released more updates than were in flight")
            self.count -= 1
            self._cond.notify()

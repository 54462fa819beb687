"""The leader's gate: whether a replica may act (append to the log, call Mesos) right now.

A replicated scheduler (engine/replication.py) opens it once it leads, closes it for a
while when its ZooKeeper connection is suspended (it cannot know whether it still leads),
and shuts it for good when it learns it does not lead any more (its session was lost, an
append was fenced). The sender checks it before every call to the master, the log before
every append to the log of record: a deposed leader stops at once, whichever hears first.
"""

from __future__ import annotations

import threading


class Gate:
    """Open, closed for now (with a reason), or shut for good (with a reason). Thread-safe;
    a new gate is closed ("not leading yet")."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._reason: str | None = "not leading yet"
        self._shut = False

    @property
    def reason(self) -> str | None:
        """Why the replica may not act now, or None if it may."""
        return self._reason

    @property
    def shut(self) -> bool:
        """Whether it is shut for good (the replica was deposed)."""
        return self._shut

    def open(self) -> None:
        """The replica leads: it may act (no effect once shut)."""
        with self._cond:
            if not self._shut:
                self._reason = None
                self._cond.notify_all()

    def close(self, reason: str) -> None:
        """The replica may not act until ``open`` (no effect once shut)."""
        with self._cond:
            if not self._shut:
                self._reason = reason

    def shut_for_good(self, reason: str) -> bool:
        """The replica may never act again; returns False if it was shut already."""
        with self._cond:
            if self._shut:
                return False
            self._shut = True
            self._reason = reason
            self._cond.notify_all()
            return True

    def wait(self, timeout: float) -> str | None:
        """Waits until the gate is open or shut, at most ``timeout`` seconds; returns the
        reason it is not open (None: open)."""
        with self._cond:
            self._cond.wait_for(lambda: self._reason is None or self._shut, timeout)
            return self._reason

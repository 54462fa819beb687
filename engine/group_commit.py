"""Group commit: concurrent callers share one transaction, each waiting only for its own.

Whichever caller finds no commit in progress becomes the leader: it takes what is queued
(up to ``max_batch``), runs the ``commit`` function once for all of it, wakes the callers
whose requests were in that batch, and hands leadership to the oldest waiter, if any. So a
durable store pays one commit (one fsync, one round trip) per batch, not per caller, and a
lone caller never waits for anyone.

Without a short wait, concurrent callers split into two groups that take turns, each paying
its own commit: while one group's commit runs, the other queues; when it returns, the first
group re-submits just after the second took the queue. Like PostgreSQL's commit_delay and
commit_siblings, a leader therefore waits up to ``commit_delay`` seconds for the callers
seen recently, and only when there are such callers. "Recently" is ``sibling_window``
seconds, or two commits' time if commits take longer: a caller whose request was in the
batch just committed was last seen when that batch was gathered.

The mechanism knows nothing about what it commits: ``commit(batch)`` sets each request's
``result`` or ``error``; if it raises instead, every request of the batch gets that error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Request(Generic[T]):
    """One caller's share of a batch: what it asked for, and its outcome."""

    __slots__ = ("item", "size", "thread", "wake", "done", "result", "error")

    def __init__(self, item: T, size: int) -> None:
        self.item = item
        self.size = size
        self.thread = threading.get_ident()
        # Held until the leader releases it: each waiter sleeps on a lock of its own, so a
        # commit wakes exactly its callers (no herd on one condition variable).
        self.wake = threading.Lock()
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    """A queue of requests committed in batches by whichever caller is leading."""

    def __init__(
        self,
        commit: Callable[[Sequence[Request[T]]], None],
        *,
        max_batch: int = 1000,
        commit_delay: float = 0.0005,
        sibling_window: float = 0.005,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._commit = commit
        self.max_batch = max_batch
        self.commit_delay = commit_delay
        self.sibling_window = sibling_window
        self._queue: list[Request[T]] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._leading = False
        self._gathering = False
        self._gather_target = 0
        self._recent: dict[int, float] = {}
        self._commit_seconds = 0.0  # how long the last commit took
        # Counters for tests and benchmarks: how well callers share commits.
        self.commits = 0
        self.committed_requests = 0

    def submit(self, item: T, size: int = 1) -> Any:
        """Queues ``item`` (``size`` counts toward ``max_batch``); returns its result once
        its batch is committed, or raises its error."""
        request = Request(item, max(1, size))
        request.wake.acquire()
        with self._lock:
            self._queue.append(request)
            # Wake a gathering leader only once its batch is complete: waking it on every
            # arrival would cost a thread switch each time.
            if self._gathering and len(self._queue) >= self._gather_target:
                self._arrived.notify()
            lead = not self._leading
            self._leading = True
        if not lead:
            request.wake.acquire()  # until our batch is committed, or we are to lead
        while not request.done:
            self._lead()
        if request.error is not None:
            raise request.error
        return request.result

    def _lead(self) -> None:
        with self._lock:
            self._gather()
            batch: list[Request[T]] = []
            total = 0
            while self._queue and (not batch or total + self._queue[0].size <= self.max_batch):
                request = self._queue.pop(0)
                batch.append(request)
                total += request.size
        me = threading.get_ident()
        try:
            self._run(batch)
        finally:
            for request in batch:
                request.done = True
                if request.thread != me:
                    request.wake.release()
            with self._lock:
                if self._queue:
                    self._queue[0].wake.release()  # the oldest waiter leads next
                else:
                    self._leading = False

    def _run(self, batch: list[Request[T]]) -> None:
        started = time.monotonic()
        try:
            self._commit(batch)
        except BaseException as e:
            for request in batch:
                request.error, request.result = e, None
            if not isinstance(e, Exception):
                raise  # KeyboardInterrupt and the like: the callers fail, and so do we
        finally:
            self._commit_seconds = time.monotonic() - started
        self.commits += 1
        self.committed_requests += len(batch)

    def _gather(self) -> None:
        """Waits briefly for callers that are likely to come back (lock held, as leader)."""
        now = time.monotonic()
        recent = self._recent
        for request in self._queue:
            recent[request.thread] = now
        window = max(self.sibling_window, 2 * self._commit_seconds)
        if len(recent) > 1024:
            self._recent = recent = {t: s for t, s in recent.items() if now - s < window}
        expected = sum(1 for seen in recent.values() if now - seen < window)
        if expected <= 1 or self.commit_delay <= 0:
            return
        deadline = now + self.commit_delay
        self._gathering = True
        self._gather_target = min(expected, self.max_batch)
        try:
            while len(self._queue) < self._gather_target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
        finally:
            self._gathering = False

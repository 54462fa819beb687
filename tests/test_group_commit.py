"""engine/group_commit.py on its own: batching, outcomes, limits (the PostgreSQL log's tests
show it under a real database)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.group_commit import GroupCommit, Request


class Committer:
    """Commits by recording each batch; slow enough that callers pile up behind it."""

    def __init__(self, pause: float = 0.002) -> None:
        self.pause = pause
        self.batches: list[list[int]] = []

    def __call__(self, batch: Sequence[Request[int]]) -> None:
        time.sleep(self.pause)
        self.batches.append([r.item for r in batch])
        for r in batch:
            if r.item < 0:
                r.error = ValueError(f"negative: {r.item}")
            else:
                r.result = r.item * 10


def test_concurrent_callers_share_batches_and_get_their_own_results() -> None:
    committer = Committer()
    group = GroupCommit(committer, max_batch=64)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(group.submit, range(400)))
    assert results == [i * 10 for i in range(400)]
    assert sorted(i for b in committer.batches for i in b) == list(range(400))
    assert group.commits == len(committer.batches) < 400 / 4  # several callers per commit
    assert max(len(b) for b in committer.batches) <= 64


def test_an_error_reaches_its_caller_only() -> None:
    group = GroupCommit(Committer())
    barrier = threading.Barrier(6)

    def call(item: int) -> object:
        barrier.wait()
        try:
            return group.submit(item)
        except ValueError as e:
            return e

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(call, [1, 2, -3, 4, 5, 6]))
    assert isinstance(outcomes[2], ValueError) and str(outcomes[2]) == "negative: -3"
    assert [o for i, o in enumerate(outcomes) if i != 2] == [10, 20, 40, 50, 60]


def test_a_failing_commit_fails_its_whole_batch_and_the_next_batch_runs() -> None:
    calls = []

    def commit(batch: Sequence[Request[str]]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise ConnectionError("database went away")
        for r in batch:
            r.result = r.item

    group = GroupCommit(commit)
    with pytest.raises(ConnectionError, match="went away"):
        group.submit("first")
    assert group.submit("second") == "second"


def test_a_lone_caller_never_waits_for_siblings() -> None:
    group = GroupCommit(Committer(pause=0), commit_delay=0.5)
    started = time.perf_counter()
    for i in range(20):
        group.submit(i)
    assert time.perf_counter() - started < 0.5  # not 20 waits of up to 0.5 s


def test_a_request_larger_than_the_batch_limit_still_commits_alone() -> None:
    committer = Committer()
    group = GroupCommit(committer, max_batch=10)
    assert group.submit(7, size=25) == 70
    assert committer.batches == [[7]]
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(committer, max_batch=0)

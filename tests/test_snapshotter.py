"""Snapshots taken while the scheduler runs (engine/mesos/snapshotter.py), and pruning.

A restart must fold the newest snapshot and the tail after it, not the whole log; old
snapshots go, the log never does; a failed snapshot is counted, not fatal.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from engine.ledger import Ledger
from engine.ledger_state import LedgerState, state_digest
from engine.mesos.snapshotter import Snapshotter
from engine.store import LogFull


def _fill(ledger: Ledger, start: int, tasks: int) -> None:
    for t in range(start, start + tasks):
        ledger.task_created(f"t{t}", job="j", time=float(t))
        ledger.status_update({"task_id": {"value": f"t{t}"}, "state": "TASK_RUNNING"}, time=t + 0.5)


def test_prune_keeps_the_newest_snapshots_and_all_of_the_log(tmp_path):
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        taken = []
        for round_ in range(4):
            _fill(ledger, round_ * 5, 5)
            taken.append(ledger.snapshot().nid)
        events = ledger.last_id
        with pytest.raises(ValueError, match="at least 1"):
            ledger.prune_snapshots(0)
        assert ledger.prune_snapshots(2) == taken[:2]
        assert [s.nid for s in ledger.snapshots()] == taken[2:]
        assert ledger.prune_snapshots(2) == []
        assert ledger.last_id == events and len(list(ledger.events())) == events
        live = ledger.digest()
    with Ledger.open(tmp_path / "l", durable=False) as again:
        assert again.digest() == live and again.snapshot_problems == []
        # As of a pruned snapshot's id: folded from the start, as a replay would.
        replayed = LedgerState()
        for nid, event in again.events(1, taken[1]):
            replayed.apply(nid, event)
        assert state_digest(again.state_as_of(taken[1])) == state_digest(replayed)


def test_a_snapshot_is_due_every_n_events(tmp_path):
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        snapshotter = Snapshotter(ledger, every=10, keep=1)
        _fill(ledger, 0, 4)  # 8 events
        assert not snapshotter.step()
        _fill(ledger, 4, 1)  # 10
        assert snapshotter.step()
        assert snapshotter.stats.last_nid == 10 and not snapshotter.due()
        _fill(ledger, 5, 5)  # 20
        assert snapshotter.step()
        assert [s.nid for s in ledger.snapshots()] == [20]
        assert (snapshotter.stats.taken, snapshotter.stats.pruned) == (2, 1)
    with Ledger.open(tmp_path / "l", durable=False) as again:
        # A new snapshotter starts from the newest stored snapshot, not from zero.
        assert Snapshotter(again, every=10).stats.last_nid == 20


@pytest.mark.parametrize(("every", "keep"), [(0, 2), (10, 0)])
def test_bad_settings_are_refused(tmp_path, every, keep):
    with Ledger.open(tmp_path / "l", durable=False) as ledger, pytest.raises(ValueError):
        Snapshotter(ledger, every=every, keep=keep)


def test_snapshots_while_appending_and_a_restart_folds_only_the_tail(tmp_path, monkeypatch):
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        snapshotter = Snapshotter(ledger, every=50, keep=2, poll=0.005).start()

        def until(done: Any) -> None:
            deadline = time.monotonic() + 20
            while not done() and time.monotonic() < deadline:
                time.sleep(0.005)

        def writer(w: int) -> None:
            # Half, then (once a snapshot exists) the other half: a snapshot is taken while
            # the other writers append, and another one after.
            _fill(ledger, w * 1000, 75)
            until(lambda: snapshotter.stats.taken >= 1)
            _fill(ledger, w * 1000 + 75, 75)

        writers = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        until(lambda: not snapshotter.due())
        snapshotter.stop()
        assert snapshotter.stats.taken >= 2 and snapshotter.stats.failed == 0
        stored = [s.nid for s in ledger.snapshots()]
        assert 1 <= len(stored) <= 2 and ledger.last_id - stored[-1] < 50
        live = ledger.digest()
        last = ledger.last_id
    replays: list[tuple[int, Any]] = []
    original = Ledger.replay

    def counting(self, state, first=1, last=None, progress=None):
        done = original(self, state, first, last, progress)
        replays.append((first, done.events))
        return done

    monkeypatch.setattr(Ledger, "replay", counting)
    with Ledger.open(tmp_path / "l", durable=False) as again:
        assert again.digest() == live and again.snapshot_problems == []
        [(first, events)] = replays
        assert first == stored[-1] + 1 and events == last - stored[-1]


def test_a_failed_snapshot_is_counted_and_the_log_is_unchanged(tmp_path, monkeypatch):
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        _fill(ledger, 0, 10)
        snapshotter = Snapshotter(ledger, every=5, poll=0.0, retry_after=0.0)

        def full(**_: Any) -> Any:
            raise LogFull("log is full (test)")

        monkeypatch.setattr(ledger, "snapshot", full)
        before = ledger.digest()
        assert not snapshotter.step()
        assert snapshotter.stats.failed == 1 and snapshotter.stats.taken == 0
        assert ledger.snapshots() == [] and ledger.digest() == before
        monkeypatch.undo()
        assert snapshotter.step() and snapshotter.stats.taken == 1

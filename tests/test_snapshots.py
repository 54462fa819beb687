"""Snapshots and time travel: taken while appends go on, used on open, damaged ones skipped,
views as of any id or timestamp equal to a replay of the log up to there."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from view_histories import histories

from engine.ledger import Ledger
from engine.store import DamagedRecord
from projections import snapshots
from projections.views import Views


def _fill(ledger: Ledger, tasks: int, start_time: float = 0.0) -> None:
    for t in range(tasks):
        ledger.task_created(f"t{int(start_time) + t}", job="j", time=start_time + t)
        ledger.status_update(
            {"task_id": {"value": f"t{int(start_time) + t}"}, "state": "TASK_RUNNING"},
            time=start_time + t + 0.5,
        )


@settings(max_examples=40, deadline=None)
@given(histories)
def test_views_round_trip_through_a_snapshot(history):
    views = Views.rebuild(history)
    nid, _, parts = snapshots.decode(snapshots.encode(7, 1.5, {"views": views}))
    assert nid == 7
    assert parts["views"] == views
    assert parts["views"].drift.drift() == views.drift.drift()


def test_open_uses_the_newest_snapshot_and_replays_only_the_tail(tmp_path, monkeypatch):
    with Ledger.open(tmp_path / "l") as ledger:
        _fill(ledger, 50)
        info = ledger.snapshot(time=100)
        assert info.nid == 100 and info.size > 0
        _fill(ledger, 5, start_time=200)
        expected = Views.rebuild(ledger.events())
    replays: list[tuple[int, Any]] = []
    original = Ledger.replay

    def counting(self, state, first=1, last=None, progress=None):
        done = original(self, state, first, last, progress)
        replays.append((first, done))
        return done

    monkeypatch.setattr(Ledger, "replay", counting)
    with Ledger.open(tmp_path / "l") as ledger:
        assert ledger.views == expected
        [(first, done)] = replays
        assert first == 101 and done.events == 10 and done.last_nid == 110
        assert ledger.snapshot_problems == []


def test_damaged_snapshot_is_reported_skipped_and_never_trusted(tmp_path):
    with Ledger.open(tmp_path / "l") as ledger:
        _fill(ledger, 10)
        ledger.snapshot()
        _fill(ledger, 10, start_time=50)
        newest = ledger.snapshot()
        expected = Views.rebuild(ledger.events())
        # Damage the newest snapshot in place (a flipped bit in its payload).
        db = ledger._snapshots_db()
        key = newest.nid.to_bytes(8, "big")
        with ledger._store.env.begin(write=True) as txn:
            value = bytearray(txn.get(key, db=db))
            value[len(value) // 2] ^= 0x10
            txn.put(key, bytes(value), db=db)
        with pytest.raises(DamagedRecord, match=f"notification id {newest.nid}"):
            ledger.check_snapshot(newest.nid)
    with Ledger.open(tmp_path / "l") as ledger:
        assert ledger.views == expected
        assert len(ledger.snapshot_problems) == 1
        assert f"notification id {newest.nid}" in ledger.snapshot_problems[0]
        assert ledger.check_snapshot(20).views == Views.rebuild(ledger.events(1, 20))


def test_snapshot_while_appending_does_not_block_and_is_exact(tmp_path):
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        _fill(ledger, 5000)
        stop = threading.Event()
        started = threading.Event()
        appended: list[int] = []

        def writer() -> None:
            i = 0
            while not stop.is_set():
                appended.append(
                    ledger.status_update(
                        {"task_id": {"value": f"w{i}"}, "state": "TASK_RUNNING"}, time=1e6 + i
                    )
                )
                started.set()
                i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        started.wait()
        try:
            before = len(appended)
            info = ledger.snapshot()
            during = len(appended) - before
        finally:
            stop.set()
            thread.join()
        assert during > 0, "appends went on while the snapshot was taken"
        snap = ledger.check_snapshot(info.nid)
        assert snap.views == Views.rebuild(ledger.events(1, info.nid))


def test_as_of_id_and_timestamp(tmp_path):
    with Ledger.open(tmp_path / "l") as ledger:
        ledger.task_created("a", job="j", time=10)
        ledger.task_assigned("a", agent_id="x", time=20)
        ledger.status_update({"task_id": {"value": "a"}, "state": "TASK_RUNNING"}, time=30)
        ledger.snapshot(time=31)
        ledger.status_update({"task_id": {"value": "a"}, "state": "TASK_FINISHED"}, time=40)
        ledger.status_update({"task_id": {"value": "a"}, "state": "TASK_RUNNING"}, time=50)
        assert ledger.views_as_of(2).scheduler.get("a") == "ASSIGNED"
        assert ledger.views_as_of(4).scheduler.get("a") == "FINISHED"
        assert ledger.id_at(5) == 0
        assert ledger.id_at(29.9) == 2
        assert ledger.id_at(30) == 3
        assert ledger.id_at(1e9) == 5
        assert ledger.views_as_of(ledger.id_at(35)).mesos.get("a") == "TASK_RUNNING"
        # FINISHED is final: the late RUNNING is stale, not believed.
        assert ledger.views_as_of(5).mesos.get("a") == "TASK_FINISHED"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories, data=st.data())
def test_as_of_equals_replay_whatever_the_snapshots(tmp_path_factory, history, data):
    events = [event for _, event in history]
    with Ledger.open(tmp_path_factory.mktemp("asof"), durable=False) as ledger:
        cuts = sorted(data.draw(st.sets(st.integers(0, len(events)), max_size=3)))
        done = 0
        for cut in cuts:
            if cut > done:
                ledger.append(events[done:cut])
                done = cut
            ledger.snapshot(time=0)
        if done < len(events):
            ledger.append(events[done:])
        probe = data.draw(st.integers(0, len(events)))
        assert ledger.views_as_of(probe) == Views.rebuild(ledger.events(1, probe))

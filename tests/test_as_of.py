"""What "as of a time" means: the state right after the last event whose time is at or before
it, exactly, whatever the order of the times in the log (engine/time_index.py).

Times go back in real logs: the wall clock steps, concurrent appenders read it before they
queue, and `ingest` used to take each status's own (skewed) timestamp as the event time.
"""

from __future__ import annotations

import json
import math
import uuid as _uuid

import lmdb
import msgpack
import pytest
from builders import status_event
from cli_log import run
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import time_index
from engine.events import StatusUpdateReceived
from engine.ledger import LEDGER_STREAM, Ledger
from engine.store import LMDBDatastore
from engine.wire import to_wire
from tools.readonly import ReadOnlyLedger

T0 = 1_714_532_400.0  # 2024-05-01T03:00:00Z


def _update(n: int, t: float) -> StatusUpdateReceived:
    """The update of task web/n at t (its timestamp t too)."""
    return status_event(f"web/{n}", "TASK_RUNNING", time=t, timestamp=t)


def _drop_time_index(path: str) -> None:
    """Makes the log what an older build left: no time index."""
    env = lmdb.open(path, max_dbs=32, subdir=True)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(time_index.TIMES_DB.encode(), txn=txn), delete=True)
    env.close()


def _expected(times: list[float], moment: float) -> int:
    """The definition, by a plain scan: the last id whose time is at or before."""
    return max((nid for nid, t in enumerate(times, start=1) if t <= moment), default=0)


def test_an_agent_with_a_skewed_clock(tmp_path):
    """Updates at 03:00:01..05, the fourth stamped 04:00 (as ingest used to record them):
    as of 03:30 is id 5, the last event at or before it; a bisection said 3."""
    path = str(tmp_path / "log")
    times = [T0 + 1, T0 + 2, T0 + 3, T0 + 3600, T0 + 5]
    with Ledger.open(path, durable=False) as led:
        led.append([_update(n, t) for n, t in enumerate(times)])
    _drop_time_index(path)
    for _ in range(2):  # an old log read as it is, then indexed by a writer's open
        result = run("query", "--log", path, "--as-of", "2024-05-01T03:30:00Z", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["as_of"]["id"] == 5
        with Ledger.open(path, durable=False) as led:  # indexes the log
            assert led.id_at(T0 + 1800) == 5
            assert led.id_at(T0 + 3600) == 5 and led.id_at(T0 + 5) == 5
            assert led.id_at(T0 + 4) == 3
            assert led.id_at(T0 + 2.5) == 2 and led.id_at(T0) == 0
            assert led.views_as_of(led.id_at(T0 + 1800)).mesos.get("web/4") == "TASK_RUNNING"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    appends=st.lists(
        st.lists(
            st.floats(-50, 50, allow_nan=False) | st.just(math.nan) | st.just(-1e9),
            min_size=1,
            max_size=5,
        ),
        min_size=1,
        max_size=30,
    ),
    foreign=st.sets(st.integers(0, 30), max_size=6),
    reopen_at=st.integers(0, 30),
    write_at=st.integers(0, 30),
    probes=st.lists(st.floats(-100, 1500, allow_nan=False), min_size=1, max_size=8),
    block=st.sampled_from([1, 3, 8, 1024]),
)
def test_as_of_is_exact_for_any_order_of_times(
    tmp_path_factory, appends, foreign, reopen_at, write_at, probes, block
):
    """Random walks of times (steps back, NaNs an older build let in, a jump far back) in
    appends of several events (one bound for the blocks an append spans), other
    applications' events between them, part of the log indexed by a writer's open, part by
    its noted bounds, part not at all; small blocks, so several: every reader, the
    writer and a read-only one, answers what the definition says."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time_index, "BLOCK", block)
        path = str(tmp_path_factory.mktemp("as-of") / "log")
        times: list[float] = []  # by notification id; NaN for the others' (never counted)
        t = 0.0
        led = Ledger.open(path, durable=False)
        try:
            for n, steps in enumerate(appends):
                if n == reopen_at:  # a writer's close writes, its open indexes the rest
                    led.close()
                    led = Ledger.open(path, durable=False)
                if n == write_at:
                    led.snapshot()  # writes the bounds noted so far
                if n in foreign:
                    other = StoredEvent(_uuid.UUID(int=n + 1), 0, "Other", b"{}")
                    led.datastore.append([other])
                    times.append(math.nan)
                events = []
                for step in steps:
                    t = step if step == -1e9 or math.isnan(step) else t + step
                    events.append(_update(n, t))
                    times.append(t)
                    t = 0.0 if math.isnan(t) else t
                if any(math.isnan(e.time) for e in events):
                    # What an older build let in (the Ledger refuses it now): past the door.
                    stored = [
                        StoredEvent(LEDGER_STREAM, None, e.topic, msgpack.packb(to_wire(e)))
                        for e in events
                    ]
                    led.datastore.append(stored)
                else:
                    led.append(events)
            for moment in probes:
                assert led.id_at(moment) == _expected(times, moment), (moment, times)
        finally:
            led.close()
        with ReadOnlyLedger.open(path) as reader:
            for moment in probes:
                assert reader.id_at(moment) == _expected(times, moment)


def test_a_writer_indexes_a_long_tail_before_it_answers(tmp_path, monkeypatch):
    monkeypatch.setattr("engine.ledger._UNINDEXED_SCAN", 10)
    with Ledger.open(tmp_path / "log", durable=False) as led:
        led.append([_update(n, T0 + n) for n in range(25)])
        store, recorder = led.datastore, led.recorder
        assert time_index.unindexed(store, recorder) == 25
        assert led.id_at(T0 + 12.5) == 13
        assert time_index.unindexed(store, recorder) == 0
        led.append([_update(n, T0 + n) for n in range(25, 30)])
        assert led.id_at(T0 + 100) == 30  # a short tail: scanned
        assert time_index.unindexed(store, recorder) == 5
        led.snapshot()  # indexes the tail while it is short
        assert time_index.unindexed(store, recorder) == 0


def test_reading_an_old_log_changes_nothing_in_it(tmp_path):
    path = str(tmp_path / "log")
    with Ledger.open(path, durable=False) as led:
        led.append([_update(n, T0 + n) for n in range(5)])
    _drop_time_index(path)
    data = tmp_path / "log" / "data.mdb"
    before = (data.read_bytes(), data.stat().st_mtime_ns)
    with ReadOnlyLedger.open(path) as reader:
        assert reader.id_at(T0 + 2) == 3
    assert (data.read_bytes(), data.stat().st_mtime_ns) == before
    store = LMDBDatastore.open(path, readonly=True)
    try:
        assert time_index.TIMES_DB not in store.dbs
    finally:
        store.close()


@pytest.mark.parametrize("moment", [math.nan, math.inf])
def test_as_of_a_time_that_is_no_time_is_refused(tmp_path, moment):
    with (
        Ledger.open(tmp_path / "log", durable=False) as led,
        pytest.raises(ValueError, match="timestamp must be a finite number"),
    ):
        led.id_at(moment)

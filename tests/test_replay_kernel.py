"""The compiled replay kernel (engine/_replay_kernel.pyx) does what the Python path does.

Both paths replay the same real LMDB log; they must leave equal views and ledger states, and
report the same counts, on random histories, on logs shared with other applications, on
records the kernel must hand over (other kinds, odd field types, newer schema versions), on
well-framed records that are not events, and on records damaged in place: the same error,
raised after the same events were applied.
"""

from __future__ import annotations

import os
import uuid
import zlib
from typing import Any

import msgpack
import pytest
from eventsourcing.persistence import StoredEvent
from fuzz_support import msgpack_values
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from view_histories import TASK_IDS, any_event, histories, scheduler_facts, statuses

from engine import replay as replay_module
from engine.codec import frame
from engine.events import (
    EVENT_KINDS,
    CommandConfirmed,
    CommandDispatched,
    CommandIssued,
    ReconciliationCompleted,
    ReconciliationStarted,
    SagaReacted,
    StatusUpdateReceived,
    TaskAssigned,
    TaskCreated,
    TaskMarkedLost,
)
from engine.ledger_state import LEDGER_STREAM, LedgerState, state_digest
from engine.replay import KERNEL, replay
from engine.store import LMDBApplicationRecorder, LMDBDatastore
from engine.wire import to_wire
from projections import snapshots
from projections.views import Views
from tools.deterministic.world import simulate_seed

OTHER_STREAM = uuid.UUID("00000000-0000-4000-8000-00000000abcd")
EXAMPLES = int(os.environ.get("TASKLEDGER_FUZZ_EXAMPLES", "150"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
pack = msgpack.Packer(use_bin_type=True).pack


def test_the_kernel_is_built():
    # `make test` installs the project with pip, which compiles the kernel (setup.py); if
    # this fails, every replay below silently compared the Python path with itself.
    assert KERNEL is not None, "engine/_replay_kernel was not built: pip install -e . again"


@PROPERTY
@given(data=st.binary(max_size=300), start=st.integers(0, 2**32 - 1))
@example(data=b"", start=0)
@example(data=b"123456789", start=0)  # CRC-32's check value
def test_the_kernels_crc32_is_zlibs(data, start):
    assert KERNEL.crc32(data, start) == zlib.crc32(data, start)


# -- writing logs -----------------------------------------------------------------------------
def _stored(event: Any, stream: uuid.UUID = LEDGER_STREAM) -> StoredEvent:
    return StoredEvent(stream, None, event.topic, pack(to_wire(event)))


def _write(path: str, stored: list[StoredEvent]) -> None:
    store = LMDBDatastore.open(path, durable=False)
    try:
        if stored:
            store.append(stored)
    finally:
        store.close()


def _put(path: str, nid: int, value: bytes) -> None:
    store = LMDBDatastore.open(path, durable=False)
    try:
        with store.env.begin(write=True) as txn:
            txn.put(nid.to_bytes(8, "big"), value, db=store.dbs["notifications"])
    finally:
        store.close()


def _get(path: str, nid: int) -> bytes:
    store = LMDBDatastore.open(path, durable=False)
    try:
        with store.env.begin() as txn:
            return bytes(txn.get(nid.to_bytes(8, "big"), db=store.dbs["notifications"]))
    finally:
        store.close()


def _both(path: str, make: type, first: int = 1, last: int | None = None) -> list[tuple]:
    """(outcome, target) for the kernel, then for the Python path."""
    results = []
    for compiled in (True, False):
        store = LMDBDatastore.open(path, durable=False)
        try:
            target = make()
            try:
                outcome: tuple = (
                    "ok",
                    replay(LMDBApplicationRecorder(store), target, first, last, compiled=compiled),
                )
            except Exception as e:
                outcome = ("error", type(e), str(e))
            results.append((outcome, target))
        finally:
            store.close()
    return results


def _assert_same(path: str, first: int = 1, last: int | None = None) -> tuple:
    (k_out, k_views), (p_out, p_views) = _both(path, Views, first, last)
    assert k_out == p_out
    # As snapshots store them: every column, the index's order, the interned strings, the
    # illegal reports (bytes, so that a NaN read from a record compares equal to itself).
    assert _bytes(k_views) == _bytes(p_views)
    assert k_views.scheduler.illegal_count == p_views.scheduler.illegal_count
    # Derived, not stored; compared by repr, as a task id read from a record may be a NaN.
    assert sorted(map(repr, k_views.drift._disagree)) == sorted(map(repr, p_views.drift._disagree))
    (k_out, k_state), (p_out, p_state) = _both(path, LedgerState, first, last)
    assert k_out == p_out
    assert state_digest(k_state) == state_digest(p_state)
    return k_out


def _bytes(views: Views) -> bytes:
    return snapshots.encode(views.drift.last_nid, 0.0, {"views": views})


@pytest.fixture
def small_chunks(monkeypatch):
    # Several chunks per log: rows reserved, buffers taken and given back at each boundary.
    monkeypatch.setattr(replay_module, "CHUNK", 7)


# Values of other types where the kernel expects text or a float: it must hand these over.
odd_values = st.sampled_from(
    [1, 2**40, True, b"bytes", ["a"], {"k": 1}, -0.0, float("inf"), float("nan"), "\u00e9t\u00e9"]
)


@st.composite
def logs(draw) -> list[StoredEvent]:
    history = draw(histories)
    stored = []
    for _, event in history:
        if draw(st.integers(0, 9)) == 0 and type(event) in (StatusUpdateReceived, TaskCreated):
            field = draw(st.sampled_from(event._fields[:-1]))
            event = event._replace(**{field: draw(odd_values)})
        stored.append(_stored(event))
        if draw(st.integers(0, 7)) == 0:  # another application's event in the same log
            stored.append(StoredEvent(OTHER_STREAM, None, "other.Event", b"\x90"))
    return stored


@PROPERTY
@given(stored=logs(), cut=st.integers(0, 80), end=st.integers(0, 80) | st.none())
def test_the_kernel_and_the_python_path_agree_on_random_logs(
    tmp_path, small_chunks, stored, cut, end
):
    path = str(tmp_path / f"log-{uuid.uuid4().hex}")
    _write(path, stored)
    outcome = _assert_same(path)
    if outcome[0] == "ok":
        assert outcome[1].events == sum(s.originator_id == LEDGER_STREAM for s in stored)
    _assert_same(path, first=cut, last=end)  # any range, as snapshots and --as-of ask


# Logs the saga reads: runs that start and end (while one is active the saga reads every
# status update; a quiet implicit run leaves omissions), commands and their outcomes, the
# saga's tracking record, and agent updates with every kind of uuid the dedup memory stores.
_RUN_IDS = ("explicit-1", "implicit-1", "implicit-2")
_tasks = st.sampled_from(TASK_IDS)
_nids = st.integers(1, 60)
_run_started = st.builds(
    lambda run_id: ReconciliationStarted(0.0, None, run_id, run_id.split("-")[0], "schedule", 1e9),
    st.sampled_from(_RUN_IDS),
)
_run_completed = st.builds(
    lambda run_id, outcome: ReconciliationCompleted(
        0.0, None, run_id, run_id.split("-")[0], outcome, 0, 0, 0, 0, 1, 1.0, {}, {}
    ),
    st.sampled_from(_RUN_IDS),
    st.sampled_from(["quiet", "answered", "limit"]),
)
# A run that starts and ends (the events between them are interleaved by saga_logs).
_runs = st.builds(
    lambda run_id, outcome: [
        ReconciliationStarted(0.0, None, run_id, run_id.split("-")[0], "schedule", 1e9),
        ReconciliationCompleted(
            0.0, None, run_id, run_id.split("-")[0], outcome, 0, 0, 0, 0, 1, 1.0, {}, {}
        ),
    ],
    st.sampled_from(_RUN_IDS),
    st.sampled_from(["quiet", "answered", "limit"]),
)
saga_events = st.one_of(
    _run_started,
    _run_completed,
    st.builds(
        lambda run_id, tasks: CommandIssued(
            0.0, None, "RECONCILE", None, "R-EXPLICIT-ROUND", [1], run_id, tasks
        ),
        st.sampled_from(_RUN_IDS) | st.none(),
        st.lists(_tasks, max_size=3),
    ),
    st.builds(
        lambda kind, task, rule: CommandIssued(0.0, None, kind, task, rule, [1]),
        st.sampled_from(["KILL", "MARK_LOST", "RESCHEDULE"]),
        _tasks,
        st.sampled_from(["R-KILL-REQUESTED", "R-IMPLICIT-OMITTED-ASK"]),
    ),
    st.builds(lambda cid: CommandDispatched(0.0, None, cid), _nids),
    st.builds(lambda cid: CommandConfirmed(0.0, None, cid, "done", {}), _nids),
    st.builds(lambda upto: SagaReacted(0.0, None, upto), _nids),
    st.builds(
        lambda task, cid: TaskMarkedLost(0.0, cid, task, "R-TRANSIENT-LOST", cid), _tasks, _nids
    ),
)
uuids = st.sampled_from(
    [None, "AAECAwQFBgcICQoLDA0ODw==", "BAECAwQFBgcICQoLDA0ODw==", "short", "x" * 23 + "\0"]
    + ["\u00e9" * 24, "A" * 25]
)
# A task's life in the order Mesos reports it (random histories mostly ask illegal moves,
# which the kernel hands to the Python path).
_LIFE = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_RUNNING", "TASK_UNREACHABLE")
_ENDS = ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_GONE", "TASK_UNKNOWN")


@st.composite
def _lives(draw) -> list[Any]:
    task = draw(_tasks | st.sampled_from([f"life/{i}" for i in range(8)]))
    events: list[Any] = [TaskCreated(0.0, None, task, "job", 0, {})]
    events.append(TaskAssigned(0.0, None, task, "a1", {}))
    for state in draw(st.lists(st.sampled_from(_LIFE), max_size=4)):
        events.append(StatusUpdateReceived(0.0, None, task, state, "a1", source="SOURCE_AGENT"))
    if draw(st.booleans()):
        events.append(StatusUpdateReceived(0.0, None, task, draw(st.sampled_from(_ENDS))))
    return events


@st.composite
def saga_logs(draw) -> list[StoredEvent]:
    """Task lives interleaved (as a cluster's are), among other events and the saga's."""
    parts = draw(
        st.lists(
            st.one_of(
                *[_lives()] * 6,
                _runs,
                any_event.map(lambda e: [e]),
                saga_events.map(lambda e: [e]),
            ),
            min_size=4,
            max_size=30,
        )
    )
    events = []
    while parts:
        part = parts[draw(st.integers(0, len(parts) - 1))]
        events.append(part.pop(0))
        parts = [p for p in parts if p]
    stored = []
    for nid, event in enumerate(events, start=1):
        event = event._replace(time=float(nid))
        if type(event) is StatusUpdateReceived:
            event = event._replace(uuid=draw(uuids))
        stored.append(_stored(event))
    return stored


@PROPERTY
@given(stored=saga_logs(), cut=st.integers(0, 80))
def test_the_kernel_and_the_python_path_leave_the_same_saga_on_random_logs(
    tmp_path, small_chunks, stored, cut
):
    path = str(tmp_path / f"log-{uuid.uuid4().hex}")
    _write(path, stored)
    _assert_same(path)
    _assert_same(path, first=cut)


def test_moves_the_kernel_holds_back_reach_the_saga_in_the_order_of_each_tasks_last(
    tmp_path, small_chunks
):
    # t2 first moves (is created) before t1 (created earlier, by the first event, which the
    # kernel hands to evolve), but t1 enters ASSIGNED first: the saga's transient timers are
    # ordered by that, and a chunk boundary (7 records) falls between the moves.
    path = str(tmp_path / "log")
    events = [TaskCreated(1.0, None, "t1", "j", 0, {}), TaskCreated(2.0, None, "t2", "j", 1, {})]
    events += [TaskCreated(float(i), None, f"x{i}", "j", i, {}) for i in range(3, 9)]
    events += [TaskAssigned(9.0, None, "t1", "a1", {}), TaskAssigned(10.0, None, "t2", "a1", {})]
    _write(path, [_stored(e) for e in events])
    _assert_same(path)
    (_, kernel), _ = _both(path, LedgerState)
    assert list(kernel.saga.transient.items()) == [("t1", 9.0), ("t2", 10.0)]


def _edited(drawn: tuple) -> tuple[str, bytes]:
    event, edits, suffix = drawn
    wire = to_wire(event)
    for at, value in edits:
        wire[at % len(wire)] = value
    return event.topic, pack(wire) + suffix


# (topic, state bytes): anything under a known topic, and real events of the kinds the
# kernel reads itself with a field or two replaced and maybe bytes after the array.
any_record = st.one_of(
    st.tuples(
        st.sampled_from(EVENT_KINDS).map(lambda kind: kind.topic),
        msgpack_values.map(pack)
        | st.lists(msgpack_values, min_size=1, max_size=18).map(lambda v: pack([1, *v])),
    ),
    st.tuples(
        st.one_of(statuses, scheduler_facts),
        st.lists(st.tuples(st.integers(0, 20), msgpack_values | odd_values), max_size=2),
        st.just(b"") | st.binary(min_size=1, max_size=3),
    ).map(_edited),
)


@PROPERTY
@given(head=st.lists(st.sampled_from(range(len(EVENT_KINDS))), max_size=5), record=any_record)
def test_a_record_of_any_content_under_a_known_topic_gives_the_same_outcome(tmp_path, head, record):
    path = str(tmp_path / f"log-{uuid.uuid4().hex}")
    good = [_stored(TaskCreated(float(i), None, f"t{i}", "job", i, {})) for i, _ in enumerate(head)]
    topic, state = record
    _write(path, [*good, StoredEvent(LEDGER_STREAM, None, topic, state)])
    _assert_same(path)


def test_a_stale_update_interns_none_of_its_texts(tmp_path):
    # MesosView ignores a late "alive" update after a final state, texts and all: a kernel
    # that interned its agent, source or reason would store a different strings table.
    path = str(tmp_path / "log")
    late = StatusUpdateReceived(
        3.0,
        None,
        "t1",
        "TASK_RUNNING",
        "agent-late",
        None,
        "SOURCE_LATE",
        "REASON_LATE",
        None,
        None,
        None,
        None,
        None,
        False,
        {},
    )
    _write(
        path,
        [
            _stored(TaskCreated(1.0, None, "t1", "job", 0, {})),
            _stored(
                late._replace(
                    time=2.0,
                    state="TASK_FINISHED",
                    agent_id="a1",
                    source="SOURCE_AGENT",
                    reason=None,
                )
            ),
            _stored(late),
        ],
    )
    _assert_same(path)
    store = LMDBDatastore.open(path, durable=False)
    try:
        views = Views()
        replay(LMDBApplicationRecorder(store), views)
    finally:
        store.close()
    assert views.mesos.record("t1").stale == 1
    assert "agent-late" not in views.index.strings.codes


damage = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=8), st.just(0)),
    st.tuples(st.just("replace"), st.binary(max_size=40), st.just(0)),
    st.tuples(st.just("reframe"), msgpack_values, st.just(0)),  # well framed, not a record
)


@PROPERTY
@given(stored=logs(), at=st.integers(min_value=1), how=damage)
def test_a_damaged_record_gives_the_same_error_after_the_same_events(
    tmp_path, small_chunks, stored, at, how
):
    if not stored:
        return
    path = str(tmp_path / f"log-{uuid.uuid4().hex}")
    _write(path, stored)
    nid = 1 + at % len(stored)
    original = _get(path, nid)
    kind, a, b = how
    key = nid.to_bytes(8, "big")
    value = {
        "flip": lambda: (
            original[: a % len(original)]
            + bytes([original[a % len(original)] ^ (1 << b)])
            + original[a % len(original) + 1 :]
        ),
        "truncate": lambda: original[: a % len(original)],
        "append": lambda: original + a,
        "replace": lambda: a,
        "reframe": lambda: frame(key, pack(a)),
    }[kind]()
    _put(path, nid, value)
    outcome = _assert_same(path)
    if value != original and kind != "reframe":
        assert outcome[0] == "error"


def test_every_kind_of_the_simulations_logs_replays_the_same(tmp_path):
    # Whole-system logs: saga commands, runs, framework events, crashes and restarts.
    for seed in (3, 11, 29):
        folder = str(tmp_path / f"seed-{seed}")
        os.makedirs(folder)
        outcome = simulate_seed(seed, 150, folder=folder)
        assert outcome.ok, outcome
        result = _assert_same(os.path.join(folder, "log"))
        assert result[0] == "ok" and result[1].events == outcome.events
        assert len(result[1].by_topic) > 5


@pytest.mark.parametrize("compiled", [True, False])
def test_progress_is_reported_per_chunk_up_to_the_end(tmp_path, small_chunks, compiled):
    path = str(tmp_path / "log")
    _write(path, [_stored(TaskCreated(float(i), None, f"t{i}", "j", i, {})) for i in range(30)])
    seen: list[tuple[int, int]] = []
    store = LMDBDatastore.open(path, durable=False)
    try:
        done = replay(
            LMDBApplicationRecorder(store),
            Views(),
            compiled=compiled,
            progress=lambda events, nid: seen.append((events, nid)),
        )
    finally:
        store.close()
    assert done.events == 30 and done.last_nid == 30 and done.by_topic == {"TaskCreated": 30}
    assert seen[-1] == (30, 30)
    assert len(seen) >= 4 and seen == sorted(seen)  # chunks of 7: several reports, in order

"""Replay: the Ledger's stored records folded into a LedgerState or into Views.

Two ways to the same result:

* the compiled kernel (engine/_replay_kernel.pyx, built by ``pip install``): status
  updates, task creations and assignments go straight from the record's bytes into the
  views' columns; anything else (and anything unusual) goes through the Python path;
* the Python path: ``decode_records`` over the store's ``scan``, then ``apply``.

They must agree exactly (tests/test_replay_kernel.py checks it on random and damaged logs).
The kernel owns no table: everything it needs is read below from the modules that own it.
``KERNEL`` is None when the extension was not built; replay is then 3-4x slower and
otherwise the same.
"""

from __future__ import annotations

import struct
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

from engine import codec, dedup, drift_table, saga
from engine.events import StatusUpdateReceived, TaskAssigned, TaskCreated
from engine.ledger_state import _CURRENT_WIRE, STREAM_WIRE, LedgerState, decode_records
from engine.store import LMDBApplicationRecorder
from projections import drift_view, mesos_view, scheduler_view, views
from projections.views import Views

try:
    from engine import _replay_kernel as KERNEL  # noqa: N812
except ImportError:  # not built (no compiler at install time): the Python path only
    KERNEL = None  # type: ignore[assignment]

_U64 = struct.Struct(">Q")
CHUNK = 20_000  # records per read transaction

# The wire layouts the kernel reads by position: a schema change must update it (it would
# otherwise misread fields), and this says so at import.
_LAYOUTS = {
    StatusUpdateReceived: views.STATUS_FIELDS,  # read positionally by Views.apply too
    TaskCreated: ("time", "causation", "task_id", "job", "instance", "extra"),
    TaskAssigned: ("time", "causation", "task_id", "agent_id", "extra"),
}
for _kind, _fields in _LAYOUTS.items():
    assert _kind._fields == _fields, f"{_kind.__name__} changed: update engine/_replay_kernel"
# The kernel's kind numbers (K_* in the .pyx); 0 is "decode it, then the Python path".
_FAST_KIND = {StatusUpdateReceived: 1, TaskCreated: 2, TaskAssigned: 3}


def _tables() -> dict[str, Any]:
    """Every table the kernel uses, from the module that owns it."""
    sched, mesos = scheduler_view, mesos_view
    w = len(sched.STATES)
    kind, state, effects, failures = (array("B", bytes(2 * w * w)) for _ in range(4))
    for was_killing, table in enumerate(sched._STEPS):
        for at, step in enumerate(table):
            if step is not None:
                i = was_killing * w * w + at
                kind[i] = 1 if step.allowed else 2
                state[i], effects[i], failures[i] = step.state, step.effects, step.failures
    target = array("B", bytes(len(mesos.STATES)))
    for name, code in mesos.STATE_CODE.items():
        target[code] = sched.TARGET_OF_MESOS[name]
    topic_cause = [None] * (1 + max(_FAST_KIND.values()))
    for cls, number in _FAST_KIND.items():
        topic_cause[number] = cls.topic
    return {
        "stream": STREAM_WIRE,
        "topics": {
            topic: (_FAST_KIND.get(cls, 0), cls, version, length, number)
            for number, (topic, (cls, version, length)) in enumerate(_CURRENT_WIRE.items())
        },
        "mesos_code": dict(mesos.STATE_CODE),
        "format_version": codec.FORMAT_VERSION,
        "header_size": codec.HEADER_SIZE,
        "mesos_width": len(mesos.STATES),
        "sched_width": w,
        "killing": sched.STATE_CODE["KILLING"],
        "pending": sched.STATE_CODE["PENDING"],
        "init": sched.STATE_CODE["INIT"],
        "assigned": sched.STATE_CODE["ASSIGNED"],
        "created_effects": sched._CREATED_EFFECTS,
        "flag_answer": mesos.RECONCILIATION_ANSWER,
        "flag_timestamp": mesos.HAS_TIMESTAMP,
        "stale": array("B", mesos.STALE),
        "target_of_mesos": target,
        "cell_at": array("B", drift_view.CELL_AT),
        "disagrees": array("B", drift_table.DISAGREES),
        "step_kind": kind,
        "step_state": state,
        "step_effects": effects,
        "step_failures": failures,
        # a LedgerState's saga (saga.task_moved, saga.listens) and dedup memory
        "saga_listens": saga.listens,
        "saga_obligation": saga.Obligation,
        "saga_move_actions": [
            saga.move_actions(effects) if effects else None for effects in sched.EFFECTS
        ],
        "saga_transient": array("B", [name in saga.TRANSIENT_NAMES for name in sched.STATES]),
        "saga_partitioned": sched.STATE_CODE[saga.PARTITIONED],
        "saga_lost": sched.STATE_CODE[saga.LOST],
        "saga_update_causes": (saga.Cause.UPDATE.value, saga.Cause.UPDATE_LOST.value),
        "saga_topic_cause": tuple(topic_cause),
        "uuid_width": dedup.WIDTH,
    }


_TABLES = _tables() if KERNEL is not None else None
_TOPICS = tuple(_TABLES["topics"]) if _TABLES is not None else ()  # by topic number


class Replayed(NamedTuple):
    """What a replay applied: how many events, the last one's id, how many of each kind."""

    events: int
    last_nid: int
    by_topic: dict[str, int]


def replay(
    recorder: LMDBApplicationRecorder,
    target: LedgerState | Views,
    first: int = 1,
    last: int | None = None,
    *,
    compiled: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Replayed:
    """Applies the Ledger's events with ids in [first, last] to ``target`` in place.

    ``progress(events so far, last id so far)`` is called after each chunk read.
    ``compiled=False`` forces the Python path (tests compare the two). Damaged records
    raise what the store's decoder raises, after every event before them was applied."""
    if isinstance(target, LedgerState):
        views, apply, after = target.views, target.apply, target.apply_beyond_views
    else:
        views, apply, after = target, target.apply, None
    counts: Counter[str] = Counter()
    last_nid = 0
    if KERNEL is None or not compiled:
        done = 0
        for nid, event in decode_records(recorder.scan(first, last, CHUNK)):
            apply(nid, event)
            counts[event.topic] += 1
            last_nid = nid
            done += 1
            if progress is not None and done % CHUNK == 0:
                progress(done, nid)
        if progress is not None:
            progress(done, last_nid)
        return Replayed(done, last_nid, dict(counts))

    tables = dict(_TABLES, by_topic=array("q", bytes(8 * len(_TOPICS))))  # type: ignore[arg-type]
    kernel = KERNEL.Kernel(views, tables, target if after is not None else None)
    decode = recorder.datastore.decode

    def slow(key: bytes, value: bytes) -> tuple[int, Any] | None:
        nid = _U64.unpack(key)[0]
        for pair in decode_records(((nid, decode("notifications", key, value, nid)),)):
            counts[pair[1].topic] += 1
            return pair
        return None

    def total() -> int:
        return counts.total() + sum(tables["by_topic"])

    index = views.index
    try:
        for rows in recorder.scan_raw(first, last, CHUNK):
            index.reserve(len(index) + len(rows))  # no array grows while the kernel holds it
            last_nid = kernel.run(rows, apply, after, slow) or last_nid
            if progress is not None:
                progress(total(), last_nid)
    finally:
        kernel.finish()  # what it held back of a LedgerState's saga (its timers)
        for topic, count in zip(_TOPICS, tables["by_topic"], strict=True):
            if count:
                counts[topic] += count
    return Replayed(counts.total(), last_nid, dict(counts))

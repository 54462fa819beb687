"""Malformed TaskStatus dicts, fuzzed, into the Ledger.

Each is either recorded (it is a valid TaskStatus after all) or refused with a
MalformedStatus (a ValueError) naming the field; a refused one writes nothing and changes no
view. Whatever is recorded can be read back: the log reopens and equals a replay.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.ledger import Ledger, LedgerState, state_digest
from engine.task_status import MalformedStatus

FUZZ = settings(
    max_examples=int(os.environ.get("TASKLEDGER_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FIELDS = [
    "task_id",
    "state",
    "agent_id",
    "executor_id",
    "source",
    "reason",
    "message",
    "timestamp",
    "uuid",
    "healthy",
    "labels",
    "data",
    "container_status",
    "unreachable_time",
]
# JSON-ish values plus what Python callers can hand over: out-of-range ints, lone
# surrogates, non-text map keys, sets, bytes, tuples, objects.
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["\ud800", "TASK_RUNNING", "TASK_NOPE", "", "a\x00b"])
    | st.binary(max_size=4)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), inner, max_size=3)
        | st.tuples(inner)
        | st.frozensets(st.integers(0, 3), max_size=2)
        | st.builds(object)
    ),
    max_leaves=6,
)


def _valid(n: int) -> dict[str, Any]:
    return {
        "task_id": {"value": f"web/{n % 4}"},
        "state": "TASK_RUNNING",
        "agent_id": {"value": "agent-1"},
        "source": "SOURCE_EXECUTOR",
        "timestamp": 1_700_000_000.0 + n,
        "uuid": f"uuid-{n}",
    }


edits = st.lists(
    st.tuples(
        st.sampled_from(["set", "delete", "wrap"]),
        st.sampled_from(FIELDS) | st.text(max_size=6) | st.integers(0, 3),
        values,
    ),
    min_size=1,
    max_size=3,
)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    with Ledger.open(str(tmp_path_factory.mktemp("fuzz-status") / "log"), durable=False) as led:
        for n in range(6):
            led.status_update(_valid(n))
        yield led


counter = iter(range(10, 10**9))


@FUZZ
@given(edits=edits)
@example(edits=[("set", "data", 2**70)])
@example(edits=[("set", "data", {1: 2})])
@example(edits=[("set", "message", "\udcff")])
@example(edits=[("wrap", "task_id", "a\ud800")])
@example(edits=[("set", 3, "x")])
@example(edits=[("set", "labels", {"labels": [{2: "x"}]})])
def test_a_malformed_status_is_named_and_writes_nothing(ledger, edits):
    status: Any = _valid(next(counter))
    for op, field, value in edits:
        if op == "set":
            status[field] = value
        elif op == "delete":
            status.pop(field, None)
        else:
            status[field] = {"value": value}
    before_id, before = ledger.last_id, ledger.digest()
    try:
        nid = ledger.status_update(status)
    except MalformedStatus as e:
        assert isinstance(e, ValueError)
        assert f"{e.field!r}" in str(e), str(e)
        assert ledger.last_id == before_id and ledger.digest() == before
        return
    if nid is None:  # a re-sent uuid: nothing written
        assert ledger.last_id == before_id and ledger.digest() == before
        return
    assert nid == before_id + 1
    # What was accepted reads back: the event decodes and the views equal a replay.
    (_, event), *_ = list(ledger.events(nid, nid))
    assert event.task_id == status["task_id"]["value"]


@pytest.fixture(scope="module", autouse=True)
def replay_equals_live(ledger):
    yield
    state = LedgerState()
    for nid, event in ledger.events():
        state.apply(nid, event)
    assert state_digest(state) == ledger.digest()


@pytest.mark.parametrize(
    "status",
    [None, [], "TASK_RUNNING", 5, {"task_id": "web/0", "state": "TASK_RUNNING"}],
    ids=["none", "list", "text", "int", "bare task id"],
)
def test_not_a_map_at_all(ledger, status):
    before = ledger.last_id
    with pytest.raises(MalformedStatus):
        ledger.status_update(status)
    assert ledger.last_id == before

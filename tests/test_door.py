"""Bad input at the Ledger's door: times, timestamps, values, task ids.

Each bad input is refused by name (the argument or field, and the value), and nothing is
written: the log's last id and the live state's digest are what they were.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest
from builders import task_status
from cli_log import run
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.events import ReconciliationStarted, TaskCreated
from engine.ledger import Ledger, TaskExists
from engine.mesos_states import UnknownTaskState
from engine.task_status import MalformedStatus
from engine.times import MAX_TIME, BadTime

T0 = 1_714_532_400.0  # 2024-05-01T03:00:00Z
NOW = time.time()


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "log", durable=False) as led:
        led.framework_registered("fw", "master", time=T0)
        led.task_created("web/0", job="web", time=T0 + 1)
        led.task_assigned("web/0", agent_id="agent-1", time=T0 + 2)
        led.status_update(task_status("web/0", uuid="u1", timestamp=T0 + 3), time=T0 + 3)
        yield led


class Unchanged:
    """Asserts on exit that the log and the live state are as they were on entry."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def __enter__(self) -> Unchanged:
        self.before = (self.ledger.max_id(), self.ledger.last_id, self.ledger.digest())
        return self

    def __exit__(self, *exc: object) -> None:
        after = (self.ledger.max_id(), self.ledger.last_id, self.ledger.digest())
        assert after == self.before, "something was written"


BAD_TIMES = [math.nan, math.inf, -math.inf, 1e300, -1e18, 1_714_532_502_000.0, True, "5"]

# (name of the argument, a call with the bad value)
CALLS = [
    ("time", lambda led, t: led.task_created("web/9", job="web", time=t)),
    ("time", lambda led, t: led.task_assigned("web/0", agent_id="agent-2", time=t)),
    ("time", lambda led, t: led.kill_requested("web/0", time=t)),
    ("time", lambda led, t: led.status_update(task_status("web/0", uuid="u2"), time=t)),
    ("time", lambda led, t: led.framework_registered("fw", "m", time=t)),
    ("time", lambda led, t: led.framework_reregistered("fw", "m", time=t)),
    ("time", lambda led, t: led.framework_disconnected("m", time=t)),
    ("time", lambda led, t: led.snapshot(time=t)),
    ("now", lambda led, t: led.reconcile("explicit", now=t)),
    ("now", lambda led, t: led.tick(now=t)),
    ("now", lambda led, t: led.dispatch(lambda command: None, now=t)),
    ("now", lambda led, t: led.dispatcher(lambda command: None).dispatch(now=t)),
    ("now", lambda led, t: led.resume(now=t, operator="op")),
    ("time", lambda led, t: led.clock_stepped(time=t, previous=T0, elapsed=1.0)),
    ("elapsed", lambda led, t: led.clock_stepped(time=T0, previous=T0, elapsed=t)),
    ("timestamp", lambda led, t: led.id_at(t)),
    (
        "time of event 1 (TaskCreated)",
        lambda led, t: led.append(
            [TaskCreated(T0, None, "web/8", "web", 8), TaskCreated(t, None, "web/9", "web", 9)]
        ),
    ),
]


@pytest.mark.parametrize("name,call", CALLS, ids=[f"{i}-{n}" for i, (n, _) in enumerate(CALLS)])
@pytest.mark.parametrize("bad", BAD_TIMES, ids=repr)
def test_a_bad_time_is_refused_by_name_and_writes_nothing(ledger, name, call, bad):
    with Unchanged(ledger), pytest.raises(BadTime) as info:
        call(ledger, bad)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith(f"{name} must be a finite number of seconds"), message
    assert (repr(bad) if not isinstance(bad, float) else f"{bad!r}") in message
    if bad == 1_714_532_502_000.0:
        assert "milliseconds?" in message and "2024-05-01T03:01:42Z" in message


def test_a_tick_at_infinity_appends_nothing(ledger):
    # Both runs active: deciding at inf used to append their completions (and a command)
    # in a first pass, then fail on the schedule's arithmetic in the second.
    ledger.tick(now=T0 + 10)
    ledger.tick(now=T0 + 1900)
    assert sorted(ledger.saga.runs.active) == ["explicit", "implicit"]
    with Unchanged(ledger), pytest.raises(BadTime):
        ledger.tick(now=math.inf)
    assert ledger.tick(now=T0 + 4000)  # a good time afterwards decides as ever


def test_a_clock_that_returns_nan_is_named(tmp_path):
    with Ledger.open(tmp_path / "log", durable=False, clock=lambda: math.nan) as led:
        with pytest.raises(BadTime, match="the ledger's clock must be"):
            led.task_created("a", job="j")
        assert led.max_id() == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nows=st.lists(st.floats(-MAX_TIME, MAX_TIME), min_size=1, max_size=6))
def test_any_good_time_decides_without_error_in_any_order(tmp_path_factory, nows):
    """Every time the door lets in can be decided at, in any order (clock steps both
    ways), and what is decided reads back as it was decided."""
    path = tmp_path_factory.mktemp("ticks") / "log"
    with Ledger.open(path, durable=False) as led:
        led.framework_registered("fw", "master", time=nows[0])
        led.task_created("web/0", job="web", time=nows[0])
        led.task_assigned("web/0", agent_id="agent-1", time=nows[0])
        for now in nows:
            led.tick(now=now)
            led.reconcile("implicit", now=now)
        digest = led.digest()
    with Ledger.open(path, durable=False) as again:
        assert again.digest() == digest


# -- a status's own timestamp ---------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp,needles",
    [
        (1_714_532_502_000.0, ["at most a day after", "milliseconds? 1714532502000.0 / 1000"]),
        (1_714_532_502_000_000.0, ["at most a day after", "microseconds?"]),
        (1e300, ["at most a day after"]),
        (-1e18, ["must not be negative"]),
        (math.nan, ["must be finite"]),
        (math.inf, ["must be finite"]),
        (2**80, ["at most a day after"]),
    ],
    ids=repr,
)
def test_an_implausible_timestamp_is_refused_by_name(ledger, timestamp, needles):
    with Unchanged(ledger), pytest.raises(MalformedStatus) as info:
        ledger.status_update(task_status("web/0", uuid="u9", timestamp=timestamp))
    message = str(info.value)
    assert info.value.field == "timestamp" and "'timestamp'" in message, message
    for needle in needles:
        assert needle in message, message
    if "milli" not in needles[-1] and "micro" not in needles[-1]:
        assert "seconds?" not in message  # no unit is guessed when none fits


def test_a_timestamp_up_to_a_day_ahead_of_its_receipt_is_kept(ledger):
    at = NOW + 1000.0  # the later of the event's time and the machine's clock counts
    nid = ledger.status_update(task_status("web/0", uuid="ok", timestamp=at + 86_000.0), time=at)
    assert ledger.event_at(nid).timestamp == at + 86_000.0
    with Unchanged(ledger), pytest.raises(MalformedStatus, match="at most a day after"):
        ledger.status_update(task_status("web/0", uuid="late", timestamp=at + 86_500.0), time=at)
    # A virtual clock far behind the machine's (the simulation's) does not make a real
    # timestamp implausible: the machine's clock is the bound then.
    assert ledger.status_update(
        task_status("web/0", uuid="virtual", timestamp=NOW - 5.0), time=12.5
    )


# -- values ---------------------------------------------------------------------------------


def _nested(depth: int, leaf: Any, kinds: list[str]) -> Any:
    value = leaf
    for level in range(depth):  # built inside out, without recursion
        value = [value] if kinds[level % len(kinds)] == "list" else {"k": value}
    return value


def test_data_nested_2000_deep_is_a_malformed_status(ledger):
    with Unchanged(ledger), pytest.raises(MalformedStatus) as info:
        ledger.status_update(task_status("web/0", uuid="deep", data=_nested(2000, 1, ["list"])))
    message = str(info.value)
    assert info.value.field == "data" and "nested too deeply" in message
    assert len(message) < 400 and "[[[[" in message  # shown bounded


json_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(depth=1022, kinds=["list"], leaf=None, field="data")  # the deepest readable
@example(depth=1023, kinds=["list"], leaf=None, field="data")  # packs, reads back no more
@example(depth=1023, kinds=["list"], leaf=None, field="labels")
@example(depth=1024, kinds=["dict"], leaf=None, field="labels")
@given(
    depth=st.integers(0, 3000),
    kinds=st.lists(st.sampled_from(["list", "dict"]), min_size=1, max_size=3),
    leaf=json_leaves,
    field=st.sampled_from(["data", "labels", "message", "container_status", "task_id", "uuid"]),
)
def test_any_nesting_is_recorded_or_a_malformed_status(tmp_path_factory, depth, kinds, leaf, field):
    path = tmp_path_factory.mktemp("nesting") / "log"
    with Ledger.open(path, durable=False) as led:
        status = task_status("web/0", uuid="n1")
        value = _nested(depth, leaf, kinds)
        status[field] = {"value": value} if field == "task_id" else value
        try:
            nid = led.status_update(status)
        except MalformedStatus as e:
            assert len(str(e)) < 600
            assert led.max_id() == 0
            return
        digest = led.digest()
        assert nid == 1
    with Ledger.open(path, durable=False) as again:  # what was recorded reads back
        assert again.digest() == digest


def test_a_value_nested_past_what_the_log_reads_back_is_refused(tmp_path):
    """msgpack packs deeper than it unpacks: a status nested just past its limit used to be
    written, and then no replay could read the log. The depth checked is the depth stored
    (the event's array and its `extra` count)."""
    path = tmp_path / "log"
    with Ledger.open(path, durable=False) as led:
        assert (
            led.status_update(task_status("web/0", uuid="a", data=_nested(1022, 0, ["list"]))) == 1
        )
        with Unchanged(led), pytest.raises(MalformedStatus, match="1024 levels at most"):
            led.status_update(task_status("web/0", uuid="b", data=_nested(1023, 0, ["list"])))
    with Ledger.open(path, durable=False) as again:
        assert again.last_id == 1


def test_an_unknown_state_is_one_sentence_with_the_nearest_state(ledger):
    with Unchanged(ledger), pytest.raises(MalformedStatus) as info:
        ledger.status_update(task_status("web/0", "RUNNING"))
    assert str(info.value) == (
        "TaskStatus field 'state' is not a Mesos task state, got 'RUNNING'; "
        "did you mean 'TASK_RUNNING'?"
    )
    assert isinstance(info.value, UnknownTaskState) and info.value.value == "RUNNING"
    for typo, nearest in [("task_finished", "TASK_FINISHED"), ("TASK_RUNING", "TASK_RUNNING")]:
        with pytest.raises(MalformedStatus, match=f"did you mean '{nearest}'"):
            ledger.status_update(task_status("web/0", typo))
    with pytest.raises(MalformedStatus) as info:
        ledger.status_update(task_status("web/0", "TASK_BOGUS"))
    assert str(info.value) == "TaskStatus field 'state' is not a Mesos task state, got 'TASK_BOGUS'"


# -- task ids -------------------------------------------------------------------------------


def test_creating_a_task_that_exists_is_refused_by_name(ledger):
    assert ledger.scheduler_view.get("web/0") == "RUNNING"
    with Unchanged(ledger), pytest.raises(TaskExists) as info:
        ledger.task_created("web/0", job="web", time=T0 + 10)
    assert info.value.task_id == "web/0" and info.value.state == "RUNNING"
    assert "'web/0'" in str(info.value) and "RUNNING" in str(info.value)
    with Unchanged(ledger), pytest.raises(TaskExists):  # an identical repeat too
        ledger.task_created("web/0", job="web", time=T0 + 1)


def test_concurrent_creators_of_one_task_exactly_one_wins(tmp_path):
    with Ledger.open(tmp_path / "log", durable=False) as led:
        start = threading.Barrier(8)
        outcomes: list[object] = [None] * 8

        def create(n: int) -> None:
            start.wait()
            try:
                outcomes[n] = led.task_created("job/0", job="job", instance=n, time=T0)
            except TaskExists as e:
                outcomes[n] = e

        threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        won = [o for o in outcomes if isinstance(o, int)]
        assert len(won) == 1 and sum(isinstance(o, TaskExists) for o in outcomes) == 7
        assert [type(e) for _, e in led.events()] == [TaskCreated]


def test_a_log_with_a_repeated_creation_still_opens_and_reads_the_same(tmp_path):
    # Written before creations were checked (append records facts: it does not check).
    path = tmp_path / "log"
    with Ledger.open(path, durable=False) as led:
        led.task_created("a", job="j", time=T0)
        led.status_update(task_status("a", uuid="u1"), time=T0 + 1)
        led.append([TaskCreated(T0 + 2, None, "a", "j", 0)])
        state, digest = led.scheduler_view.get("a"), led.digest()
    with Ledger.open(path, durable=False) as again:
        assert again.scheduler_view.get("a") == state and again.digest() == digest
        assert [e.topic for _, e in again.events()][-1] == TaskCreated.topic


def test_reconcile_with_a_bad_kind_still_names_the_kind(ledger):
    # (the time is checked first; a good time with a bad kind is the kind's error)
    with Unchanged(ledger), pytest.raises(ValueError, match="'sometimes'"):
        ledger.reconcile("sometimes", now=T0)
    assert not any(type(e) is ReconciliationStarted for _, e in ledger.events())


# -- the same door for `taskledger ingest` ----------------------------------------------------


@pytest.mark.parametrize(
    "bad,needle",
    [
        ('"timestamp": 1714532502000.0', "'timestamp' must be epoch seconds at most a day after"),
        ('"timestamp": 1e300', "'timestamp' must be epoch seconds at most a day after"),
        ('"timestamp": -1e18', "'timestamp' must not be negative"),
        ('"data": ' + "[" * 2000 + "]" * 2000, "not JSON this ingest can read: nested too deeply"),
    ],
    ids=["milliseconds", "1e300", "negative", "deeper than JSON reads"],
)
def test_ingest_refuses_the_same_by_line(tmp_path, bad, needle):
    feed = tmp_path / "feed.jsonl"
    good = '{"task_id": {"value": "a"}, "state": "TASK_RUNNING", "uuid": "u1"}'
    feed.write_text(f'{good}\n{{"task_id": {{"value": "a"}}, "state": "TASK_RUNNING", {bad}}}\n')
    log = str(tmp_path / "log")
    result = run("ingest", str(feed), "--log", log)
    assert result.exit_code == 2
    error = result.stderr.strip()
    assert error.startswith(f"taskledger: {feed}: line 2: ") and needle in error, error
    assert "\n" not in error and len(error) < 600
    if "milli" in bad or "1714532502000" in bad:
        assert "milliseconds? 1714532502000.0 / 1000 is 2024-05-01T03:01:42Z" in error
    with Ledger.open(log, durable=False) as led:  # the line before it is kept, nothing else
        assert [e.task_id for _, e in led.events()] == ["a"]

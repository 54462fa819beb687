"""The group commit without the wait: `LMDBDatastore.submit` / `flush`, and the Ledger's
`submit_status_update` on it (the scheduler's pipelined ingest).

Most tests run with ``background_commits=False``: submissions then wait for a writer that
waits or for `flush()`, so what is committed when is decided by the test, not by a thread.
"""

from __future__ import annotations

import threading

import pytest
from builders import mesos_uuid, task_status
from eventsourcing.persistence import StoredEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import StatusUpdateReceived
from engine.ledger import Ledger
from engine.store import DuplicateKey, LMDBApplicationRecorder, LMDBDatastore, OperationalError


def _event(n: int) -> StoredEvent:
    return StoredEvent(originator_id="s", originator_version=None, topic="T", state=b"%d" % n)


class Told:
    """Records each submission's outcome, in the order the done callbacks come."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int] | None, BaseException | None]] = []

    def done(self, n: int):
        return lambda ids, error: self.calls.append((n, ids, error))


@pytest.fixture
def manual(tmp_path):
    store = LMDBDatastore.open(str(tmp_path / "log"), background_commits=False)
    store.db("unique")
    yield store
    store.close()


def test_submissions_wait_for_a_flush_then_commit_together_in_order(manual):
    told = Told()
    for n in range(100):
        manual.submit([_event(n)], done=told.done(n))
    assert told.calls == [] and manual.pending_submissions() == 100
    assert LMDBApplicationRecorder(manual).max_notification_id() is None
    commits = manual.commits
    manual.flush()
    assert manual.commits == commits + 1  # one transaction for all of them
    assert told.calls == [(n, [n + 1], None) for n in range(100)]
    assert manual.pending_submissions() == 0


def test_a_waiting_writer_commits_the_submissions_queued_before_it(manual):
    told = Told()
    manual.submit([_event(0)], done=told.done(0))
    ids = manual.append([_event(1)])
    assert told.calls == [(0, [1], None)] and ids == [2]


def test_a_duplicate_key_fails_its_submission_alone(manual):
    told = Told()
    manual.submit([_event(0)], done=told.done(0), unique_keys=[b"k1"])
    manual.submit([_event(1)], done=told.done(1), unique_keys=[b"k1"])
    manual.submit([_event(2)], done=told.done(2), unique_keys=[b"k2"])
    manual.flush()
    (first, second, third) = told.calls
    assert first == (0, [1], None) and third == (2, [2], None)  # ids stay gap-free
    assert second[1] is None and isinstance(second[2], DuplicateKey)


def test_closing_fails_what_is_still_queued_and_writes_nothing(tmp_path):
    store = LMDBDatastore.open(str(tmp_path / "log"), background_commits=False)
    told = Told()
    store.submit([_event(0)], done=told.done(0))
    store.close()
    [(n, ids, error)] = told.calls
    assert ids is None and isinstance(error, OperationalError)
    with pytest.raises(OperationalError):
        store.submit([_event(1)], done=told.done(1))
    again = LMDBDatastore.open(str(tmp_path / "log"))
    try:
        assert LMDBApplicationRecorder(again).max_notification_id() is None
    finally:
        again.close()


def test_the_commit_thread_commits_submissions_from_many_threads(tmp_path):
    store = LMDBDatastore.open(str(tmp_path / "log"), durable=False)
    results: dict[int, list[int]] = {}
    all_done = threading.Event()
    lock = threading.Lock()

    def done(n):
        def told(ids, error):
            assert error is None
            with lock:
                results[n] = ids
                if len(results) == 4000:
                    all_done.set()

        return told

    def submitter(k: int) -> None:
        for i in range(1000):
            store.submit([_event(k * 1000 + i)], done=done(k * 1000 + i))

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    # A waiting writer meanwhile: it shares the group commit with the submissions.
    waited = [store.append([_event(-1)])[0] for _ in range(20)]
    for t in threads:
        t.join()
    assert all_done.wait(30)
    store.close()
    ids = sorted(i for got in results.values() for i in got) + waited
    assert sorted(ids) == list(range(1, 4021))
    for k in range(4):  # one thread's submissions are written in the order it made them
        mine = [results[k * 1000 + i][0] for i in range(1000)]
        assert mine == sorted(mine)


# -- the Ledger's submit_status_update -----------------------------------------------------------
def _status(task: str, uuid: str | None, state: str = "TASK_RUNNING") -> dict:
    """An update from agent a1."""
    return task_status(task, state, agent="a1", uuid=uuid)


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "log", durable=False, background_commits=False) as opened:
        yield opened


def test_a_redelivery_of_an_update_in_flight_is_answered_only_once_it_is_durable(ledger):
    told = Told()
    ledger.submit_status_update(_status("t", mesos_uuid(1)), done=told.done(0))
    ledger.submit_status_update(_status("t", mesos_uuid(1)), done=told.done(1))
    assert told.calls == []  # neither is durable yet: neither may be acknowledged
    ledger.flush()
    assert [(n, ids) for n, ids, _ in told.calls] == [(0, 1), (1, None)]
    # Once it is the task's latest, a re-delivery is answered at once.
    ledger.submit_status_update(_status("t", mesos_uuid(1)), done=told.done(2))
    assert told.calls[-1] == (2, None, None)


def test_a_waiting_status_update_of_one_in_flight_waits_for_it(ledger):
    told = Told()
    ledger.submit_status_update(_status("t", mesos_uuid(1)), done=told.done(0))
    returned: list[object] = []
    waiter = threading.Thread(
        target=lambda: returned.append(ledger.status_update(_status("t", mesos_uuid(1))))
    )
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and returned == []  # nothing commits until the flush
    ledger.flush()
    waiter.join(10)
    assert returned == [None] and [n for n, _, _ in told.calls] == [0]


def test_an_older_update_delivered_again_is_a_duplicate_at_commit(ledger):
    told = Told()
    ledger.submit_status_update(_status("t", mesos_uuid(1), "TASK_STARTING"), done=told.done(0))
    ledger.submit_status_update(_status("t", mesos_uuid(2)), done=told.done(1))
    ledger.flush()
    ledger.submit_status_update(_status("t", mesos_uuid(1), "TASK_STARTING"), done=told.done(2))
    ledger.flush()
    assert [(n, nid, error) for n, nid, error in told.calls] == [
        (0, 1, None),
        (1, 2, None),
        (2, None, None),
    ]


def test_answers_without_uuid_are_always_recorded_and_batched(ledger):
    told = Told()
    commits = ledger._store.commits
    for n in range(50):
        ledger.submit_status_update(_status(f"t{n}", None), done=told.done(n))
    ledger.flush()
    assert ledger._store.commits == commits + 1
    assert [nid for _, nid, _ in told.calls] == list(range(1, 51))


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("update"), st.integers(0, 2), st.integers(0, 3)),
        st.tuples(st.just("answer"), st.integers(0, 2), st.just(0)),
        st.tuples(st.just("flush"), st.just(0), st.just(0)),
        st.tuples(st.just("append"), st.just(0), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(steps=_STEPS)
def test_any_interleaving_records_each_update_once_in_arrival_order(tmp_path_factory, steps):
    """Updates (a few tasks, a few uuids, re-delivered at will), answers, flushes and waiting
    appends in any order: each submission is told exactly once, only once durable; the log
    holds each (task, uuid) once, in the order of first arrival, and every answer."""
    path = tmp_path_factory.mktemp("log")
    with Ledger.open(path, durable=False, background_commits=False) as ledger:
        told: list[tuple[int, int | None]] = []
        expected: list[tuple[str, str | None]] = []
        seen: set[tuple[str, str]] = set()
        for i, (kind, task_no, uuid_no) in enumerate(steps):
            task = f"t{task_no}"
            if kind in ("update", "answer"):
                uuid = mesos_uuid(task_no * 10 + uuid_no) if kind == "update" else None
                if uuid is None or (task, uuid) not in seen:
                    expected.append((task, uuid))
                if uuid is not None:
                    seen.add((task, uuid))

                def done(nid, error, i=i):
                    assert error is None
                    # Told only once durable: the update is in the log by now.
                    assert nid is None or nid <= ledger.last_id
                    told.append((i, nid))

                ledger.submit_status_update(_status(task, uuid), done=done)
            elif kind == "flush":
                ledger.flush()
            else:
                ledger.task_created(f"job/{i}", job="job")
        ledger.flush()
        submitted = [i for i, (kind, _, _) in enumerate(steps) if kind in ("update", "answer")]
        assert sorted(i for i, _ in told) == submitted
        logged = [
            (e.task_id, e.uuid) for _, e in ledger.events() if type(e) is StatusUpdateReceived
        ]
        assert logged == expected


def test_a_write_in_the_same_commit_as_updates_does_not_fail_them_with_an_observer(ledger):
    """A snapshot (a write with no events) committed together with updates: the observer
    counts the events, and the updates are told they are durable (not 'committed but not
    applied')."""

    class Counting:
        events = 0

        def observe_append(self, seconds, events):
            pass

        def observe_commit(self, batch_size):
            Counting.events += batch_size

    ledger.observer = Counting()
    told = Told()
    ledger.submit_status_update(_status("t", mesos_uuid(1)), done=told.done(0))
    ledger.snapshot()  # a waiting writer: it commits the submission with its own write
    assert told.calls == [(0, 1, None)]
    assert Counting.events == 1

"""The Ledger API on a real LMDB folder: durability, dedup, bad input, threads, locking."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading

import pytest
from builders import task_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from view_histories import histories

from engine.ledger import Ledger, LedgerLocked
from engine.task_status import MalformedStatus
from projections.views import Views

# Every update here comes from agent-1; a uuid is given as its 16 raw bytes.
status = functools.partial(task_status, agent="agent-1")


def test_the_design_card_example(tmp_path):
    with Ledger.open(tmp_path / "ledger") as ledger:
        ledger.task_created("job/0/abc", job="job", time=1.0)
        ledger.task_assigned("job/0/abc", agent_id="agent-1", time=2.0)
        nid = ledger.status_update(status("job/0/abc", "TASK_RUNNING", uuid=b"u" * 16), time=3.0)
        assert nid == 3
        assert ledger.scheduler_view.get("job/0/abc") == "RUNNING"
        assert ledger.mesos_view.get("job/0/abc") == "TASK_RUNNING"
        assert ledger.drift() == []
        assert ledger.scheduler_view.get("nope") is None
        assert ledger.mesos_view.get("nope") is None


def test_views_survive_reopen_and_equal_a_rebuild(tmp_path):
    with Ledger.open(tmp_path / "l") as ledger:
        ledger.task_created("a", job="j", time=1)
        ledger.task_assigned("a", agent_id="x", time=2)
        ledger.status_update(status("a", "TASK_RUNNING", uuid=b"1" * 16), time=3)
        ledger.status_update(status("rogue", "TASK_RUNNING"), time=4)
        live_drift = ledger.drift()
        events = list(ledger.events())
    with Ledger.open(tmp_path / "l") as ledger:
        assert ledger.views == Views.rebuild(events)
        assert ledger.drift() == live_drift
        assert [d.task_id for d in live_drift] == ["rogue"]


def test_same_update_twice_changes_nothing(tmp_path):
    with Ledger.open(tmp_path / "l") as ledger:
        ledger.task_created("a", job="j", time=1)
        update = status("a", "TASK_RUNNING", uuid=b"2" * 16)
        first = ledger.status_update(update, time=2)
        assert ledger.status_update(update, time=3) is None
        assert ledger.last_id == first
    # The dedup memory is rebuilt from the log.
    with Ledger.open(tmp_path / "l") as ledger:
        assert ledger.status_update(update, time=4) is None
        assert ledger.last_id == first


def test_any_earlier_update_delivered_again_changes_nothing(tmp_path):
    # Not only the task's latest: an older update re-sent after a newer one (a replayed
    # capture, a reordering transport) is found in the log's unique index.
    staging = status("a", "TASK_STAGING", uuid=b"s" * 16)
    running = status("a", "TASK_RUNNING", uuid=b"r" * 16)
    with Ledger.open(tmp_path / "l") as ledger:
        ledger.task_created("a", job="j", time=1)
        ledger.task_assigned("a", agent_id="agent-1", time=2)
        ledger.status_update(staging, time=3)
        last = ledger.status_update(running, time=4)
        digest = ledger.digest()
        assert ledger.status_update(staging, time=5) is None
        assert (ledger.last_id, ledger.digest()) == (last, digest)
        assert ledger.mesos_view.get("a") == "TASK_RUNNING"
        assert ledger.update_recorded("a", staging["uuid"])
        assert not ledger.update_recorded("b", staging["uuid"])  # per task
        ledger.snapshot()
    with Ledger.open(tmp_path / "l") as ledger:  # from the snapshot: the index is the log's
        assert ledger.status_update(staging, time=6) is None
        assert ledger.status_update(running, time=6) is None
        assert ledger.last_id == last


def test_a_log_from_before_the_index_is_indexed_on_open(tmp_path):
    staging = status("a", "TASK_STAGING", uuid=b"s" * 16)
    with Ledger.open(tmp_path / "l") as ledger:
        ledger.status_update(staging, time=1)
        ledger.status_update(status("a", "TASK_RUNNING", uuid=b"r" * 16), time=2)
        last = ledger.last_id
        store = ledger.datastore
        # What an older build left: the updates, no unique index.
        with store.env.begin(write=True) as txn:
            txn.drop(store.dbs["unique"], delete=False)
        assert not ledger.update_recorded("a", staging["uuid"])
    with Ledger.open(tmp_path / "l") as ledger:
        assert ledger.update_recorded("a", staging["uuid"])
        assert ledger.status_update(staging, time=3) is None
        assert ledger.last_id == last


def test_the_same_older_update_from_many_threads_is_recorded_never(tmp_path):
    old = status("a", "TASK_STAGING", uuid=b"o" * 16)
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        ledger.status_update(old, time=1)
        last = ledger.status_update(status("a", "TASK_RUNNING", uuid=b"n" * 16), time=2)
        new = [status(f"t{i}", "TASK_RUNNING", uuid=bytes([i]) * 16) for i in range(8)]
        results: list[object] = []

        def deliver(update: dict) -> None:
            results.append(ledger.status_update(update, time=3))

        threads = [threading.Thread(target=deliver, args=(old,)) for _ in range(8)]
        threads += [threading.Thread(target=deliver, args=(u,)) for u in new]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results.count(None) == 8  # the old one, each time
        assert ledger.last_id == last + 8  # the new ones, once each
        assert ledger.mesos_view.get("a") == "TASK_RUNNING"


def test_master_answers_are_marked_and_never_deduplicated(tmp_path):
    with Ledger.open(tmp_path / "l") as ledger:
        answer = status("a", "TASK_RUNNING", source="SOURCE_MASTER", reason="REASON_RECONCILIATION")
        first = ledger.status_update(answer, time=1)
        second = ledger.status_update(answer, time=2)
        assert second == first + 1
        assert ledger.mesos_view.record("a").is_reconciliation_answer


BAD_STATUSES = [
    ({"state": "TASK_RUNNING"}, "task_id"),
    ({"task_id": "a", "state": "TASK_RUNNING"}, "task_id"),
    ({"task_id": {"value": 7}, "state": "TASK_RUNNING"}, "task_id"),
    ({"task_id": {"value": "a"}}, "state"),
    ({"task_id": {"value": "a"}, "state": "TASK_SLEEPING"}, "TASK_SLEEPING"),
    ({"task_id": {"value": "a"}, "state": 3}, "state"),
    ({"task_id": {"value": "a"}, "state": "TASK_RUNNING", "timestamp": "noon"}, "timestamp"),
    ({"task_id": {"value": "a"}, "state": "TASK_RUNNING", "timestamp": True}, "timestamp"),
]


@pytest.mark.parametrize(("bad", "named"), BAD_STATUSES)
def test_malformed_status_names_the_field_and_writes_nothing(tmp_path, bad, named):
    with Ledger.open(tmp_path / "l") as ledger:
        ledger.task_created("a", job="j", time=1)
        before = (ledger.last_id, ledger.scheduler_view.get("a"), ledger.mesos_view.get("a"))
        with pytest.raises(MalformedStatus) as info:
            ledger.status_update(bad, time=2)
        assert isinstance(info.value, ValueError)
        assert named in str(info.value)
        after = (ledger.last_id, ledger.scheduler_view.get("a"), ledger.mesos_view.get("a"))
        assert after == before
        assert len(list(ledger.events())) == 1


def test_many_threads_share_commits_and_views_stay_exact(tmp_path):
    with Ledger.open(tmp_path / "l") as ledger:
        for t in range(16):
            ledger.task_created(f"t{t}", job="j", time=0)
        commits_before = ledger._store.commits
        start = threading.Barrier(16)

        def feed(t: int) -> None:
            start.wait()
            for i, state in enumerate(["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"] * 5):
                uuid = bytes([t, i]) * 8
                ledger.status_update(status(f"t{t}", state, uuid=uuid), time=1 + i)

        threads = [threading.Thread(target=feed, args=(t,)) for t in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        events = list(ledger.events())
        assert [nid for nid, _ in events] == list(range(1, 16 + 16 * 15 + 1))
        assert ledger.views == Views.rebuild(events)
        assert ledger._store.commits - commits_before < 16 * 15  # group commit batched
        assert all(ledger.mesos_view.get(f"t{t}") == "TASK_RUNNING" for t in range(16))


def test_second_writer_process_is_refused_with_one_line(tmp_path):
    with Ledger.open(tmp_path / "l"):
        script = (
            "import sys\n"
            "from engine.ledger import Ledger, LedgerLocked\n"
            "try:\n    Ledger.open(sys.argv[1])\n"
            "except LedgerLocked as e:\n    print(e); sys.exit(3)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "l")],
            capture_output=True,
            text=True,
            cwd=os.getcwd(),
        )
        assert result.returncode == 3, result.stderr
        assert f"pid {os.getpid()}" in result.stdout
    with pytest.raises(LedgerLocked, match="this process"), Ledger.open(tmp_path / "m"):
        Ledger.open(tmp_path / "m")


def test_bad_task_id_for_scheduler_facts(tmp_path):
    with Ledger.open(tmp_path / "l") as ledger:
        with pytest.raises(ValueError, match="task_id"):
            ledger.task_created("", job="j")
        with pytest.raises(ValueError, match="agent_id"):
            ledger.task_assigned("a", agent_id=None)  # type: ignore[arg-type]
        assert ledger.last_id == 0


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories)
def test_ledger_replay_equals_rebuild_for_random_histories(tmp_path_factory, history):
    path = tmp_path_factory.mktemp("h")
    events = [event for _, event in history]
    with Ledger.open(path, durable=False) as ledger:
        ids = ledger.append(events) if events else []
        assert ids == list(range(1, len(events) + 1))
        live = ledger.views
        assert live == Views.rebuild(list(zip(ids, events, strict=True)))
    with Ledger.open(path, durable=False) as reopened:
        assert reopened.views == Views.rebuild(list(zip(ids, events, strict=True)))


_POOL = [
    status(task, state, uuid=bytes([i]) * 16)
    for i, (task, state) in enumerate(
        [("a", "TASK_STAGING"), ("a", "TASK_RUNNING"), ("a", "TASK_FAILED"), ("b", "TASK_RUNNING")]
    )
]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(deliveries=st.lists(st.integers(0, len(_POOL) - 1), max_size=12), reopen=st.integers(0, 12))
def test_each_update_is_recorded_once_whatever_the_order_of_deliveries(
    tmp_path_factory, deliveries, reopen
):
    path = tmp_path_factory.mktemp("dedup") / "l"
    ledger = Ledger.open(path, durable=False)
    try:
        for at, i in enumerate(deliveries):
            if at == reopen:  # a restart in between: the index is the log's, not memory's
                ledger.close()
                ledger = Ledger.open(path, durable=False)
            nid = ledger.status_update(_POOL[i], time=float(at))
            assert (nid is None) == (i in deliveries[:at])
        recorded = [(e.task_id, e.uuid) for _, e in ledger.events()]
        assert len(recorded) == len(set(deliveries))
        assert len(set(recorded)) == len(recorded)
        assert ledger.views == Views.rebuild(ledger.events())
    finally:
        ledger.close()


def test_append_records_the_keys_of_agent_updates_and_enforces_given_ones(tmp_path):
    from engine.dedup import update_key
    from engine.store import DuplicateKey
    from engine.task_status import status_from_mesos

    update = status_from_mesos(status("a", "TASK_RUNNING", uuid=b"k" * 16), time=1.0)
    fresh = status_from_mesos(status("b", "TASK_RUNNING", uuid=b"f" * 16), time=1.0)
    with Ledger.open(tmp_path / "l", durable=False) as ledger:
        assert ledger.append([update]) == [1]
        assert ledger.update_recorded("a", update.uuid)  # keyed without being asked
        # Appending records facts: the same update again is appended (its key keeps id 1).
        assert ledger.append([update]) == [2]
        # Given keys are enforced: one recorded before, and nothing of the call is written.
        keys = [update_key("b", fresh.uuid), update_key("a", update.uuid)]
        with pytest.raises(DuplicateKey):
            ledger.append([fresh, update], unique_keys=keys)
        assert ledger.last_id == 2 and not ledger.update_recorded("b", fresh.uuid)
        assert ledger.status_update(status("a", "TASK_RUNNING", uuid=b"k" * 16)) is None


def test_the_public_names_import_from_engine(tmp_path):
    import subprocess
    import sys

    # A fresh interpreter: `engine` alone must not load the Ledger (lazy), and every
    # public name must resolve to the object its module defines.
    code = (
        "import sys, engine\n"
        "assert 'engine.ledger' not in sys.modules\n"
        "from engine import Ledger\n"
        "import engine.ledger\n"
        "assert Ledger is engine.ledger.Ledger\n"
        "for name in engine.__all__: getattr(engine, name)\n"
        "try:\n    engine.NoSuchThing\nexcept AttributeError: pass\n"
        "else: raise SystemExit('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)

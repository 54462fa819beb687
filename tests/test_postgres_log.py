"""The fenced PostgreSQL log (engine/postgres_log.py) on a real PostgreSQL server.

What fencing promises: an append whose epoch is not the log's recorded one writes nothing
and raises ``Fenced``; a take-over waits for appends in flight and every later append sees
it; each event records the epoch and replica that wrote it; concurrent callers share
transactions and each gets its own ids.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from servers import PostgresServer

from engine.postgres_log import (
    EpochNotRecorded,
    Fenced,
    FencedApplicationRecorder,
    FencedPostgresFactory,
    Lead,
    NoEpoch,
    PollingSubscription,
)


def event(topic: str = "t") -> StoredEvent:
    return StoredEvent(
        originator_id=f"job/0/{uuid.uuid4()}", originator_version=0, topic=topic, state=b"{}"
    )


class Replicas:
    """Recorders of one log, one per replica, each with a datastore of its own (as two
    processes would have)."""

    def __init__(self, server: PostgresServer, schema: str, table: str = "log_events"):
        self.server, self.schema, self.table = server, schema, table
        self._stores: list[PostgresDatastore] = []

    def recorder(self) -> FencedApplicationRecorder:
        store = self.server.datastore(self.schema)
        self._stores.append(store)
        recorder = FencedApplicationRecorder(store, events_table_name=self.table)
        recorder.create_table()
        return recorder

    def close(self) -> None:
        for store in self._stores:
            store.close()


@pytest.fixture
def replicas(postgres: PostgresServer) -> Iterator[Replicas]:
    with postgres.fresh_schema() as schema:
        group = Replicas(postgres, schema)
        try:
            yield group
        finally:
            group.close()


# ----------------------------------------------------------------------------- fencing
def test_a_fenced_append_writes_nothing_and_takes_no_ids(replicas: Replicas) -> None:
    old, new = replicas.recorder(), replicas.recorder()
    old.take_over(1, "a")
    assert old.insert_events([event()]) == [1]
    new.take_over(2, "b")

    with pytest.raises(Fenced) as refused:
        old.insert_events([event(), event()])
    assert (refused.value.epoch, refused.value.newer, refused.value.holder) == (1, 2, "b")
    assert "epoch 2 is recorded" in str(refused.value)
    assert old.max_notification_id() == 1
    # The fence raises before the insert runs: no sequence values are used up.
    assert new.insert_events([event()]) == [2]
    assert [(n.id, n.epoch, n.replica) for n in new.select_written()] == [(1, 1, "a"), (2, 2, "b")]


def test_two_leaders_take_turns_and_each_event_records_its_writer(replicas: Replicas) -> None:
    a, b = replicas.recorder(), replicas.recorder()
    a.take_over(1, "a")
    a.insert_events([event("a1"), event("a1")])
    b.take_over(2, "b")
    b.insert_events([event("b2")])
    with pytest.raises(Fenced):
        a.insert_events([event("late")])
    # A leader cannot take over at an epoch already passed, nor at one another replica holds.
    with pytest.raises(Fenced) as passed:
        a.take_over(1, "a")
    assert passed.value.newer == 2
    with pytest.raises(Fenced) as taken:
        a.take_over(2, "a")
    assert (taken.value.newer, taken.value.holder) == (2, "b")
    b.take_over(2, "b")  # again at its own epoch: nothing changes
    a.take_over(3, "a")  # elected again
    a.insert_events([event("a3")])
    with pytest.raises(Fenced):
        b.insert_events([event("late")])

    written = [(n.topic, n.epoch, n.replica) for n in b.select_written()]
    assert written == [("a1", 1, "a"), ("a1", 1, "a"), ("b2", 2, "b"), ("a3", 3, "a")]
    assert b.recorded_epoch() == Lead(3, "a")
    assert len(b.select_written(start=2, stop=3)) == 2


def test_appends_need_a_recorded_epoch(replicas: Replicas) -> None:
    standby = replicas.recorder()
    with pytest.raises(NoEpoch, match="take_over"):
        standby.insert_events([event()])
    standby.lead = Lead(5, "s")  # an epoch it never recorded
    with pytest.raises(EpochNotRecorded) as unrecorded:
        standby.insert_events([event()])
    assert unrecorded.value.epoch == 5
    standby.take_over(5, "s")
    standby.step_down()
    with pytest.raises(NoEpoch):
        standby.insert_events([event()])
    assert standby.max_notification_id() is None


def test_replicas_starting_together_create_the_tables_once(replicas: Replicas) -> None:
    with ThreadPoolExecutor(4) as pool:
        recorders = list(pool.map(lambda _: replicas.recorder(), range(4)))
    recorders[0].take_over(1, "a")
    assert recorders[0].insert_events([event()]) == [1]
    assert recorders[3].recorded_epoch() == Lead(1, "a")


def test_bad_epochs_and_replica_names_are_refused(replicas: Replicas) -> None:
    recorder = replicas.recorder()
    for epoch in (0, -1, 1.5, "1"):
        with pytest.raises(ValueError, match="an epoch is an int"):
            recorder.take_over(epoch, "a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        recorder.take_over(1, "")
    assert recorder.recorded_epoch() is None


def test_a_writer_that_bypasses_the_fence_cannot_insert(replicas: Replicas) -> None:
    fenced = replicas.recorder()
    fenced.take_over(1, "a")
    plain = PostgresApplicationRecorder(fenced.datastore, events_table_name=replicas.table)
    with pytest.raises(IntegrityError, match="epoch"):
        plain.insert_events([event()])
    assert fenced.max_notification_id() is None


def test_take_over_waits_for_an_append_in_flight(replicas: Replicas) -> None:
    """The fence reads the epoch FOR SHARE: an append that passed it commits before the
    take-over does, and an append that reaches it during a take-over sees the new epoch."""
    old, new = replicas.recorder(), replicas.recorder()
    old.take_over(1, "a")
    fence = sql.Identifier(replicas.schema, "taskledger_fence")
    events = sql.Identifier(replicas.schema, replicas.table)
    took_over = threading.Event()
    with psycopg.connect(replicas.server.dsn) as conn:  # one transaction, held open
        conn.execute(sql.SQL("SELECT {}(%s, 1, 'a')").format(fence), (replicas.table,))
        taker = threading.Thread(target=lambda: (new.take_over(2, "b"), took_over.set()))
        taker.start()
        assert not took_over.wait(0.5), "take_over did not wait for the append in flight"
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (originator_id, originator_version, topic, state) "
                "VALUES ('in-flight', 0, 't', '')"
            ).format(events)
        )
    taker.join(5)
    assert took_over.is_set()
    with pytest.raises(Fenced):
        old.insert_events([event()])
    assert [(n.originator_id, n.epoch) for n in new.select_written()] == [("in-flight", 1)]


def test_take_over_ends_an_append_stalled_past_the_idle_timeout(replicas: Replicas) -> None:
    """A leader stopped in the middle of a pipelined append (statements sent, no Sync) is
    not idle in its transaction to the server, so the idle timeout never ends it: the
    take-over, refused its lock for that long, ends the session that holds the epoch row.
    Here the holder is a session without the timeout, held open."""
    old, new = replicas.recorder(), replicas.recorder()
    new.idle_timeout = 0.3
    old.take_over(1, "a")
    fence = sql.Identifier(replicas.schema, "taskledger_fence")
    with psycopg.connect(replicas.server.dsn) as conn:
        conn.execute(sql.SQL("SELECT {}(%s, 1, 'a')").format(fence), (replicas.table,))
        started = time.monotonic()
        new.take_over(2, "b")
        assert time.monotonic() - started < 5
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")  # its session was ended, its transaction rolled back
    assert new.recorded_epoch() == Lead(2, "b")
    with pytest.raises(Fenced):
        old.insert_events([event()])


def test_an_append_during_a_take_over_sees_the_new_epoch(replicas: Replicas) -> None:
    old, new = replicas.recorder(), replicas.recorder()
    old.take_over(1, "a")
    new.take_over(2, "b")
    epochs = sql.Identifier(replicas.schema, "taskledger_epochs")
    outcome: list[BaseException | object] = []
    with psycopg.connect(replicas.server.dsn) as conn:  # a take-over to epoch 3, held open
        conn.execute(
            sql.SQL("UPDATE {} SET epoch = 3, replica = 'c' WHERE log = %s").format(epochs),
            (replicas.table,),
        )

        def append() -> None:
            try:
                outcome.append(new.insert_events([event()]))
            except BaseException as e:
                outcome.append(e)

        appender = threading.Thread(target=append)
        appender.start()
        appender.join(0.5)
        assert appender.is_alive(), "the append did not wait for the take-over in flight"
    appender.join(5)
    assert isinstance(outcome[0], Fenced) and outcome[0].newer == 3
    assert new.max_notification_id() is None


class Stalling(FencedApplicationRecorder):
    """Stops once between its insert and its COMMIT, as a SIGSTOPped leader would, holding
    the table lock and the epoch row's share lock."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.stalled, self.resume = threading.Event(), threading.Event()

    def _fetch_ids_after_insert_events(self, *args: object, **kwargs: object) -> object:
        ids = super()._fetch_ids_after_insert_events(*args, **kwargs)  # type: ignore[arg-type]
        if not self.stalled.is_set():
            self.stalled.set()
            self.resume.wait(30)
        return ids


def test_a_leader_stopped_inside_its_transaction_does_not_block_the_next(
    replicas: Replicas,
) -> None:
    store = replicas.server.datastore(replicas.schema)
    replicas._stores.append(store)
    old = Stalling(store, events_table_name=replicas.table, idle_timeout=0.3)
    old.create_table()
    old.take_over(1, "a")
    new = replicas.recorder()
    outcome: list[object] = []
    appender = threading.Thread(target=lambda: outcome.append(_try_append(old, event())))
    appender.start()
    assert old.stalled.wait(10)
    started = time.monotonic()
    new.take_over(2, "b")  # waits for the server to end the stopped session, no longer
    assert time.monotonic() - started < 5
    assert new.insert_events([event("b")]) == [new.max_notification_id()]
    old.resume.set()  # its COMMIT finds the session gone; eventsourcing's retry is fenced
    appender.join(10)
    assert isinstance(outcome[0], Fenced) and outcome[0].newer == 2
    assert [(n.topic, n.epoch) for n in new.select_written()] == [("b", 2)]


def test_an_event_appended_before_the_listen_is_in_place_is_delivered(
    replicas: Replicas,
) -> None:
    """eventsourcing's subscription reads the log, then LISTENs from another thread: an
    event committed in between gets no NOTIFY of its own. Polling delivers it."""
    writer, reader = replicas.recorder(), replicas.recorder()
    writer.take_over(1, "a")
    listening = threading.Event()

    class LateListen(PollingSubscription):
        def _listen(self) -> None:
            listening.wait(10)
            super()._listen()

    with LateListen(reader, gt=0) as subscription:
        time.sleep(0.2)  # the first read is done
        writer.insert_events([event("between")])
        got: list[str] = []
        taker = threading.Thread(target=lambda: got.append(next(subscription).topic))
        taker.start()
        taker.join(3 * PollingSubscription.poll_interval + 2)
        listening.set()
        assert got == ["between"]


# ----------------------------------------------------------------------------- group commit
def test_sixteen_threads_share_commits_and_each_gets_its_ids(replicas: Replicas) -> None:
    recorder = replicas.recorder()
    recorder.take_over(1, "a")
    mine: dict[int, list[tuple[int, str]]] = {}

    def write(thread: int) -> None:
        got = mine.setdefault(thread, [])
        for _ in range(25):
            e = event(topic=f"w{thread}")
            got.extend(zip(recorder.insert_events([e]), [e.originator_id], strict=True))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(16)))

    stored = {n.id: n for n in recorder.select_written(limit=1000)}
    assert len(stored) == 16 * 25
    for thread, got in mine.items():
        ids = [i for i, _ in got]
        assert ids == sorted(ids)  # each caller's appends in its own order
        for nid, originator in got:  # each caller got the ids of its own events
            assert stored[nid].originator_id == originator
            assert stored[nid].topic == f"w{thread}"
    assert recorder.group.commits < 16 * 25  # callers shared transactions


def test_a_conflicting_caller_fails_alone(replicas: Replicas) -> None:
    recorder = replicas.recorder()
    recorder.take_over(1, "a")
    taken = event()
    recorder.insert_events([taken])
    barrier = threading.Barrier(8)
    results: dict[int, object] = {}

    def write(i: int) -> None:
        barrier.wait()
        try:
            results[i] = recorder.insert_events([taken if i == 3 else event()])
        except IntegrityError as e:
            results[i] = e

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    assert isinstance(results.pop(3), IntegrityError)
    assert all(isinstance(ids, list) and len(ids) == 1 for ids in results.values())
    assert len(recorder.select_written()) == 8


def test_notification_ids_can_have_gaps(replicas: Replicas) -> None:
    """PostgreSQL's sequence does not give back ids of a failed insert: followers must
    treat ids as positions (resume after the last applied), never as counts."""
    recorder = replicas.recorder()
    recorder.take_over(1, "a")
    first = event()
    assert recorder.insert_events([first]) == [1]
    with pytest.raises(IntegrityError):
        recorder.insert_events([event(), first])  # the second row conflicts: both roll back
    [after_gap] = recorder.insert_events([event()])
    assert after_gap > 2
    assert [n.id for n in recorder.select_notifications(start=None, limit=10)] == [1, after_gap]


def test_appends_survive_the_server_ending_every_connection(replicas: Replicas) -> None:
    """As after a PostgreSQL restart or failover: the pool's connections are dead; the next
    append gets a new one (eventsourcing retries an OperationalError) and is still fenced."""
    old, new = replicas.recorder(), replicas.recorder()
    old.take_over(1, "a")
    old.insert_events([event()])
    with psycopg.connect(replicas.server.dsn, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND datname = current_database() "
            "AND backend_type = 'client backend'"
        ).fetchone()
    assert ended is not None and ended[0] >= 2
    assert old.insert_events([event()]) == [2]
    new.take_over(2, "b")
    with pytest.raises(Fenced):
        old.insert_events([event()])


# ----------------------------------------------------------------------------- settings
def test_db_functions_are_refused(postgres: PostgresServer) -> None:
    with postgres.fresh_schema() as schema:
        env = {
            InfrastructureFactory.PERSISTENCE_MODULE: "engine.postgres_log",
            **postgres.env(schema),
            "POSTGRES_ENABLE_DB_FUNCTIONS": "y",
        }
        with pytest.raises(OSError, match="POSTGRES_ENABLE_DB_FUNCTIONS"):
            InfrastructureFactory.construct(env)
        store = postgres.datastore(schema, enable_db_functions=True)
        try:
            with pytest.raises(ProgrammingError, match="POSTGRES_ENABLE_DB_FUNCTIONS"):
                FencedApplicationRecorder(store)
        finally:
            store.close()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("TASKLEDGER_EPOCH", "x", "a whole number"),
        ("TASKLEDGER_EPOCH", "0", "at least 1"),
        ("TASKLEDGER_MAX_BATCH", "0", "at least 1"),
        ("TASKLEDGER_COMMIT_DELAY_US", "-5", "at least 0"),
    ],
)
def test_bad_settings_name_themselves(
    postgres: PostgresServer, key: str, value: str, message: str
) -> None:
    env = {
        **postgres.env("public"),
        FencedPostgresFactory.TASKLEDGER_REPLICA: "a",
        key: value,
    }
    with pytest.raises(OSError, match=f"{key} must be {message}"):
        FencedPostgresFactory(env)


def test_an_epoch_without_a_replica_is_refused(postgres: PostgresServer) -> None:
    env = {**postgres.env("public"), FencedPostgresFactory.TASKLEDGER_EPOCH: "1"}
    with pytest.raises(OSError, match="TASKLEDGER_REPLICA is not"):
        FencedPostgresFactory(env)


# ----------------------------------------------------------------------------- property
@pytest.fixture(scope="module")
def property_schema(postgres: PostgresServer) -> Iterator[tuple[PostgresServer, str]]:
    with postgres.fresh_schema() as schema:
        yield postgres, schema


REPLICA_NAMES = ("a", "b", "c")
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("elect"), st.sampled_from(REPLICA_NAMES)),
        st.tuples(st.just("stale"), st.sampled_from(REPLICA_NAMES), st.integers(0, 2)),
        st.tuples(st.just("append"), st.sampled_from(REPLICA_NAMES), st.integers(1, 4)),
    ),
    max_size=14,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_no_event_older_than_the_recorded_epoch_is_ever_stored(
    property_schema: tuple[PostgresServer, str], steps: list[tuple]
) -> None:
    """Elections, stale take-overs and concurrent appends from three replicas, in any
    order: an append succeeds exactly when its replica leads the recorded epoch, and no
    event stored has an epoch lower than the one recorded before it was appended."""
    server, schema = property_schema
    group = Replicas(server, schema, table=f"p{uuid.uuid4().hex[:12]}_events")
    try:
        recorders = {name: group.recorder() for name in REPLICA_NAMES}
        recorded: Lead | None = None
        expected: dict[str, tuple[int, str]] = {}  # originator -> the writer's epoch, replica
        for step in steps:
            kind, name = step[0], step[1]
            recorder = recorders[name]
            if kind == "elect":
                epoch = 1 if recorded is None else recorded.epoch + 1
                recorder.take_over(epoch, name)
                recorded = Lead(epoch, name)
            elif kind == "stale":
                if recorded is None or recorded.epoch - step[2] < 1:
                    continue
                attempt = Lead(recorded.epoch - step[2], name)
                if attempt == recorded:
                    recorder.take_over(attempt.epoch, name)
                else:
                    with pytest.raises(Fenced):
                        recorder.take_over(attempt.epoch, name)
            else:
                batch = [event() for _ in range(step[2])]
                with ThreadPoolExecutor(len(batch)) as pool:
                    outcomes = list(pool.map(_try_append, [recorder] * len(batch), batch))
                lead = recorder.lead
                if lead is None:
                    assert all(isinstance(o, NoEpoch) for o in outcomes)
                elif lead == recorded:
                    assert all(isinstance(o, list) for o in outcomes), outcomes
                    for e in batch:
                        expected[e.originator_id] = (lead.epoch, lead.replica)  # type: ignore[index]
                else:
                    assert all(isinstance(o, Fenced) for o in outcomes), outcomes
        reader = recorders["a"]
        written = reader.select_written(limit=10_000)
        assert {n.originator_id: (n.epoch, n.replica) for n in written} == expected
        epochs = [n.epoch for n in written]
        assert epochs == sorted(epochs)  # in id order, epochs never go back
        assert reader.recorded_epoch() == recorded
    finally:
        group.close()


def _try_append(recorder: FencedApplicationRecorder, e: StoredEvent) -> object:
    try:
        return recorder.insert_events([e])
    except (Fenced, NoEpoch) as refused:
        return refused


def test_create_table_if_missing_creates_once_and_then_takes_no_lock(replicas: Replicas) -> None:
    """A replica that starts while a (stopped) leader holds the events table's lock must not
    wait behind it: once the tables exist, it checks without locking anything."""
    first = replicas.recorder()  # creates the tables
    first.take_over(1, "a")
    store = replicas.server.datastore(replicas.schema)
    late = FencedApplicationRecorder(store, events_table_name=replicas.table)
    events = sql.Identifier(replicas.schema, replicas.table)
    with psycopg.connect(replicas.server.dsn) as conn:  # an append's table lock, held open
        conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(events))
        started = time.monotonic()
        assert late.tables_exist()
        late.create_table_if_missing()
        assert time.monotonic() - started < 2
    store.close()
    with psycopg.connect(replicas.server.dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(replicas.schema + "_new")))
    fresh = FencedApplicationRecorder(
        replicas.server.datastore(replicas.schema + "_new"), events_table_name="x_events"
    )
    assert not fresh.tables_exist()
    fresh.create_table_if_missing()
    assert fresh.tables_exist()
    fresh.datastore.close()
    with psycopg.connect(replicas.server.dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(replicas.schema + "_new"))
        )

"""The election (engine/election.py) against a real ZooKeeper, and with the fenced log.

Epochs must be strictly increasing and gap-free across every leader; a resigning leader
hands over at once; a leader whose session dies (closed, expired, its process killed or
stopped) is replaced, and a stopped one that resumes writes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from eventsourcing.persistence import StoredEvent
from kazoo.client import KazooClient
from servers import PostgresServer, ZooKeeperServer, free_port

from engine.election import Election, ElectionError, read_epoch
from engine.leadership import Change, Role, Signal
from engine.postgres_log import FencedApplicationRecorder

HERE = os.path.dirname(os.path.abspath(__file__))


class Candidate:
    """An Election in this process that records every change it reports."""

    def __init__(self, hosts: str, path: str, name: str, session_timeout: float) -> None:
        self.name = name
        self.changes: list[Change] = []
        self._changed = threading.Condition()
        self.election = Election(
            hosts, path, name, self._record, session_timeout=session_timeout
        ).start()

    def _record(self, change: Change) -> None:
        with self._changed:
            self.changes.append(change)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Change], bool], timeout: float = 10.0) -> Change:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for change in self.changes:
                    if predicate(change):
                        return change
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name}: no such change in {self.changes}")
                self._changed.wait(remaining)

    def wait_role(self, role: Role, timeout: float = 10.0) -> Change:
        """Waits until the latest change leaves the candidate in ``role``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (self.changes and self.changes[-1].role is role):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.name}: not {role.value}: {self.changes}")
                self._changed.wait(remaining)
            return self.changes[-1]

    def elected(self) -> list[int]:
        return [c.epoch for c in self.changes if c.signal is Signal.ELECTED]  # type: ignore[misc]


@pytest.fixture
def election_path() -> str:
    return f"/taskledger-test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def candidates(
    zookeeper: ZooKeeperServer, election_path: str
) -> Iterator[Callable[..., Candidate]]:
    made: list[Candidate] = []

    def make(name: str, session_timeout: float = 4.0, hosts: str | None = None) -> Candidate:
        candidate = Candidate(hosts or zookeeper.hosts, election_path, name, session_timeout)
        made.append(candidate)
        return candidate

    try:
        yield make
    finally:
        for candidate in made:
            candidate.election.resign()


def assert_gap_free(*groups: Candidate, first: int = 1) -> list[int]:
    epochs = sorted(e for c in groups for e in c.elected())
    assert epochs == list(range(first, first + len(epochs))), epochs
    return epochs


def test_one_leader_and_a_resign_hands_over_at_once(
    candidates: Callable[..., Candidate], zookeeper: ZooKeeperServer, election_path: str
) -> None:
    a = candidates("a")
    a.wait_role(Role.LEADER)
    b = candidates("b")
    time.sleep(0.3)
    assert b.elected() == [] and b.election.leadership.role is Role.STANDBY
    assert a.election.leadership.epoch == 1

    started = time.monotonic()
    a.election.resign()
    change = b.wait_role(Role.LEADER)
    # Well inside the 4 s session timeout: the lock node was deleted, not left to expire.
    assert time.monotonic() - started < 2.0
    assert change.epoch == 2 and change.acting
    assert a.changes[-1].signal is Signal.RESIGNED and not a.changes[-1].acting
    assert_gap_free(a, b)
    assert _epoch(zookeeper.hosts, election_path) == (2, "b")


def test_an_expired_session_deposes_the_leader_who_campaigns_again(
    candidates: Callable[..., Candidate], zookeeper: ZooKeeperServer
) -> None:
    a = candidates("a", session_timeout=2.0)
    a.wait_role(Role.LEADER)
    b = candidates("b", session_timeout=2.0)
    time.sleep(0.2)
    # Expire a's session from outside, as ZooKeeper does to a partitioned client: a second
    # client on the same session id closes it.
    session_id, password = a.election.client.client_id
    killer = KazooClient(hosts=zookeeper.hosts, client_id=(session_id, password))
    killer.start()
    killer.stop()
    killer.close()
    b.wait_role(Role.LEADER)
    a.wait_for(lambda c: c.signal is Signal.LOST)
    assert a.election.leadership.role is Role.STANDBY
    # a campaigns again with a new session: it wins the next epoch once b resigns.
    b.election.resign()
    a.wait_for(lambda c: c.signal is Signal.ELECTED and c.epoch == 3)
    assert assert_gap_free(a, b) == [1, 2, 3]


def test_a_killed_leader_is_replaced_after_its_session_times_out(
    candidates: Callable[..., Candidate], zookeeper: ZooKeeperServer, election_path: str
) -> None:
    leader = _spawn(zookeeper, election_path, "a")
    try:
        assert _read_line(leader)["change"] == "elected"
        b = candidates("b", session_timeout=1.0)
        time.sleep(0.2)
        killed = time.monotonic()
        leader.kill()
        change = b.wait_role(Role.LEADER)
        # ZooKeeper expires the 1 s session (ticks of 0.5 s) soon after.
        assert time.monotonic() - killed < 5.0
        assert change.epoch == 2
    finally:
        leader.kill()
        leader.wait()


def test_zookeeper_restart_pauses_the_leader_and_epochs_stay_gap_free(
    election_path: str,
) -> None:
    server = ZooKeeperServer().start()
    made: list[Candidate] = []
    try:
        a = Candidate(server.hosts, election_path, "a", session_timeout=6.0)
        made.append(a)
        a.wait_role(Role.LEADER)
        b = Candidate(server.hosts, election_path, "b", session_timeout=6.0)
        made.append(b)
        time.sleep(0.2)

        server.kill()
        paused = a.wait_role(Role.PAUSED)
        assert not paused.acting and paused.epoch == 1  # stops acting, keeps its epoch
        server.restart()
        # Back within the session timeout: ZooKeeper restores the sessions from its data,
        # so a leads again at the same epoch. (Had the session expired meanwhile, b would
        # lead at epoch 2: either way, one leader and no gap.)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            leaders = [c for c in made if c.election.leadership.role is Role.LEADER]
            if leaders:
                break
            time.sleep(0.05)
        assert len(leaders) == 1, [c.changes for c in made]
        epochs = assert_gap_free(a, b)
        if leaders[0] is a:
            assert epochs == [1]
            assert a.changes[-1].signal is Signal.RECONNECTED
        assert _epoch(server.hosts, election_path)[0] == epochs[-1]
    finally:
        for candidate in made:
            candidate.election.resign()
        server.stop()


def test_a_stopped_leader_that_resumes_is_fenced_by_the_log(
    candidates: Callable[..., Candidate],
    zookeeper: ZooKeeperServer,
    postgres: PostgresServer,
    election_path: str,
) -> None:
    """A SIGSTOPped leader knows nothing when SIGCONT resumes it: it appends at once, before
    kazoo reports anything. Only the fence inside the log's transaction stops it."""
    with postgres.fresh_schema() as schema:
        table = "ha_events"
        old = _spawn(zookeeper, election_path, "a", env=postgres.env(schema), table=table)
        store = postgres.datastore(schema)
        try:
            assert _read_line(old)["change"] == "elected"
            assert "appended" in _read_line(old)
            recorder = FencedApplicationRecorder(store, events_table_name=table)
            recorder.create_table()
            b = candidates("b", session_timeout=1.0)
            time.sleep(0.1)
            old.send_signal(signal.SIGSTOP)
            change = b.wait_role(Role.LEADER)
            assert change.epoch == 2
            started = time.monotonic()
            # If the old leader stopped inside a transaction, the server ends that session
            # after TASKLEDGER_IDLE_TIMEOUT_MS (2 s): the take-over waits no longer.
            recorder.take_over(change.epoch, "b")
            assert time.monotonic() - started < 8
            [first_new] = recorder.insert_events([_event("b")])
            old.send_signal(signal.SIGCONT)
            lines = _read_until(old, "fenced")
            assert lines[-1]["fenced"] == 2 and lines[-1]["holder"] == "b"
            old.wait(10)
        finally:
            old.send_signal(signal.SIGCONT)
            old.kill()
            old.wait()
        written = recorder.select_written(limit=100_000)
        appended_by_old = [n for n in written if n.replica == "a"]
        assert appended_by_old and all(n.epoch == 1 and n.id < first_new for n in appended_by_old)
        reported = [line for line in lines if "appended" in line]
        assert len(appended_by_old) == 1 + len(reported)  # the line read before the stop
        store.close()


def test_a_bad_path_or_an_unreachable_zookeeper_says_why() -> None:
    with pytest.raises(ElectionError, match="absolute"):
        Election("127.0.0.1:1", "relative/path", "a", print)
    with pytest.raises(ElectionError, match="replica name"):
        Election("127.0.0.1:1", "/p", "a/b", print)
    hosts = f"127.0.0.1:{free_port()}"
    with pytest.raises(ElectionError, match=f"cannot reach ZooKeeper at {hosts}"):
        Election(hosts, "/p", "a", print, connect_timeout=0.5).start()


# ----------------------------------------------------------------------------- helpers
def _epoch(hosts: str, path: str) -> tuple[int, str | None]:
    client = KazooClient(hosts=hosts)
    client.start()
    try:
        return read_epoch(client, path)
    finally:
        client.stop()
        client.close()


def _spawn(
    zookeeper: ZooKeeperServer,
    path: str,
    name: str,
    *,
    env: dict[str, str] | None = None,
    table: str | None = None,
) -> subprocess.Popen:
    command = [
        sys.executable,
        os.path.join(HERE, "ha_replica.py"),
        "--zk",
        zookeeper.hosts,
        "--path",
        path,
        "--replica",
        name,
        "--session-timeout",
        "1.0",
    ]
    if table is not None:
        command += ["--table", table]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _read_line(process: subprocess.Popen, timeout: float = 20.0) -> dict:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not result or not result[0]:
        raise AssertionError(f"replica said nothing within {timeout} s (exit {process.poll()})")
    return json.loads(result[0])


def _read_until(process: subprocess.Popen, key: str) -> list[dict]:
    lines = []
    while True:
        line = _read_line(process)
        lines.append(line)
        if key in line:
            return lines


def _event(name: str) -> StoredEvent:
    return StoredEvent(f"{name}/{uuid.uuid4()}", 0, "tick", b"{}")

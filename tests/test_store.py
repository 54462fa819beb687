"""engine.store beyond the library's test cases: group commit, durability across a killed
process, checksums, format versions, map growth, a full map, and bad paths."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid

import lmdb
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from engine import codec
from engine.store import (
    UNIQUE_UPTO,
    DamagedRecord,
    DuplicateKey,
    LMDBApplicationRecorder,
    LMDBDatastore,
    LogFull,
    LogOpenError,
    NewerLog,
    OperationalError,
)


def _event(originator: str | uuid.UUID, version: int, state: bytes = b"x") -> StoredEvent:
    return StoredEvent(originator_id=originator, originator_version=version, topic="T", state=state)


@pytest.fixture
def store(tmp_path):
    s = LMDBDatastore.open(str(tmp_path / "log"))
    yield s
    s.close()


def test_group_commit_batches_concurrent_single_event_writers(store):
    recorder = LMDBApplicationRecorder(store)
    ids: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def writer(n: int) -> None:
        start.wait()
        for i in range(25):
            (nid,) = recorder.insert_events([_event(f"w{n}", i)])
            with lock:
                ids.append(nid)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(ids) == list(range(1, 401)), "ids must be gap-free and each given once"
    # Durable commits cost ~0.4 ms: 16 writers must share transactions, not take one each.
    assert store.commits < 400
    assert store.committed_requests == 400
    # Every writer's events are in its own order.
    for n in range(16):
        versions = [e.originator_version for e in recorder.select_events(f"w{n}")]
        assert versions == list(range(25))


def test_conflicting_batch_fails_alone_and_leaves_no_gap(store):
    recorder = LMDBApplicationRecorder(store)
    recorder.insert_events([_event("a", 1)])
    errors: list[BaseException] = []
    results: list[list[int]] = []
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        start.wait()
        # Writer 0 conflicts with ("a", 1); its other event must not be written either.
        batch = [_event("a", 1), _event("z", 0)] if n == 0 else [_event(f"b{n}", 0)]
        try:
            results.append(list(recorder.insert_events(batch)))
        except IntegrityError as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1
    assert recorder.select_events("z") == []
    all_ids = sorted(i for r in results for i in r)
    assert all_ids == list(range(2, 9))
    assert recorder.max_notification_id() == 8


_WRITER = r"""
import os, sys
from eventsourcing.persistence import StoredEvent
from engine.store import LMDBDatastore, LMDBApplicationRecorder
rec = LMDBApplicationRecorder(LMDBDatastore.open(sys.argv[1]))
i = 0
while True:
    (nid,) = rec.insert_events([StoredEvent("k", i, "T", b"payload-%d" % i)])
    # Report only what insert_events returned, i.e. what it promised is durable.
    os.write(1, b"%d\n" % nid)
    i += 1
"""


def test_every_returned_append_survives_sigkill(tmp_path):
    path = str(tmp_path / "log")
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, path], stdout=subprocess.PIPE, cwd=os.getcwd()
    )
    promised = []
    assert proc.stdout is not None
    for line in proc.stdout:
        promised.append(int(line))
        if len(promised) >= 300:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = LMDBDatastore.open(path)
    try:
        recorder = LMDBApplicationRecorder(store)
        stored = [n.id for n in recorder.select_notifications(None, 1_000_000)]
        assert stored[: len(promised)] == promised
        assert stored == list(range(1, len(stored) + 1))
        events = recorder.select_events("k")
        assert [e.state for e in events[:3]] == [b"payload-0", b"payload-1", b"payload-2"]
    finally:
        store.close()


def _flip_byte_of(path: str, marker: bytes) -> None:
    """Flips one bit of every copy of ``marker`` in the file (LMDB is copy-on-write, so
    stale pages may hold older copies of the same record)."""
    data_file = os.path.join(path, "data.mdb")
    with open(data_file, "r+b") as f:
        data = f.read()
        at = data.find(marker)
        assert at >= 0
        while at >= 0:
            f.seek(at + 3)
            f.write(bytes([data[at + 3] ^ 0x01]))
            at = data.find(marker, at + 1)


def test_damaged_record_is_named_and_others_still_read(tmp_path):
    path = str(tmp_path / "log")
    store = LMDBDatastore.open(path)
    recorder = LMDBApplicationRecorder(store)
    recorder.insert_events([_event("a", 0, b"fine-1")])
    recorder.insert_events([_event("a", 1, b"DAMAGE-ME-PLEASE")])
    recorder.insert_events([_event("a", 2, b"fine-3")])
    store.close()
    _flip_byte_of(path, b"DAMAGE-ME-PLEASE")

    store = LMDBDatastore.open(path)
    try:
        recorder = LMDBApplicationRecorder(store)
        with pytest.raises(DamagedRecord) as info:
            recorder.select_notifications(None, 10)
        assert info.value.position == 2
        assert "notification id 2" in str(info.value)
        assert (2).to_bytes(8, "big").hex() in str(info.value)
        assert [n.state for n in recorder.select_notifications(3, 10)] == [b"fine-3"]
        assert [n.state for n in recorder.select_notifications(1, 1)] == [b"fine-1"]
        # Appends go on; the damaged record is untouched, not rewritten.
        assert recorder.insert_events([_event("a", 3)]) == [4]
    finally:
        store.close()


def test_record_of_a_newer_format_is_refused(tmp_path):
    path = str(tmp_path / "log")
    store = LMDBDatastore.open(path)
    recorder = LMDBApplicationRecorder(store)
    recorder.insert_events([_event("a", 0)])
    key = (1).to_bytes(8, "big")
    with store.env.begin(write=True) as txn:
        value = bytearray(txn.get(key, db=store.dbs["notifications"]))
        value[0] = codec.FORMAT_VERSION + 1
        txn.put(key, bytes(value), db=store.dbs["notifications"])
    with pytest.raises(NewerLog, match="upgrade taskledger"):
        recorder.select_notifications(None, 10)
    store.close()


def test_log_of_a_newer_format_is_refused_on_open(tmp_path):
    path = str(tmp_path / "log")
    store = LMDBDatastore.open(path)
    with store.env.begin(write=True) as txn:
        txn.put(b"format", bytes([codec.FORMAT_VERSION + 1]), db=store.dbs["meta"])
    store.close()
    with pytest.raises(NewerLog) as info:
        LMDBDatastore.open(path)
    assert path in str(info.value) and "\n" not in str(info.value)


def test_map_grows_when_full(tmp_path):
    store = LMDBDatastore.open(str(tmp_path / "log"), map_size=64 * 1024, durable=False)
    try:
        recorder = LMDBApplicationRecorder(store)
        for i in range(40):
            recorder.insert_events([_event("k", i * 100 + j, b"y" * 200) for j in range(100)])
        assert store.env.info()["map_size"] > 64 * 1024
        assert recorder.max_notification_id() == 4000
    finally:
        store.close()


def test_full_map_gives_clear_error_loses_nothing_and_resumes(tmp_path):
    path = str(tmp_path / "log")
    store = LMDBDatastore.open(path, map_size=256 * 1024, max_map_size=512 * 1024)
    recorder = LMDBApplicationRecorder(store)
    written = 0
    with pytest.raises(LogFull, match="LMDB_MAX_MAP_SIZE"):
        while True:
            recorder.insert_events([_event("k", written + j, b"z" * 500) for j in range(50)])
            written += 50
    assert written > 0
    assert recorder.max_notification_id() == written
    store.close()
    # With room again, appends resume after the last committed event.
    store = LMDBDatastore.open(path, max_map_size=1 << 30)
    recorder = LMDBApplicationRecorder(store)
    assert recorder.max_notification_id() == written
    assert recorder.insert_events([_event("k", written)]) == [written + 1]
    store.close()


def test_subscribe_delivers_new_notifications(store):
    recorder = LMDBApplicationRecorder(store)
    recorder.insert_events([_event("s", 0)])
    seen: list[int] = []
    with recorder.subscribe(gt=0) as subscription:

        def append_later() -> None:
            recorder.insert_events([_event("s", 1)])

        threading.Timer(0.05, append_later).start()
        for notification in subscription:
            seen.append(notification.id)
            if len(seen) == 2:
                break
    assert seen == [1, 2]


def test_one_environment_per_path(tmp_path):
    a = LMDBDatastore.open(str(tmp_path / "log"))
    b = LMDBDatastore.open(str(tmp_path / "log") + "/")
    try:
        assert a is b
    finally:
        a.close()
        b.close()


# -- bad paths: one line that names the path -----------------------------------------------
def _one_line(error: BaseException, *fragments: str) -> None:
    text = str(error)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, text


def test_path_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("hello")
    with pytest.raises(LogOpenError) as info:
        LMDBDatastore.open(str(f))
    _one_line(info.value, str(f), "is a file")


def test_garbage_data_file_is_not_a_log(tmp_path):
    d = tmp_path / "log"
    d.mkdir()
    (d / "data.mdb").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(LogOpenError) as info:
        LMDBDatastore.open(str(d))
    _one_line(info.value, str(d), "not a taskledger log")
    assert (d / "data.mdb").stat().st_size == 64 * 1024


def test_foreign_lmdb_is_not_a_log(tmp_path):
    d = tmp_path / "foreign"
    env = lmdb.open(str(d), max_dbs=2)
    env.open_db(b"something-else")
    env.close()
    with pytest.raises(LogOpenError) as info:
        LMDBDatastore.open(str(d))
    _one_line(info.value, str(d), "not a taskledger log")


def test_folder_without_permission(tmp_path):
    """A folder the process may not write is refused in one line naming it.

    The check runs in a child process that the kernel's permission checks apply to. Root
    ignores them (CAP_DAC_OVERRIDE), so as root the child is root without the capabilities
    that bypass file permissions (setpriv drops them from its bounding set): it stays the
    owner of the checkout and of the folders here, wherever they are (a clone under a 0700
    home or a `mktemp -d` folder, which another uid could not even enter), and is refused
    by the folder's own mode, as any other user would be."""
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0o500)
    script = (
        "import sys\n"
        "from engine.store import LMDBDatastore, LogOpenError\n"
        "try:\n"
        "    LMDBDatastore.open(sys.argv[1] + '/log')\n"
        "except LogOpenError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    cmd = [sys.executable, "-c", script, str(d)]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    assert result.returncode == 3, result.stderr
    # Refused by the folder itself, not by a parent the child could not enter.
    assert result.stdout.strip() == f"cannot create log folder {d}/log: permission denied"


def test_unique_keys_fail_only_the_duplicate_append_of_a_batch(store):
    store.db("unique")
    stream = uuid.UUID(int=7)
    assert store.append(
        [_event(stream, None), _event(stream, None)], unique_keys=[b"k1", None]
    ) == [
        1,
        2,
    ]
    results: dict[int, object] = {}
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        start.wait()
        key = b"k1" if n % 2 else b"n%d" % n  # the odd ones repeat k1
        try:
            results[n] = store.append([_event(stream, None)], unique_keys=[key])
        except DuplicateKey as e:
            results[n] = e

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, outcome in results.items():
        if n % 2:
            assert isinstance(outcome, DuplicateKey) and outcome.key == b"k1"
            assert b"6b31" in str(outcome).encode()  # the key, in hex
        else:
            assert isinstance(outcome, list) and len(outcome) == 1
    recorder = LMDBApplicationRecorder(store)
    assert [nid for nid, _ in recorder.scan()] == [1, 2, 3, 4, 5, 6]  # nothing of the dups

    def read(txn):
        db = store.dbs["unique"]
        return {k: int.from_bytes(v, "big") for k, v in txn.cursor(db=db)}

    index = store.read(read)
    assert index[b"k1"] == 1  # each key -> its own event's id
    assert sorted(index[b"n%d" % n] for n in range(0, 8, 2)) == [3, 4, 5, 6]
    assert index[UNIQUE_UPTO] == 6


def test_unique_keys_are_checked(store):
    stream = uuid.UUID(int=7)
    with pytest.raises(ValueError, match="one key"):
        store.append([_event(stream, None)], unique_keys=[b"a", b"b"])
    with pytest.raises(OperationalError, match="unique"):
        store.append([_event(stream, None)], unique_keys=[b"a"])  # db("unique") not opened
    assert LMDBApplicationRecorder(store).max_notification_id() is None


def test_recorded_unique_keys_keep_their_first_id_and_refuse_nothing(store):
    unique = store.db("unique")
    stream = uuid.UUID(int=7)
    assert store.append([_event(stream, None)], unique_keys=[b"k"], enforce_unique=False) == [1]
    assert store.append([_event(stream, None)], unique_keys=[b"k"], enforce_unique=False) == [2]
    with pytest.raises(DuplicateKey):
        store.append([_event(stream, None)], unique_keys=[b"k"])
    index = store.read(lambda txn: dict(txn.cursor(db=unique)))
    assert index[b"k"] == (1).to_bytes(8, "big") and index[UNIQUE_UPTO] == (2).to_bytes(8, "big")

"""Replay, snapshots and memory at scale.

    python -m benchmarks.replay [--events N] [--tasks T] [--json OUT] [--keep PATH]
                                [--sqlite-events N]

Defaults: 10M events over 1M tasks (the issue's size; about 2 GB of log). In one run:

* raw: an LMDB cursor over the log and msgpack unpack of every record and of the event
  inside it, no project code (the limit);
* replay into 3 views: engine.replay over the log into the scheduler, Mesos and drift views
  (checksums, decoding, evolve), with the compiled kernel: the issue's target row;
* the same through the Python path (what runs when the kernel is not built);
* decode only (Python path): cursor, checksum, unpacks, event tuples, no state;
* full ledger state: the views plus the saga and the dedup memory, what Ledger.open folds
  when no snapshot helps;
* eventsourcing + SQLite: what a user would pick instead: the same events in eventsourcing's
  SQLite module, read back page by page with select_notifications and folded into the same
  views in Python (on the first --sqlite-events events of the same log);
* snapshot write: folding the log and storing the views (the snapshot is built by a
  replay from the previous snapshot, so this includes one full fold here);
* open with a snapshot: Ledger.open on the log whose newest snapshot covers everything;
* memory: resident bytes per task of the loaded views, measured in a fresh process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import lmdb
import msgpack
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

from benchmarks.common import Result, print_table, write_json
from engine import replay as _replay
from engine.codec import HEADER_SIZE
from engine.events import StatusUpdateReceived, TaskAssigned, TaskCreated
from engine.ledger import LEDGER_STREAM, Ledger, LedgerState
from engine.ledger_state import decode_records
from engine.store import LMDBApplicationRecorder, LMDBDatastore
from engine.wire import from_wire, to_wire
from projections.views import Views

_LIFECYCLE = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING")
_ENDINGS = ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST")


def _events(events: int, tasks: int):
    """A realistic log: each task created, assigned, then Mesos updates, round-robin over
    tasks so that each task's history is spread through the log as in real life."""
    per_task = max(3, events // tasks)
    t0 = 1_700_000_000.0
    for step in range(per_task):
        for t in range(tasks):
            task = f"job-{t % 500}/{t}/{t:08x}"
            time_ = t0 + step * 10 + t * 1e-6
            if step == 0:
                yield TaskCreated(time_, None, task, f"job-{t % 500}", t)
            elif step == 1:
                yield TaskAssigned(time_, None, task, f"agent-{t % 2000}")
            else:
                k = step - 2
                if k < len(_LIFECYCLE):
                    state = _LIFECYCLE[k]
                elif k == per_task - 3 and t % 4 == 0:
                    state = _ENDINGS[t % len(_ENDINGS)]
                else:
                    state = "TASK_RUNNING"  # periodic re-reports (health checks, etc.)
                yield StatusUpdateReceived(
                    time_,
                    None,
                    task,
                    state,
                    f"agent-{t % 2000}",
                    None,
                    "SOURCE_EXECUTOR",
                    None,
                    None,
                    time_,
                    None,
                    True,
                    None,
                    False,
                    {},
                )


def generate(path: str, events: int, tasks: int) -> int:
    """Writes the log straight through the store (no views): fast, and the same bytes the
    Ledger writes."""
    store = LMDBDatastore.open(path, map_size=1 << 32, durable=False)
    pack = msgpack.Packer(use_bin_type=True).pack
    written = 0
    batch: list[StoredEvent] = []
    try:
        for event in _events(events, tasks):
            batch.append(StoredEvent(LEDGER_STREAM, None, event.topic, pack(to_wire(event))))
            if len(batch) == 20_000:
                store.append(batch)
                written += len(batch)
                batch = []
        if batch:
            store.append(batch)
            written += len(batch)
        store.env.sync(True)
    finally:
        store.close()
    return written


def bench_raw(path: str) -> Result:
    env = lmdb.open(path, readonly=True, max_dbs=8, lock=False)
    db = env.open_db(b"notifications", create=False)
    unpack = msgpack.unpackb
    count = 0
    started = time.perf_counter()
    with env.begin(buffers=True) as txn:
        for _key, value in txn.cursor(db=db):
            record = unpack(value[HEADER_SIZE:])
            unpack(record[3])
            count += 1
    seconds = time.perf_counter() - started
    env.close()
    return Result("raw cursor+unpack", count, seconds, "the limit")


def bench_decode(path: str) -> Result:
    store = LMDBDatastore.open(path, durable=False)
    try:
        recorder = LMDBApplicationRecorder(store)
        gc.disable()
        started = time.perf_counter()
        count = 0
        for _nid, _event in decode_records(recorder.scan(chunk=_replay.CHUNK)):
            count += 1
        seconds = time.perf_counter() - started
        gc.enable()
        return Result("decode only (Python)", count, seconds, "checksum+unpack+event, no state")
    finally:
        store.close()


def bench_replay(path: str, name: str, make: type, compiled: bool, note: str) -> Result:
    """engine.replay of the whole log into a new `make()` (Views or LedgerState)."""
    store = LMDBDatastore.open(path, durable=False)
    try:
        recorder = LMDBApplicationRecorder(store)
        target = make()
        gc.disable()  # as for every row; the GC's share is not what is compared here
        started = time.perf_counter()
        _replay.replay(recorder, target, compiled=compiled)
        seconds = time.perf_counter() - started
        gc.enable()
        views = target if isinstance(target, Views) else target.views
        return Result(name, views.drift.last_nid, seconds, note)
    finally:
        store.close()


def bench_sqlite(root: str, events: int, tasks: int) -> Result:
    """The same events in eventsourcing's SQLite module, read back with its own paging API
    and folded into the same views (the Python path: no kernel reads SQLite)."""
    datastore = SQLiteDatastore(db_name=os.path.join(root, "es.sqlite"), originator_id_type="text")
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    pack = msgpack.Packer(use_bin_type=True).pack
    batch: list[StoredEvent] = []
    for version, event in enumerate(_events(events, tasks)):
        if version == events:
            break
        batch.append(StoredEvent(LEDGER_STREAM, version, event.topic, pack(to_wire(event))))
        if len(batch) == 20_000:
            recorder.insert_events(batch)
            batch = []
    if batch:
        recorder.insert_events(batch)
    views = Views()
    apply = views.apply
    unpack = msgpack.unpackb
    gc.disable()
    started = time.perf_counter()
    count, start = 0, 1
    while True:
        page = recorder.select_notifications(start, _replay.CHUNK)
        for n in page:
            apply(n.id, from_wire(n.topic, unpack(n.state)))
        count += len(page)
        if len(page) < _replay.CHUNK:
            break
        start = page[-1].id + 1
    seconds = time.perf_counter() - started
    gc.enable()
    datastore.close()
    return Result("eventsourcing+SQLite", count, seconds, "select_notifications + same views")


_MEMORY_PROBE = r"""
import gc, json, sys, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
def anon():  # resident pages that are not file-backed (LMDB's map is file-backed)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("RssAnon:"))
from engine.ledger import Ledger
gc.collect()
before, before_anon = rss(), anon()
started = time.perf_counter()
ledger = Ledger.open(sys.argv[1], durable=False)
seconds = time.perf_counter() - started
gc.collect()
after, after_anon = rss(), anon()
tasks = len(ledger.views.drift.cells)
print(json.dumps({"open_seconds": seconds, "rss_bytes": after - before,
                  "anon_rss_bytes": after_anon - before_anon, "tasks": tasks,
                  "problems": ledger.snapshot_problems}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--keep", help="write the log here and keep it (default: a temp dir)")
    parser.add_argument(
        "--sqlite-events",
        type=int,
        default=2_000_000,
        help="events for the eventsourcing+SQLite row (its write alone is slow)",
    )
    args = parser.parse_args(argv)

    root = args.keep or tempfile.mkdtemp(prefix="tl-bench-replay-")
    path = os.path.join(root, "log")
    try:
        started = time.perf_counter()
        written = generate(path, args.events, args.tasks)
        size_gb = os.path.getsize(os.path.join(path, "data.mdb")) / 1e9
        print(
            f"generated {written:,} events over {args.tasks:,} tasks in "
            f"{time.perf_counter() - started:.1f}s ({size_gb:.2f} GB)"
        )
        raw = bench_raw(path)
        kernel = _replay.KERNEL is not None
        replay = bench_replay(
            path,
            "replay into 3 views",
            Views,
            True,
            "compiled kernel" if kernel else "KERNEL NOT BUILT: Python path",
        )
        python = bench_replay(path, "3 views, Python path", Views, False, "no kernel")
        decode = bench_decode(path)
        full = bench_replay(
            path, "full ledger state", LedgerState, True, "views + saga + dedup (Ledger.open)"
        )
        sqlite = bench_sqlite(root, min(args.sqlite_events, written), args.tasks)
        gc.collect()

        with Ledger.open(path, durable=False) as ledger:
            started = time.perf_counter()
            info = ledger.snapshot()
            snapshot_write = Result(
                "snapshot write",
                written,
                time.perf_counter() - started,
                f"{info.size / 1e6:.0f} MB, includes a full fold",
            )
        probe = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, path], capture_output=True, text=True, check=True
        )
        memory = json.loads(probe.stdout)
        open_result = Result(
            "open with snapshot", memory["tasks"], memory["open_seconds"], "tasks loaded"
        )
        results = [raw, replay, python, decode, full, sqlite, snapshot_write, open_result]
        print_table("replay and snapshots", results, "raw cursor+unpack")
        per_task = memory["rss_bytes"] / max(1, memory["tasks"])
        targets = {
            "replay_vs_raw": {"value": replay.rate / raw.rate, "target": 0.5, "at_least": True},
            "open_with_snapshot_seconds": {
                "value": memory["open_seconds"],
                "target": 3.0,
                "at_least": False,
            },
            "bytes_per_task": {"value": per_task, "target": 600, "at_least": False},
        }
        print(f"\nresident memory of the loaded views: {per_task:.0f} bytes per task")
        anon_per_task = memory["anon_rss_bytes"] / max(1, memory["tasks"])
        print(
            f"  of which anonymous (not LMDB's file-backed map): {anon_per_task:.0f} bytes per task"
        )
        per_event = {r.name: r.seconds / max(1, r.events) * 1e6 for r in results[:6]}
        print(
            "per event (us): "
            + ", ".join(f"{name} {us:.2f}" for name, us in per_event.items())
            + f"\nkernel vs Python path: {replay.rate / python.rate:.2f}x; "
            f"kernel vs eventsourcing+SQLite: {replay.rate / sqlite.rate:.2f}x; "
            f"full ledger state vs raw: {full.rate / raw.rate:.2f}x"
        )
        for name, t in targets.items():
            ok = t["value"] >= t["target"] if t["at_least"] else t["value"] < t["target"]
            print(f"{name}: {t['value']:.2f} ({'meets' if ok else 'MISSES'} target {t['target']})")
        write_json(
            args.json_out,
            "replay",
            results,
            {"targets": targets, "memory": memory, "kernel_built": kernel},
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

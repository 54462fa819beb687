"""Replay, snapshots and memory at scale.

    python -m benchmarks.replay [--events N] [--tasks T] [--json OUT] [--keep PATH]

Defaults: 10M events over 1M tasks (the issue's size; about 2 GB of log). In one run:

* raw: an LMDB cursor over the log and msgpack unpack of every record and of the event
  inside it, no project code (the limit);
* decode only: the Ledger's read path without any state (cursor, checksum, unpack of the
  record and of the event, the event tuple): the floor under any replay;
* replay: the Ledger's full replay into the three views (decode, checksum, evolve);
* snapshot write: folding the log and storing the views (the snapshot is built by a
  replay from the previous snapshot, so this includes one full replay here);
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

from benchmarks.common import Result, print_table, write_json
from engine.codec import HEADER_SIZE
from engine.events import StatusUpdateReceived, TaskAssigned, TaskCreated, to_wire
from engine.ledger import LEDGER_STREAM, Ledger, LedgerState
from engine.store import LMDBApplicationRecorder, LMDBDatastore

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
        from engine.ledger_state import decode_records as _decode

        gc.disable()
        started = time.perf_counter()
        count = 0
        for _nid, _event in _decode(recorder.scan(chunk=20_000)):
            count += 1
        seconds = time.perf_counter() - started
        gc.enable()
        return Result("decode only", count, seconds, "checksum+unpack+event, no state")
    finally:
        store.close()


def bench_replay(path: str) -> tuple[Result, LedgerState]:
    store = LMDBDatastore.open(path, durable=False)
    try:
        recorder = LMDBApplicationRecorder(store)
        state = LedgerState()
        apply = state.apply
        from engine.ledger_state import decode_records as _decode

        gc.disable()  # as Ledger.open does not; shows the GC's share separately below
        started = time.perf_counter()
        count = 0
        for nid, event in _decode(recorder.scan(chunk=20_000)):
            apply(nid, event)
            count += 1
        seconds = time.perf_counter() - started
        gc.enable()
        return Result("replay into 3 views", count, seconds, "decode+checksum+evolve"), state
    finally:
        store.close()


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
        decode = bench_decode(path)
        replay, _state = bench_replay(path)
        del _state
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
        results = [raw, decode, replay, snapshot_write, open_result]
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
        state_us = (replay.seconds - decode.seconds) / max(1, replay.events) * 1e6
        print(
            f"per event: decode {decode.seconds / max(1, decode.events) * 1e6:.2f} us, "
            f"state (views + saga + dedup) {state_us:.2f} us; decode alone is "
            f"{decode.rate / raw.rate:.2f}x raw"
        )
        for name, t in targets.items():
            ok = t["value"] >= t["target"] if t["at_least"] else t["value"] < t["target"]
            print(f"{name}: {t['value']:.2f} ({'meets' if ok else 'MISSES'} target {t['target']})")
        write_json(args.json_out, "replay", results, {"targets": targets, "memory": memory})
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A map that fills and a disk that fills: a clear error, nothing committed lost, and appends
resume once there is room. Through the Ledger API and through `taskledger ingest`.

The disk is a small tmpfs mounted by the test (skipped, saying why, where mounting is not
permitted), partly taken by a filler file that is deleted to make room again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from builders import mesos_uuid, task_status
from click.testing import CliRunner
from eventsourcing.persistence import OperationalError

from engine.ledger import Ledger, LedgerState, state_digest
from engine.store import LogFull
from engine.task_status import status_from_mesos
from tools.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TMPFS_SIZE = 8 << 20
FREE = 1536 << 10  # what the filler leaves free on the tmpfs


def _status(n: int, size: int = 300) -> dict[str, Any]:
    """The n-th update of a filler: its own task, a message of `size` bytes."""
    return task_status(
        f"job/{n}",
        agent=f"agent-{n % 7}",
        uuid=mesos_uuid(n),
        timestamp=1_700_000_000.0 + n,
        message="m" * size,
    )


def fill(ledger: Ledger, batch: int = 1) -> tuple[list[int], Exception]:
    """Appends (one update per call, or `batch` per durable append) until the log refuses;
    the ids that were returned, and the refusal."""
    ids: list[int] = []
    n = 0
    while True:
        try:
            if batch == 1:
                ids.append(ledger.status_update(_status(n)))
            else:
                events = [status_from_mesos(_status(n + i), time=0.0) for i in range(batch)]
                ids += ledger.append(events)
        except OperationalError as e:
            return ids, e
        n += batch
        assert n < 1_000_000, "the log never filled"


def check(path: str, promised: list[int]) -> str:
    """Every returned id is in the log, gap-free; views equal a replay; verify is clean."""
    with Ledger.open(path) as ledger:
        events = list(ledger.events())
        assert [nid for nid, _ in events] == list(range(1, len(events) + 1))
        assert set(promised) <= {nid for nid, _ in events}
        state = LedgerState()
        for nid, event in events:
            state.apply(nid, event)
        assert ledger.digest() == state_digest(state)
        digest = ledger.digest()
    assert CliRunner().invoke(cli, ["verify", "--log", path]).exit_code == 0
    return digest


# -- the map ----------------------------------------------------------------------------------
def test_a_full_map_is_a_clear_error_loses_nothing_and_appends_resume(tmp_path):
    path = str(tmp_path / "log")
    ledger = Ledger.open(path, map_size=256 << 10, max_map_size=512 << 10)
    try:
        ids, error = fill(ledger)
        assert isinstance(error, LogFull), repr(error)
        assert "LMDB_MAX_MAP_SIZE" in str(error) and path in str(error)
        assert ids == list(range(1, len(ids) + 1)) and len(ids) > 100
        # The refused append changed nothing: not the log, not the views.
        before = ledger.digest()
        with pytest.raises(LogFull):
            ledger.status_update(_status(10**6))
        assert ledger.last_id == len(ids) and ledger.digest() == before
        # Nor did the refusal poison the dedup memory: the same update is not a "duplicate".
        assert ledger.mesos_view.get(f"job/{10**6}") is None
    finally:
        ledger.close()
    digest = check(path, ids)
    with Ledger.open(path, max_map_size=1 << 30) as ledger:  # room again
        assert ledger.digest() == digest
        assert ledger.status_update(_status(10**6)) == len(ids) + 1
    check(path, [*ids, len(ids) + 1])


# -- the disk ---------------------------------------------------------------------------------
@contextlib.contextmanager
def small_disk(folder: str) -> Iterator[str]:
    os.makedirs(folder)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", folder],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", folder], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", folder], capture_output=True)


def filler(folder: str) -> str:
    """A file that leaves about FREE bytes of the disk free."""
    path = os.path.join(folder, "filler")
    stat = os.statvfs(folder)
    with open(path, "wb") as f:
        f.write(bytes(stat.f_bavail * stat.f_frsize - FREE))
    return path


def test_a_full_disk_loses_nothing_and_appends_resume_when_there_is_room(tmp_path):
    with small_disk(str(tmp_path / "disk")) as disk:
        room = filler(disk)
        path = os.path.join(disk, "log")
        ledger = Ledger.open(path)
        try:
            ids, error = fill(ledger, batch=50)
            assert path in str(error), error
            assert ids == list(range(1, len(ids) + 1)) and len(ids) > 100
            # The refused batch changed nothing: the live views are those of the log's
            # committed events.
            assert ledger.last_id == len(ids)
            assert ledger.digest() == state_digest(ledger.state_as_of(len(ids)))
            os.remove(room)
            # Room again: the same process appends on, after the last committed id.
            assert ledger.status_update(_status(10**6)) == len(ids) + 1
        finally:
            ledger.close()
        check(path, [*ids, len(ids) + 1])


def test_a_full_disk_is_reported_as_log_full(tmp_path):
    with small_disk(str(tmp_path / "disk")) as disk:
        filler(disk)
        with Ledger.open(os.path.join(disk, "log")) as ledger:
            _, error = fill(ledger, batch=200)  # many pages per commit: a short write
        assert isinstance(error, LogFull), repr(error)
        assert "disk full" in str(error)


def test_ingest_on_a_full_disk_says_so_in_one_line_and_finishes_when_there_is_room(tmp_path):
    lines = 12_000
    feed = tmp_path / "updates.jsonl"
    feed.write_text("".join(json.dumps(_status(n, 100)) + "\n" for n in range(lines)))
    with small_disk(str(tmp_path / "disk")) as disk:
        room = filler(disk)
        log = os.path.join(disk, "log")
        command = [sys.executable, "-m", "tools.cli", "ingest", str(feed), "--log", log]
        full = subprocess.run(
            [*command, "--batch", "100"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert full.returncode == 2, full.stderr
        errors = full.stderr.splitlines()
        assert len(errors) == 1 and "Traceback" not in full.stderr, full.stderr
        found = re.search(r"line (\d+): not ingested: .*\((\d+) update\(s\) before it", errors[0])
        assert found and log in errors[0], errors[0]
        first_refused, kept = int(found[1]), int(found[2])
        assert first_refused == kept + 1 and 0 < kept < lines
        with Ledger.open(log) as ledger:
            assert [e.task_id for _, e in ledger.events()] == [f"job/{n}" for n in range(kept)]
        os.remove(room)
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        check(log, list(range(1, lines + 1)))
        with Ledger.open(log) as ledger:
            assert [e.task_id for _, e in ledger.events()] == [f"job/{n}" for n in range(lines)]

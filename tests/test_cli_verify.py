"""`taskledger verify` finds a flipped bit in a stored record and names it."""

from __future__ import annotations

import json
import os

from cli_log import MARKER, private_copy, run

from engine.dedup import update_key
from engine.ledger import Ledger
from engine.store import LMDBDatastore

MARKED = 5  # the notification id of the update whose message is MARKER


def flip_marker(path: str) -> int:
    """Flips one bit in every copy of MARKER in data.mdb (LMDB is copy-on-write: stale
    pages may hold copies too); returns how many copies there were."""
    data_path = os.path.join(path, "data.mdb")
    with open(data_path, "rb") as f:
        data = bytearray(f.read())
    needle = MARKER.encode()
    copies = 0
    at = data.find(needle)
    while at != -1:
        data[at + 7] ^= 0x01  # inside the text: the frame and msgpack stay well-formed
        copies += 1
        at = data.find(needle, at + 1)
    with open(data_path, "wb") as f:
        f.write(data)
    return copies


def test_verify_names_the_damaged_record(story_log, tmp_path):
    path = private_copy(story_log, tmp_path)
    assert flip_marker(path) >= 1
    result = run("verify", "--log", path, "--json")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False
    (problem,) = [p for p in data["problems"] if p["check"] == "records"]
    assert problem["id"] == MARKED
    assert problem["key"] == MARKED.to_bytes(8, "big").hex()
    assert problem["database"] == "notifications"
    assert "checksum" in problem["problem"]
    checks = {c["name"]: c["ok"] for c in data["checks"]}
    assert checks["records"] is False and checks["ids"] is True
    # The records after the damaged one were still read and checked.
    assert data["records"] == 21
    # The text form names it on stderr too, one line per problem.
    text = run("verify", "--log", path)
    assert text.exit_code == 1
    assert f"notification id {MARKED}" in text.stderr and "0000000000000005" in text.stderr
    assert "Traceback" not in text.output


def test_other_commands_stop_at_the_damage_with_one_line(story_log, tmp_path):
    path = private_copy(story_log, tmp_path)
    flip_marker(path)
    result = run("history", "web/0", "--log", path)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "notification id 5" in line and "taskledger verify" in line
    # Up to the record before it, the log still answers.
    assert run("history", "web/0", "--log", path, "--as-of", "4").exit_code == 0


def _unique_entries(path: str) -> dict[bytes, bytes]:
    store = LMDBDatastore.open(path, durable=False)
    try:
        unique = store.db("unique")
        return dict(store.read(lambda txn: list(txn.cursor(db=unique))))
    finally:
        store.close()


def _edit_unique(path: str, *, delete: bytes | None = None, put: tuple | None = None) -> None:
    store = LMDBDatastore.open(path, durable=False)
    try:
        unique = store.db("unique")
        with store.env.begin(write=True) as txn:
            if delete is not None:
                txn.delete(delete, db=unique)
            if put is not None:
                txn.put(*put, db=unique)
    finally:
        store.close()


def test_verify_checks_the_unique_index_of_agent_updates(tmp_path):
    path = str(tmp_path / "log")
    with Ledger.open(path, durable=False) as ledger:
        for i in range(3):
            ledger.status_update(
                {"task_id": {"value": "a"}, "state": "TASK_RUNNING", "uuid": f"{i:024d}"},
                time=float(i),
            )
    good = json.loads(run("verify", "--log", path, "--json").stdout)
    assert good["ok"] and [c["name"] for c in good["checks"]][3] == "unique"
    assert {c["name"]: c["detail"] for c in good["checks"]}["unique"].startswith("3 keys")

    second = update_key("a", f"{1:024d}")
    assert _unique_entries(path)[second] == (2).to_bytes(8, "big")
    _edit_unique(path, delete=second)  # an index that lost a key
    missing = run("verify", "--log", path, "--json")
    assert missing.exit_code == 1
    (problem,) = json.loads(missing.stdout)["problems"]
    assert (problem["check"], problem["id"], problem["key"]) == ("unique", 2, second.hex())
    assert "re-delivery would be kept" in problem["problem"]

    _edit_unique(path, put=(second, (2).to_bytes(8, "big")))
    stray = update_key("a", "not-in-the-log")
    _edit_unique(path, put=(stray, (3).to_bytes(8, "big")))  # a key of no update
    dangling = json.loads(run("verify", "--log", path, "--json").stdout)
    (problem,) = dangling["problems"]
    assert (problem["id"], problem["key"]) == (3, stray.hex())
    assert "holds no update with this key" in problem["problem"]

"""Another eventsourcing application writing the log a Ledger process holds.

The writer lock is the Ledger's (one Ledger process per log: two would each miss the
other's events in their views). An application opened with PERSISTENCE_MODULE=engine.store
may write the same log meanwhile, under its own originators: this checks, with a real second
process writing while the Ledger writes, that it cannot harm the Ledger's stream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid

from cli_log import run

from engine.ledger import LEDGER_STREAM, Ledger, state_digest
from engine.store import LMDBApplicationRecorder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_APPLICATION = textwrap.dedent(
    """
    import json, sys
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event

    class Dog(Aggregate):
        @event("Registered")
        def __init__(self, name):
            self.name = name
            self.tricks = []

        @event("TrickAdded")
        def add_trick(self, trick):
            self.tricks.append(trick)

    app = Application(env={"PERSISTENCE_MODULE": "engine.store", "LMDB_PATH": sys.argv[1]})
    ids = []
    for n in range(int(sys.argv[2])):
        dog = Dog(f"dog-{n}")
        dog.add_trick("roll over")
        app.save(dog)
        ids.append(dog.id)
    back = [app.repository.get(i) for i in ids]
    assert [d.tricks for d in back] == [["roll over"]] * len(ids)
    print(json.dumps([str(i) for i in ids]))
    """
)


def test_an_application_writing_beside_a_ledger_cannot_harm_its_stream(tmp_path):
    path = str(tmp_path / "log")
    dogs = 150
    with Ledger.open(path, durable=False) as ledger:
        ledger.task_created("web/0", job="web", time=1.0)
        stop = threading.Event()
        appended: list[int] = []

        def write() -> None:  # the Ledger keeps writing while the application does
            n = 0
            while not stop.is_set() or n < 50:
                n += 1
                status = {"task_id": {"value": "web/0"}, "state": "TASK_RUNNING", "uuid": f"u{n}"}
                appended.append(ledger.status_update(status, time=1.0 + n))

        writer = threading.Thread(target=write)
        writer.start()
        try:
            app = subprocess.run(
                [sys.executable, "-c", _APPLICATION, path, str(dogs)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            stop.set()
            writer.join()
        assert app.returncode == 0, app.stderr
        foreign = set(json.loads(app.stdout))
        live, ours = ledger.digest(), ledger.last_id

        store = ledger.datastore
        records = list(LMDBApplicationRecorder(store).scan())
        # Ids stay gap-free across both writers; the application's events (a registration
        # and a trick per dog) are under their own originators, none under the Ledger's.
        assert [nid for nid, _ in records] == list(range(1, len(records) + 1))
        others = [r for _, r in records if r[0] != LEDGER_STREAM.bytes]
        assert len(others) == 2 * dogs
        assert {str(uuid.UUID(bytes=r[0])) for r in others} == foreign
        # The Ledger's stream: its events only, in order, with versions = ids - 1.
        mine = [(nid, r) for nid, r in records if r[0] == LEDGER_STREAM.bytes]
        assert [nid for nid, _ in mine] == [1, *appended]
        assert all(r[1] == nid - 1 for nid, r in mine)
        assert ours == appended[-1] and [e.topic for _, e in ledger.events()].count(
            "StatusUpdateReceived"
        ) == len(appended)
        # Replay skips the application's events: the views equal the live ones.
        assert state_digest(ledger.load(None)) == live
    with Ledger.open(path, durable=False) as again:  # and so does a later open
        assert again.digest() == live
    assert run("verify", "--log", path).exit_code == 0

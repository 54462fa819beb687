"""A replica for the election tests, run as a process of its own (so it can be SIGKILLed or
SIGSTOPped): it campaigns, and once elected takes the log over at its epoch and appends one
event every ``--every`` seconds *without asking the election again* (the worst leader: one
that has not heard yet that it was deposed). Prints one JSON line per leadership change and
per append outcome; exits when an append is fenced.

PostgreSQL settings come from eventsourcing's POSTGRES_* environment variables (never the
command line); without ``--table`` it only campaigns.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid

from eventsourcing.persistence import StoredEvent

from engine.election import Election
from engine.leadership import Change, Signal
from engine.postgres_log import Fenced, FencedApplicationRecorder, FencedPostgresFactory


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--zk", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--replica", required=True)
    parser.add_argument("--session-timeout", type=float, default=1.0)
    parser.add_argument("--table")
    parser.add_argument("--every", type=float, default=0.02)
    args = parser.parse_args()

    elected = threading.Event()
    epochs: list[int] = []

    def on_change(change: Change) -> None:
        say(change=change.signal.value, role=change.role.value, epoch=change.epoch)
        if change.signal is Signal.ELECTED:
            epochs.append(change.epoch)  # type: ignore[arg-type]
            elected.set()

    election = Election(
        args.zk, args.path, args.replica, on_change, session_timeout=args.session_timeout
    ).start()
    elected.wait()
    if args.table is None:
        threading.Event().wait()  # campaign only: until killed
    store = FencedPostgresFactory({**os.environ, "ORIGINATOR_ID_TYPE": "text"}).datastore
    recorder = FencedApplicationRecorder(store, events_table_name=args.table)
    recorder.create_table()
    recorder.take_over(epochs[0], args.replica)
    while True:
        event = StoredEvent(f"{args.replica}/{uuid.uuid4()}", 0, "tick", b"{}")
        try:
            ids = recorder.insert_events([event])
        except Fenced as e:
            say(fenced=e.newer, holder=e.holder, at=time.time())
            election.resign()
            store.close()
            return 0
        say(appended=ids[0], epoch=epochs[0], at=time.time())
        time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())

"""The simulation's invariants, checked against the log itself (read back from LMDB).

`LogWatcher` follows the log as it grows: it keeps a replay of it (an independent
`LedgerState` folded from the events read back), the set of (task, uuid) updates it holds,
and a running hash of its events (the log's fingerprint: the same seed must give the same
hash). Each new event is checked as it is read:

- every command names a rule of the table that may issue it, and rests on evidence: earlier
  events of the log (no command without a rule and evidence);
- a KILL (its first attempt, for a retry) rests on something said about that task: the
  scheduler's own KillRequested, or a status update other than TASK_UNKNOWN; a kill for a
  drift cell (R-IMPLICIT-KILL-*) on an update that says the task is alive. Never silence,
  never TASK_UNKNOWN alone;
- a task is replaced (rescheduled) at most once: one TaskCreated names it as its ancestor;
- an agent's update (task, uuid) is in the log at most once, however often it was delivered
  (also while the first delivery was still being committed);
- a send that failed failed for a reason the simulated transport gives (a refused call, no
  connection), not for a bug.

A broken invariant raises `Violation` naming it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from engine.events import (
    CommandFailed,
    CommandIssued,
    KillRequested,
    StatusUpdateReceived,
    TaskCreated,
)
from engine.ledger import Ledger, LedgerState, state_digest
from engine.rules import DRIFT_RULES, RULES, MesosSays
from engine.wire import to_wire

ALIVE = frozenset({"TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING"})
_DRIFT_KILLS = frozenset(r for (_, says), r in DRIFT_RULES.items() if says is MesosSays.ALIVE)
_EXPECTED_SEND_ERRORS = ("CallRefused(", "ConnectionError(")

# The invariants by name (what a failing seed reports).
ACK_DURABLE = "acknowledged-update-in-log"
UPDATE_ONCE = "update-recorded-once"
ORDER_KEPT = "task-updates-in-arrival-order"
LOG_DURABLE = "log-survives-crash"
VIEWS_REPLAY = "views-equal-replay"
RULE_EVIDENCE = "command-has-rule-and-evidence"
KILL_EVIDENCE = "no-kill-from-silence-or-unknown"
REPLACED_ONCE = "task-replaced-at-most-once"
SEND_ERRORS = "send-fails-only-for-transport"
CALLBACK_ERRORS = "callbacks-do-not-fail"
DRIFT_ZERO = "drift-reaches-zero"
CONVERGED = "instances-running-in-ledger"
RUNS_ONCE = "no-instance-runs-twice"
PROGRESS = "no-livelock"


class Violation(BaseException):  # noqa: N818
    """An invariant does not hold. A BaseException, like KeyboardInterrupt, because it must
    pass through the product's own `except Exception` (SchedulerCore never raises into its
    driver; the dispatcher records a failing send) instead of being recorded as an error."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


class LogWatcher:
    """Follows one log through crashes and restarts (see the module docstring)."""

    def __init__(self) -> None:
        self.replay = LedgerState()
        self.events: list[Any] = [None]  # by notification id (0 unused)
        self.logged: set[tuple[str, str]] = set()  # (task, uuid) of updates in the log
        self.acked: set[tuple[str, str]] = set()  # (task, uuid) ever acknowledged
        self._hash = hashlib.sha256()
        self.commands = 0
        self.kills = 0
        self.replaced: dict[str, str] = {}  # task -> its replacement

    @property
    def last_nid(self) -> int:
        return len(self.events) - 1

    def log_hash(self) -> str:
        return self._hash.hexdigest()

    def refresh(self, ledger: Ledger) -> None:
        """Reads and checks the events appended since the last refresh."""
        for nid, event in ledger.events(self.last_nid + 1):
            if nid != len(self.events):
                raise Violation(LOG_DURABLE, f"the log skips from {self.last_nid} to {nid}")
            self.events.append(event)
            self._hash.update(msgpack.packb([nid, event.topic, to_wire(event)]))
            self.replay.apply(nid, event)
            kind = type(event)
            if kind is StatusUpdateReceived:
                if event.uuid is not None:
                    key = (event.task_id, event.uuid)
                    if key in self.logged:
                        raise Violation(UPDATE_ONCE, f"update {key} recorded again at id {nid}")
                    self.logged.add(key)
            elif kind is CommandIssued:
                self._check_command(nid, event)
            elif kind is TaskCreated and event.extra.get("ancestor") is not None:
                ancestor = event.extra["ancestor"]
                if ancestor in self.replaced:
                    raise Violation(
                        REPLACED_ONCE,
                        f"{ancestor} replaced by {self.replaced[ancestor]} and {event.task_id}",
                    )
                self.replaced[ancestor] = event.task_id
            elif kind is CommandFailed and not event.error.startswith(_EXPECTED_SEND_ERRORS):
                raise Violation(SEND_ERRORS, f"command {event.command_id}: {event.error}")

    # -- per event ---------------------------------------------------------------------------
    def _check_command(self, nid: int, e: CommandIssued) -> None:
        self.commands += 1
        rule = RULES.get(e.rule)
        if rule is None or e.kind not in rule.commands:
            raise Violation(RULE_EVIDENCE, f"command {nid} ({e.kind}) names rule {e.rule!r}")
        if not e.evidence or not all(0 < ev < nid for ev in e.evidence):
            raise Violation(
                RULE_EVIDENCE, f"command {nid} ({e.kind} {e.rule}) evidence {e.evidence}"
            )
        if e.kind == "KILL":
            self.kills += 1
            self._check_kill(nid, e)

    def _check_kill(self, nid: int, e: CommandIssued) -> None:
        first = e
        while first.retry_of is not None:
            first = self.events[first.retry_of]
            if type(first) is not CommandIssued or first.kind != "KILL":
                raise Violation(KILL_EVIDENCE, f"KILL {nid} retries {e.retry_of}, not a KILL")
        spoken = [
            self.events[ev]
            for ev in first.evidence
            if type(self.events[ev]) in (StatusUpdateReceived, KillRequested)
            and self.events[ev].task_id == e.task_id
        ]
        said = [s for s in spoken if type(s) is KillRequested or s.state != "TASK_UNKNOWN"]
        if first.rule in _DRIFT_KILLS:
            said = [s for s in said if type(s) is StatusUpdateReceived and s.state in ALIVE]
        if not said:
            words = [getattr(s, "state", s.topic) for s in spoken] or "nothing"
            raise Violation(
                KILL_EVIDENCE,
                f"KILL {nid} of {e.task_id} ({first.rule}, evidence {first.evidence}) rests "
                f"on {words}",
            )

    # -- on demand ---------------------------------------------------------------------------
    def check_ack(self, task_id: str, uuid: str, ledger: Ledger) -> None:
        """An ACKNOWLEDGE is about to leave: its update must already be in the log."""
        self.refresh(ledger)
        if (task_id, uuid) not in self.logged:
            raise Violation(
                ACK_DURABLE, f"update {uuid} of {task_id} acknowledged but not in the log"
            )
        self.acked.add((task_id, uuid))

    def check_views(self, ledger: Ledger) -> None:
        """The live views (and saga, dedup memory) equal the replay of the log."""
        self.refresh(ledger)
        live, replayed = ledger.digest(), state_digest(self.replay)
        if live != replayed:
            raise Violation(
                VIEWS_REPLAY,
                f"live state digest {live[:16]} != replay {replayed[:16]} at id {self.last_nid}",
            )

    def check_reopened(self, ledger: Ledger) -> None:
        """After a crash: the reopened log holds every event seen before it, unchanged, so
        every acknowledged update is still there."""
        seen = hashlib.sha256()
        count = 0
        for nid, event in ledger.events(1, self.last_nid):
            seen.update(msgpack.packb([nid, event.topic, to_wire(event)]))
            count = nid
        if count != self.last_nid or seen.hexdigest() != self.log_hash():
            raise Violation(
                LOG_DURABLE,
                f"the reopened log has {count} of the {self.last_nid} events seen before "
                "the crash, or they differ",
            )
        missing = self.acked - self.logged
        if missing:
            raise Violation(ACK_DURABLE, f"acknowledged updates not in the log: {missing}")

    def full_replay_digest(self, ledger: Ledger) -> str:
        """A replay from scratch of the whole log (not the watcher's incremental one)."""
        state = LedgerState()
        for nid, event in ledger.events():
            state.apply(nid, event)
        return state_digest(state)

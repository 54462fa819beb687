"""The dispatcher: carries the outbox's pending commands out (the imperative part).

It takes the plan (engine/outbox.py's pure `plan`), hands the remote commands to a `send`
callable supplied by the caller (the pymesos adapter; the simulated master in tests), appends
the local ones' effects, and records every outcome in the log. Why a crash loses nothing, and
what is sent at least once or applied exactly once, is engine/outbox.py's docstring. The
scheduler's runtime uses it asynchronously (see `Dispatcher`): the pass hands commands to a
sender and returns, and each outcome is recorded when the sender tells it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from engine.events import CommandDispatched, CommandFailed
from engine.outbox import DispatchConfig, DispatchPlan, PendingCommand


class DispatchReport(NamedTuple):
    """What one dispatch did (command ids)."""

    dispatched: list[int]
    failed: list[int]
    applied: list[int]  # local commands carried out (and confirmed)
    held: list[tuple[int, str]]
    halted: bool


class Dispatcher:
    """Takes pending commands, sends the remote ones through `send(command)`, applies the local
    ones, and records CommandDispatched / CommandFailed / CommandConfirmed.

    `plan_at(now)` returns the DispatchPlan (engine.outbox.plan over the current state),
    `failures_of(command_id)` how often sending it failed, `append` appends events durably.
    The Ledger builds one with `Ledger.dispatcher(send)`.

    With `submit` (an append that does not wait: Ledger.submit), `send(command, done)` is
    asynchronous: it hands the command over (to a sender of its own, never this thread) and
    `done(error)` is told later whether it went; its CommandDispatched or CommandFailed is
    recorded then, at `clock()` (when the master took it: an implicit run's quiet period
    counts from there, not from the pass, and a master may take seconds over a RECONCILE
    of 100k tasks), so the crash safety above is the same. A command handed over is not
    handed over again until its outcome is durable. The dispatch pass then never waits for
    the master: a round of a thousand RECONCILE batches goes out as fast as the master
    takes them, in order, while the pass returns.
    """

    def __init__(
        self,
        plan_at: Callable[[float], DispatchPlan],
        append: Callable[[Sequence[Any]], list[int]],
        send: Callable[[PendingCommand], object],
        *,
        config: DispatchConfig,
        failures_of: Callable[[int], int],
        lock: threading.Lock | threading.RLock | None = None,
        submit: Callable[..., None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._plan_at = plan_at
        self._append = append
        self._send = send
        self._config = config
        self._failures_of = failures_of
        self._lock = lock or threading.Lock()
        self._submit = submit
        self._clock = clock
        self._handed: set[int] = set()  # handed over, outcome not durable yet
        self._handed_lock = threading.Lock()

    def dispatch(self, *, now: float) -> DispatchReport:
        """One pass over the outbox at `now`. A send that raises is recorded as failed (tried
        again with backoff); every outcome is appended before this returns, also when a
        BaseException (e.g. KeyboardInterrupt) stops the pass."""
        with self._lock:
            with self._handed_lock:
                handed = set(self._handed)  # before the plan: an outcome may land meanwhile
            plan_ = self._plan_at(now)
            events: list[Any] = []
            dispatched: list[int] = []
            failed: list[int] = []
            applied: list[int] = []
            if plan_.halt is not None:
                events.append(plan_.halt)
            try:
                for command in plan_.remote:
                    if self._submit is not None:
                        if command.command_id not in handed:
                            self._hand_over(command, now)
                            dispatched.append(command.command_id)
                        continue
                    try:
                        self._send(command)
                    except Exception as e:  # the driver's problem: record it, retry later
                        events.append(self._failed(command, e, now))
                        failed.append(command.command_id)
                    else:
                        events.append(CommandDispatched(now, None, command.command_id))
                        dispatched.append(command.command_id)
                for effect in plan_.local:
                    events.extend(effect)
                    applied.append(effect[-1].command_id)
            finally:
                if events:
                    self._append(events)
            return DispatchReport(dispatched, failed, applied, plan_.held, plan_.halt is not None)

    def _failed(self, command: PendingCommand, error: BaseException, now: float) -> CommandFailed:
        failures = self._failures_of(command.command_id)
        wait = min(self._config.retry_cap, self._config.retry_base * 2.0**failures)
        return CommandFailed(now, None, command.command_id, repr(error)[:500], now + wait)

    def _hand_over(self, command: PendingCommand, now: float) -> None:
        """Sends asynchronously; the outcome is recorded when the sender tells it."""
        command_id = command.command_id
        with self._handed_lock:
            self._handed.add(command_id)
        submit = self._submit
        assert submit is not None

        def settled(ids: Any, error: BaseException | None) -> None:
            # Durable (or not written: then it is still pending and goes again).
            with self._handed_lock:
                self._handed.discard(command_id)

        def done(error: BaseException | None) -> None:
            when = now if self._clock is None else max(now, self._clock())
            if error is None:
                outcome: Any = CommandDispatched(when, None, command_id)
            else:  # the driver's problem: record it, retry later
                outcome = self._failed(command, error, when)
            submit([outcome], done=settled)

        try:
            self._send(command, done)
        except BaseException:
            settled(None, None)
            raise

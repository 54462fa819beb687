"""Calls to the master, sent by threads of their own over keep-alive connections.

pymesos sends a call on the thread that makes it, over one HTTP connection held under the
driver's lock, the lock its IO thread also takes to read the connection's state: a call made
from a callback stops the event stream for a round trip, and a slow master stops it for as
long as it is slow. Here the scheduler only hands a call over (`send`), and a lane sends it:
acknowledgements on one lane (two connections, in no particular order), every other call
(ACCEPT, DECLINE, KILL, RECONCILE, REVIVE) in order on another (one connection), each
connection with a thread and a keep-alive socket of its own. What waits on a
lane goes out in one write, pipelined (engine/mesos/http1.py), so a burst of
acknowledgements costs the master's work, not one round trip each. A slow or failing call
delays the calls behind it on its lane, never the stream, never the other lane. Each call's
outcome goes to its ``done(error)`` (None: the master took it, 2xx), on the lane's thread.

The calls carry the stream id and framework id of the driver subscribed at the moment they
are sent (a call handed over before a resubscription goes with the new stream: an
acknowledgement is still the framework's). Without a subscription a call fails at once with
ConnectionError, as pymesos would have dropped it.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.mesos import http1
from engine.mesos.tls import MasterTLS

log = logging.getLogger("taskledger.sender")

SCHEDULER_PATH = "/api/v1/scheduler"
Done = Callable[[BaseException | None], None]

# Which lane a call goes on (every kind not named here goes on "calls").
ACKS = "acknowledgements"
CALLS = "calls"
LANES = (ACKS, CALLS)
LANE_OF = {"ACKNOWLEDGE": ACKS}


# What a call to the master raises when it does not go through: a non-2xx answer (a
# RuntimeError, as pymesos raises), the socket layer's OSError (refused, reset, timeout,
# ConnectionError when not subscribed) or an HTTPException. These are the master's weather,
# handled by the caller of each call: the agent re-sends an update not acknowledged, offers
# not answered are declined again, a command not sent stays pending and is tried again.
CALL_FAILED = (RuntimeError, OSError, http.client.HTTPException)


def basic_authorization(principal: str, secret: str) -> str:
    """The Authorization header's value for HTTP basic authentication."""
    return "Basic " + base64.b64encode(f"{principal}:{secret}".encode("ascii")).decode("ascii")


def call_body(kind: str, framework_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The v1 scheduler call ``kind`` (e.g. "ACKNOWLEDGE") of ``framework_id``."""
    return {"type": kind, "framework_id": {"value": framework_id}, kind.lower(): payload}


class Transport(Protocol):
    """Carries one call to the master; raises if the master did not take it."""

    def post(self, kind: str, payload: dict[str, Any]) -> None: ...


class Sender(Protocol):
    """Takes calls to send later; ``done(error)`` is told how each went."""

    def send(self, kind: str, payload: dict[str, Any], done: Done | None = None) -> None: ...


class MasterConnection:
    """A `Transport` to the master the current pymesos driver is subscribed to (``driver()``
    returns it, or None), over one keep-alive connection on which a batch of calls is
    pipelined (engine/mesos/http1.py). Not thread-safe: one per lane."""

    def __init__(
        self,
        driver: Callable[[], Any],
        *,
        timeout: float,
        credential: tuple[str, str] | None = None,
        gate: Any = None,
        tls: MasterTLS | None = None,
    ) -> None:
        self._driver = driver
        # Over TLS, as the stream is (engine/mesos/tls_stream.py).
        self._context = None if tls is None else tls.context
        # A replicated scheduler's gate (engine/gate.py): while it is not open (the replica
        # paused or deposed) no call goes out.
        self._gate = gate
        self._timeout = timeout
        # HTTP basic authentication, as pymesos sends it with its own calls.
        self._authorization = None if credential is None else basic_authorization(*credential)
        self._conn: http1.Connection | None = None
        self._master: str | None = None

    def post(self, kind: str, payload: dict[str, Any]) -> None:
        error = self.post_many([(kind, payload)])[0]
        if error is not None:
            raise error

    def post_many(self, calls: Sequence[tuple[str, dict[str, Any]]]) -> list[BaseException | None]:
        """Sends the calls in order, written back to back; returns each one's error (None:
        the master took it). A call without an answer (the connection broke) failed."""
        closed = None if self._gate is None else self._gate.reason
        if closed is not None:
            return [
                ConnectionError(f"not leading ({closed}): {kind} not sent") for kind, _ in calls
            ]
        driver = self._driver()
        stream_id = None if driver is None else driver.stream_id
        framework_id = None if driver is None else driver.framework_id
        if not stream_id or not framework_id:
            return [ConnectionError(f"not subscribed: {kind} not sent") for kind, _ in calls]
        conn = self._connection(driver.master)
        headers = {"Content-Type": "application/json", "Mesos-Stream-Id": stream_id}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        requests = [
            http1.request(
                conn.host,
                SCHEDULER_PATH,
                json.dumps(call_body(kind, framework_id, payload)).encode(),
                headers,
            )
            for kind, payload in calls
        ]
        answers, broken = conn.exchange(requests)
        errors: list[BaseException | None] = []
        for (kind, _), answer in zip(calls, answers, strict=False):
            if 200 <= answer.status < 300:
                errors.append(None)
            else:  # pymesos raises a RuntimeError for this too
                errors.append(
                    RuntimeError(
                        f"Failed to send request {answer.status}: {kind}: {answer.body[:300]!r}"
                    )
                )
        errors += [broken] * (len(calls) - len(answers))
        return errors

    def _connection(self, master: str) -> http1.Connection:
        if self._conn is None or master != self._master:
            self.close()
            host, _, port = master.rpartition(":")
            self._conn = http1.Connection(
                host, int(port), timeout=self._timeout, context=self._context
            )
            self._master = master
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class LaneStats:
    sent: int = 0
    failed: int = 0
    batches: int = 0  # writes: each pipelines up to the lane's depth of calls


_STOP = object()
# How many calls a lane writes back to back before it reads their answers: acknowledgements
# are small (256 in ~70 KB); RECONCILE batches are not (1,000 tasks in ~80 KB), and the
# master answers each with 1,000 events on the stream before it takes the next.
DEPTH = {ACKS: 256, CALLS: 16}
# Connections (each with its thread) per lane. Acknowledgements need no order among them,
# and a master answers two connections' requests interleaved, so two keep it busier; the
# other calls go in order, on one.
CONNECTIONS = {ACKS: 2, CALLS: 1}


class ThreadedSender:
    """A `Sender` with one thread per lane, each sending over its own transport
    (``transport()`` makes one, e.g. a MasterConnection): whatever waits on the lane, up to
    its depth, goes in one pipelined write when the transport has ``post_many``. ``stop()``
    sends what was handed over before it, then ends the threads."""

    def __init__(self, transport: Callable[[], Transport]) -> None:
        self.stats = {lane: LaneStats() for lane in LANES}
        self._awaiting = 0  # connections with requests written and answers not all read
        self._awaiting_lock = threading.Lock()
        self._queues: dict[str, queue.SimpleQueue[Any]] = {
            lane: queue.SimpleQueue() for lane in LANES
        }
        self._threads = [
            threading.Thread(
                target=self._run, args=(lane, transport()), name=f"sender {lane}", daemon=True
            )
            for lane in LANES
            for _ in range(CONNECTIONS[lane])
        ]
        for thread in self._threads:
            thread.start()

    def send(self, kind: str, payload: dict[str, Any], done: Done | None = None) -> None:
        self._queues[LANE_OF.get(kind, CALLS)].put((kind, payload, done))

    def awaiting_master(self) -> bool:
        """Whether a call was sent and its answer has not come yet: the master is busy (an
        implicit reconciliation of 100k tasks keeps it so for seconds), and silence on the
        stream meanwhile is no sign the stream died."""
        return self._awaiting > 0

    def queued(self) -> int:
        """Calls handed over and not sent yet (both lanes)."""
        return sum(q.qsize() for q in self._queues.values())

    def stop(self) -> None:
        for lane in LANES:
            for _ in range(CONNECTIONS[lane]):
                self._queues[lane].put(_STOP)
        for thread in self._threads:
            thread.join()

    def _run(self, lane: str, transport: Transport) -> None:
        calls, stats, depth = self._queues[lane], self.stats[lane], DEPTH[lane]
        many = getattr(transport, "post_many", None)
        stopping = False
        while not stopping:
            batch = []
            item = calls.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= depth:
                    break
                try:
                    item = calls.get_nowait()
                except queue.Empty:
                    break
            if not batch:
                continue
            stats.batches += 1
            with self._awaiting_lock:
                self._awaiting += 1
            try:
                if many is not None:
                    errors = _post_many(many, batch)
                else:
                    errors = [send_one(transport, kind, payload) for kind, payload, _ in batch]
            finally:
                with self._awaiting_lock:
                    self._awaiting -= 1
            for (kind, _, done), error in zip(batch, errors, strict=True):
                if error is None:
                    stats.sent += 1
                else:
                    stats.failed += 1
                if done is not None:
                    try:
                        done(error)
                    except Exception:
                        log.exception("the completion of a %s call failed", kind)
        close = getattr(transport, "close", None)
        if close is not None:
            close()


def _post_many(many: Callable[..., list[BaseException | None]], batch: list[Any]) -> list[Any]:
    try:
        return many([(kind, payload) for kind, payload, _ in batch])
    except Exception as e:  # our bug (a payload that does not encode, ...): none sent
        log.exception("%d calls could not be sent", len(batch))
        return [e] * len(batch)


def send_one(transport: Transport, kind: str, payload: dict[str, Any]) -> BaseException | None:
    """Posts one call; returns the error if the master did not take it (None if it did)."""
    try:
        transport.post(kind, payload)
    except CALL_FAILED as e:  # the master's weather: the caller decides what it means
        return e
    except Exception as e:  # our bug (a payload that does not encode, ...): not sent either
        log.exception("a %s call could not be sent", kind)
        return e
    return None

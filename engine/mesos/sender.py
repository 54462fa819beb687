"""Calls to the master, sent by threads of their own over keep-alive connections.

pymesos sends a call on the thread that makes it, over one HTTP connection held under the
driver's lock, the lock its IO thread also takes to read the connection's state: a call made
from a callback stops the event stream for a round trip, and a slow master stops it for as
long as it is slow. Here the scheduler only hands a call over (`send`), and a lane sends it:
acknowledgements on one lane, every other call (ACCEPT, DECLINE, KILL, RECONCILE, REVIVE) in
order on another, each lane a thread with its own keep-alive connection. A slow or failing
call delays the calls behind it on its lane, never the stream, never the other lane. Each
call's outcome goes to its ``done(error)`` (None: the master took it, 2xx), on the lane's
thread.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

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
    """A `Transport` over one keep-alive HTTP connection to the master the current pymesos
    driver is subscribed to (``driver()`` returns it, or None). Not thread-safe: one per
    lane."""

    def __init__(
        self,
        driver: Callable[[], Any],
        *,
        timeout: float,
        credential: tuple[str, str] | None = None,
    ) -> None:
        self._driver = driver
        self._timeout = timeout
        # HTTP basic authentication, as pymesos sends it with its own calls.
        self._authorization = None if credential is None else basic_authorization(*credential)
        self._conn: http.client.HTTPConnection | None = None
        self._master: str | None = None

    def post(self, kind: str, payload: dict[str, Any]) -> None:
        driver = self._driver()
        stream_id = None if driver is None else driver.stream_id
        framework_id = None if driver is None else driver.framework_id
        if not stream_id or not framework_id:
            raise ConnectionError(f"not subscribed: {kind} not sent")
        data = json.dumps(call_body(kind, framework_id, payload)).encode()
        conn = self._connection(driver.master)
        headers = {"Content-Type": "application/json", "Mesos-Stream-Id": stream_id}
        if self._authorization is not None:
            headers["Authorization"] = self._authorization
        try:
            conn.request("POST", SCHEDULER_PATH, body=data, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except BaseException:
            self.close()  # the connection's state is unknown: a new one for the next call
            raise
        if response.will_close:
            self.close()
        if not 200 <= response.status < 300:
            raise RuntimeError(f"Failed to send request {response.status}: {kind}: {body[:300]!r}")

    def _connection(self, master: str) -> http.client.HTTPConnection:
        if self._conn is None or master != self._master:
            self.close()
            host, _, port = master.rpartition(":")
            self._conn = http.client.HTTPConnection(host, int(port), timeout=self._timeout)
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
    queued: int = 0  # handed over, not sent yet (a gauge)


_STOP = object()


class ThreadedSender:
    """A `Sender` with one thread per lane, each sending over its own transport
    (``transport()`` makes one, e.g. a MasterConnection). ``stop()`` sends what was handed
    over before it, then ends the threads."""

    def __init__(self, transport: Callable[[], Transport]) -> None:
        self.stats = {lane: LaneStats() for lane in LANES}
        self._queues: dict[str, queue.SimpleQueue[Any]] = {
            lane: queue.SimpleQueue() for lane in LANES
        }
        self._threads = [
            threading.Thread(
                target=self._run, args=(lane, transport()), name=f"sender {lane}", daemon=True
            )
            for lane in LANES
        ]
        for thread in self._threads:
            thread.start()

    def send(self, kind: str, payload: dict[str, Any], done: Done | None = None) -> None:
        lane = LANE_OF.get(kind, CALLS)
        self.stats[lane].queued += 1
        self._queues[lane].put((kind, payload, done))

    def stop(self) -> None:
        for lane in LANES:
            self._queues[lane].put(_STOP)
        for thread in self._threads:
            thread.join()

    def _run(self, lane: str, transport: Transport) -> None:
        calls, stats = self._queues[lane], self.stats[lane]
        while True:
            item = calls.get()
            if item is _STOP:
                break
            kind, payload, done = item
            stats.queued -= 1
            error = send_one(transport, kind, payload)
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

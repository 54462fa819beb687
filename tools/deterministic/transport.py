"""The scheduler's side of the wire, in process: what pymesos's MesosSchedulerDriver is to the
scheduler, without its IO thread, its sockets or its clock.

`VirtualMesos` keeps the driver's state (stream id, framework id, master id), posts calls as
the same JSON bodies the production sender does (through `call`, which hands them to the
simulated master's model), and turns the master's events into the same callbacks pymesos
makes on `LedgerScheduler`. `SteppedSender` is the production sender's stand-in: the calls
wait on the same lanes until the simulation sends them, one at a time, when its seed says.
So the scheduler logic under test is exactly the production path: LedgerScheduler ->
SchedulerCore -> PymesosDriver -> a sender's lane -> (this instead of HTTP) -> the master.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from engine.mesos.sender import CALLS, LANE_OF, LANES, Done, Transport, call_body, send_one


class CallRefused(RuntimeError):
    """The master answered a call with an error status (pymesos raises a RuntimeError)."""


def wire(body: Any) -> Any:
    """A message as the other side reads it: through JSON, as over HTTP (fresh objects,
    lists for tuples), so neither side can share or mutate the other's dicts."""
    return json.loads(json.dumps(body))


class VirtualMesos:
    """A stand-in for pymesos's MesosSchedulerDriver (the attributes and methods that
    PymesosDriver and LedgerScheduler use), on the simulation's single thread.

    `call(body, stream_id)` carries a call to the master and returns its HTTP status.
    """

    def __init__(
        self,
        sched: Any,
        framework: dict[str, Any],
        call: Callable[[dict[str, Any], str | None], int],
    ) -> None:
        self.sched = sched
        self._framework = dict(framework)
        self._call = call
        self.stream_id: str | None = None
        self.master_id: str | None = None
        self.stopped = False

    # -- what PymesosDriver and LedgerScheduler read ----------------------------------------
    @property
    def framework_id(self) -> str | None:
        fid = self._framework.get("id")
        return fid and fid.get("value")

    @framework_id.setter
    def framework_id(self, value: str) -> None:
        self._framework["id"] = {"value": value}

    @property
    def connected(self) -> bool:
        return self.stream_id is not None

    def post(self, kind: str, payload: dict[str, Any]) -> None:
        """A call, as engine.mesos.sender.MasterConnection posts it (a `Transport`)."""
        framework_id = self.framework_id
        if self.stream_id is None or not framework_id:
            raise ConnectionError(f"not subscribed: {kind} not sent")
        status = self._call(wire(call_body(kind, framework_id, payload)), self.stream_id)
        if status < 200 or status >= 300:
            raise CallRefused(f"Failed to send request {status}: {kind}")

    def stop(self, failover: bool = False) -> None:
        self.stopped = True

    # -- the stream ----------------------------------------------------------------------------
    def subscribe_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "SUBSCRIBE",
            "subscribe": {"framework_info": dict(self._framework)},
        }
        if "id" in self._framework:
            body["framework_id"] = self._framework["id"]
        return wire(body)

    def on_event(self, event: dict[str, Any]) -> None:
        """One event of the stream, dispatched as pymesos's on_event does."""
        kind = event.get("type", "").lower()
        if kind == "heartbeat":
            self.sched.processHeartBeat(self)
            return
        body = event.get(kind)
        if body is None:
            return
        if kind == "subscribed":
            self._on_subscribed(body)
        elif kind == "offers":
            self.sched.resourceOffers(self, body.get("offers", []))
        elif kind == "rescind":
            self.sched.offerRescinded(self, body["offer_id"])
        elif kind == "update":
            self.sched.statusUpdate(self, body["status"])
        elif kind == "failure":
            if "executor_id" in body:
                self.sched.executorLost(
                    self, body["executor_id"], body["agent_id"], body.get("status")
                )
            else:
                self.sched.slaveLost(self, body["agent_id"])
        elif kind == "error":
            self.sched.error(self, body["message"])

    def _on_subscribed(self, info: dict[str, Any]) -> None:
        # pymesos: reregistered iff the driver already had a framework id; our _Driver
        # subclass keeps the master's id from master_info.
        self.master_id = (info.get("master_info") or {}).get("id")
        again = self.framework_id is not None
        self.framework_id = info["framework_id"]["value"]
        if again:
            self.sched.reregistered(self, {})
        else:
            self.sched.registered(self, {"value": self.framework_id}, {})

    def on_close(self) -> None:
        """The master closed or cut the stream (pymesos: on_close, then disconnected)."""
        self.stream_id = None
        self.sched.disconnected(self)


class SteppedSender:
    """engine/mesos/sender.py's `Sender` on the simulation's thread: calls wait on the
    production lanes (acknowledgements apart from the other calls, each lane in order)
    until `send_next(lane)` sends the oldest of a lane through ``transport()`` (the
    current driver's, or None: not subscribed) and tells its ``done``."""

    def __init__(self, transport: Callable[[], Transport | None]) -> None:
        self._transport = transport
        self.lanes: dict[str, deque[tuple[str, dict[str, Any], Done | None]]] = {
            lane: deque() for lane in LANES
        }

    def send(self, kind: str, payload: dict[str, Any], done: Done | None = None) -> None:
        self.lanes[LANE_OF.get(kind, CALLS)].append((kind, payload, done))

    def busy(self) -> list[str]:
        """The lanes with calls waiting."""
        return [lane for lane in LANES if self.lanes[lane]]

    def send_next(self, lane: str) -> None:
        kind, payload, done = self.lanes[lane].popleft()
        transport = self._transport()
        if transport is None:
            error: BaseException | None = ConnectionError(f"not subscribed: {kind} not sent")
        else:
            error = send_one(transport, kind, payload)
        if done is not None:
            done(error)

"""A minimal blocking client of the scheduler API, for tests, demos and hand-made calls
(e.g. a RECONCILE that names agent ids, which pymesos strips).

It reads the SUBSCRIBE answer off a raw socket, undoing the chunked transfer encoding and
the RecordIO framing itself, so tests see exactly what went over the wire.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Callable

from tools.sim_master.recordio import Decoder


def call(
    address: str,
    body: object,
    *,
    stream_id: str | None = None,
    method: str = "POST",
    content_type: str | None = "application/json",
    path: str = "/api/v1/scheduler",
    timeout: float = 10.0,
) -> tuple[int, str]:
    """One HTTP call; returns (status, body text)."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if stream_id is not None:
            headers["Mesos-Stream-Id"] = stream_id
        data = (
            body
            if isinstance(body, bytes)
            else (b"" if body is None else json.dumps(body).encode())
        )
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


class Connection:
    """Calls over one kept-alive HTTP connection, as a scheduler's HTTP client makes them
    (a new connection per call costs more than most calls themselves)."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        host, port = address.rsplit(":", 1)
        self._conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def call(
        self,
        body: object,
        *,
        stream_id: str | None = None,
        method: str = "POST",
        path: str = "/api/v1/scheduler",
    ) -> tuple[int, str]:
        """One call (a JSON body, or bytes as they are, or None); returns (status, text)."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if stream_id is not None:
            headers["Mesos-Stream-Id"] = stream_id
        data = body if isinstance(body, bytes | type(None)) else json.dumps(body).encode()
        self._conn.request(method, path, body=data, headers=headers)
        resp = self._conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")

    def close(self) -> None:
        self._conn.close()


def get_json(address: str, path: str, timeout: float = 10.0) -> dict:
    status, text = call(address, None, method="GET", content_type=None, path=path, timeout=timeout)
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {text}")
    return json.loads(text)


class EventStream:
    """A SUBSCRIBE call and the event stream it opens.

    After construction: `status`, `headers` (lower-case names), and for a non-200 answer
    `body`. Events arrive on a reader thread; take them with `next()` / `wait_for()`.
    `raw` keeps every byte of the response body as received (chunk framing included), unless
    `keep_raw` is False. `accept` is the Accept header (None: no header).
    """

    def __init__(
        self,
        address: str,
        body: dict,
        *,
        extra_headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        keep_raw: bool = True,
        accept: str | None = "application/json",
    ) -> None:
        host, port = address.rsplit(":", 1)
        self._keep_raw = keep_raw
        self._sock = socket.create_connection((host, int(port)), timeout=timeout)
        data = json.dumps(body).encode()
        head = [
            "POST /api/v1/scheduler HTTP/1.1",
            f"Host: {address}",
            "Content-Type: application/json",
            "Connection: close",
            f"Content-Length: {len(data)}",
        ]
        if accept is not None:
            head.append(f"Accept: {accept}")
        head += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
        self._sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        # Bytes received and not yet read start at _pos: reading advances _pos instead of
        # copying what is left (which at 100,000 events would cost more than the events).
        self._buf = bytearray()
        self._pos = 0
        self.raw = bytearray()
        self.events: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        self.ended = threading.Event()
        self.clean_end = False  # the zero-length last chunk arrived
        self.error: BaseException | None = None
        status_line = self._readline()
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        while True:
            line = self._readline()
            if not line:
                break
            name, _, val = line.partition(":")
            self.headers[name.strip().lower()] = val.strip()
        self.body = ""
        if self.status != 200:
            length = int(self.headers.get("content-length", "0"))
            self.body = self._read_exact(length).decode("utf-8", "replace")
            self._sock.close()
            self.ended.set()
            return
        self.stream_id = self.headers.get("mesos-stream-id")
        self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._read_events, daemon=True)
        self._thread.start()

    # -- raw reading
    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        if self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += chunk

    def _readline(self) -> str:
        while (end := self._buf.find(b"\r\n", self._pos)) < 0:
            self._fill()
        line = bytes(self._buf[self._pos : end])
        self._pos = end + 2
        return line.decode("latin-1")

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            self._fill()
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        return out

    def _read_events(self) -> None:
        decoder = Decoder()
        try:
            while True:
                size_line = self._readline()
                size = int(size_line.split(";")[0], 16)
                payload = self._read_exact(size)
                if self._read_exact(2) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                if self._keep_raw:
                    self.raw += size_line.encode() + b"\r\n" + payload + b"\r\n"
                if size == 0:
                    self.clean_end = True
                    break
                for event in decoder.feed(payload):
                    self.seen.append(event)
                    self.events.put(event)
        except (EOFError, OSError):
            pass
        except BaseException as err:  # framing errors are what tests look for
            self.error = err
        finally:
            self.ended.set()

    # -- consuming events
    def next(self, timeout: float = 5.0, skip: tuple[str, ...] = ("HEARTBEAT",)) -> dict:
        """The next event whose type is not in `skip`; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event in time")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                raise TimeoutError("no event in time") from None
            if event.get("type") not in skip:
                return event

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        """Skip events until one satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.0, deadline - time.monotonic()), skip=())
            if predicate(event):
                return event

    def drain(self) -> list[dict]:
        """Every event queued so far."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        # Shut down first and close only once the reader is done: closing a socket that
        # another thread is about to recv() on lets that recv hit whatever file reuses the fd.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self.ended.wait(5)
        self._sock.close()

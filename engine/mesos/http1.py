"""HTTP/1.1 POSTs pipelined over one keep-alive socket: many requests written at once, their
answers read back in order.

http.client (what pymesos uses) waits for each answer before it writes the next request, so
a call costs a full round trip, most of it the master's scheduling of the request: 1,500
acknowledgements a second against the simulated master here, where the same master takes
5,000 a second written back to back. Mesos's libprocess and aiohttp both answer pipelined
requests in order, as HTTP/1.1 requires. No client library pipelines (h11 and http.client
refuse to send while an answer is outstanding), so the little it takes is here: build the
requests, parse each answer's status line, headers and body (Content-Length, chunked, or
until close).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

_MAX_HEAD = 64 * 1024  # an answer's status line and headers never come near this


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.1 we can read; the connection is dropped."""


class Answer:
    """One answer: its status, body, and whether the server closes the connection after it."""

    __slots__ = ("status", "body", "close")

    def __init__(self, status: int, body: bytes, close: bool) -> None:
        self.status, self.body, self.close = status, body, close


def request(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The bytes of one POST with a body."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection to ``host:port``, opened on first use, over TLS with
    ``context`` if given (the handshake is part of opening it). Not thread-safe."""

    def __init__(
        self, host: str, port: int, *, timeout: float, context: ssl.SSLContext | None = None
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.context = context
        self._sock: socket.socket | None = None
        self._buffer = b""

    def exchange(self, requests: Sequence[bytes]) -> tuple[list[Answer], BaseException | None]:
        """Writes the requests back to back and reads their answers in order. Returns the
        answers read and, if fewer than asked, why the rest are missing (the connection
        is closed then: the master may or may not have acted on those)."""
        answers: list[Answer] = []
        try:
            sock = self._connect()
            sock.sendall(b"".join(requests))
            while len(answers) < len(requests):
                answer = self._read_answer(sock)
                answers.append(answer)
                if answer.close:
                    self.close()
                    if len(answers) < len(requests):
                        return answers, ConnectionError("the master closed the connection")
        except OSError as e:  # refused, reset, timed out, or an answer we cannot read
            self.close()
            return answers, e
        except ValueError as e:  # a length that is not a number
            self.close()
            return answers, ProtocolError(f"an answer we cannot read: {e}")
        return answers, None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                try:
                    sock = self.context.wrap_socket(sock, server_hostname=self.host)
                except BaseException:
                    sock.close()
                    raise
            self._sock = sock
        return self._sock

    def _fill(self, sock: socket.socket) -> None:
        data = sock.recv(256 * 1024)
        if not data:
            raise ConnectionError("the master closed the connection")
        self._buffer += data

    def _read_answer(self, sock: socket.socket) -> Answer:
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buffer) > _MAX_HEAD:
                raise ProtocolError("an answer's headers are too long")
            self._fill(sock)
        head = self._buffer[:end].decode("latin-1").split("\r\n")
        self._buffer = self._buffer[end + 4 :]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.1 status line: {head[0][:100]!r}")
        status = int(parts[1])
        headers = {}
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"not a header: {line[:100]!r}")
            headers[name.strip().lower()] = value.strip()
        close = headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked(sock)
        elif "content-length" in headers:
            body = self._exactly(sock, int(headers["content-length"]))
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # the body runs to the end of the connection
            while True:
                try:
                    self._fill(sock)
                except ConnectionError:
                    break
            body, self._buffer, close = self._buffer, b"", True
        return Answer(status, body, close)

    def _exactly(self, sock: socket.socket, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill(sock)
        body, self._buffer = self._buffer[:n], self._buffer[n:]
        return body

    def _chunked(self, sock: socket.socket) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self._buffer:
                self._fill(sock)
            line, self._buffer = self._buffer.split(b"\r\n", 1)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Trailers (none expected) end with an empty line.
                while True:
                    while b"\r\n" not in self._buffer:
                        self._fill(sock)
                    trailer, self._buffer = self._buffer.split(b"\r\n", 1)
                    if not trailer:
                        return body
            body += self._exactly(sock, size)
            self._exactly(sock, 2)  # the CRLF after the chunk

"""pymesos's SUBSCRIBE stream over TLS.

pymesos's IO thread (pymesos/process.py) opens the stream as a `Connection` on a plain
non-blocking socket and drives it with select: ``handle_connect_event`` on every pass until
``connected``, then ``write`` when the socket is writable and ``read`` when it is readable,
each read parsing what one ``recv`` returned. `TLSConnection` keeps all of that, pymesos's
parsing included, and changes what is under it:

- the TLS handshake is part of connecting: each pass takes one step of it, and select waits
  for what that step needs (``want_write``); a failed handshake (a certificate not trusted,
  a plain HTTP master) is a failed connect, which pymesos logs and retries with its backoff;
- the socket pymesos reads and writes is `_TLSSocket`, which maps TLS's "not yet" (want
  read / want write) to the EAGAIN pymesos expects of a plain socket, and hands over
  everything already decrypted: a TLS record is up to 16 KB and pymesos reads 4 KB at a
  time, so bytes left inside the SSL object (``pending()``) would wait, unseen by select,
  until the master sent something more.

pymesos builds the stream's connection by the name `Connection` in its module; `install`
points that name at `stream_connection`, which builds a `TLSConnection` for a driver that
has a ``tls`` and pymesos's own class for any other.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from typing import Any

from pymesos import process

from engine.mesos.tls import MasterTLS

_PLAIN = process.Connection
_NOT_YET = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
# A TLS record's payload is at most 16 KB: one recv of this size takes a whole record.
_RECORD = 16 * 1024
# What one read hands pymesos at most, in whole records (see `_TLSSocket.recv`).
_MAX_READ = 64 * 1024


class _TLSSocket:
    """The non-blocking socket pymesos's `Connection` uses, speaking TLS."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._ssl = sock

    def fileno(self) -> int:
        return self._ssl.fileno()

    def close(self) -> None:
        self._ssl.close()

    def send(self, data: bytes) -> int:
        try:
            return self._ssl.send(data)
        except _NOT_YET:
            raise BlockingIOError(errno.EAGAIN, "TLS: not yet") from None

    def recv(self, size: int) -> bytes:
        """The whole records there now, up to about 64 KB (``size`` is pymesos's 4 KB: the
        rest of a record would stay inside the SSL object, unseen by select); b"" once the
        master closed; EAGAIN if no whole record is there yet.

        Several records: a master may write one per event (asyncio's TLS does), and a
        select and a read per event costs the IO thread more than the events. Not all
        the socket holds: pymesos's parser copies what is left of its buffer once per
        event, so a read of a megabyte (a stream held back by the in-flight bound piles
        up) costs it time quadratic in the read; what is not read waits in the socket,
        where select sees it."""
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = self._ssl.recv(max(size, _RECORD))
            except _NOT_YET:
                break
            if not chunk:  # closed: said now, or at the next read (select sees the EOF)
                if chunks:
                    break
                return b""
            chunks.append(chunk)
            total += len(chunk)
            if total >= _MAX_READ and not self._ssl.pending():
                break
        if chunks:
            return b"".join(chunks)
        raise BlockingIOError(errno.EAGAIN, "TLS: nothing yet")


class TLSConnection(_PLAIN):
    """pymesos's stream connection, over TLS (see the module's text)."""

    def __init__(self, addr: str, callback: Any, tls: MasterTLS) -> None:
        super().__init__(addr, callback)  # the plain socket, its connect under way
        self._tls = tls
        self._wants_write = True  # the TCP connect is done when the socket is writable

    def handle_connect_event(self) -> str:
        """One step of connecting: "" (done, or not yet) or why it failed."""
        sock = self._sock
        if not isinstance(sock, ssl.SSLSocket):
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return os.strerror(err)
            try:
                sock.getpeername()
            except OSError:
                return ""  # still connecting (pymesos also calls on a select timeout)
            host = self.addr[0]
            sock = self._sock = self._tls.context.wrap_socket(
                sock, server_hostname=host, do_handshake_on_connect=False
            )
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._wants_write = False
            return ""
        except ssl.SSLWantWriteError:
            self._wants_write = True
            return ""
        except OSError as e:
            return self._tls.failure(e, "{}:{}".format(*self.addr)) or e.strerror or str(e)
        self._sock = _TLSSocket(sock)
        self.connected = True
        return ""

    def want_write(self) -> bool:
        if not self.connected:
            return self._wants_write
        return super().want_write()

    def write(self) -> bool:
        # Until the handshake is done, nothing of the request may go out (in plain text).
        return super().write() if self.connected else True

    def read(self) -> bool:
        return super().read() if self.connected else True


def stream_connection(addr: str, callback: Any) -> Any:
    """The stream's connection for pymesos's driver ``callback``: over TLS if its ``tls``
    (a MasterTLS) says so."""
    tls = getattr(callback, "tls", None)
    if tls is None:
        return _PLAIN(addr, callback)
    return TLSConnection(addr, callback, tls)


def install() -> None:
    """Makes pymesos's IO loop build its stream connections with `stream_connection`."""
    process.Connection = stream_connection

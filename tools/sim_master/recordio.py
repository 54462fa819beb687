"""RecordIO, the framing of the scheduler event stream: `<byte length>\\n<json>` per record."""

from __future__ import annotations

import json


class RecordIOError(ValueError):
    """The stream does not follow `<decimal length>\\n<payload>` framing."""


def encode(event: dict) -> bytes:
    """One record: the JSON payload's byte length in ASCII decimal, a newline, the payload."""
    payload = json.dumps(event, separators=(",", ":")).encode("utf-8")
    return str(len(payload)).encode("ascii") + b"\n" + payload


class Decoder:
    """Incremental decoder: feed arbitrary slices of the stream, get whole records back."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[dict]:
        """Decode every record completed by `data`; partial records wait for more bytes."""
        self._buffer += data
        records: list[dict] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > 20 or not self._buffer.isdigit() and self._buffer:
                    raise RecordIOError(f"bad length prefix: {self._buffer[:40]!r}")
                return records
            prefix = self._buffer[:newline]
            if not prefix.isdigit():
                raise RecordIOError(f"bad length prefix: {prefix[:40]!r}")
            length = int(prefix)
            end = newline + 1 + length
            if len(self._buffer) < end:
                return records
            records.append(json.loads(self._buffer[newline + 1 : end].decode("utf-8")))
            self._buffer = self._buffer[end:]

    @property
    def pending(self) -> bytes:
        """Bytes received that do not yet form a whole record."""
        return self._buffer

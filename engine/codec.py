"""Bytes in the log: msgpack encoding, the record frame and its checksum.

Two layers live here, both pure (bytes in, bytes out):

* ``MsgpackTranscoder``: an eventsourcing ``Transcoder`` so that any eventsourcing
  Application stores its events as msgpack instead of JSON (~10x cheaper here: the
  README's Benchmarks). Custom types use the library's ``Transcoding`` registrations, carried in a
  msgpack extension type, so applications need no change.
* The record frame: every value the store writes is ``[format byte][crc32][payload]``.
  The checksum covers the record's key too, so a record copied under the wrong key is
  caught as well as a flipped byte. A frame written by a newer format is refused, never
  guessed at.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import msgpack
from eventsourcing.persistence import JSONTranscoder, TranscodingNotRegisteredError

# The log format this build writes and the newest it can read. Bump it when the frame or
# the payload layout changes in a way an older reader would misread.
FORMAT_VERSION = 1

_HEADER = struct.Struct(">BI")  # format version, crc32 of key + payload
HEADER_SIZE = _HEADER.size

# msgpack extension codes used by MsgpackTranscoder.
_EXT_CUSTOM = 1  # [transcoding name, encoded data]
_EXT_TUPLE = 2  # a tuple, kept distinct from a list


class CodecError(ValueError):
    """Bytes that cannot be decoded as what they claim to be."""


class ChecksumMismatch(CodecError):
    """A stored record whose checksum does not match its bytes: the record is damaged."""


class NewerFormat(CodecError):
    """A record or log written by a newer taskledger than this one."""


def frame(key: bytes, payload: bytes) -> bytes:
    """Wraps a payload in the record frame (format byte + crc32 over key and payload)."""
    return _HEADER.pack(FORMAT_VERSION, zlib.crc32(payload, zlib.crc32(key))) + payload


def unframe(key: bytes, value: bytes | memoryview) -> bytes:
    """Checks a framed record and returns its payload.

    Raises ``ChecksumMismatch`` for damaged bytes and ``NewerFormat`` for a frame this
    build must not interpret. The caller adds where the record lives to the message.
    """
    if len(value) < HEADER_SIZE:
        raise ChecksumMismatch(f"record is {len(value)} bytes, shorter than its header")
    version, crc = _HEADER.unpack_from(value)
    payload = bytes(value[HEADER_SIZE:])
    if version > FORMAT_VERSION:
        raise NewerFormat(
            f"record format {version} is newer than this build reads ({FORMAT_VERSION}); "
            "upgrade taskledger to read this log"
        )
    if version == 0 or zlib.crc32(payload, zlib.crc32(key)) != crc:
        raise ChecksumMismatch("checksum mismatch")
    return payload


class MsgpackTranscoder(JSONTranscoder):
    """An eventsourcing Transcoder that writes msgpack.

    It subclasses JSONTranscoder only for its registry of ``Transcoding`` objects:
    eventsourcing's Application registers its own and the user's transcodings (UUID,
    Decimal, datetime, domain value types) only on JSONTranscoder instances, so this is
    what makes existing applications run unchanged. Encoding never goes through JSON.
    Tuples stay tuples. Strict types send subclasses of dict/list/str/int to the registered
    transcodings instead of flattening them to their base type.
    """

    def __init__(self) -> None:
        super().__init__()
        self._packer = msgpack.Packer(default=self._default, strict_types=True, use_bin_type=True)

    def encode(self, obj: Any) -> bytes:
        return self._packer.pack(obj)

    def decode(self, data: bytes) -> Any:
        try:
            return msgpack.unpackb(data, ext_hook=self._ext_hook, raw=False, strict_map_key=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            raise CodecError(f"not a msgpack-encoded event: {e}") from e
        except TypeError as e:  # an extension whose payload has the wrong shape
            raise CodecError(f"not a msgpack-encoded event: {e}") from e

    def _default(self, obj: Any) -> Any:
        # Nested values are packed with packb, not self._packer: a Packer is not
        # re-entrant, and calling it from its own default hook corrupts its buffer.
        if type(obj) is tuple:
            return msgpack.ExtType(_EXT_TUPLE, self._pack_nested(list(obj)))
        transcoding = self.types.get(type(obj))
        if transcoding is None and type(obj) is int:
            raise OverflowError(f"integer {obj} is outside the 64-bit range msgpack stores")
        if transcoding is None:
            raise TranscodingNotRegisteredError(
                f"Object of type {type(obj)} is not serializable. Please define and "
                "register a custom transcoding for this type."
            )
        inner = self._pack_nested([transcoding.name, transcoding.encode(obj)])
        return msgpack.ExtType(_EXT_CUSTOM, inner)

    def _pack_nested(self, value: Any) -> bytes:
        return msgpack.packb(value, default=self._default, strict_types=True, use_bin_type=True)

    def _ext_hook(self, code: int, data: bytes) -> Any:
        inner = msgpack.unpackb(data, ext_hook=self._ext_hook, raw=False, strict_map_key=False)
        if code == _EXT_TUPLE:
            if type(inner) is not list:
                raise CodecError(f"tuple extension holds a {type(inner).__name__}, not an array")
            return tuple(inner)
        if code == _EXT_CUSTOM:
            if type(inner) is not list or len(inner) != 2:
                raise CodecError("custom extension is not a [name, data] pair")
            name, payload = inner
            transcoding = self.names.get(name)
            if transcoding is None:
                raise TranscodingNotRegisteredError(
                    f"Data serialized with name '{name}' is not deserializable. "
                    "Please register a custom transcoding for this type."
                )
            return transcoding.decode(payload)
        raise CodecError(f"unknown msgpack extension type {code}")

"""The codec: msgpack transcoding and the checksummed record frame, as properties."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, UUIDAsHex
from hypothesis import given
from hypothesis import strategies as st

from engine.codec import (
    FORMAT_VERSION,
    HEADER_SIZE,
    ChecksumMismatch,
    CodecError,
    MsgpackTranscoder,
    NewerFormat,
    frame,
    unframe,
)


def _transcoder() -> MsgpackTranscoder:
    t = MsgpackTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        t.register(transcoding)
    return t


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.just(datetime.UTC))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_transcoder_round_trips(value):
    t = _transcoder()
    assert t.decode(t.encode(value)) == value


_int64 = st.integers(min_value=-(2**63), max_value=2**63)


@given(st.lists(st.lists(_int64, max_size=3).map(tuple), max_size=3).map(tuple))
def test_tuples_stay_tuples(value):
    t = _transcoder()
    decoded = t.decode(t.encode(value))
    assert decoded == value and type(decoded) is tuple


def test_unregistered_type_is_named():
    class Opaque:
        pass

    with pytest.raises(TypeError, match="Opaque"):
        MsgpackTranscoder().encode({"x": Opaque()})


def test_integer_too_large_is_named():
    with pytest.raises(OverflowError, match=str(2**64)):
        MsgpackTranscoder().encode([2**64])


def test_garbage_is_a_codec_error():
    with pytest.raises(CodecError):
        MsgpackTranscoder().decode(b"\xc1")


@given(st.binary(max_size=64), st.binary(max_size=512))
def test_frame_round_trips(key, payload):
    assert unframe(key, frame(key, payload)) == payload


@given(st.binary(max_size=16), st.binary(min_size=1, max_size=256), st.data())
def test_any_flipped_bit_is_detected(key, payload, data):
    framed = bytearray(frame(key, payload))
    # Flip a bit anywhere but in the format byte (a raised format byte is NewerFormat).
    at = data.draw(st.integers(min_value=1, max_value=len(framed) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    framed[at] ^= 1 << bit
    with pytest.raises(ChecksumMismatch):
        unframe(key, bytes(framed))


@given(st.binary(min_size=1, max_size=16), st.binary(max_size=64))
def test_record_under_another_key_is_detected(key, payload):
    with pytest.raises(ChecksumMismatch):
        unframe(key + b"!", frame(key, payload))


@given(st.binary(max_size=HEADER_SIZE - 1))
def test_truncated_frame_is_detected(value):
    with pytest.raises(ChecksumMismatch, match="shorter than its header"):
        unframe(b"k", value)


def test_newer_format_is_refused_not_guessed():
    framed = bytearray(frame(b"k", b"payload"))
    framed[0] = FORMAT_VERSION + 1
    with pytest.raises(NewerFormat, match="upgrade taskledger"):
        unframe(b"k", bytes(framed))


def test_transcoder_keeps_uuid_type():
    t = _transcoder()
    u = uuid.uuid4()
    assert t.decode(t.encode({"id": u, "amount": decimal.Decimal("1.5")}))["id"] == u

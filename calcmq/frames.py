"""The AMQP 0-9-1 frames of the hot path, encoded and decoded directly.

Every request crosses three queues, and each crossing is a publish (three
frames out), a delivery (three frames in), a confirm and an ack. pika builds
each frame as an object and routes it through its general dispatch (callback
registries, a content assembler): for these few kinds of frames that is most
of a program's CPU (bench/README.md). `calcmq.amqp._Connection` hands exactly
these frames to this module, and every other frame to pika as before.

The wire format is the spec's (https://www.rabbitmq.com/resources/specs/amqp0-9-1.pdf,
sections 2.3.5 and 4.2); values are encoded and decoded as pika 1.4.4 does, so
either side may be pika (tests/unit/test_frames.py checks both directions).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from pika import data as pika_data
from pika.spec import BasicProperties

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_END = 0xCE
_END = b"\xce"

_BASIC = 60
DELIVER = (_BASIC << 16) | 60
ACK = (_BASIC << 16) | 80
NACK = (_BASIC << 16) | 120

_frame_head = struct.Struct(">BHL")
_method_id = struct.Struct(">I")
_header_head = struct.Struct(">HHQ")
_u16 = struct.Struct(">H")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_i64 = struct.Struct(">q")

# Basic.Publish's arguments after class and method: ticket 0, exchange "" (the
# default exchange: calc-mq publishes nowhere else).
_PUBLISH_PREFIX = struct.pack(">HHHB", _BASIC, 40, 0, 0)

_SHORTSTR, _TABLE, _OCTET, _TIMESTAMP = range(4)
# The basic class's properties, in flag order (spec 4.2.6.1, class basic).
_PROPERTIES = (
    (1 << 15, "content_type", _SHORTSTR),
    (1 << 14, "content_encoding", _SHORTSTR),
    (1 << 13, "headers", _TABLE),
    (1 << 12, "delivery_mode", _OCTET),
    (1 << 11, "priority", _OCTET),
    (1 << 10, "correlation_id", _SHORTSTR),
    (1 << 9, "reply_to", _SHORTSTR),
    (1 << 8, "expiration", _SHORTSTR),
    (1 << 7, "message_id", _SHORTSTR),
    (1 << 6, "timestamp", _TIMESTAMP),
    (1 << 5, "type", _SHORTSTR),
    (1 << 4, "user_id", _SHORTSTR),
    (1 << 3, "app_id", _SHORTSTR),
    (1 << 2, "cluster_id", _SHORTSTR),
)


class FrameError(ValueError):
    """Bytes that are not a well-formed frame: the connection cannot go on."""


# -- encoding ---------------------------------------------------------------------


def publish(channel: int, routing_key: str, body: bytes, properties: BasicProperties, body_max: int) -> bytes:
    """Basic.Publish to the default exchange, its content header and body frames, as one buffer."""
    key = routing_key.encode()
    if len(key) > 255:
        raise ValueError(f"routing key of {len(key)} bytes is over 255")
    method = _PUBLISH_PREFIX + bytes((len(key),)) + key + b"\x00"  # mandatory and immediate off
    header = _header_head.pack(_BASIC, 0, len(body)) + encode_properties(properties)
    parts = [_frame(FRAME_METHOD, channel, method), _frame(FRAME_HEADER, channel, header)]
    for start in range(0, len(body), body_max):
        parts.append(_frame(FRAME_BODY, channel, body[start : start + body_max]))
    return b"".join(parts)


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _frame_head.pack(kind, channel, len(payload)) + payload + _END


def encode_properties(properties: BasicProperties) -> bytes:
    """The property flags and list of a content header."""
    flags = 0
    parts = [b""]
    for flag, name, kind in _PROPERTIES:
        value = getattr(properties, name)
        if value is None:
            continue
        flags |= flag
        if kind == _SHORTSTR:
            parts.append(_shortstr(value))
        elif kind == _TABLE:
            parts.append(encode_table(value))
        elif kind == _OCTET:
            parts.append(bytes((value,)))
        else:
            parts.append(_u64.pack(value))
    parts[0] = _u16.pack(flags)
    return b"".join(parts)


def _shortstr(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 255:
        raise ValueError(f"short string of {len(raw)} bytes is over 255")
    return bytes((len(raw),)) + raw


def encode_table(table: dict[str, Any]) -> bytes:
    """A field table; strings, integers and booleans here, other values as pika encodes them."""
    parts = []
    for key, value in table.items():
        parts.append(_shortstr(key))
        if isinstance(value, str):
            raw = value.encode()
            parts.append(b"S" + _u32.pack(len(raw)) + raw)
        elif isinstance(value, bool):
            parts.append(b"t\x01" if value else b"t\x00")
        elif isinstance(value, int):
            parts.append(b"l" + _i64.pack(value))  # pika sends every int as a signed 64-bit 'l'
        else:
            pieces: list[bytes] = []
            pika_data.encode_value(pieces, value)
            parts.append(b"".join(pieces))
    payload = b"".join(parts)
    return _u32.pack(len(payload)) + payload


# -- decoding ---------------------------------------------------------------------


INCOMPLETE = -1  # the frame is not all there yet
OTHER = 0  # not the frame asked for (or a malformed one): pika's path decides


def frame_at(buffer: bytes, offset: int, kind: int, channel: int) -> tuple[int, int] | int:
    """The payload start and the next frame's offset of the frame at `offset`, if it is
    a complete frame of `kind` on `channel`; else INCOMPLETE or OTHER."""
    if len(buffer) - offset < 7:
        return INCOMPLETE
    found_kind, found_channel, size = _frame_head.unpack_from(buffer, offset)
    end = offset + 7 + size
    if end >= len(buffer):
        return INCOMPLETE
    if found_kind != kind or found_channel != channel or buffer[end] != FRAME_END:
        return OTHER
    return offset + 7, end + 1


def method_id(buffer: bytes, start: int) -> int:
    """Class and method id of a method frame's payload, as one number (DELIVER, ACK...)."""
    return _method_id.unpack_from(buffer, start)[0]  # type: ignore[no-any-return]


def decode_deliver(buffer: bytes, start: int) -> tuple[str, int, bool]:
    """Basic.Deliver's consumer tag, delivery tag and redelivered flag."""
    offset = start + 4
    length = buffer[offset]
    consumer_tag = buffer[offset + 1 : offset + 1 + length].decode()
    offset += 1 + length
    (delivery_tag,) = _u64.unpack_from(buffer, offset)
    return consumer_tag, delivery_tag, bool(buffer[offset + 8] & 1)


def decode_confirm(buffer: bytes, start: int) -> tuple[int, bool]:
    """A broker's Basic.Ack or Basic.Nack: the delivery tag and whether it covers every tag up to it."""
    (delivery_tag,) = _u64.unpack_from(buffer, start + 4)
    return delivery_tag, bool(buffer[start + 12] & 1)


def decode_header(buffer: bytes, start: int, decode: Callable[[bytes, int], BasicProperties]) -> tuple[int, Any]:
    """A content header's body size and properties (`decode`: decode_properties, or pika's
    own for what this module does not read)."""
    class_id, _weight, body_size = _header_head.unpack_from(buffer, start)
    if class_id != _BASIC:
        raise FrameError(f"content header of class {class_id}, not basic")
    return body_size, decode(buffer, start + 12)


def decode_properties(buffer: bytes, offset: int) -> BasicProperties:
    """The properties as pika would decode them (text as str, undecodable text as bytes)."""
    (flags,) = _u16.unpack_from(buffer, offset)
    if flags & 1:  # a second flag word: no basic property needs one, leave it to pika
        return BasicProperties().decode(buffer, offset)
    offset += 2
    properties = BasicProperties()
    for flag, name, kind in _PROPERTIES:
        if not flags & flag:
            continue
        value: Any
        if kind == _SHORTSTR:
            end = offset + 1 + buffer[offset]
            value = _text(buffer[offset + 1 : end])
            offset = end
        elif kind == _TABLE:
            value, offset = decode_table(buffer, offset)
        elif kind == _OCTET:
            value = buffer[offset]
            offset += 1
        else:
            (value,) = _u64.unpack_from(buffer, offset)
            offset += 8
        setattr(properties, name, value)
    return properties


def decode_table(buffer: bytes, offset: int) -> tuple[dict[Any, Any], int]:
    """A field table; strings, 64-bit integers and booleans here, other values through pika."""
    (size,) = _u32.unpack_from(buffer, offset)
    offset += 4
    limit = offset + size
    table: dict[Any, Any] = {}
    while offset < limit:
        end = offset + 1 + buffer[offset]
        key = _text(buffer[offset + 1 : end])
        kind = buffer[end]
        offset = end + 1
        value: Any
        if kind == 0x53:  # 'S': long string
            (length,) = _u32.unpack_from(buffer, offset)
            value = _text(buffer[offset + 4 : offset + 4 + length])
            offset += 4 + length
        elif kind == 0x6C:  # 'l': signed 64-bit
            (value,) = _i64.unpack_from(buffer, offset)
            offset += 8
        elif kind == 0x74:  # 't': boolean
            value = bool(buffer[offset])
            offset += 1
        else:
            value, offset = pika_data.decode_value(buffer, end)
        table[key] = value
    if offset != limit:
        raise FrameError("a field table overruns its size")
    return table, offset


def _text(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw

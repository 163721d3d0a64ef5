"""calcmq.frames against pika's own encoder and decoder: what one writes, the
other reads back the same, in both directions (the broker sees pika's bytes)."""

from __future__ import annotations

import decimal
from typing import Any

import pika.frame
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pika.spec import Basic, BasicProperties

from calcmq import frames

BODY_MAX = 131072 - 8  # pika's default frame_max, less a frame's overhead

short_text = st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
header_values = st.one_of(
    st.text(max_size=50),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.binary(max_size=20),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-1000, max_value=1000),
    st.dictionaries(short_text, st.text(max_size=10), max_size=3),
    st.lists(st.integers(min_value=0, max_value=10**6), max_size=3),
    st.none(),
)
properties = st.builds(
    BasicProperties,
    content_type=st.none() | short_text,
    content_encoding=st.none() | short_text,
    headers=st.none() | st.dictionaries(short_text, header_values, max_size=5),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(min_value=0, max_value=9),
    correlation_id=st.none() | short_text,
    reply_to=st.none() | short_text,
    expiration=st.none() | st.integers(min_value=0, max_value=10**9).map(str),
    message_id=st.none() | short_text,
    timestamp=st.none() | st.integers(min_value=0, max_value=2**40),
    type=st.none() | short_text,
    user_id=st.none() | short_text,
    app_id=st.none() | short_text,
    cluster_id=st.none() | short_text,
)


def _pika_frames(data: bytes) -> list[Any]:
    decoded = []
    while data:
        used, frame = pika.frame.decode_frame(data)
        assert frame is not None, "an incomplete frame"
        decoded.append(frame)
        data = data[used:]
    return decoded


def _normalized(value: Any) -> Any:
    """Decimals compare by value; everything else as it is."""
    if isinstance(value, decimal.Decimal):
        return value.normalize()
    if isinstance(value, dict):
        return {k: _normalized(v) for k, v in value.items()}
    return value


@given(properties)
def test_properties_encode_to_what_pika_decodes_back(props: BasicProperties) -> None:
    decoded = BasicProperties().decode(frames.encode_properties(props))
    assert _normalized(vars(decoded)) == _normalized(vars(BasicProperties().decode(b"".join(props.encode()))))


@given(properties)
def test_properties_pika_encodes_decode_the_same_here(props: BasicProperties) -> None:
    encoded = b"".join(props.encode())
    assert _normalized(vars(frames.decode_properties(encoded, 0))) == _normalized(
        vars(BasicProperties().decode(encoded))
    )


def test_text_that_is_not_utf8_decodes_to_bytes_as_in_pika() -> None:
    encoded = b"".join(BasicProperties(correlation_id=b"\xff\xfe", headers={"k": b"\xc3"}).encode())
    ours = frames.decode_properties(encoded, 0)
    assert ours.correlation_id == b"\xff\xfe"
    assert vars(ours) == vars(BasicProperties().decode(encoded))


@pytest.mark.parametrize("size", [0, 1, 100, BODY_MAX, BODY_MAX + 1, 3 * BODY_MAX + 7])
def test_publish_is_one_method_one_header_and_the_body_in_frames_of_at_most_frame_max(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    props = BasicProperties(content_type="application/x-protobuf", delivery_mode=2, headers={"x-attempts": 3})
    decoded = _pika_frames(frames.publish(5, "calc.tasks", body, props, BODY_MAX))

    method, header, *bodies = decoded
    assert isinstance(method.method, Basic.Publish)
    assert (method.channel_number, method.method.exchange, method.method.routing_key) == (5, "", "calc.tasks")
    assert not method.method.mandatory
    assert header.body_size == size
    assert vars(header.properties) == vars(props)
    assert b"".join(frame.fragment for frame in bodies) == body
    assert len(bodies) == -(-size // BODY_MAX)


def test_a_routing_key_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="routing key"):
        frames.publish(1, "q" * 256, b"", BasicProperties(), BODY_MAX)


def test_deliver_and_confirms_decode_as_pika_encoded_them() -> None:
    deliver = pika.frame.Method(
        3,
        Basic.Deliver(
            consumer_tag="ctag1.abc", delivery_tag=2**40, redelivered=True, exchange="", routing_key="calc.tasks"
        ),
    ).marshal()
    assert frames.frame_at(deliver, 0, frames.FRAME_METHOD, 1) == frames.OTHER  # another channel's
    assert frames.frame_at(deliver, 0, frames.FRAME_HEADER, 3) == frames.OTHER
    found = frames.frame_at(deliver, 0, frames.FRAME_METHOD, 3)
    assert not isinstance(found, int)
    start, after = found
    assert after == len(deliver)
    assert frames.method_id(deliver, start) == frames.DELIVER
    assert frames.decode_deliver(deliver, start) == ("ctag1.abc", 2**40, True)

    for method, wanted in (
        (Basic.Ack(delivery_tag=7, multiple=True), frames.ACK),
        (Basic.Nack(delivery_tag=9), frames.NACK),
    ):
        confirm = pika.frame.Method(1, method).marshal()
        found = frames.frame_at(confirm, 0, frames.FRAME_METHOD, 1)
        assert not isinstance(found, int)
        start, _ = found
        assert frames.method_id(confirm, start) == wanted
        assert frames.decode_confirm(confirm, start) == (method.delivery_tag, method.multiple)


def test_a_frame_cut_short_is_incomplete_at_every_length() -> None:
    whole = pika.frame.Method(1, Basic.Ack(delivery_tag=1)).marshal()
    for cut in range(len(whole)):
        assert frames.frame_at(whole[:cut], 0, frames.FRAME_METHOD, 1) == frames.INCOMPLETE
    assert frames.frame_at(whole, 0, frames.FRAME_METHOD, 1) == (7, len(whole))


def test_a_frame_with_a_bad_end_octet_is_left_to_pika() -> None:
    broken = pika.frame.Method(1, Basic.Ack(delivery_tag=1)).marshal()[:-1] + b"\x00"
    assert frames.frame_at(broken, 0, frames.FRAME_METHOD, 1) == frames.OTHER


def test_a_table_that_overruns_its_size_is_a_frame_error() -> None:
    table = frames.encode_table({"a": "bc"})
    short = (len(table) - 5).to_bytes(4, "big") + table[4:]  # declares one byte less than it holds
    with pytest.raises(frames.FrameError):
        frames.decode_table(short, 0)

"""calcmq.amqp.Session against the real broker, on a private vhost: confirms
tracked by delivery tag, acks grouped with `multiple`, channel errors."""

from __future__ import annotations

import asyncio
import random
import ssl
import struct
from collections.abc import Callable

import pika.data
import pytest
from pika.spec import BasicProperties

from calcmq.amqp import NOT_FOUND, BrokerUnavailable, ChannelClosed, Delivery, Message, Session

pytestmark = pytest.mark.integration

QUEUE = "amqp-test"
QUORUM = {"x-queue-type": "quorum"}


async def _session(url: str) -> Session:
    session = Session(asyncio.get_running_loop())
    await session.open(url, "test", ssl.create_default_context())
    return session


def _message(i: int) -> Message:
    return Message(str(i).encode(), BasicProperties(delivery_mode=2, correlation_id=str(i)))


async def _publish_confirmed(url: str, count: int) -> list[None]:
    session = await _session(url)
    try:
        await session.declare_queue(QUEUE, arguments=QUORUM)
        # All published before any confirm is awaited: the futures are settled by tag.
        confirms = [session.publish(_message(i), QUEUE, timeout=10) for i in range(count)]
        return await asyncio.gather(*confirms)
    finally:
        await session.close()


async def _take(url: str, count: int, timeout: float = 10) -> list[Delivery]:
    session = await _session(url)
    deliveries: list[Delivery] = []
    arrived = asyncio.Event()

    def on_delivery(delivery: Delivery) -> None:
        deliveries.append(delivery)
        if len(deliveries) == count:
            arrived.set()

    await session.qos(1000)
    await session.consume(QUEUE, on_delivery)
    await asyncio.wait_for(arrived.wait(), timeout)
    return deliveries


async def _ack_out_of_order(url: str, count: int, held: int) -> tuple[bool, list[str]]:
    deliveries = await _take(url, count)
    session = deliveries[0].session
    keep = set(random.sample(range(count), held))
    order = [d for i, d in enumerate(deliveries) if i not in keep]
    random.shuffle(order)
    for chunk in range(0, len(order), 7):  # several loop turns, each with a few acks
        for delivery in order[chunk : chunk + 7]:
            delivery.ack()
        await asyncio.sleep(0.01)
    deliveries[sorted(keep)[0]].nack(requeue=True)  # a nack between the acks, too
    await asyncio.sleep(0.3)
    still_open = session.is_open  # an ack of an unknown tag would have closed the channel
    await session.close()
    again = await _take(url, held)
    await again[0].session.close()
    return still_open, sorted(d.body.decode() for d in again)


def test_confirms_settle_every_publish_by_delivery_tag(vhost_url: str) -> None:
    assert asyncio.run(_publish_confirmed(vhost_url, 500)) == [None] * 500


def test_grouped_acks_never_ack_a_delivery_still_being_worked_on(vhost_url: str) -> None:
    asyncio.run(_publish_confirmed(vhost_url, 60))
    still_open, redelivered = asyncio.run(_ack_out_of_order(vhost_url, 60, held=5))
    assert still_open
    assert len(redelivered) == 5  # exactly the five never acked come back: the nacked one and four held


async def _closed_then_publish(url: str) -> tuple[ChannelClosed, BaseException]:
    session = await _session(url)
    with pytest.raises(ChannelClosed) as missing:
        await session.declare_queue("no-such-queue", passive=True)
    assert not session.is_open
    failed = session.publish(_message(1), QUEUE, timeout=5)
    with pytest.raises(BrokerUnavailable) as refused:
        await failed
    await session.close()
    return missing.value, refused.value


def test_a_channel_error_carries_its_code_and_ends_the_session(vhost_url: str) -> None:
    missing, refused = asyncio.run(_closed_then_publish(vhost_url))
    assert missing.reply_code == NOT_FOUND
    assert "no-such-queue" in str(missing)
    assert isinstance(refused, BrokerUnavailable)


class _FarTimestamp:
    """A header value pika encodes as an AMQP timestamp beyond datetime's range."""


def _encode_far_timestamps(original: Callable[[list[bytes], object], int]) -> Callable[[list[bytes], object], int]:
    def encode_value(pieces: list[bytes], value: object) -> int:
        if isinstance(value, _FarTimestamp):
            pieces.append(struct.pack(">cQ", b"T", 2**62))
            return 9
        return original(pieces, value)

    return encode_value


async def _poison_among_good(url: str) -> tuple[list[Delivery], bool]:
    session = await _session(url)
    await session.declare_queue(QUEUE, arguments=QUORUM)
    poison = Message(b"poison", BasicProperties(delivery_mode=2, correlation_id="p", headers={"t": _FarTimestamp()}))
    confirms = [session.publish(_message(i), QUEUE, timeout=10) for i in range(5)]
    confirms.append(session.publish(poison, QUEUE, timeout=10))
    confirms += [session.publish(_message(i), QUEUE, timeout=10) for i in range(5, 10)]
    await asyncio.gather(*confirms)
    await session.close()
    deliveries = await _take(url, 11)
    await asyncio.sleep(0.2)
    still_open = deliveries[0].session.is_open
    await deliveries[0].session.close()
    return deliveries, still_open


def test_a_message_whose_properties_cannot_be_decoded_arrives_without_them(
    vhost_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instead of the connection dropping, and every delivery in flight with it."""
    monkeypatch.setattr(pika.data, "encode_value", _encode_far_timestamps(pika.data.encode_value))
    deliveries, still_open = asyncio.run(_poison_among_good(vhost_url))
    assert still_open
    assert [d.body for d in deliveries] == [str(i).encode() for i in range(5)] + [b"poison"] + [
        str(i).encode() for i in range(5, 10)
    ]
    assert deliveries[5].correlation_id is None and deliveries[5].headers == {}
    assert [d.correlation_id for d in deliveries[6:]] == [str(i) for i in range(5, 10)]


def _varied(i: int) -> Message:
    """Bodies from empty to several frames long (frame_max is 128 KiB), properties of every kind."""
    size = random.choice([0, 1, 17, 4096, 131072 - 8, 131072 - 7, 300_000])
    headers = {"i": i, "text": "é" * (i % 5), "flag": i % 2 == 0, "nested": {"n": [i, str(i)]}}
    properties = BasicProperties(
        content_type="application/x-test",
        delivery_mode=2,
        correlation_id=f"c{i}",
        message_id=f"m{i}",
        reply_to="r",
        expiration="600000",
        timestamp=1_700_000_000 + i,
        headers=headers,
    )
    return Message(random.randbytes(size), properties)


async def _round_trip(url: str, messages: list[Message]) -> list[Delivery]:
    session = await _session(url)
    await session.declare_queue(QUEUE, arguments=QUORUM)
    await asyncio.gather(*(session.publish(m, QUEUE, timeout=30) for m in messages))
    await session.close()
    deliveries = await _take(url, len(messages), timeout=60)
    await deliveries[0].session.close()
    return deliveries


def test_deliveries_arrive_exactly_as_published_whatever_their_size_and_properties(vhost_url: str) -> None:
    """Publishing and delivering take calcmq.frames' path; reads split messages anywhere."""
    messages = [_varied(i) for i in range(40)]
    deliveries = asyncio.run(_round_trip(vhost_url, messages))
    assert [d.body for d in deliveries] == [m.body for m in messages]
    for delivery, message in zip(deliveries, messages, strict=True):
        assert vars(delivery.properties) == vars(message.properties)

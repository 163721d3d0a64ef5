"""One AMQP connection per program, kept open for as long as the program runs.

`Broker.run()` connects, opens one confirming channel, declares the topology,
hands the `Session` to the program (`on_ready`), and waits for the connection
or channel to close; then it backs off (capped, jittered, reset after a
session that lasted, as pika's asynchronous_consumer_example does) and starts
over.
Consumers are set up again by `on_ready` on every new session, so a broker
restart costs a reconnect, not a crash. RABBITMQ_URL may list several
addresses (a cluster): they are tried in turn, starting after the one that
just failed.

The client is pika's AsyncioConnection on the program's own event loop, next
to grpc.aio, with what one loop turn writes sent in one piece and the frames
of the hot path (publish, delivery, confirm) read and written by
calcmq.frames (`_Connection`): a fraction of aio-pika's per-message work, and
less than pika's own (bench/README.md). pika's callbacks
become futures here, and pika errors stop here: the rest of the code sees
`BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import random
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions
import pika.frame
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport
from pika.channel import Channel
from pika.spec import FRAME_END_SIZE, FRAME_HEADER, FRAME_HEADER_SIZE, Basic, BasicProperties

from calcmq import frames, metrics, topology
from calcmq.logs import mask_url

log = logging.getLogger(__name__)

ABANDON_PAUSE = 2.0
STABLE_SESSION = 5.0  # seconds a session must last before the reconnect backoff starts over
CONNECT_TIMEOUT = 5.0
RESOURCE_LOCKED = 405
NOT_FOUND = 404


class BrokerUnavailable(Exception):
    """The broker cannot take the message or the request now; callers answer UNAVAILABLE."""


class ChannelClosed(BrokerUnavailable):
    """The session's channel or connection closed; `reply_code` says why (0: connection lost)."""

    def __init__(self, reason: str, reply_code: int = 0) -> None:
        super().__init__(reason)
        self.reply_code = reply_code


class Refused(BrokerUnavailable):
    """The broker nacked a publish."""


class SessionRefused(Exception):
    """`on_ready` found the session unusable for now (e.g. a GATEWAY_ID in use); try again later."""


@dataclass(frozen=True)
class Message:
    """What we publish: a body and its AMQP properties."""

    body: bytes
    properties: BasicProperties


class Delivery:
    """A message handed to one of our consumers, settled on the session it came from.

    A plain class with slots: one is made per message, and a frozen dataclass
    costs several times as much to build."""

    __slots__ = ("body", "properties", "session", "tag")

    def __init__(self, body: bytes, properties: BasicProperties, tag: int, session: Session) -> None:
        self.body = body
        self.properties = properties
        self.tag = tag
        self.session = session

    @property
    def correlation_id(self) -> str | None:
        return self.properties.correlation_id  # type: ignore[no-any-return]

    @property
    def message_id(self) -> str | None:
        return self.properties.message_id  # type: ignore[no-any-return]

    @property
    def reply_to(self) -> str | None:
        return self.properties.reply_to  # type: ignore[no-any-return]

    @property
    def content_type(self) -> str | None:
        return self.properties.content_type  # type: ignore[no-any-return]

    @property
    def headers(self) -> dict[str, Any]:
        return self.properties.headers or {}

    def ack(self) -> None:
        self.session.settle(self.tag, ack=True)

    def nack(self, requeue: bool = True) -> None:
        self.session.settle(self.tag, ack=False, requeue=requeue)


# A consumer's deliveries: (delivery tag, properties, body).
OnMessage = Callable[[int, BasicProperties, bytes], None]


@dataclass
class _Route:
    """What `_Connection` takes off pika's path: deliveries to `consumers` and
    publisher confirms, on `channel`."""

    channel: int
    consumers: dict[str, OnMessage]
    on_confirm: Callable[[int, bool, bool], None]  # delivery tag, multiple, ack (or nack)


class _Connection(AsyncioConnection):  # type: ignore[misc]
    """pika's AsyncioConnection with a shorter hot path, through pika 1.4.4's private hooks.

    - What one turn of the event loop wrote goes out in one piece, at the end
      of the turn: pika gives its transport one buffer per publish or ack, and
      the transport sends each with its own send(2) on the next turn; joined,
      a turn that published and acked fifty messages costs one syscall here
      and one read at the broker.
    - Publishes, deliveries and publisher confirms on the session's channel
      (`route`) are encoded and decoded by calcmq.frames instead of pika's
      general frame objects and dispatch; every other frame takes pika's path.
    - A message whose properties pika cannot decode arrives without them
      (`_without_properties`) instead of tearing the connection down.
    """

    _frame_buffer: bytes  # pika's: what was read and not yet taken
    _body_max_length: int  # pika's: the most body one frame carries
    _transport: Any  # pika's: the socket's transport, None while not connected

    def __init__(self, loop: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> None:
        self._outgoing: list[bytes] = []
        self._flush_loop = loop
        self.route: _Route | None = None
        super().__init__(*args, custom_ioloop=loop, **kwargs)

    # -- out ---------------------------------------------------------------------------

    def publish(self, channel: int, routing_key: str, body: bytes, properties: BasicProperties) -> None:
        """Basic.Publish to the default exchange (what pika's Channel.basic_publish sends)."""
        if self.is_closed:
            raise pika.exceptions.ConnectionWrongStateError("the connection is closed")
        data = frames.publish(channel, routing_key, body, properties, self._body_max_length)
        self.bytes_sent += len(data)  # pika's heartbeat checker reads these
        self.frames_sent += 2 + -(-len(body) // self._body_max_length)
        self._adapter_emit_data(data)

    def _adapter_emit_data(self, data: bytes) -> None:
        if not self._outgoing:
            self._flush_loop.call_soon(self._flush)
        self._outgoing.append(data)

    def _flush(self) -> None:
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        if self.is_closed:  # a lost connection has no transport left to write to
            return
        transport = self._transport
        if (
            type(transport) is _AsyncPlaintextTransport
            and transport._state == transport._STATE_ACTIVE
            and not transport.get_write_buffer_size()
        ):
            # Nothing queued before us: send now. pika would send a loop turn
            # later, after adding the socket to the selector and removing it
            # again, two epoll_ctl calls per write.
            with contextlib.suppress(OSError):  # EAGAIN, or a failure pika's transport then reports
                data = data[transport._sock.send(data) :]
        if data:
            super()._adapter_emit_data(data)

    # -- in ----------------------------------------------------------------------------

    def _on_data_available(self, data_in: bytes) -> None:
        buffer = self._frame_buffer + data_in if self._frame_buffer else data_in
        offset = 0
        while offset < len(buffer) and not self.is_closed:
            taken = self._take_routed(buffer, offset) if self.route is not None else 0
            if taken < 0:
                break  # the rest of a routed message is still on its way
            if taken == 0:  # one frame through pika
                self._frame_buffer = buffer[offset:]
                taken, frame_value = self._read_frame()
                if not frame_value:
                    break
                offset += taken
                self.bytes_received += taken
                self._process_frame(frame_value)
                continue
            offset += taken
            self.bytes_received += taken
        self._frame_buffer = b"" if self.is_closed else buffer[offset:]

    def _take_routed(self, buffer: bytes, offset: int) -> int:
        """Handle a routed frame (or a whole delivery) at `offset`; returns the bytes it took,
        frames.OTHER (0) for a frame pika should have, frames.INCOMPLETE (-1) to wait for more."""
        route = self.route
        assert route is not None
        frame = frames.frame_at(buffer, offset, frames.FRAME_METHOD, route.channel)
        if isinstance(frame, int):
            return frame
        start, after = frame
        method = frames.method_id(buffer, start)
        if method == frames.ACK or method == frames.NACK:
            tag, multiple = frames.decode_confirm(buffer, start)
            self.frames_received += 1
            route.on_confirm(tag, multiple, method == frames.ACK)
            return after - offset
        if method != frames.DELIVER:
            return frames.OTHER
        consumer_tag, delivery_tag, _redelivered = frames.decode_deliver(buffer, start)
        on_message = route.consumers.get(consumer_tag)
        if on_message is None:
            return frames.OTHER  # a consumer pika knows of and we do not (yet, or any more)
        content = _content_at(buffer, after, route.channel)
        if isinstance(content, int):
            return content
        properties, body, end, count = content
        self.frames_received += 1 + count
        on_message(delivery_tag, properties, body)
        return end - offset

    def _read_frame(self) -> tuple[int, Any]:
        try:
            return super()._read_frame()  # type: ignore[no-any-return]
        except Exception as exc:  # whatever pika's decoder raised for a value it cannot read
            return self._without_properties(exc)

    def _without_properties(self, exc: Exception) -> tuple[int, Any]:
        """A content header whose properties pika cannot decode (a timestamp out of
        datetime's range, say) would otherwise tear the connection down, and with
        it every delivery in flight, on every redelivery: the message instead
        arrives without properties, and the codec refuses it like any garbage."""
        buffer = self._frame_buffer
        if len(buffer) < FRAME_HEADER_SIZE + 12 or buffer[0] != FRAME_HEADER:
            raise exc
        channel, size = struct.unpack_from(">HL", buffer, 1)
        (body_size,) = struct.unpack_from(">Q", buffer, FRAME_HEADER_SIZE + 4)  # after class id and weight
        log.warning("a message's properties could not be decoded (%s); it is delivered without them", describe(exc))
        return FRAME_HEADER_SIZE + size + FRAME_END_SIZE, pika.frame.Header(channel, body_size, BasicProperties())


def _content_at(buffer: bytes, offset: int, channel: int) -> tuple[BasicProperties, bytes, int, int] | int:
    """The content header and body frames of a delivery: (properties, body, end offset,
    frames); INCOMPLETE, or OTHER for anything unusual, which pika then handles (and
    refuses, or delivers without properties, as it sees fit)."""
    frame = frames.frame_at(buffer, offset, frames.FRAME_HEADER, channel)
    if isinstance(frame, int):
        return frame
    start, after = frame
    try:
        size, properties = frames.decode_header(buffer, start, frames.decode_properties)
    except Exception:  # a value this module cannot read: pika's path decides
        return frames.OTHER
    chunks = []
    got = 0
    while got < size:
        frame = frames.frame_at(buffer, after, frames.FRAME_BODY, channel)
        if isinstance(frame, int):
            return frame
        start, end = frame
        chunks.append(buffer[start : end - 1])
        got += end - 1 - start
        after = end
    if got != size:
        return frames.OTHER
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    return properties, body, after, 1 + len(chunks)


class Session:
    """One open connection and its one confirming channel, until either closes.

    Publisher confirms are tracked by delivery tag (one future per publish,
    settled by the broker's acks, `multiple` included), never waited for one
    by one (https://www.rabbitmq.com/docs/confirms#publisher-confirms).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._connection: _Connection | None = None
        self._channel: Channel | None = None
        self._calls: set[asyncio.Future[Any]] = set()
        self._confirms: dict[int, tuple[asyncio.Future[None], asyncio.TimerHandle]] = {}
        self._published = 0
        # Delivery tags not yet acked or nacked, ascending (one consumer per
        # channel: tags arrive in order), and the acks this loop turn asked for.
        self._unsettled: dict[int, None] = {}
        self._acks: list[int] = []
        self._consumers: dict[str, OnMessage] = {}
        self.closed: asyncio.Future[ChannelClosed] = loop.create_future()

    @property
    def is_open(self) -> bool:
        return not self.closed.done()

    # -- opening and closing ----------------------------------------------------------

    async def open(self, url: str, name: str, ssl_context: ssl.SSLContext) -> None:
        parameters = pika.URLParameters(url)
        parameters.client_properties = {"connection_name": name}
        parameters.socket_timeout = CONNECT_TIMEOUT
        parameters.stack_timeout = CONNECT_TIMEOUT
        if url.startswith("amqps://"):
            parameters.ssl_options = pika.SSLOptions(ssl_context, parameters.host)
        self._connection = await self._call(
            lambda done: _Connection(
                self._loop,
                parameters,
                on_open_callback=done,
                on_open_error_callback=lambda _, exc: self._lost(exc),
                on_close_callback=lambda _, exc: self._lost(exc),
            )
        )
        self._connection.add_on_connection_blocked_callback(
            lambda *_: log.warning("the broker blocks publishing (a resource alarm); publishes wait")
        )
        self._connection.add_on_connection_unblocked_callback(lambda *_: log.info("the broker takes publishes again"))
        channel: Channel = await self._call(lambda done: self._open_channel(done))
        channel.add_on_close_callback(lambda _, exc: self._lost(exc))
        # A consumer the broker cancels (its queue was deleted) would silently
        # stop; a new session declares the queue again and consumes anew.
        channel.add_on_cancel_callback(lambda _: self._drop("the broker cancelled a consumer"))
        await self._call(lambda done: channel.confirm_delivery(self._on_confirm, callback=done))
        self._connection.route = _Route(channel.channel_number, self._consumers, self._confirmed)
        self._channel = channel

    def _open_channel(self, done: Callable[[Channel], None]) -> None:
        assert self._connection is not None
        self._connection.channel(on_open_callback=done)

    async def close(self) -> None:
        """Close the connection (unacked deliveries go back to their queues)."""
        self._drop("closing")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), CONNECT_TIMEOUT)

    def _drop(self, reason: str) -> None:
        self._consumers.clear()  # what still arrives goes to pika, which refuses it on a closing channel
        connection = self._connection
        if connection is not None and not (connection.is_closing or connection.is_closed):
            log.debug("closing the broker connection: %s", reason)
            connection.close(reply_text=reason)
        elif connection is None or connection.is_closed:
            self._lost(ChannelClosed(reason))

    def _lost(self, exc: BaseException | None) -> None:
        """The channel or connection is gone: fail whatever waits on it."""
        if self.closed.done():
            return
        self._consumers.clear()
        error = _closed_error(exc)
        self.closed.set_result(error)
        for future in self._calls:
            if not future.done():
                future.set_exception(error)
        for future, timer in self._confirms.values():
            timer.cancel()
            if not future.done():
                future.set_exception(error)
        self._confirms.clear()
        connection = self._connection
        if connection is not None and not (connection.is_closing or connection.is_closed):
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()  # the channel closed under an open connection

    async def _call(self, start: Callable[[Callable[[Any], None]], object]) -> Any:
        """Start a pika operation that calls back once, and wait for that callback."""
        if self.closed.done():
            raise self.closed.result()
        future: asyncio.Future[Any] = self._loop.create_future()
        self._calls.add(future)

        def done(value: Any = None) -> None:
            if not future.done():
                future.set_result(value)

        try:
            start(done)
            return await future
        except pika.exceptions.AMQPError as exc:
            raise _closed_error(exc) from None
        finally:
            self._calls.discard(future)

    # -- declaring and consuming -------------------------------------------------------

    async def declare_queue(
        self, name: str, *, arguments: dict[str, Any] | None = None, exclusive: bool = False, passive: bool = False
    ) -> Basic.DeclareOk:
        channel = self._open()
        frame = await self._call(
            lambda done: channel.queue_declare(
                name, passive=passive, durable=not exclusive, exclusive=exclusive, arguments=arguments, callback=done
            )
        )
        return frame.method  # type: ignore[no-any-return]

    async def qos(self, prefetch: int) -> None:
        channel = self._open()
        await self._call(lambda done: channel.basic_qos(prefetch_count=prefetch, callback=done))

    async def consume(self, queue: str, on_delivery: Callable[[Delivery], None]) -> str:
        """Start consuming `queue` with manual acks; returns the consumer tag."""
        channel = self._open()

        def on_message(tag: int, properties: BasicProperties, body: bytes) -> None:
            self._unsettled[tag] = None
            on_delivery(Delivery(body, properties, tag, self))

        def on_pika_message(_: Channel, method: Basic.Deliver, properties: BasicProperties, body: bytes) -> None:
            on_message(method.delivery_tag, properties, body)

        frame = await self._call(lambda done: channel.basic_consume(queue, on_pika_message, callback=done))
        consumer_tag: str = frame.method.consumer_tag
        self._consumers[consumer_tag] = on_message  # from now on off pika's path (_Connection)
        return consumer_tag

    async def cancel(self, consumer_tag: str) -> None:
        channel = self._open()
        self._consumers.pop(consumer_tag, None)
        await self._call(lambda done: channel.basic_cancel(consumer_tag, callback=done))

    def settle(self, tag: int, *, ack: bool, requeue: bool = True) -> None:
        """Ack or nack; on a closed channel there is nothing to do (the broker redelivers).

        Acks wait for the end of the loop turn, then go out as one ack with
        `multiple` for every tag below the oldest one still being worked on
        (https://www.rabbitmq.com/docs/confirms#consumer-acks-multiple-parameter),
        and one ack each for the rest: never later than asked, far fewer frames.
        """
        if self._channel is None or self.closed.done():
            log.debug("not settled, the channel closed: the broker redelivers")
            return
        if ack:
            if not self._acks:
                self._loop.call_soon(self._send_acks)
            self._acks.append(tag)
            return
        self._unsettled.pop(tag, None)
        try:
            self._channel.basic_nack(tag, requeue=requeue)
        except pika.exceptions.AMQPError as exc:
            log.warning("could not settle a message: %s", describe(exc))

    def _send_acks(self) -> None:
        tags = sorted(self._acks)
        self._acks.clear()
        if self._channel is None or self.closed.done():
            return
        for tag in tags:
            self._unsettled.pop(tag, None)
        oldest_open = next(iter(self._unsettled), None)
        covered = len(tags) if oldest_open is None else bisect.bisect_left(tags, oldest_open)
        try:
            if covered:
                self._channel.basic_ack(tags[covered - 1], multiple=True)
            for tag in tags[covered:]:
                self._channel.basic_ack(tag)
        except pika.exceptions.AMQPError as exc:
            log.warning("could not ack: %s", describe(exc))

    # -- publishing --------------------------------------------------------------------

    def publish(self, message: Message, routing_key: str, timeout: float) -> asyncio.Future[None]:
        """Publish to the default exchange; the future resolves on the broker's confirm.

        It fails with `Refused` on a nack, `ChannelClosed` if the session ends
        first, and `BrokerUnavailable` after `timeout` seconds without an answer.
        """
        future: asyncio.Future[None] = self._loop.create_future()
        try:
            channel = self._open()
            if not channel.is_open:
                raise ChannelClosed("the channel is closing")
            assert self._connection is not None
            self._connection.publish(channel.channel_number, routing_key, message.body, message.properties)
        except BrokerUnavailable as exc:
            future.set_exception(exc)
            return future
        except pika.exceptions.AMQPError as exc:
            future.set_exception(_closed_error(exc))
            return future
        self._published += 1
        tag = self._published
        timer = self._loop.call_later(max(timeout, 0.0), self._time_out, tag)
        self._confirms[tag] = (future, timer)
        return future

    def _on_confirm(self, frame: pika.frame.Method[Basic.Ack | Basic.Nack]) -> None:
        """A confirm that came pika's way (before the route was set up)."""
        method = frame.method
        self._confirmed(method.delivery_tag, method.multiple, isinstance(method, Basic.Ack))

    def _confirmed(self, delivery_tag: int, multiple: bool, ack: bool) -> None:
        error = None if ack else Refused("the broker refused the message (nack)")
        if not multiple:
            self._settle_confirm(self._confirms.pop(delivery_tag, None), error)
            return
        while self._confirms:
            tag = next(iter(self._confirms))  # tags ascend in insertion order
            if tag > delivery_tag:
                break
            self._settle_confirm(self._confirms.pop(tag), error)

    @staticmethod
    def _settle_confirm(
        entry: tuple[asyncio.Future[None], asyncio.TimerHandle] | None, error: BaseException | None
    ) -> None:
        if entry is None:  # timed out earlier
            return
        future, timer = entry
        timer.cancel()
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def _time_out(self, tag: int) -> None:
        entry = self._confirms.pop(tag, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(BrokerUnavailable("no confirm from the broker in time"))

    def _open(self) -> Channel:
        if self._channel is None or self.closed.done():
            raise self.closed.result() if self.closed.done() else ChannelClosed("no channel yet")
        return self._channel


OnReady = Callable[[Session], Any]


class Broker:
    """A self-healing session: reconnects, redeclares, and hands each new session to `on_ready`."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        ca_file: str = "",
        prefetch: int,
        on_ready: OnReady,
        reply_queue: str | None = None,
        reply_queue_ttl_ms: int = topology.REPLY_QUEUE_TTL_MS,
        max_backoff: float = 5.0,
    ) -> None:
        self._urls = parse_urls(url)
        self._next = 0  # the address to try first: the last that worked, or the one after a failed one
        self._ssl = ssl.create_default_context(cafile=ca_file or None)
        self._name = name
        self._prefetch = prefetch
        self._on_ready = on_ready
        self._reply_queue = reply_queue
        self._reply_queue_ttl_ms = reply_queue_ttl_ms
        self._max_backoff = max_backoff
        self._session: Session | None = None
        self._stopping = asyncio.Event()
        self._abandoned = asyncio.Event()
        self.sessions = 0
        self.on_state_change: Callable[[bool], None] = lambda up: None

    @property
    def ready(self) -> bool:
        return self._session is not None and self._session.is_open

    async def publish(self, message: Message, routing_key: str, timeout: float) -> None:
        """Publish and wait for the broker's confirm; `BrokerUnavailable` if it cannot be had."""
        await self.publish_nowait(message, routing_key, timeout)

    def publish_nowait(
        self, message: Message, routing_key: str, timeout: float, session: Session | None = None
    ) -> asyncio.Future[None]:
        """Publish on `session` (by default the current one); the future resolves on the
        broker's confirm, or fails with `BrokerUnavailable`.

        A consumer forwarding a delivery names the delivery's session: deliveries
        can arrive before `on_ready` returns and the session becomes current, and
        the forward's confirm and the delivery's ack then share a connection."""
        session = session or self._session
        if session is None or not session.is_open:
            unavailable: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            unavailable.set_exception(BrokerUnavailable("broker unreachable"))
            return unavailable
        confirm = session.publish(message, routing_key, timeout)
        confirm.add_done_callback(self._on_confirm)
        return confirm

    def _on_confirm(self, confirm: asyncio.Future[None]) -> None:
        if not confirm.cancelled() and isinstance(confirm.exception(), Refused):
            # RabbitMQ 3.10 can nack every publish, for as long as the channel
            # lives, on a channel that first published to a quorum queue before
            # its new leader was elected: start a new session.
            self._abandon("the broker refused a message (nack)")

    async def run(self) -> None:
        """Stay connected until `stop()`; never raises for broker trouble."""
        delay = 0.0
        while not self._stopping.is_set():
            if delay:
                await self._sleep(delay)
                if self._stopping.is_set():
                    return
            try:
                await self._connect()
            except Exception as exc:  # whatever went wrong, this loop must go on
                delay = self._backoff(delay)
                log.warning("no broker session (%s); retrying in %.1fs", describe(exc), delay)
                continue
            started = time.monotonic()
            await self._serve()
            if self._abandoned.is_set():
                # Right after a cluster node is lost, a fresh channel may be
                # nacked again until the queues' new leaders are elected; and
                # every lost session returns its unacked messages, each return
                # counting towards the delivery limit. So pause first.
                delay = ABANDON_PAUSE * random.uniform(1.0, 1.5)
            elif time.monotonic() - started < STABLE_SESSION:
                delay = self._backoff(delay)  # it died at once (a channel error on first use): no success
            else:
                delay = 0.0  # a session that lasted resets the backoff

    def _backoff(self, delay: float) -> float:
        return min(self._max_backoff, max(0.25, delay * 2)) * random.uniform(0.5, 1.0)

    async def _open(self) -> tuple[Session, str]:
        """A session with the first address that answers, starting from `_next`."""
        failures = []
        for offset in range(len(self._urls)):
            index = (self._next + offset) % len(self._urls)
            url = self._urls[index]
            session = Session(asyncio.get_running_loop())
            try:
                await session.open(url, self._name, self._ssl)
            except Exception as exc:  # any failure here means: try the next address
                await session.close()
                failures.append(f"{mask_url(url)}: {describe(exc)}")
                continue
            self._next = index
            return session, url
        raise ConnectionError("; ".join(failures))

    async def _connect(self) -> None:
        session, url = await self._open()
        try:
            await session.qos(self._prefetch)
            await topology.declare(session)
            if self._reply_queue:
                await topology.declare_reply_queue(session, self._reply_queue, self._reply_queue_ttl_ms)
            await self._on_ready(session)
        except BaseException:
            await session.close()
            raise
        self._session = session
        log.info("%s to broker %s", "reconnected" if self.sessions else "connected", mask_url(url))
        if self.sessions:
            metrics.RECONNECTS.inc()
        metrics.BROKER_UP.set(1)
        self.sessions += 1
        self._abandoned.clear()
        self.on_state_change(True)

    async def _serve(self) -> None:
        """Wait until the session ends, or until stop()."""
        assert self._session is not None
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(asyncio.shield(self._session.closed)),
            asyncio.ensure_future(self._stopping.wait()),
            asyncio.ensure_future(self._abandoned.wait()),
        ]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        session, self._session = self._session, None
        metrics.BROKER_UP.set(0)
        self.on_state_change(False)
        if not self._stopping.is_set():
            reason = session.closed.result() if session.closed.done() else "abandoned"
            log.warning("lost the broker connection (%s); reconnecting", reason)
            self._next = (self._next + 1) % len(self._urls)  # in a cluster, try another node first
        await session.close()

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    def _abandon(self, reason: str) -> None:
        """Give up on this session and start a new one."""
        if not self._abandoned.is_set():
            log.warning("starting a new broker session: %s", reason)
            self._abandoned.set()

    def stop(self) -> None:
        """Close the connection; unacked deliveries go back to their queues."""
        self._stopping.set()


def parse_urls(value: str) -> list[str]:
    """RABBITMQ_URL as a list: comma-separated URLs, or after the first URL bare
    `host[:port]` entries that borrow its scheme, credentials and vhost."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if not entries:
        raise SystemExit("error: RABBITMQ_URL is empty")
    first = urlsplit(entries[0])
    credentials = first.netloc.rpartition("@")[0]
    urls = [entries[0]]
    for entry in entries[1:]:
        if "://" in entry:
            urls.append(entry)
        else:
            netloc = f"{credentials}@{entry}" if credentials else entry
            urls.append(urlunsplit(first._replace(netloc=netloc)))
    return urls


def _closed_error(exc: BaseException | None) -> ChannelClosed:
    """pika's reason for a closed channel or connection, as one of ours."""
    if isinstance(exc, ChannelClosed):
        return exc
    if exc is None:
        return ChannelClosed("connection closed")
    return ChannelClosed(describe(exc), int(getattr(exc, "reply_code", 0) or 0))


def describe(exc: BaseException) -> str:
    """One line on what went wrong, from the innermost of pika's wrapped errors."""
    exc = _root_cause(exc)
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError | pika.exceptions.ProbableAccessDeniedError):
        return "the broker refused the login or the vhost: check user, password and vhost"
    reply_text = getattr(exc, "reply_text", None)
    if isinstance(reply_text, str) and reply_text:
        return reply_text.splitlines()[0][:200]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _root_cause(exc: BaseException) -> BaseException:
    """pika wraps a failed connect in layers (workflow, connector, stack); unwrap them."""
    for _ in range(10):
        inner = getattr(exc, "exceptions", None)
        if inner:
            exc = inner[-1]
        elif isinstance(getattr(exc, "exception", None), BaseException):  # pika's connector phase errors
            exc = exc.exception  # type: ignore[attr-defined]
        elif exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        else:
            break
    return exc

"""One AMQP connection per program, kept open for as long as the program runs.

`Broker.run()` connects, opens one confirming channel, declares the topology,
hands the channel to the program (`on_ready`), and waits for the connection or
channel to close; then it backs off (capped, jittered, reset after a success,
as pika's asynchronous_consumer_example does) and starts over. Consumers are
set up again by `on_ready` on every new channel, so a broker restart costs a
reconnect, not a crash. RABBITMQ_URL may list several addresses (a cluster):
they are tried in turn, starting after the one that just failed. aio-pika and
aiormq errors stop here: the rest of the code sees `BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustConnection

from calcmq import metrics, topology
from calcmq.logs import mask_url

log = logging.getLogger(__name__)


ABANDON_PAUSE = 2.0


class SessionRefused(Exception):
    """`on_ready` found the session unusable for now (e.g. a GATEWAY_ID in use); try again later."""


# Errors that mean "the broker or the link to it is gone"; anything here is
# retried by reconnecting, never shown to a user as a traceback.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,  # a RuntimeError, not an AMQPError
    aio_pika.exceptions.AMQPException,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    SessionRefused,
)


class BrokerUnavailable(Exception):
    """The broker cannot take the message now; callers answer UNAVAILABLE."""


# What a consumer treats as "leave the message for the broker to redeliver".
BROKER_TROUBLE: tuple[type[BaseException], ...] = (BrokerUnavailable, *CONNECTION_ERRORS)
CLOSE_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, RuntimeError)

OnReady = Callable[[AbstractChannel], Awaitable[None]]


class Broker:
    """A self-healing connection plus its one publishing-and-consuming channel."""

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
        self._channel: AbstractChannel | None = None
        self._connection: AbstractConnection | AbstractRobustConnection | None = None
        self._stopping = asyncio.Event()
        self._abandoned = asyncio.Event()
        self.sessions = 0
        self.on_state_change: Callable[[bool], None] = lambda up: None

    @property
    def ready(self) -> bool:
        return self._channel is not None and not self._channel.is_closed

    async def publish(self, message: aio_pika.Message, routing_key: str, timeout: float) -> None:
        """Publish and wait for the broker's confirm; `BrokerUnavailable` if it cannot be had."""
        channel = self._channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable("broker unreachable")
        try:
            confirm = await channel.default_exchange.publish(message, routing_key, mandatory=False, timeout=timeout)
        except aiormq.exceptions.DeliveryError as exc:
            # A nack. RabbitMQ 3.10 can nack every publish, for as long as the
            # channel lives, on a channel that first published to a quorum
            # queue before its new leader was elected: start a new session.
            self._abandon("the broker refused a message (nack)")
            raise BrokerUnavailable(f"publish failed: {_describe(exc)}") from exc
        except Exception as exc:  # aiormq also raises a bare Exception when a write drains into a dead socket
            raise BrokerUnavailable(f"publish failed: {_describe(exc)}") from exc
        except asyncio.CancelledError:
            # aiormq cancels the confirms pending on a channel that closes;
            # unless it is our own task being cancelled, that is a lost broker.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise BrokerUnavailable("publish failed: the channel closed before the confirm") from None
        if not isinstance(confirm, aiormq.spec.Basic.Ack):
            self._abandon("the broker refused a message (nack)")
            raise BrokerUnavailable("broker refused the message (nack)")

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
                delay = min(self._max_backoff, max(0.25, delay * 2)) * random.uniform(0.5, 1.0)
                log.warning("no broker session (%s); retrying in %.1fs", _describe(exc), delay)
                continue
            delay = 0.0  # a session that got going resets the backoff
            await self._serve()
            if self._abandoned.is_set():
                # Right after a cluster node is lost, a fresh channel may be
                # nacked again until the queues' new leaders are elected; and
                # every lost session returns its unacked messages, each return
                # counting towards the delivery limit. So pause first.
                delay = ABANDON_PAUSE * random.uniform(1.0, 1.5)

    async def _open(self) -> tuple[AbstractConnection, str]:
        """A connection to the first address that answers, starting from `_next`."""
        failures = []
        for offset in range(len(self._urls)):
            index = (self._next + offset) % len(self._urls)
            url = self._urls[index]
            try:
                connection = await aio_pika.connect(
                    url,
                    timeout=5,
                    client_properties={"connection_name": self._name},
                    ssl_context=self._ssl if url.startswith("amqps://") else None,
                )
            except Exception as exc:  # any failure here means: try the next address
                failures.append(f"{mask_url(url)}: {_describe(exc)}")
                continue
            self._next = index
            return connection, url
        raise ConnectionError("; ".join(failures))

    async def _connect(self) -> None:
        connection, url = await self._open()
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=self._prefetch)
            await topology.declare(channel)
            if self._reply_queue:
                await topology.declare_reply_queue(channel, self._reply_queue, self._reply_queue_ttl_ms)
            await self._on_ready(channel)
        except BaseException:
            await _close_quietly(connection)
            raise
        self._connection, self._channel = connection, channel
        log.info("%s to broker %s", "reconnected" if self.sessions else "connected", mask_url(url))
        if self.sessions:
            metrics.RECONNECTS.inc()
        metrics.BROKER_UP.set(1)
        self.sessions += 1
        self._abandoned.clear()
        self.on_state_change(True)

    async def _serve(self) -> None:
        """Wait until the channel or connection closes, or until stop()."""
        assert self._connection is not None and self._channel is not None
        waits = [
            asyncio.ensure_future(self._connection.closed()),
            asyncio.ensure_future(self._channel.closed()),
            asyncio.ensure_future(self._stopping.wait()),
            asyncio.ensure_future(self._abandoned.wait()),
        ]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        connection, self._connection, self._channel = self._connection, None, None
        metrics.BROKER_UP.set(0)
        self.on_state_change(False)
        if not self._stopping.is_set():
            log.warning("lost the broker connection; reconnecting")
            self._next = (self._next + 1) % len(self._urls)  # in a cluster, try another node first
        await _close_quietly(connection)

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


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


async def _close_quietly(connection: AbstractConnection | AbstractRobustConnection | None) -> None:
    if connection is None or connection.is_closed:
        return
    with contextlib.suppress(*CLOSE_ERRORS):
        await asyncio.wait_for(connection.close(), 5)

"""What the three baseline programs share: queue names, the connection set-up
of pika's asynchronous examples, and publisher-confirm bookkeeping.

One SelectConnection and one channel per program (as calc-mq has), confirms
on, prefetch 100, the queues declared by every program that touches them.
No reconnects: a benchmark run that loses its broker is a failed run.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any, Generic, TypeVar

import pika  # type: ignore[import-untyped]
from pika.spec import Basic  # type: ignore[import-untyped]

log = logging.getLogger("baseline")

REQUESTS = "baseline.requests"
TASKS = "baseline.tasks"
REPLIES = "baseline.replies"
QUORUM = {"x-queue-type": "quorum"}
PREFETCH = 100
PROTOBUF = "application/x-protobuf"

T = TypeVar("T")


class Confirms(Generic[T]):
    """Publishes awaiting the broker's confirm, by publish sequence number.

    The broker numbers a confirming channel's publishes 1, 2, 3... and
    confirms one tag, or with `multiple` every tag up to it
    (https://www.rabbitmq.com/docs/confirms#publisher-confirms). A dict keeps
    insertion order, so settling "up to" pops from the front.
    """

    def __init__(self) -> None:
        self._next = 1
        self._pending: dict[int, T] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def published(self, item: T) -> None:
        self._pending[self._next] = item
        self._next += 1

    def settle(self, tag: int, multiple: bool) -> list[T]:
        if not multiple:
            item = self._pending.pop(tag, None)
            return [] if item is None else [item]
        settled = []
        while self._pending:
            first = next(iter(self._pending))
            if first > tag:
                break
            settled.append(self._pending.pop(first))
        return settled


class Program:
    """A SelectConnection program in the shape of pika's asynchronous_consumer_example.

    connect -> channel -> confirm mode -> basic_qos -> declare `queues` ->
    `ready()`. Confirms come back through `confirmed(item, ok)`. SIGTERM and
    SIGINT close the connection, which returns unacked deliveries to their
    queues; `run()` then returns.
    """

    queues: tuple[str, ...] = ()
    prefetch = PREFETCH

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: Any = None
        self.channel: Any = None
        self.confirms: Confirms[Any] = Confirms()
        self.stopping = False
        self.failure: str | None = None

    # -- to override ---------------------------------------------------------

    def ready(self) -> None:
        """The channel is set up: start consuming or publishing."""

    def confirmed(self, item: Any, ok: bool) -> None:
        """The broker took (ok) or refused the publish that carried `item`."""

    # -- the set-up chain ----------------------------------------------------

    def run(self) -> int:
        self.connection = pika.SelectConnection(
            pika.URLParameters(self.url),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.connection.ioloop.add_callback_threadsafe(self.stop))
        self.connection.ioloop.start()
        if self.failure:
            log.error("%s", self.failure)
            return 1
        return 0

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, _connection: Any, error: BaseException) -> None:
        self.failure = f"cannot connect: {error}"
        self.connection.ioloop.stop()

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._set_qos())

    def _set_qos(self) -> None:
        self.channel.basic_qos(prefetch_count=self.prefetch, callback=lambda _frame: self._declare(0))

    def _declare(self, index: int) -> None:
        if index == len(self.queues):
            self.ready()
            return
        self.channel.queue_declare(
            self.queues[index], durable=True, arguments=QUORUM, callback=lambda _frame: self._declare(index + 1)
        )

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, Basic.Ack)
        for item in self.confirms.settle(method.delivery_tag, method.multiple):
            self.confirmed(item, ok)

    # -- publishing and stopping ---------------------------------------------

    def publish(self, routing_key: str, body: bytes, properties: Any, item: Any) -> None:
        """Publish via the default exchange; `item` comes back in `confirmed`."""
        self.channel.basic_publish("", routing_key, body, properties)
        self.confirms.published(item)

    def stop(self) -> None:
        self.stopping = True
        if self.connection.is_open:
            self.connection.close()
        elif not self.connection.is_closing:
            self.connection.ioloop.stop()

    def _on_channel_closed(self, _channel: Any, reason: BaseException) -> None:
        if not self.stopping:
            self.failure = f"channel closed: {reason}"
            self.stop()

    def _on_closed(self, _connection: Any, reason: BaseException) -> None:
        if not self.stopping and self.failure is None:
            self.failure = f"connection closed: {reason}"
        self.connection.ioloop.stop()


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")


def persistent(**fields: Any) -> Any:
    """BasicProperties of a persistent protobuf message."""
    return pika.BasicProperties(content_type=PROTOBUF, delivery_mode=pika.DeliveryMode.Persistent, **fields)

"""Consuming one queue with manual acks, and a drain on shutdown: one task per
delivery for the dispatcher and the workers (`QueueConsumer`), a plain call
for the gateway's replies, which never wait (`InlineConsumer`).

A handler never lets an exception escape: a bad message is answered and
dead-lettered, a lost connection leaves the message unacked (the broker hands
it to someone else), and anything unexpected is logged and the message
returned to the queue, where the quorum delivery limit eventually stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from calcmq import codec, logs, metrics, topology
from calcmq.amqp import Broker, BrokerUnavailable, Delivery, Session
from calcmq.proto import calculator_pb2 as pb

log = logging.getLogger(__name__)

Handler = Callable[[Delivery], Awaitable[None]]
InlineHandler = Callable[[Delivery], None]

# Publishing a reply or a dead letter must not outlive a stuck broker forever.
PUBLISH_TIMEOUT = 10.0
REQUEUE_PAUSE = 0.5


class _Consumer:
    """Consumes `queue_name` on every session the broker hands out; `drain` on shutdown."""

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        self._session: Session | None = None
        self._tag: str | None = None
        self._inflight: set[asyncio.Future[Any]] = set()  # what drain waits for
        self._accepting = True

    async def on_ready(self, session: Session) -> None:
        if not self._accepting:
            return
        self._session = session
        self._tag = await session.consume(self.queue_name, self._on_delivery)

    def _on_delivery(self, delivery: Delivery) -> None:
        raise NotImplementedError

    def spawn(self, delivery: Delivery, work: Awaitable[None]) -> None:
        """Finish `delivery` with `work`, in a task that `drain` waits for."""
        self._track(asyncio.get_running_loop().create_task(self._guarded(delivery, work)))

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)

    async def _guarded(self, delivery: Delivery, work: Awaitable[None]) -> None:
        try:
            await work
        except BrokerUnavailable as exc:
            self._requeue(delivery, exc)
        except Exception:
            log.exception("unexpected error; returning the message to %s", self.queue_name)
            delivery.nack(requeue=True)

    def _requeue(self, delivery: Delivery, exc: BrokerUnavailable) -> None:
        log.warning("broker trouble, the message goes back to %s: %s", self.queue_name, exc)
        if delivery.session.is_open:
            # The session lives on (a publish timed out): hand the message
            # back, after a pause so a struggling broker is not hammered.
            asyncio.get_running_loop().call_later(REQUEUE_PAUSE, delivery.nack)

    async def drain(self, timeout: float) -> None:
        """Stop new deliveries, then give in-flight ones `timeout` seconds."""
        self._accepting = False
        session, tag = self._session, self._tag
        if session is not None and session.is_open and tag is not None:
            with contextlib.suppress(BrokerUnavailable, TimeoutError):
                await asyncio.wait_for(session.cancel(tag), 5)
        if self._inflight:
            log.info("finishing %d in-flight message(s)", len(self._inflight))
            _, pending = await asyncio.wait(self._inflight, timeout=timeout)
            if pending:
                log.warning("%d message(s) unfinished; the broker will redeliver them", len(pending))


class QueueConsumer(_Consumer):
    """One task per delivery, for handlers that wait (for a calculator, for confirms)."""

    def __init__(self, queue_name: str, handler: Handler) -> None:
        super().__init__(queue_name)
        self._handler = handler

    def _on_delivery(self, delivery: Delivery) -> None:
        logs.request_id.set(delivery.correlation_id or "")  # the task copies this context
        self.spawn(delivery, self._handler(delivery))


class InlineConsumer(_Consumer):
    """For a handler that decides on each delivery at once: called in place,
    with no task per delivery, which would cost more than the handling itself.
    The delivery is then settled by the handler, by a confirm
    (`ack_when_confirmed`), or by work that must wait (`spawn`)."""

    def __init__(self, queue_name: str, handler: InlineHandler) -> None:
        super().__init__(queue_name)
        self._handler = handler

    def _on_delivery(self, delivery: Delivery) -> None:
        token = logs.request_id.set(delivery.correlation_id or "")
        try:
            self._handler(delivery)
        except Exception:
            log.exception("unexpected error; returning the message to %s", self.queue_name)
            delivery.nack(requeue=True)
        finally:
            logs.request_id.reset(token)

    def ack_when_confirmed(
        self, delivery: Delivery, confirm: asyncio.Future[None], on_ack: Callable[[], object]
    ) -> None:
        """Ack `delivery` once the broker confirmed `confirm`'s publish, and call `on_ack`;
        hand it back to the queue if the publish fails."""
        self._track(confirm)
        confirm.add_done_callback(functools.partial(self._settle, delivery, on_ack))

    def _settle(self, delivery: Delivery, on_ack: Callable[[], object], confirm: asyncio.Future[None]) -> None:
        error = BrokerUnavailable("the publish was cancelled") if confirm.cancelled() else confirm.exception()
        if error is None:
            delivery.ack()
            on_ack()
        elif isinstance(error, BrokerUnavailable):
            self._requeue(delivery, error)
        else:
            log.error("unexpected error; returning the message to %s: %s", self.queue_name, error)
            delivery.nack(requeue=True)


async def reply(broker: Broker, reply_to: str, result: pb.CalculationResult, kind: str) -> None:
    """Publish a result to a gateway's reply queue and wait for the confirm."""
    await broker.publish(codec.result_message(result, kind), reply_to, PUBLISH_TIMEOUT)


async def reject(
    broker: Broker,
    message: Delivery,
    *,
    source: str,
    reason: str,
    answer: pb.CalculationResult | None,
) -> None:
    """Answer whoever waits (if we can tell who), park the message in calc.dead, ack it."""
    log.warning("dead-lettering message from %s: %s", source, reason)
    metrics.labelled(metrics.DEAD_LETTERS, source).inc()
    # Only ever answer into a gateway's reply queue: a forged reply_to must
    # not make us publish into calc.tasks or anyone else's queue.
    reply_to = message.reply_to or ""
    if answer is not None and reply_to.startswith(topology.REPLY_PREFIX):
        kind = message.headers.get(codec.H_KIND)
        await reply(broker, reply_to, answer, str(kind or codec.KIND_CALL))
    await broker.publish(codec.dead_letter(message, reason, source), topology.DEAD, PUBLISH_TIMEOUT)
    message.ack()

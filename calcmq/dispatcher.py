"""The dispatcher: calc.requests -> calc.tasks.

It is the gate in front of the workers: it refuses what no worker should see
(a malformed body, an unknown operation, a non-finite operand) with an error
reply and a dead letter, drops what expired on the way, and forwards the rest.
The original is acked only after the broker confirmed the forward, so a crash
in between means a duplicate task (the gateway drops the second answer), never
a lost one.
"""

from __future__ import annotations

import logging

import grpc

from calcmq import arithmetic, codec, metrics, topology
from calcmq.amqp import Broker, Delivery
from calcmq.config import Settings
from calcmq.consumer import PUBLISH_TIMEOUT, QueueConsumer, reject

log = logging.getLogger(__name__)

NAME = "dispatcher"


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.consumer = QueueConsumer(topology.REQUESTS, self.handle)
        self.broker = Broker(
            settings.rabbitmq_url,
            ca_file=settings.rabbitmq_ca,
            name=NAME,
            prefetch=settings.dispatcher_prefetch,
            on_ready=self.consumer.on_ready,
        )

    async def handle(self, message: Delivery) -> None:
        try:
            envelope = codec.decode_request(message)
            arithmetic.validate(envelope.request)
        except codec.MalformedMessage as exc:
            metrics.labelled(metrics.DISPATCHED, "rejected").inc()
            answer = None
            if message.correlation_id:
                answer = codec.error_result(
                    message.correlation_id, grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {exc}", worker=NAME
                )
            await reject(self.broker, message, source=topology.REQUESTS, reason=str(exc), answer=answer)
            return
        except arithmetic.CalcError as exc:
            metrics.labelled(metrics.DISPATCHED, "rejected").inc()
            answer = codec.error_result(envelope.request_id, exc.code, exc.message, worker=NAME)
            await reject(self.broker, message, source=topology.REQUESTS, reason=exc.message, answer=answer)
            return
        if envelope.remaining() <= 0:
            metrics.labelled(metrics.DISPATCHED, "expired").inc()
            metrics.labelled(metrics.EXPIRED, NAME).inc()
            log.info("dropped: deadline passed before dispatch")
            message.ack()
            return
        await self.broker.publish(codec.forward(envelope), topology.TASKS, PUBLISH_TIMEOUT)
        metrics.labelled(metrics.DISPATCHED, "forwarded").inc()
        message.ack()
        log.debug("forwarded to %s", topology.TASKS)

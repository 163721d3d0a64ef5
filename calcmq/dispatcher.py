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
from calcmq.consumer import PUBLISH_TIMEOUT, InlineConsumer, reject
from calcmq.proto import calculator_pb2 as pb

log = logging.getLogger(__name__)

NAME = "dispatcher"


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        self.consumer = InlineConsumer(topology.REQUESTS, self.handle)
        self.broker = Broker(
            settings.rabbitmq_url,
            ca_file=settings.rabbitmq_ca,
            name=NAME,
            prefetch=settings.dispatcher_prefetch,
            on_ready=self.consumer.on_ready,
        )

    def handle(self, message: Delivery) -> None:
        """Forward, refuse or drop one request; the forward is acked once confirmed."""
        try:
            envelope = codec.decode_request(message)
            arithmetic.validate(envelope.request)
        except codec.MalformedMessage as exc:
            answer = None
            if message.correlation_id:
                answer = codec.error_result(
                    message.correlation_id, grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {exc}", worker=NAME
                )
            self._reject(message, str(exc), answer)
            return
        except arithmetic.CalcError as exc:
            answer = codec.error_result(envelope.request_id, exc.code, exc.message, worker=NAME)
            self._reject(message, exc.message, answer)
            return
        if envelope.remaining() <= 0:
            metrics.labelled(metrics.DISPATCHED, "expired").inc()
            metrics.labelled(metrics.EXPIRED, NAME).inc()
            log.info("dropped: deadline passed before dispatch")
            message.ack()
            return
        confirm = self.broker.publish_nowait(
            codec.forward(envelope), topology.TASKS, PUBLISH_TIMEOUT, session=message.session
        )
        self.consumer.ack_when_confirmed(message, confirm, _FORWARDED.inc)
        log.debug("forwarding to %s", topology.TASKS)

    def _reject(self, message: Delivery, reason: str, answer: pb.CalculationResult | None) -> None:
        metrics.labelled(metrics.DISPATCHED, "rejected").inc()
        work = reject(self.broker, message, source=topology.REQUESTS, reason=reason, answer=answer)
        self.consumer.spawn(message, work)


_FORWARDED = metrics.labelled(metrics.DISPATCHED, "forwarded")

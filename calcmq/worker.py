"""A worker: calc.tasks -> the Calculator over gRPC -> the gateway's reply queue.

Each task: check the deadline, have the calculator compute it (on the
worker's one Compute stream, with the request's deadline), publish the reply
(confirmed), then ack. A crash
between publish and ack redelivers the task and the gateway drops the second
answer; a crash before publish redelivers it and nothing is lost.

A calculator that is down (UNAVAILABLE, a call that timed out while the
request still had time, anything but a verdict on the request) is retried later, not by sleeping on the message: the
task goes to calc.retry with a per-message TTL and the broker dead-letters it
back to calc.tasks when the TTL runs out. Past MAX_ATTEMPTS or the deadline,
the caller gets UNAVAILABLE or DEADLINE_EXCEEDED and the task goes to calc.dead.
"""

from __future__ import annotations

import logging
import random
import time

import grpc

from calcmq import arithmetic, codec, grpc_util, metrics, topology
from calcmq.amqp import Broker, Delivery
from calcmq.calculator_link import CalculatorLink, CalculatorUnavailable
from calcmq.config import Settings
from calcmq.consumer import PUBLISH_TIMEOUT, QueueConsumer, reject, reply
from calcmq.proto import calculator_pb2 as pb

log = logging.getLogger(__name__)

# One calculator call never takes longer than this, whatever the request's
# deadline: a hung calculator is then retried like a dead one.
CALL_TIMEOUT = 5.0
MAX_RETRY_DELAY = topology.MAX_RETRY_DELAY_MS / 1000
# gRPC's reconnect backoff grows to 120 s by default; a calculator that comes
# back must be found within a retry or two, not minutes later.
# https://github.com/grpc/grpc/blob/master/doc/connection-backoff.md
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.name = settings.effective_worker_name()
        self.max_attempts = settings.max_attempts
        self.retry_delay = settings.retry_delay
        self.channel = grpc_util.client_channel(settings.calculator_address, settings.tls_ca, CHANNEL_OPTIONS)
        self.calculator = CalculatorLink(self.channel, hang_after=CALL_TIMEOUT)
        self.consumer = QueueConsumer(topology.TASKS, self.handle)
        self.broker = Broker(
            settings.rabbitmq_url,
            ca_file=settings.rabbitmq_ca,
            name=f"worker {self.name}",
            prefetch=settings.worker_concurrency,
            on_ready=self.consumer.on_ready,
        )

    async def handle(self, message: Delivery) -> None:
        try:
            envelope = codec.decode_request(message)
        except codec.MalformedMessage as exc:
            await reject(self.broker, message, source=topology.TASKS, reason=str(exc), answer=None)
            return
        remaining = envelope.remaining()
        if remaining <= 0:
            metrics.labelled(metrics.EXPIRED, "worker").inc()
            log.info("dropped: deadline passed before a worker got it")
            message.ack()
            return
        attempt = envelope.attempts + 1
        result = await self._calculate(envelope, attempt, min(remaining, CALL_TIMEOUT))
        if result is None:
            await self._retry_or_give_up(message, envelope, attempt)
            return
        await reply(self.broker, envelope.reply_to, result, envelope.kind)
        message.ack()
        operation = arithmetic.OPERATION_NAMES.get(envelope.request.operation, "UNKNOWN")
        metrics.labelled(metrics.TASKS, operation, codec.outcome(result)).inc()

    async def _calculate(self, envelope: codec.Envelope, attempt: int, timeout: float) -> pb.CalculationResult | None:
        """The result (or the caller's error), or None when worth another try."""
        try:
            with metrics.CALCULATOR_LATENCY.time():
                answer = await self.calculator.compute(envelope.request, envelope.deadline, timeout)
        except CalculatorUnavailable as exc:
            log.warning("calculator %s on attempt %d: %s", exc.code.name, attempt, exc.details)
            return None
        if answer.HasField("error"):
            # Only a verdict on the request is final; anything else (out of
            # time on the way, an internal error) is retried.
            code = codec.status_of(answer.error.code)
            if code not in codec.FINAL_ERRORS:
                log.warning("calculator %s on attempt %d: %s", code.name, attempt, answer.error.message)
                return None
            return codec.error_result(
                envelope.request_id, code, answer.error.message, worker=self.name, attempts=attempt
            )
        log.debug("computed on attempt %d", attempt)
        return pb.CalculationResult(
            request_id=envelope.request_id, result=answer.result, worker=self.name, attempts=attempt
        )

    async def _retry_or_give_up(self, message: Delivery, envelope: codec.Envelope, attempt: int) -> None:
        delay = min(self.retry_delay * 2 ** min(attempt - 1, 30), MAX_RETRY_DELAY) * random.uniform(0.5, 1.0)
        if attempt < self.max_attempts and envelope.remaining(time.time() + delay) > 0:
            metrics.RETRIES.inc()
            log.info("retrying in %.2fs (attempt %d of %d)", delay, attempt, self.max_attempts)
            retry = codec.forward(envelope, attempts=attempt, expiration=delay)
            await self.broker.publish(retry, topology.RETRY, PUBLISH_TIMEOUT)
            message.ack()
            return
        if envelope.remaining() <= 0 or attempt < self.max_attempts:
            code, why = grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while the calculator was unavailable"
        else:
            code, why = grpc.StatusCode.UNAVAILABLE, f"calculator unavailable after {attempt} attempts"
        answer = codec.error_result(envelope.request_id, code, why, worker=self.name, attempts=attempt)
        await reject(self.broker, message, source=topology.TASKS, reason=why, answer=answer)

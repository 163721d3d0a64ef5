"""What travels on the queues: protobuf bodies plus the AMQP properties and
headers that carry the request id, the deadline, the attempt count and, for
dead letters, the reason.

The request id is the AMQP correlation_id and message_id end to end. The
caller's deadline travels twice: as `expiration` (so the broker drops work
nobody waits for, https://www.rabbitmq.com/docs/ttl#per-message-ttl-in-publishers)
and as an absolute `x-deadline-ms` header, because dead-lettering strips
`expiration` and each stage needs the time left, not the time given.
`x-attempts` and `x-kind` travel only when they differ from their defaults
(0, "call"): every header is encoded, parsed and stored once per queue a
message crosses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError
from pika.spec import BasicProperties

from calcmq.amqp import Delivery, Message
from calcmq.proto import calculator_pb2 as pb
from calcmq.topology import REPLY_PREFIX

REQUEST_TYPE = "application/x-protobuf; proto=calculator.CalculationRequest"
RESULT_TYPE = "application/x-protobuf; proto=calculator.CalculationResult"
MAX_BODY_BYTES = 64 * 1024
# The longest a request may live. RabbitMQ refuses (and closes the channel
# over) an expiration past ten years; we stay far below, and refuse more.
MAX_DEADLINE_SECONDS = 7 * 24 * 3600
MAX_ATTEMPTS_HEADER = 1000

H_DEADLINE = "x-deadline-ms"
H_ATTEMPTS = "x-attempts"
H_KIND = "x-kind"  # "submit" marks results a restarted gateway must keep
H_REASON = "x-reason"
H_SOURCE = "x-source-queue"
PERSISTENT = 2  # delivery_mode: written to disk (quorum queues keep every message anyway)
KIND_SUBMIT = "submit"
KIND_CALL = "call"


class MalformedMessage(Exception):
    """A body or property that cannot be a message of ours; the reason says which."""


@dataclass(frozen=True)
class Envelope:
    """A request as it travels: the protobuf plus what the properties add."""

    request: pb.CalculationRequest
    request_id: str
    reply_to: str
    deadline: float  # seconds since the epoch
    attempts: int
    kind: str

    def remaining(self, now: float | None = None) -> float:
        return self.deadline - (time.time() if now is None else now)


def request_message(
    request: pb.CalculationRequest,
    *,
    reply_to: str,
    deadline: float,
    kind: str,
    attempts: int = 0,
    expiration: float | None = None,
) -> Message:
    """Build the AMQP message for a request; `expiration` defaults to the time left."""
    ttl = min(deadline - time.time() if expiration is None else expiration, MAX_DEADLINE_SECONDS)
    properties = BasicProperties(
        content_type=REQUEST_TYPE,
        delivery_mode=PERSISTENT,
        correlation_id=request.request_id,
        message_id=request.request_id,
        reply_to=reply_to,
        expiration=str(max(int(ttl * 1000), 1)),  # milliseconds, as a string (AMQP shortstr)
        headers=_request_headers(deadline, attempts, kind),
    )
    return Message(request.SerializeToString(), properties)


def _request_headers(deadline: float, attempts: int, kind: str) -> dict[str, object]:
    headers: dict[str, object] = {H_DEADLINE: int(deadline * 1000)}
    if attempts:
        headers[H_ATTEMPTS] = attempts
    if kind != KIND_CALL:
        headers[H_KIND] = kind
    return headers


def forward(envelope: Envelope, *, attempts: int | None = None, expiration: float | None = None) -> Message:
    """The same request, re-published to the next queue with the time left."""
    return request_message(
        envelope.request,
        reply_to=envelope.reply_to,
        deadline=envelope.deadline,
        kind=envelope.kind,
        attempts=envelope.attempts if attempts is None else attempts,
        expiration=expiration,
    )


def decode_request(message: Delivery) -> Envelope:
    """Parse a delivery from calc.requests or calc.tasks, or raise MalformedMessage."""
    _check_body(message, REQUEST_TYPE)
    request = pb.CalculationRequest()
    try:
        request.ParseFromString(message.body)
    except (ProtobufDecodeError, RuntimeError) as exc:
        raise MalformedMessage(f"body is not a CalculationRequest: {exc}") from None
    request_id = message.correlation_id or ""
    if not request_id:
        raise MalformedMessage("correlation_id is missing")
    if request.request_id != request_id:
        raise MalformedMessage("correlation_id does not match the body's request_id")
    reply_to = message.reply_to or ""
    if not reply_to.startswith(REPLY_PREFIX):
        raise MalformedMessage(f"reply_to is not a gateway's reply queue ({REPLY_PREFIX}*)")
    headers = message.headers
    deadline_ms = headers.get(H_DEADLINE)
    if not isinstance(deadline_ms, int) or isinstance(deadline_ms, bool):
        raise MalformedMessage(f"header {H_DEADLINE} is missing or not an integer")
    if deadline_ms > (time.time() + MAX_DEADLINE_SECONDS + 3600) * 1000:
        raise MalformedMessage(f"header {H_DEADLINE} is more than {MAX_DEADLINE_SECONDS // 86400} days ahead")
    attempts = headers.get(H_ATTEMPTS, 0)
    if not isinstance(attempts, int) or not 0 <= attempts <= MAX_ATTEMPTS_HEADER:
        raise MalformedMessage(f"header {H_ATTEMPTS} is not an integer from 0 to {MAX_ATTEMPTS_HEADER}")
    kind = headers.get(H_KIND, KIND_CALL)
    return Envelope(
        request=request,
        request_id=request_id,
        reply_to=reply_to,
        deadline=deadline_ms / 1000,
        attempts=attempts,
        kind=KIND_SUBMIT if kind == KIND_SUBMIT else KIND_CALL,
    )


def result_message(result: pb.CalculationResult, kind: str) -> Message:
    properties = BasicProperties(
        content_type=RESULT_TYPE,
        delivery_mode=PERSISTENT,
        correlation_id=result.request_id,
        message_id=result.request_id,
        headers={H_KIND: kind} if kind != KIND_CALL else None,
    )
    return Message(result.SerializeToString(), properties)


def decode_result(message: Delivery) -> pb.CalculationResult:
    _check_body(message, RESULT_TYPE)
    result = pb.CalculationResult()
    try:
        result.ParseFromString(message.body)
    except (ProtobufDecodeError, RuntimeError) as exc:
        raise MalformedMessage(f"body is not a CalculationResult: {exc}") from None
    if not result.request_id or result.request_id != message.correlation_id:
        raise MalformedMessage("correlation_id does not match the body's request_id")
    return result


def dead_letter(message: Delivery, reason: str, source: str) -> Message:
    """A copy of a delivery for calc.dead, with why and where from."""
    headers = dict(message.headers)
    headers[H_REASON] = reason[:500]
    headers[H_SOURCE] = source
    properties = BasicProperties(
        content_type=message.content_type,
        delivery_mode=PERSISTENT,
        correlation_id=message.correlation_id,
        message_id=message.message_id,
        reply_to=message.reply_to,
        headers=headers,
    )
    return Message(message.body, properties)


def error_result(
    request_id: str, code: grpc.StatusCode, message: str, *, worker: str = "", attempts: int = 0
) -> pb.CalculationResult:
    return pb.CalculationResult(
        request_id=request_id,
        error=pb.Error(code=code.value[0], message=message),
        worker=worker,
        attempts=attempts,
    )


def _check_body(message: Delivery, expected_type: str) -> None:
    if len(message.body) > MAX_BODY_BYTES:
        raise MalformedMessage(f"body of {len(message.body)} bytes is over {MAX_BODY_BYTES}")
    if message.content_type != expected_type:
        raise MalformedMessage(f"content_type {message.content_type!r} is not {expected_type!r}")


_STATUS_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}


def status_of(code: int) -> grpc.StatusCode:
    """The gRPC status for an `Error.code` number (UNKNOWN for a number gRPC lacks)."""
    return _STATUS_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)


# Verdicts on the request itself; any other error (UNAVAILABLE, DEADLINE_EXCEEDED...)
# says nothing about the request, and a retry with the same id runs it again.
FINAL_ERRORS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE})


def is_final(result: pb.CalculationResult) -> bool:
    return not result.HasField("error") or status_of(result.error.code) in FINAL_ERRORS


def outcome(result: pb.CalculationResult) -> str:
    """ "OK", or the name of the result's error status: the metrics' outcome label."""
    return status_of(result.error.code).name if result.HasField("error") else "OK"

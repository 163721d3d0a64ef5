"""calcmq.codec: what travels on the queues, and what it refuses; plus fuzzing
of the decoders and of the arithmetic."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import math
import time
from collections.abc import Callable
from typing import Any, cast

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pika.spec import BasicProperties

from calcmq import arithmetic, codec
from calcmq.amqp import Delivery, Message, Session
from calcmq.arithmetic import CalcError
from calcmq.codec import (
    H_ATTEMPTS,
    H_DEADLINE,
    H_KIND,
    H_REASON,
    H_SOURCE,
    KIND_CALL,
    KIND_SUBMIT,
    MAX_BODY_BYTES,
    REQUEST_TYPE,
    RESULT_TYPE,
    MalformedMessage,
)
from calcmq.proto import calculator_pb2 as pb

pytestmark = pytest.mark.unit

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


PROPERTIES = ("content_type", "correlation_id", "message_id", "reply_to", "headers")


def fake(body: bytes = b"", **properties: Any) -> Delivery:
    """A delivery as the broker hands it over: a body and properties (no session)."""
    return Delivery(body, BasicProperties(**properties), tag=1, session=cast(Session, None))


def incoming(message: Message, **changes: Any) -> Delivery:
    """What decode_* reads of a delivery, taken from an outgoing message."""
    fields: dict[str, Any] = {name: getattr(message.properties, name) for name in PROPERTIES}
    fields["headers"] = dict(fields["headers"] or {})
    fields["body"] = message.body
    fields.update(changes)
    return fake(**fields)


def a_request(
    request_id: str = "req-1", operation: pb.Operation = pb.DIVIDE, num1: float = 7.0, num2: float = 2.0
) -> pb.CalculationRequest:
    return pb.CalculationRequest(operation=operation, num1=num1, num2=num2, request_id=request_id)


def request_delivery(request_id: str = "req-1", **changes: Any) -> Delivery:
    message = codec.request_message(
        a_request(request_id), reply_to="calc.replies.gw1", deadline=time.time() + 30, kind=KIND_CALL
    )
    return incoming(message, **changes)


def malformed(decode: Callable[[Delivery], object], message: Delivery) -> str:
    with pytest.raises(MalformedMessage) as info:
        decode(message)
    return str(info.value)


# -- request_message / decode_request ---------------------------------------------------


def test_request_round_trips_through_decode_request():
    request = a_request("abc-123", pb.POWER, -2.5, 3.0)
    deadline = time.time() + 3600.123
    message = codec.request_message(
        request, reply_to="calc.replies.gw1", deadline=deadline, kind=KIND_SUBMIT, attempts=2
    )
    envelope = codec.decode_request(incoming(message))
    assert envelope.request == request
    assert envelope.request_id == "abc-123"
    assert envelope.reply_to == "calc.replies.gw1"
    assert envelope.deadline == pytest.approx(deadline, abs=0.001)
    assert envelope.attempts == 2
    assert envelope.kind == KIND_SUBMIT


def test_request_message_uses_the_request_id_as_correlation_id_and_message_id():
    message = codec.request_message(a_request("id-42"), reply_to="r", deadline=time.time() + 5, kind=KIND_CALL)
    assert message.properties.correlation_id == message.properties.message_id == "id-42"


def test_request_message_is_persistent_protobuf():
    message = codec.request_message(a_request(), reply_to="r", deadline=time.time() + 5, kind=KIND_CALL)
    assert message.properties.delivery_mode == codec.PERSISTENT
    assert message.properties.content_type == REQUEST_TYPE
    assert pb.CalculationRequest.FromString(message.body) == a_request()


def test_request_message_headers_carry_deadline_ms_attempts_and_kind():
    deadline = 1_900_000_000.5
    message = codec.request_message(a_request(), reply_to="r", deadline=deadline, kind=KIND_SUBMIT, attempts=3)
    assert message.properties.headers == {H_DEADLINE: 1_900_000_000_500, H_ATTEMPTS: 3, H_KIND: KIND_SUBMIT}
    assert type(message.properties.headers[H_DEADLINE]) is int


def test_a_first_attempt_of_a_call_carries_only_its_deadline_and_decodes_to_the_defaults():
    deadline = time.time() + 30
    message = codec.request_message(a_request(), reply_to="calc.replies.g", deadline=deadline, kind=KIND_CALL)
    assert message.properties.headers == {H_DEADLINE: int(deadline * 1000)}
    envelope = codec.decode_request(request_delivery(headers=message.properties.headers))
    assert (envelope.attempts, envelope.kind) == (0, KIND_CALL)


def test_expiration_is_the_time_left_before_the_deadline():
    message = codec.request_message(a_request(), reply_to="r", deadline=time.time() + 5, kind=KIND_CALL)
    on_the_wire = message.properties.expiration
    assert isinstance(on_the_wire, str)
    assert 4000 < int(on_the_wire) <= 5000  # milliseconds


def test_expiration_of_a_passed_deadline_is_one_millisecond_never_zero_or_negative():
    message = codec.request_message(a_request(), reply_to="r", deadline=time.time() - 60, kind=KIND_CALL)
    assert message.properties.expiration == "1"


def test_explicit_expiration_overrides_the_time_left():
    message = codec.request_message(a_request(), reply_to="r", deadline=time.time() + 60, kind=KIND_CALL, expiration=2)
    assert message.properties.expiration == "2000"


def test_forward_keeps_the_request_and_counts_the_attempt():
    original = codec.request_message(
        a_request("f-1"), reply_to="calc.replies.rq", deadline=time.time() + 30, kind=KIND_SUBMIT
    )
    envelope = codec.decode_request(incoming(original))
    forwarded = codec.decode_request(incoming(codec.forward(envelope, attempts=4)))
    assert forwarded.request == envelope.request
    assert forwarded.reply_to == "calc.replies.rq"
    assert forwarded.deadline == envelope.deadline
    assert forwarded.kind == KIND_SUBMIT
    assert forwarded.attempts == 4
    assert codec.decode_request(incoming(codec.forward(envelope))).attempts == envelope.attempts


def test_envelope_remaining_is_time_to_the_deadline():
    envelope = codec.decode_request(request_delivery(headers={H_DEADLINE: 10_000}))
    assert envelope.remaining(now=7.5) == 2.5
    assert envelope.remaining(now=12.0) == -2.0


def test_decode_request_defaults_attempts_to_zero_and_kind_to_call():
    envelope = codec.decode_request(request_delivery(headers={H_DEADLINE: 1}))
    assert envelope.attempts == 0
    assert envelope.kind == KIND_CALL


def test_decode_request_treats_unknown_kind_as_call():
    envelope = codec.decode_request(request_delivery(headers={H_DEADLINE: 1, H_KIND: "weird"}))
    assert envelope.kind == KIND_CALL
    assert envelope.attempts == 0


@pytest.mark.parametrize("attempts", ["3", -1, 1001, 2**62])
def test_an_attempt_count_out_of_range_is_malformed(attempts):
    reason = malformed(codec.decode_request, request_delivery(headers={H_DEADLINE: 1, H_ATTEMPTS: attempts}))
    assert H_ATTEMPTS in reason


def test_a_deadline_more_than_a_week_ahead_is_malformed():
    far = int((time.time() + 30 * 86400) * 1000)
    reason = malformed(codec.decode_request, request_delivery(headers={H_DEADLINE: far}))
    assert "days ahead" in reason


def test_a_reply_to_outside_the_gateways_reply_queues_is_malformed():
    reason = malformed(codec.decode_request, request_delivery(reply_to="another-apps-queue"))
    assert "reply_to" in reason


def test_the_expiration_never_exceeds_a_week():
    message = codec.request_message(a_request(), reply_to="r", deadline=time.time() + 10**9, kind=KIND_CALL)
    assert int(message.properties.expiration) <= codec.MAX_DEADLINE_SECONDS * 1000


# -- malformed requests ---------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "", "application/json", RESULT_TYPE, REQUEST_TYPE.upper()])
def test_request_with_wrong_content_type_is_malformed(content_type):
    reason = malformed(codec.decode_request, request_delivery(content_type=content_type))
    assert "content_type" in reason


def test_request_body_over_the_size_limit_is_malformed():
    reason = malformed(codec.decode_request, request_delivery(body=b"\x00" * (MAX_BODY_BYTES + 1)))
    assert f"{MAX_BODY_BYTES + 1} bytes" in reason
    assert "over" in reason


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x22\x02\xff\xfe", b"\x08"])
def test_request_body_that_does_not_parse_is_malformed(body):
    reason = malformed(codec.decode_request, request_delivery(body=body))
    assert "not a CalculationRequest" in reason


@pytest.mark.parametrize("correlation_id", [None, ""])
def test_request_without_correlation_id_is_malformed(correlation_id):
    reason = malformed(codec.decode_request, request_delivery(correlation_id=correlation_id))
    assert reason == "correlation_id is missing"


def test_request_whose_correlation_id_differs_from_the_body_is_malformed():
    reason = malformed(codec.decode_request, request_delivery("req-1", correlation_id="req-2"))
    assert reason == "correlation_id does not match the body's request_id"


@pytest.mark.parametrize("reply_to", [None, ""])
def test_request_without_reply_to_is_malformed(reply_to):
    reason = malformed(codec.decode_request, request_delivery(reply_to=reply_to))
    assert "reply_to" in reason


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {H_ATTEMPTS: 1},
        {H_DEADLINE: "1900000000000"},
        {H_DEADLINE: 1.9e12},
        {H_DEADLINE: True},
        {H_DEADLINE: None},
        {H_DEADLINE: decimal.Decimal(1)},
    ],
)
def test_request_without_an_integer_deadline_header_is_malformed(headers):
    reason = malformed(codec.decode_request, request_delivery(headers=headers))
    assert reason == f"header {H_DEADLINE} is missing or not an integer"


# -- results ------------------------------------------------------------------------


def test_result_round_trips_through_decode_result():
    result = pb.CalculationResult(request_id="r-9", result=3.5, worker="w1", attempts=2)
    message = codec.result_message(result, KIND_CALL)
    assert codec.decode_result(incoming(message)) == result


def test_result_message_is_persistent_and_tagged_with_its_kind():
    result = pb.CalculationResult(request_id="r-9", result=1.0)
    message = codec.result_message(result, KIND_SUBMIT)
    assert message.properties.delivery_mode == codec.PERSISTENT
    assert message.properties.content_type == RESULT_TYPE
    assert message.properties.correlation_id == message.properties.message_id == "r-9"
    assert message.properties.headers == {H_KIND: KIND_SUBMIT}


def test_error_result_round_trips():
    result = codec.error_result("e-1", grpc.StatusCode.INVALID_ARGUMENT, "division by zero", worker="w", attempts=1)
    decoded = codec.decode_result(incoming(codec.result_message(result, KIND_CALL)))
    assert decoded.HasField("error")
    assert decoded.error.message == "division by zero"


@pytest.mark.parametrize("correlation_id", [None, "", "r-other"])
def test_result_whose_correlation_id_differs_from_the_body_is_malformed(correlation_id):
    message = codec.result_message(pb.CalculationResult(request_id="r-9"), KIND_CALL)
    reason = malformed(codec.decode_result, incoming(message, correlation_id=correlation_id))
    assert reason == "correlation_id does not match the body's request_id"


def test_result_without_a_request_id_is_malformed():
    message = codec.result_message(pb.CalculationResult(result=1.0), KIND_CALL)
    malformed(codec.decode_result, incoming(message, correlation_id=""))


def test_result_with_a_request_content_type_is_malformed():
    message = codec.result_message(pb.CalculationResult(request_id="r"), KIND_CALL)
    assert "content_type" in malformed(codec.decode_result, incoming(message, content_type=REQUEST_TYPE))


def test_result_body_that_does_not_parse_is_malformed():
    message = codec.result_message(pb.CalculationResult(request_id="r"), KIND_CALL)
    reason = malformed(codec.decode_result, incoming(message, body=b"\xff\xff\xff"))
    assert "not a CalculationResult" in reason


def test_result_body_over_the_size_limit_is_malformed():
    message = codec.result_message(pb.CalculationResult(request_id="r"), KIND_CALL)
    malformed(codec.decode_result, incoming(message, body=b"\x00" * (MAX_BODY_BYTES + 1)))


# -- dead letters and error results ---------------------------------------------------------


def test_dead_letter_keeps_the_delivery_and_adds_reason_and_source():
    delivery = request_delivery("d-1")
    original_headers = dict(delivery.headers)
    letter = codec.dead_letter(delivery, "reply_to is missing", "calc.requests")
    assert letter.body == delivery.body
    assert letter.properties.content_type == delivery.content_type
    assert letter.properties.correlation_id == letter.properties.message_id == "d-1"
    assert letter.properties.reply_to == delivery.reply_to
    assert letter.properties.delivery_mode == codec.PERSISTENT
    assert letter.properties.headers == {**original_headers, H_REASON: "reply_to is missing", H_SOURCE: "calc.requests"}
    assert delivery.headers == original_headers  # the delivery itself is untouched


def test_dead_letter_of_a_delivery_without_headers():
    letter = codec.dead_letter(request_delivery(headers=None), "bad", "calc.tasks")
    assert letter.properties.headers == {H_REASON: "bad", H_SOURCE: "calc.tasks"}


def test_dead_letter_reason_is_capped_at_500_characters():
    letter = codec.dead_letter(request_delivery(), "x" * 10_000, "calc.tasks")
    assert letter.properties.headers[H_REASON] == "x" * 500


@pytest.mark.parametrize(
    ("code", "number"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 3),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 4),
        (grpc.StatusCode.OUT_OF_RANGE, 11),
        (grpc.StatusCode.UNAVAILABLE, 14),
    ],
)
def test_error_result_carries_the_numeric_grpc_code(code, number):
    result = codec.error_result("e-1", code, "why", worker="w7", attempts=5)
    assert result.request_id == "e-1"
    assert result.error.code == number
    assert result.error.message == "why"
    assert result.worker == "w7"
    assert result.attempts == 5
    assert result.result == 0.0


# -- fuzzing ---------------------------------------------------------------------------------

# What an AMQP field table can hold once pamqp has decoded it. Integers stop at
# 64 bits: the wire has no wider integer type.
amqp_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.datetimes(timezones=st.just(datetime.UTC)),
)
amqp_values = st.recursive(
    amqp_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
header_keys = st.sampled_from([H_DEADLINE, H_ATTEMPTS, H_KIND, H_REASON]) | st.text(max_size=12)
headers = st.none() | st.dictionaries(header_keys, amqp_values, max_size=5)
content_types = st.sampled_from([REQUEST_TYPE, RESULT_TYPE, None, ""]) | st.text(max_size=40)
ids = st.text(max_size=20)

requests = st.builds(
    pb.CalculationRequest,
    operation=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    num1=st.floats(),
    num2=st.floats(),
    request_id=ids,
)
results = st.builds(
    pb.CalculationResult,
    request_id=ids,
    result=st.floats(),
    worker=st.text(max_size=10),
    attempts=st.integers(min_value=0, max_value=2**32 - 1),
)


@st.composite
def deliveries(draw, messages):
    """Arbitrary bytes, or a real message's bytes, cut short or left whole."""
    kind = draw(st.sampled_from(["bytes", "message", "truncated", "oversized"]))
    correlation_id = draw(st.none() | ids)
    if kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "oversized":
        body = b"\x00" * (MAX_BODY_BYTES + draw(st.integers(1, 10)))
    else:
        message = draw(messages)
        body = message.SerializeToString()
        if kind == "truncated" and body:
            body = body[: draw(st.integers(0, len(body) - 1))]
        if draw(st.booleans()):
            correlation_id = message.request_id  # often let it match, so later checks run
    return fake(
        body=body,
        content_type=draw(content_types),
        correlation_id=correlation_id,
        message_id=correlation_id,
        reply_to=draw(st.none() | st.text(max_size=20)),
        headers=draw(headers),
    )


@FUZZ
@given(deliveries(requests))
def test_decode_request_returns_an_envelope_or_raises_malformed_for_any_delivery(delivery):
    try:
        envelope = codec.decode_request(delivery)
    except MalformedMessage as exc:
        assert str(exc)
    else:
        assert isinstance(envelope, codec.Envelope)
        assert envelope.request_id == delivery.correlation_id
        assert envelope.kind in (KIND_CALL, KIND_SUBMIT)
        assert math.isfinite(envelope.deadline)


@FUZZ
@given(deliveries(results))
def test_decode_result_returns_a_result_or_raises_malformed_for_any_delivery(delivery):
    try:
        result = codec.decode_result(delivery)
    except MalformedMessage as exc:
        assert str(exc)
    else:
        assert result.request_id == delivery.correlation_id != ""


@FUZZ
@given(st.binary(max_size=200), content_types, st.none() | ids, headers)
def test_decoders_never_raise_anything_but_malformed_for_raw_bytes(body, content_type, correlation_id, header_dict):
    delivery = fake(
        body=body, content_type=content_type, correlation_id=correlation_id, reply_to="r", headers=header_dict
    )
    for decode in (codec.decode_request, codec.decode_result):
        with contextlib.suppress(MalformedMessage):  # anything else fails the test
            decode(delivery)


@FUZZ
@given(requests.filter(lambda r: r.request_id != ""))
def test_a_request_message_always_decodes_back_to_its_request(request):
    message = codec.request_message(request, reply_to="calc.replies.r", deadline=time.time() + 10, kind=KIND_CALL)
    envelope = codec.decode_request(incoming(message))
    assert envelope.request.SerializeToString() == request.SerializeToString()


@FUZZ
@given(
    st.integers(min_value=-(2**31), max_value=2**31 - 1) | st.sampled_from(list(arithmetic.OPERATIONS)),
    st.floats(),
    st.floats(),
)
def test_compute_returns_a_finite_float_or_refuses_with_invalid_argument_or_out_of_range(operation, a, b):
    try:
        result = arithmetic.compute(operation, a, b)
    except CalcError as exc:
        assert exc.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE)
        assert exc.message
    else:
        assert isinstance(result, float)
        assert math.isfinite(result)


@FUZZ
@given(
    st.sampled_from(list(arithmetic.OPERATIONS)),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=False, allow_infinity=False),
)
def test_compute_matches_python_arithmetic_whenever_it_answers(operation: int, a: float, b: float) -> None:
    references: dict[int, Callable[[], float]] = {
        pb.SUM: lambda: a + b,
        pb.SUBTRACT: lambda: a - b,
        pb.MULTIPLY: lambda: a * b,
        pb.DIVIDE: lambda: a / b,
        pb.POWER: lambda: math.pow(a, b),
        pb.MODULO: lambda: a % b,
    }
    try:
        result = arithmetic.compute(operation, a, b)
    except CalcError:
        return
    assert result == references[operation]()

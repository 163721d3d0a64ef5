"""calcmq.arithmetic: the operations, their edge cases, and the request checks."""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest

from calcmq import arithmetic
from calcmq.arithmetic import MAX_REQUEST_ID_BYTES, CalcError, check_request_id, compute, validate
from calcmq.proto import calculator_pb2 as pb

pytestmark = pytest.mark.unit

INF = math.inf
NAN = math.nan
HUGE = 1e308
TINY = 5e-324  # the smallest positive subnormal double
ALL_OPERATIONS = [pb.SUM, pb.SUBTRACT, pb.MULTIPLY, pb.DIVIDE, pb.POWER, pb.MODULO]


def refused(operation: int, a: float, b: float) -> CalcError:
    with pytest.raises(CalcError) as info:
        compute(operation, a, b)
    return info.value


def same_float(x: float, y: float) -> bool:
    """Equal, including the sign of zero."""
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


# -- every operation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "a", "b", "expected"),
    [
        (pb.SUM, 2, 3, 5.0),
        (pb.SUM, -2.5, 0.5, -2.0),
        (pb.SUBTRACT, 7, 3, 4.0),
        (pb.SUBTRACT, 3, 7, -4.0),
        (pb.MULTIPLY, 6, 7, 42.0),
        (pb.MULTIPLY, -1.5, 4, -6.0),
        (pb.DIVIDE, 7, 2, 3.5),
        (pb.DIVIDE, -9, 3, -3.0),
        (pb.POWER, 2, 10, 1024.0),
        (pb.POWER, 2, 0.5, math.sqrt(2)),
        (pb.POWER, 2, -2, 0.25),
        (pb.POWER, -2, 3, -8.0),
        (pb.POWER, 0, 0, 1.0),
        (pb.MODULO, 7, 3, 1.0),
        (pb.MODULO, 7.5, 2, 1.5),
    ],
)
def test_each_operation_computes_its_result(operation, a, b, expected):
    assert compute(operation, a, b) == expected


def test_modulo_is_floored_so_the_result_takes_the_divisors_sign():
    assert compute(pb.MODULO, -7, 3) == 2.0
    assert compute(pb.MODULO, 7, -3) == -2.0
    assert compute(pb.MODULO, -7, -3) == -1.0


def test_every_operation_has_a_name():
    assert set(arithmetic.OPERATION_NAMES) == set(ALL_OPERATIONS)
    assert arithmetic.OPERATION_NAMES[pb.DIVIDE] == "DIVIDE"


# -- signed zero -------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "a", "b", "expected"),
    [
        (pb.SUM, -0.0, -0.0, -0.0),
        (pb.SUM, 0.0, -0.0, 0.0),
        (pb.SUBTRACT, -0.0, 0.0, -0.0),
        (pb.MULTIPLY, -1, 0.0, -0.0),
        (pb.MULTIPLY, -0.0, -0.0, 0.0),
        (pb.DIVIDE, -0.0, 5, -0.0),
        (pb.DIVIDE, 0.0, -5, -0.0),
        (pb.POWER, -0.0, 3, -0.0),
        (pb.POWER, -0.0, 2, 0.0),
        (pb.POWER, 5, -0.0, 1.0),
    ],
)
def test_signed_zero_operands_give_correctly_signed_results(operation, a, b, expected):
    assert same_float(compute(operation, a, b), expected)


# -- huge and tiny -----------------------------------------------------------


def test_huge_operands_compute_when_the_result_fits():
    assert compute(pb.SUM, HUGE, -HUGE) == 0.0
    assert compute(pb.DIVIDE, HUGE, 10) == 1e307
    assert compute(pb.SUBTRACT, HUGE, 1) == HUGE  # 1 is far below HUGE's precision
    assert compute(pb.MODULO, HUGE, 3) == math.fmod(HUGE, 3)


def test_tiny_operands_compute_and_may_underflow_to_zero():
    assert compute(pb.SUM, TINY, TINY) == 2 * TINY
    assert compute(pb.MULTIPLY, TINY, 0.5) == 0.0
    assert compute(pb.DIVIDE, TINY, 2) == 0.0
    assert compute(pb.POWER, 2, -1075) == 0.0
    assert compute(pb.MODULO, HUGE, TINY) == 0.0


def test_tiny_divisor_is_not_division_by_zero():
    assert compute(pb.DIVIDE, TINY, TINY) == 1.0


@pytest.mark.parametrize(
    ("operation", "a", "b"),
    [
        (pb.POWER, 10, 400),
        (pb.MULTIPLY, HUGE, 2),
        (pb.SUM, HUGE, HUGE),
        (pb.SUBTRACT, -HUGE, HUGE),
        (pb.DIVIDE, 1, TINY),
        (pb.DIVIDE, HUGE, 0.1),
        (pb.POWER, -10, 401),
    ],
)
def test_a_result_beyond_a_double_is_out_of_range(operation, a, b):
    error = refused(operation, a, b)
    assert error.code == grpc.StatusCode.OUT_OF_RANGE
    assert "overflow" in error.message


# -- non-finite operands ----------------------------------------------------------


@pytest.mark.parametrize("operation", ALL_OPERATIONS)
@pytest.mark.parametrize(("a", "b"), [(NAN, 1), (1, NAN), (INF, 1), (1, INF), (-INF, 1), (1, -INF), (NAN, INF)])
def test_nan_or_infinite_operand_is_invalid_argument(operation, a, b):
    error = refused(operation, a, b)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "operands must be finite numbers"


# -- no real answer -----------------------------------------------------------


@pytest.mark.parametrize("zero", [0.0, -0.0])
def test_division_by_zero_is_invalid_argument(zero):
    error = refused(pb.DIVIDE, 1, zero)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "division by zero"


def test_zero_divided_by_zero_is_division_by_zero():
    assert refused(pb.DIVIDE, 0, 0).message == "division by zero"


@pytest.mark.parametrize("zero", [0.0, -0.0])
def test_modulo_by_zero_is_invalid_argument(zero):
    error = refused(pb.MODULO, 7, zero)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "modulo by zero"


@pytest.mark.parametrize("base", [0.0, -0.0])
def test_zero_to_a_negative_power_is_invalid_argument(base):
    error = refused(pb.POWER, base, -1)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


def test_negative_base_to_a_fractional_power_is_invalid_argument():
    error = refused(pb.POWER, -8, 0.5)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a real number" in error.message


# -- operations that do not exist ----------------------------------------------------


@pytest.mark.parametrize("operation", [pb.OPERATION_UNSPECIFIED, 7, 99, -1])
def test_unknown_or_unspecified_operation_is_invalid_argument(operation):
    error = refused(operation, 1, 2)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == f"unknown operation {operation}"


def test_unknown_operation_is_reported_before_bad_operands():
    assert refused(99, NAN, INF).message == "unknown operation 99"


def test_calc_error_carries_code_and_message():
    error = CalcError(grpc.StatusCode.OUT_OF_RANGE, "too big")
    assert error.code == grpc.StatusCode.OUT_OF_RANGE
    assert error.message == "too big"
    assert str(error) == "too big"


# -- validate() ---------------------------------------------------------------


def request(**fields: Any) -> pb.CalculationRequest:
    values: dict[str, Any] = {"operation": pb.SUM, "num1": 1.0, "num2": 2.0, "request_id": "req-1", **fields}
    return pb.CalculationRequest(**values)


@pytest.mark.parametrize("operation", ALL_OPERATIONS)
def test_validate_accepts_a_well_formed_request(operation):
    validate(request(operation=operation))


def test_validate_accepts_operands_that_would_fail_to_compute():
    validate(request(operation=pb.DIVIDE, num2=0.0))  # that is the calculator's answer to give


def test_validate_refuses_an_unspecified_operation():
    with pytest.raises(CalcError) as info:
        validate(request(operation=pb.OPERATION_UNSPECIFIED))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == "unknown operation unspecified"


def test_validate_refuses_an_operation_number_outside_the_enum():
    with pytest.raises(CalcError) as info:
        validate(request(operation=42))  # proto3 enums are open: 42 parses
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == "unknown operation 42"


@pytest.mark.parametrize(("num1", "num2"), [(NAN, 1), (1, INF), (-INF, NAN)])
def test_validate_refuses_non_finite_operands(num1, num2):
    with pytest.raises(CalcError) as info:
        validate(request(num1=num1, num2=num2))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_validate_refuses_an_oversized_request_id():
    with pytest.raises(CalcError) as info:
        validate(request(request_id="x" * (MAX_REQUEST_ID_BYTES + 1)))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_validate_refuses_a_request_id_with_control_characters():
    with pytest.raises(CalcError) as info:
        validate(request(request_id="a\nb"))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


# -- check_request_id() -----------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    ["", "req-1", "3f2b8a9e-6c1d-4f7a-9b2e-0d5c8e1a7f42", "x" * MAX_REQUEST_ID_BYTES, "é" * 64, "with space", "日本"],
)
def test_check_request_id_accepts_printable_ids_up_to_128_bytes(request_id):
    check_request_id(request_id)


def test_max_request_id_is_128_bytes():
    assert MAX_REQUEST_ID_BYTES == 128


@pytest.mark.parametrize(("request_id", "size"), [("x" * 129, 129), ("é" * 65, 130), ("x" * 10240, 10240)])
def test_check_request_id_refuses_ids_over_128_bytes(request_id, size):
    with pytest.raises(CalcError) as info:
        check_request_id(request_id)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == f"request_id is {size} bytes; at most 128 allowed"


def test_check_request_id_counts_utf8_bytes_not_characters():
    check_request_id("é" * 64)  # 64 characters, 128 bytes
    with pytest.raises(CalcError):
        check_request_id("é" * 64 + "x")  # 65 characters, 129 bytes


@pytest.mark.parametrize("request_id", ["a\nb", "\x00", "tab\there", "\r", "del\x7f", "esc\x1b[0m", "nl\u2028"])
def test_check_request_id_refuses_control_characters(request_id):
    with pytest.raises(CalcError) as info:
        check_request_id(request_id)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == "request_id has control characters"

"""The arithmetic and the checks on what may enter it. Pure functions: the
calculator server computes with them, the gateway and dispatcher validate
with them, and the unit tests pin the edge cases (±0, huge, tiny, NaN, inf).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import grpc

from calcmq.proto import calculator_pb2 as pb

MAX_REQUEST_ID_BYTES = 128  # AMQP's correlation_id holds 255 bytes; keep well inside


class CalcError(Exception):
    """A request the arithmetic refuses; carries the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _divide(a: float, b: float) -> float:
    if b == 0:
        raise CalcError(grpc.StatusCode.INVALID_ARGUMENT, "division by zero")
    return a / b


def _modulo(a: float, b: float) -> float:
    if b == 0:
        raise CalcError(grpc.StatusCode.INVALID_ARGUMENT, "modulo by zero")
    return a % b  # Python's floored modulo: the result takes the divisor's sign


def _power(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except OverflowError:
        raise CalcError(grpc.StatusCode.OUT_OF_RANGE, "result overflows a double") from None
    except ValueError:
        # math.pow refuses 0 to a negative power and a negative base to a
        # fractional power: neither has a real, finite answer.
        raise CalcError(grpc.StatusCode.INVALID_ARGUMENT, "result is not a real number") from None


OPERATIONS: dict[int, Callable[[float, float], float]] = {
    pb.SUM: operator.add,
    pb.SUBTRACT: operator.sub,
    pb.MULTIPLY: operator.mul,
    pb.DIVIDE: _divide,
    pb.POWER: _power,
    pb.MODULO: _modulo,
}

OPERATION_NAMES: dict[int, str] = {op: pb.Operation.Name(op) for op in OPERATIONS}


def check_operands(a: float, b: float) -> None:
    if not (math.isfinite(a) and math.isfinite(b)):
        raise CalcError(grpc.StatusCode.INVALID_ARGUMENT, "operands must be finite numbers")


def compute(operation: int, a: float, b: float) -> float:
    """The result, or CalcError with the status the caller should see."""
    function = OPERATIONS.get(operation)
    if function is None:
        raise CalcError(grpc.StatusCode.INVALID_ARGUMENT, f"unknown operation {operation}")
    check_operands(a, b)
    result = function(a, b)
    if not math.isfinite(result):
        raise CalcError(grpc.StatusCode.OUT_OF_RANGE, "result overflows a double")
    return result


def validate(request: pb.CalculationRequest) -> None:
    """Refuse what no worker should ever see: CalcError(INVALID_ARGUMENT)."""
    if request.operation not in OPERATIONS:
        name = "unspecified" if request.operation == pb.OPERATION_UNSPECIFIED else str(request.operation)
        raise CalcError(grpc.StatusCode.INVALID_ARGUMENT, f"unknown operation {name}")
    check_operands(request.num1, request.num2)
    check_request_id(request.request_id)


def check_request_id(request_id: str) -> None:
    size = len(request_id.encode())
    if size > MAX_REQUEST_ID_BYTES:
        raise CalcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request_id is {size} bytes; at most {MAX_REQUEST_ID_BYTES} allowed",
        )
    if not request_id.isprintable():
        raise CalcError(grpc.StatusCode.INVALID_ARGUMENT, "request_id has control characters")

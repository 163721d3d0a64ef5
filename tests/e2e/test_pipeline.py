"""The whole pipeline as real processes: gateway, dispatcher, two workers and
the calculator on a private vhost of the real broker, driven through gRPC."""

from __future__ import annotations

import math
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc
from tests.support import System, expected

pytestmark = pytest.mark.e2e

OPS = [pb.SUM, pb.SUBTRACT, pb.MULTIPLY, pb.DIVIDE, pb.POWER, pb.MODULO]
CASES = [
    (pb.SUM, 7, 3, 10),
    (pb.SUBTRACT, 7, 3, 4),
    (pb.MULTIPLY, 7, 3, 21),
    (pb.DIVIDE, 7, 2, 3.5),
    (pb.POWER, 2, 10, 1024),
    (pb.MODULO, 7, 3, 1),
    (pb.SUM, -0.0, -0.0, -0.0),
    (pb.MULTIPLY, 1e-300, 1e-300, 0.0),
    (pb.DIVIDE, 1, 3, 1 / 3),
]


def call_error(gateway: pb_grpc.GatewayStub, request: pb.CalculationRequest, timeout: float = 10) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        gateway.Calculate(request, timeout=timeout)
    return info.value


def test_every_operation_is_computed_by_a_worker(gateway: pb_grpc.GatewayStub) -> None:
    for op, a, b, want in CASES:
        result = gateway.Calculate(pb.CalculationRequest(operation=op, num1=a, num2=b), timeout=10)
        assert result.result == want and math.copysign(1, result.result) == math.copysign(1, want)
        assert result.worker in {"worker1", "worker2"}
        assert result.attempts == 1
        assert not result.HasField("error")
        uuid.UUID(result.request_id)  # assigned by the gateway


def test_the_callers_request_id_is_kept(gateway: pb_grpc.GatewayStub) -> None:
    result = gateway.Calculate(pb.CalculationRequest(operation=pb.SUM, num1=1, num2=1, request_id="mine-1"), timeout=10)
    assert result.request_id == "mine-1"


@pytest.mark.parametrize(
    ("op", "a", "b", "code", "words"),
    [
        (pb.DIVIDE, 1, 0, grpc.StatusCode.INVALID_ARGUMENT, "division by zero"),
        (pb.MODULO, 1, 0, grpc.StatusCode.INVALID_ARGUMENT, "modulo by zero"),
        (pb.OPERATION_UNSPECIFIED, 1, 2, grpc.StatusCode.INVALID_ARGUMENT, "unknown operation"),
        (99, 1, 2, grpc.StatusCode.INVALID_ARGUMENT, "unknown operation"),
        (pb.SUM, math.nan, 1, grpc.StatusCode.INVALID_ARGUMENT, "finite"),
        (pb.SUM, 1, math.inf, grpc.StatusCode.INVALID_ARGUMENT, "finite"),
        (pb.POWER, 10, 400, grpc.StatusCode.OUT_OF_RANGE, "overflow"),
        (pb.MULTIPLY, 1e308, 10, grpc.StatusCode.OUT_OF_RANGE, "overflow"),
    ],
)
def test_bad_input_gets_its_status_code(
    gateway: pb_grpc.GatewayStub, op: int, a: float, b: float, code: grpc.StatusCode, words: str
) -> None:
    error = call_error(gateway, pb.CalculationRequest(operation=op, num1=a, num2=b))  # type: ignore[arg-type]
    assert error.code() == code  # type: ignore[attr-defined]
    assert words in error.details()  # type: ignore[attr-defined]


def test_an_oversized_request_id_is_refused(gateway: pb_grpc.GatewayStub) -> None:
    error = call_error(gateway, pb.CalculationRequest(operation=pb.SUM, num1=1, num2=2, request_id="x" * 10_000))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_submit_then_get_result(gateway: pb_grpc.GatewayStub) -> None:
    ticket = gateway.Submit(pb.CalculationRequest(operation=pb.MULTIPLY, num1=6, num2=7), timeout=10)
    assert ticket.request_id
    result = gateway.GetResult(ticket, timeout=10)
    assert result.result == 42 and result.request_id == ticket.request_id
    assert gateway.GetResult(ticket, timeout=10).result == 42  # redeemable more than once


def test_a_submitted_error_comes_back_from_get_result(gateway: pb_grpc.GatewayStub) -> None:
    ticket = gateway.Submit(pb.CalculationRequest(operation=pb.DIVIDE, num1=6, num2=0), timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        gateway.GetResult(ticket, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]


def test_get_result_of_an_unknown_ticket_is_not_found(gateway: pb_grpc.GatewayStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        gateway.GetResult(pb.Ticket(request_id="never-issued"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_a_stream_of_2000_gets_every_reply_matched(gateway: pb_grpc.GatewayStub) -> None:
    requests = [
        pb.CalculationRequest(operation=OPS[i % 6], num1=i, num2=(i % 7) + 1, request_id=f"s-{i}") for i in range(2000)
    ]
    requests.append(pb.CalculationRequest(operation=pb.DIVIDE, num1=1, num2=0, request_id="s-bad"))
    by_id = {r.request_id: r for r in requests}
    seen: dict[str, pb.CalculationResult] = {}
    for result in gateway.CalculateStream(iter(requests), timeout=120):
        assert result.request_id not in seen, "answered twice"
        seen[result.request_id] = result
    assert seen.keys() == by_id.keys()
    assert seen["s-bad"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    for request_id, result in seen.items():
        if request_id != "s-bad":
            request = by_id[request_id]
            assert result.result == expected(request.operation, request.num1, request.num2)
    workers = {r.worker for r in seen.values() if r.request_id != "s-bad"}
    assert workers == {"worker1", "worker2"}, "both workers share the load"


def test_a_stream_answers_new_requests_repeats_and_bad_ids_once_each(gateway: pb_grpc.GatewayStub) -> None:
    """New ids take the stream's callback path, repeats of an id in flight the joining one."""
    repeated = f"rep-{uuid.uuid4()}"
    requests = [pb.CalculationRequest(operation=pb.MULTIPLY, num1=i, num2=2, request_id=f"n-{i}") for i in range(50)]
    requests[10:10] = [pb.CalculationRequest(operation=pb.SUM, num1=20, num2=22, request_id=repeated)] * 3
    requests.append(pb.CalculationRequest(operation=pb.SUM, num1=1, num2=1, request_id="x" * 200))
    results = list(gateway.CalculateStream(iter(requests), timeout=30))
    assert sorted(r.request_id for r in results) == sorted(r.request_id for r in requests)
    by_id = {r.request_id: r for r in results}
    assert [r.result for r in results if r.request_id == repeated] == [42, 42, 42]
    assert all(by_id[f"n-{i}"].result == 2 * i for i in range(50))
    assert by_id["x" * 200].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_200_concurrent_calls_all_answered(gateway: pb_grpc.GatewayStub) -> None:
    def one(i: int) -> tuple[int, float]:
        return i, gateway.Calculate(pb.CalculationRequest(operation=pb.SUM, num1=i, num2=i), timeout=60).result

    with ThreadPoolExecutor(max_workers=200) as pool:
        answers = dict(pool.map(one, range(200)))
    assert answers == {i: 2 * i for i in range(200)}


def test_a_repeated_request_id_in_flight_gets_one_answer_each(gateway: pb_grpc.GatewayStub) -> None:
    request = pb.CalculationRequest(operation=pb.POWER, num1=3, num2=4, request_id=f"dup-{uuid.uuid4()}")
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: gateway.Calculate(request, timeout=10), range(8)))
    assert {r.result for r in results} == {81}
    assert {r.request_id for r in results} == {request.request_id}


def test_health_reports_serving_for_both_servers(system: System) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for address, service in [
        (system.gateway_address, "calculator.Gateway"),
        (system.calculator_address, "calculator.Calculator"),
    ]:
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ("", service):
                status = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
                assert status == health_pb2.HealthCheckResponse.SERVING

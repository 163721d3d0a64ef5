"""The calculator's Compute stream and the worker's link to it, against a real
calculator_server.py process: answers by id, refusals that leave the stream
open, and a calculator that dies or hangs under operations in flight."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from calcmq.calculator_link import CalculatorLink, CalculatorUnavailable
from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc
from tests.conftest import show_logs_if_failed
from tests.support import System

pytestmark = pytest.mark.e2e


@pytest.fixture
def calculator(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    """Only the calculator: these tests need no broker."""
    system = System("amqp://unused", tmp_path, workers=0)
    system.add("calculator", "calculator_server.py")
    system.wait_serving(system.calculator_address)
    yield system
    system.stop()
    show_logs_if_failed(request, system)


def op(operation: pb.Operation, a: float, b: float, request_id: str = "r") -> pb.CalculationRequest:
    return pb.CalculationRequest(operation=operation, num1=a, num2=b, request_id=request_id)


def test_compute_answers_each_batch_by_id_and_refusals_do_not_end_the_stream(calculator: System) -> None:
    far = int((time.time() + 60) * 1000)
    requests = [
        pb.ComputeRequest(id=1, operation=pb.DIVIDE, num1=7, num2=2, deadline_ms=far),
        pb.ComputeRequest(id=2, operation=pb.DIVIDE, num1=1, num2=0, deadline_ms=far),
        pb.ComputeRequest(id=3, operation=pb.POWER, num1=10, num2=400),
        pb.ComputeRequest(id=4, operation=pb.OPERATION_UNSPECIFIED, num1=1, num2=1),
        pb.ComputeRequest(id=5, operation=pb.SUM, num1=1, num2=2, deadline_ms=int(time.time() * 1000) - 1),
        pb.ComputeRequest(id=6, operation=pb.MODULO, num1=-7, num2=3),
    ]
    batches = [pb.ComputeBatch(requests=requests[:2]), pb.ComputeBatch(requests=requests[2:])]
    with grpc.insecure_channel(calculator.calculator_address) as channel:
        replies = list(pb_grpc.CalculatorStub(channel).Compute(iter(batches), timeout=10))
    assert [[a.id for a in reply.answers] for reply in replies] == [[1, 2], [3, 4, 5, 6]]
    answers = {a.id: a for reply in replies for a in reply.answers}
    assert set(answers) == {1, 2, 3, 4, 5, 6}
    assert answers[1].result == 3.5 and not answers[1].HasField("error")
    assert answers[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[2].error.message == "division by zero"
    assert answers[3].error.code == grpc.StatusCode.OUT_OF_RANGE.value[0]
    assert answers[4].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[5].error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert answers[6].result == 2.0


async def _many(address: str, count: int) -> list[pb.ComputeResponse]:
    async with grpc.aio.insecure_channel(address) as channel:
        link = CalculatorLink(channel, hang_after=5)
        deadline = time.time() + 30
        answers = await asyncio.gather(*(link.compute(op(pb.MULTIPLY, i, 3), deadline, 5) for i in range(count)))
        link.close()
        return answers


def test_the_link_matches_concurrent_operations_to_their_answers(calculator: System) -> None:
    answers = asyncio.run(_many(calculator.calculator_address, 500))
    assert [a.result for a in answers] == [3.0 * i for i in range(500)]


async def _across_a_restart(system: System) -> tuple[list[BaseException | pb.ComputeResponse], pb.ComputeResponse]:
    async with grpc.aio.insecure_channel(
        system.calculator_address, options=[("grpc.max_reconnect_backoff_ms", 500)]
    ) as channel:
        link = CalculatorLink(channel, hang_after=5)
        deadline = time.time() + 60
        assert (await link.compute(op(pb.SUM, 1, 1), deadline, 5)).result == 2
        system.processes["calculator"].signal(signal.SIGSTOP)  # operations now wait on a frozen calculator
        in_flight = [asyncio.ensure_future(link.compute(op(pb.SUM, i, 1), deadline, 5)) for i in range(20)]
        await asyncio.sleep(0.3)
        system.processes["calculator"].kill()
        failed = await asyncio.gather(*in_flight, return_exceptions=True)
        system.add("calculator", "calculator_server.py")
        system.wait_serving(system.calculator_address)
        after = await link.compute(op(pb.SUM, 40, 2), deadline, 5)
        link.close()
        return failed, after


def test_a_calculator_killed_under_load_fails_what_waited_and_the_next_operation_reconnects(
    calculator: System,
) -> None:
    failed, after = asyncio.run(_across_a_restart(calculator))
    assert all(isinstance(f, CalculatorUnavailable) for f in failed)  # killed with all of them unanswered
    assert after.result == 42


async def _hung(system: System) -> tuple[CalculatorUnavailable, float, pb.ComputeResponse]:
    async with grpc.aio.insecure_channel(system.calculator_address) as channel:
        link = CalculatorLink(channel, hang_after=0.5)
        deadline = time.time() + 60
        await link.compute(op(pb.SUM, 1, 1), deadline, 5)
        system.processes["calculator"].signal(signal.SIGSTOP)
        started = time.monotonic()
        try:
            with pytest.raises(CalculatorUnavailable) as info:
                await link.compute(op(pb.SUM, 2, 2), deadline, 0.5)
            waited = time.monotonic() - started
        finally:
            system.processes["calculator"].signal(signal.SIGCONT)
        after = await link.compute(op(pb.SUM, 20, 22), deadline, 5)  # on a new stream
        link.close()
        return info.value, waited, after


def test_a_hung_calculator_costs_an_operation_its_timeout_and_the_stream_is_replaced(calculator: System) -> None:
    error, waited, after = asyncio.run(_hung(calculator))
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert waited < 3
    assert after.result == 42


async def _stop_under_an_idle_stream(system: System) -> tuple[int | None, float]:
    async with grpc.aio.insecure_channel(system.calculator_address) as channel:
        link = CalculatorLink(channel, hang_after=5)
        await link.compute(op(pb.SUM, 1, 1), time.time() + 60, 5)  # the stream stays open, idle
        started = time.monotonic()
        code = await asyncio.to_thread(system.processes["calculator"].stop)
        stopped_in = time.monotonic() - started
        link.close()
        return code, stopped_in


def test_a_calculator_stops_at_once_and_cleanly_under_an_idle_worker_stream(calculator: System) -> None:
    code, stopped_in = asyncio.run(_stop_under_an_idle_stream(calculator))
    assert code == 0
    assert stopped_in < 3  # not its 5 s grace period
    log = calculator.processes["calculator"].log()
    assert "Traceback" not in log and "level=ERROR" not in log


async def _tasks_across_restarts(system: System, restarts: int) -> list[int]:
    counts = []
    async with grpc.aio.insecure_channel(
        system.calculator_address, options=[("grpc.max_reconnect_backoff_ms", 500)]
    ) as channel:
        link = CalculatorLink(channel, hang_after=5)
        for _ in range(restarts):
            assert (await link.compute(op(pb.SUM, 1, 1), time.time() + 60, 5)).result == 2
            system.processes["calculator"].kill()
            await asyncio.sleep(0.3)
            counts.append(len(asyncio.all_tasks()))
            system.add("calculator", "calculator_server.py")
            system.wait_serving(system.calculator_address)
        link.close()
    return counts


def test_a_broken_stream_leaves_no_task_behind(calculator: System) -> None:
    counts = asyncio.run(_tasks_across_restarts(calculator, 3))
    assert counts == [counts[0]] * 3, f"tasks after each broken stream: {counts}"


class _OldCalculator(pb_grpc.CalculatorServicer):
    """A calculator from before Compute: the generated base answers UNIMPLEMENTED for it."""

    async def Sum(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return pb.OperationResponse(result=request.num1 + request.num2)

    async def Divide(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        if request.num2 == 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "division by zero")
        return pb.OperationResponse(result=request.num1 / request.num2)


async def _against_an_old_calculator() -> list[pb.ComputeResponse]:
    server = grpc.aio.server()
    pb_grpc.add_CalculatorServicer_to_server(_OldCalculator(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            link = CalculatorLink(channel, hang_after=5)
            deadline = time.time() + 30
            answers = [
                await link.compute(op(pb.SUM, 40, 2), deadline, 5),
                await link.compute(op(pb.DIVIDE, 1, 0), deadline, 5),
                await link.compute(op(pb.SUM, 1, 1), deadline, 5),
            ]
            link.close()
            return answers
    finally:
        await server.stop(0)


def test_a_calculator_without_compute_is_called_through_its_unary_methods(caplog: pytest.LogCaptureFixture) -> None:
    """A rolling upgrade: workers newer than the calculator still get every answer."""
    answers = asyncio.run(_against_an_old_calculator())
    assert answers[0].result == 42 and answers[2].result == 2
    assert answers[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[1].error.message == "division by zero"
    assert caplog.text.count("calling its unary methods") == 1

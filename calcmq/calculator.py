"""The Calculator gRPC service: the arithmetic behind the queues."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from calcmq import arithmetic, grpc_util
from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Calculator"].full_name


class CalculatorService(pb_grpc.CalculatorServicer):
    def __init__(self) -> None:
        self._stopping = False
        self._idle: set[asyncio.Task[Any]] = set()  # Compute streams waiting for their next batch

    async def _compute(
        self, operation: int, request: pb.OperationRequest, context: grpc.aio.ServicerContext
    ) -> pb.OperationResponse:
        try:
            result = arithmetic.compute(operation, request.num1, request.num2)
        except arithmetic.CalcError as exc:
            await context.abort(exc.code, exc.message)
        return pb.OperationResponse(result=result)

    async def Sum(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.SUM, request, context)

    async def Subtract(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.SUBTRACT, request, context)

    async def Multiply(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.MULTIPLY, request, context)

    async def Divide(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.DIVIDE, request, context)

    async def Power(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.POWER, request, context)

    async def Modulo(self, request: pb.OperationRequest, context: grpc.aio.ServicerContext) -> pb.OperationResponse:
        return await self._compute(pb.MODULO, request, context)

    async def Compute(
        self, request_iterator: AsyncIterator[pb.ComputeBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ComputeAnswers]:
        # A worker keeps its stream open for as long as both run, which would
        # hold a stopping server for all of its grace period. So `stop()` ends
        # the streams waiting for a batch at once, and a busy one after its
        # next answer; the worker retries what it sent after that elsewhere.
        task = asyncio.current_task()
        assert task is not None
        batches = aiter(request_iterator)
        try:
            while not self._stopping:
                self._idle.add(task)
                try:
                    batch = await anext(batches)
                except StopAsyncIteration:
                    return
                finally:
                    self._idle.discard(task)
                yield pb.ComputeAnswers(answers=[compute_one(request) for request in batch.requests])
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # stop() woke an idle stream: nothing is half done, so the stream
            # ends cleanly instead of with grpc's traceback for a cancelled RPC.

    def stop(self) -> None:
        """End every Compute stream (idle ones now, busy ones after their next answer)."""
        self._stopping = True
        for task in self._idle:
            task.cancel()


def compute_one(request: pb.ComputeRequest) -> pb.ComputeResponse:
    """One operation of a Compute stream; a refusal is an answer, not the stream's end."""
    if request.deadline_ms and request.deadline_ms < time.time() * 1000:
        return _refusal(request.id, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before computing")
    try:
        result = arithmetic.compute(request.operation, request.num1, request.num2)
    except arithmetic.CalcError as exc:
        return _refusal(request.id, exc.code, exc.message)
    return pb.ComputeResponse(id=request.id, result=result)


def _refusal(request_id: int, code: grpc.StatusCode, message: str) -> pb.ComputeResponse:
    return pb.ComputeResponse(id=request_id, error=pb.Error(code=code.value[0], message=message))


async def create_server(
    address: str, tls_cert: str = "", tls_key: str = ""
) -> tuple[grpc.aio.Server, int, CalculatorService]:
    """A started Calculator server on `address` (port 0: any free port)."""
    server = grpc_util.new_server()
    service = CalculatorService()
    pb_grpc.add_CalculatorServicer_to_server(service, server)
    health = grpc_util.add_health_and_reflection(server, [SERVICE_NAME])
    port = grpc_util.bind(server, address, tls_cert, tls_key)
    await server.start()
    await grpc_util.set_serving(health, [SERVICE_NAME], True)
    return server, port, service

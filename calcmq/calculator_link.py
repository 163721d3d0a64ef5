"""A worker's link to the calculator: one long-lived Compute stream shared by
all of the worker's tasks, answers matched to their operations by id.

A unary call per operation costs the worker and the calculator several times
what a share of one message each way on an open stream does (bench/results):
the operations started in one turn of the event loop travel together, as one
`ComputeBatch`. The stream is opened on first use and again after it ends; an
operation keeps its own deadline (`deadline_ms`, checked by the calculator;
a local timer here).

When the stream breaks (the calculator stopped or restarted, the network went)
every operation waiting on it fails with `CalculatorUnavailable`, and the worker
retries them through calc.retry. An operation unanswered for `hang_after`
seconds means a hung calculator: the stream is cancelled, as if it had died.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


class CalculatorUnavailable(Exception):
    """No answer came (down, hung, out of time): worth another try later."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def unary_methods(stub: pb_grpc.CalculatorStub) -> dict[int, Any]:
    """The Calculator's unary method for each operation."""
    return {
        pb.SUM: stub.Sum,
        pb.SUBTRACT: stub.Subtract,
        pb.MULTIPLY: stub.Multiply,
        pb.DIVIDE: stub.Divide,
        pb.POWER: stub.Power,
        pb.MODULO: stub.Modulo,
    }


class CalculatorLink:
    def __init__(self, channel: grpc.aio.Channel, hang_after: float) -> None:
        self._stub = pb_grpc.CalculatorStub(channel)
        self._hang_after = hang_after
        self._ids = itertools.count(1)
        self._stream: _Stream | None = None
        # A calculator from before Compute existed answers UNIMPLEMENTED: in a
        # rolling upgrade the workers may be newer than it. Then this link
        # calls the unary methods instead, until the worker restarts.
        self._unary_only = False
        self._unary = unary_methods(self._stub)

    async def compute(self, request: pb.CalculationRequest, deadline: float, timeout: float) -> pb.ComputeResponse:
        """The calculator's answer (a result or its refusal), or `CalculatorUnavailable`.

        `timeout` is the most this operation waits; at `hang_after` or more,
        running out of it condemns the stream.
        """
        if self._unary_only:
            return await self._compute_unary(request, timeout)
        stream = self._stream
        if stream is None or stream.ended:
            stream = self._stream = _Stream(self._stub)
        operation = pb.ComputeRequest(
            id=next(self._ids),
            operation=request.operation,
            num1=request.num1,
            num2=request.num2,
            deadline_ms=int(deadline * 1000),
        )
        try:
            return await stream.compute(operation, timeout, hung=timeout >= self._hang_after)
        except CalculatorUnavailable as exc:
            if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            if not self._unary_only:
                log.warning("the calculator has no Compute stream (an older version): calling its unary methods")
                self._unary_only = True
            return await self._compute_unary(request, timeout)

    async def _compute_unary(self, request: pb.CalculationRequest, timeout: float) -> pb.ComputeResponse:
        method = self._unary.get(request.operation)
        if method is None:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, f"unknown operation {request.operation}"
            return pb.ComputeResponse(error=pb.Error(code=code.value[0], message=message))
        try:
            response = await method(pb.OperationRequest(num1=request.num1, num2=request.num2), timeout=timeout)
        except grpc.aio.AioRpcError as exc:  # in the answer, as Compute gives it: the worker judges it
            return pb.ComputeResponse(error=pb.Error(code=exc.code().value[0], message=exc.details() or ""))
        return pb.ComputeResponse(result=response.result)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.cancel("the worker is stopping", level=logging.DEBUG)


class _Stream:
    """One Compute call: an outbox feeding its requests, a reader settling the answers."""

    def __init__(self, stub: pb_grpc.CalculatorStub) -> None:
        self._loop = asyncio.get_running_loop()
        self._batch: list[pb.ComputeRequest] = []
        self._outbox: asyncio.Queue[pb.ComputeBatch | None] = asyncio.Queue()  # None: no more
        self._waiting: dict[int, asyncio.Future[pb.ComputeResponse]] = {}
        self._call: grpc.aio.StreamStreamCall = stub.Compute(self._requests())
        # A context of its own: the stream outlives the request that opened
        # it, whose id must not label the stream's log lines.
        self._reader = self._loop.create_task(self._read(), context=contextvars.Context())
        self.ended = False

    async def compute(self, request: pb.ComputeRequest, timeout: float, hung: bool) -> pb.ComputeResponse:
        future: asyncio.Future[pb.ComputeResponse] = self._loop.create_future()
        self._waiting[request.id] = future
        timer = self._loop.call_later(timeout, self._time_out, request.id, hung)
        if not self._batch:
            self._loop.call_soon(self._send_batch)
        self._batch.append(request)
        try:
            return await future
        finally:
            timer.cancel()
            self._waiting.pop(request.id, None)

    def _send_batch(self) -> None:
        self._outbox.put_nowait(pb.ComputeBatch(requests=self._batch))
        self._batch = []

    async def _requests(self) -> AsyncIterator[pb.ComputeBatch]:
        while (batch := await self._outbox.get()) is not None:
            yield batch

    async def _read(self) -> None:
        try:
            async for answers in self._call:
                for answer in answers.answers:
                    future = self._waiting.get(answer.id)
                    if future is not None and not future.done():
                        future.set_result(answer)
            # The calculator is stopping (calcmq.calculator ends its streams): expected.
            error = CalculatorUnavailable(grpc.StatusCode.UNAVAILABLE, "the calculator ended the stream")
            level = logging.INFO
        except grpc.aio.AioRpcError as exc:
            error = CalculatorUnavailable(exc.code(), exc.details() or exc.code().name)
            level = logging.WARNING
        except asyncio.CancelledError:
            error = CalculatorUnavailable(grpc.StatusCode.CANCELLED, "the stream was cancelled")
            level = logging.WARNING
        if not self.ended:
            log.log(level, "the stream to the calculator ended: %s", error)
        self._end(error)

    def _time_out(self, request_id: int, hung: bool) -> None:
        future = self._waiting.get(request_id)
        if future is None or future.done():
            return
        future.set_exception(CalculatorUnavailable(grpc.StatusCode.DEADLINE_EXCEEDED, "no answer in time"))
        if hung:
            self.cancel("an operation got no answer in time: the calculator seems hung")

    def cancel(self, reason: str, level: int = logging.WARNING) -> None:
        if not self.ended:
            log.log(level, "closing the stream to the calculator: %s", reason)
            self._end(CalculatorUnavailable(grpc.StatusCode.CANCELLED, reason))
            self._call.cancel()

    def _end(self, error: CalculatorUnavailable) -> None:
        self.ended = True
        self._outbox.put_nowait(None)  # lets gRPC's task feeding the call finish
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()

"""gRPC load generator: `python -m bench.load {floor,calculate,stream} --target HOST:PORT ...`.

- floor: the Calculator server called directly (no broker), N calls outstanding.
- calculate: Gateway.Calculate, N concurrent unary calls (1: sequential latency).
- stream: one Gateway.CalculateStream with a window of N requests in flight.

Closed loop on one channel: a caller issues its next request when its last one
came back, the way a client pool would. Prints one JSON object (bench.measure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from bench.measure import Plan, Probe, Window, add_plan_flags, calculation, emit, plan_from
from calcmq.calculator_link import unary_methods
from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc

# One unary call never waits longer than this; a stuck system shows up as errors, not as a hang.
CALL_TIMEOUT = 10.0

# Sends request i and says whether the answer was right.
Call = Callable[[int], Awaitable[bool]]


def floor_call(channel: grpc.aio.Channel) -> Call:
    methods = unary_methods(pb_grpc.CalculatorStub(channel))

    async def call(i: int) -> bool:
        request = calculation(i)
        await methods[request.operation](
            pb.OperationRequest(num1=request.num1, num2=request.num2), timeout=CALL_TIMEOUT
        )
        return True

    return call


def calculate_call(channel: grpc.aio.Channel) -> Call:
    """Calculate as an ordinary caller uses it: no request id, the gateway assigns one."""
    stub = pb_grpc.GatewayStub(channel)

    async def call(i: int) -> bool:
        result = await stub.Calculate(calculation(i), timeout=CALL_TIMEOUT)
        return bool(result.request_id) and not result.HasField("error")

    return call


async def closed_loop(call: Call, window: Window, inflight: int, waiting: set[int]) -> int:
    """`inflight` callers, each issuing its next request when the last came back, until the window closes.

    `waiting` holds the callers with a request out, so a drain that times out knows how many never came back.
    """

    async def caller(first: int) -> None:
        i = first
        while not window.closed:
            started = time.perf_counter()
            waiting.add(first)
            try:
                ok = await call(i)
            except grpc.aio.AioRpcError:
                ok = False
            waiting.discard(first)
            window.completed(started, ok)
            i += inflight

    await asyncio.gather(*(caller(k) for k in range(inflight)))
    return 0


async def stream(
    channel: grpc.aio.Channel, window: Window, inflight: int, timeout: float, started: dict[str, float]
) -> int:
    """One CalculateStream with at most `inflight` unanswered requests (their start times in `started`).

    Returns how many never came back.
    """
    stub = pb_grpc.GatewayStub(channel)
    slots = asyncio.Semaphore(inflight)

    async def requests() -> AsyncIterator[pb.CalculationRequest]:
        i = 0
        while True:
            await slots.acquire()
            if window.closed:
                return
            request_id = str(uuid.uuid4())
            started[request_id] = time.perf_counter()
            yield calculation(i, request_id)
            i += 1

    call = stub.CalculateStream(requests(), timeout=timeout)
    try:
        async for result in call:
            began = started.pop(result.request_id, None)
            window.completed(began or 0.0, began is not None and not result.HasField("error"))
            slots.release()
    except grpc.aio.AioRpcError:
        pass  # the call ended early (deadline, gateway gone): what is left counts as unanswered
    return len(started)


async def control(window: Window, plan: Plan) -> None:
    """Open the window after the warm-up; close it after `duration` unless a count closes it first."""
    await asyncio.sleep(plan.warmup)
    window.open()
    deadline = time.monotonic() + (plan.duration or 0.0)
    while not window.closed and time.monotonic() < deadline:
        if plan.rss_every:
            window.sample_rss()
        await asyncio.sleep(min(plan.rss_every or 0.05, max(deadline - time.monotonic(), 0.0)))
    window.close()


async def drive(mode: str, target: str, plan: Plan) -> dict[str, Any]:
    window = Window(Probe(plan.watch), count=plan.count)
    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        waiting: set[int] = set()  # callers with a request out
        started: dict[str, float] = {}  # stream requests out
        if mode == "stream":
            load = stream(channel, window, plan.inflight, plan.time_limit + 5, started)
        else:
            call = floor_call(channel) if mode == "floor" else calculate_call(channel)
            load = closed_loop(call, window, plan.inflight, waiting)
        controller = asyncio.create_task(control(window, plan))
        running = asyncio.create_task(load)
        unanswered = 0
        try:
            unanswered = await asyncio.wait_for(asyncio.shield(running), plan.time_limit)
        except TimeoutError:
            unanswered = len(waiting) + len(started)  # still out after the drain
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        finally:
            controller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await controller
        window.close()
    return window.result(unanswered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["floor", "calculate", "stream"])
    parser.add_argument("--target", required=True, help="HOST:PORT of the calculator (floor) or the gateway")
    add_plan_flags(parser)
    args = parser.parse_args(argv)
    emit(asyncio.run(drive(args.mode, args.target, plan_from(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

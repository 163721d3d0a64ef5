"""The command-line client: `python calculator_client.py --help`.

Results go to stdout alone (so scripts can use them); progress, errors and
everything else to stderr. An expected failure is one line naming the gRPC
status and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from calcmq import config
from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc

OPERATIONS = {
    "sum": pb.SUM,
    "subtract": pb.SUBTRACT,
    "multiply": pb.MULTIPLY,
    "divide": pb.DIVIDE,
    "power": pb.POWER,
    "modulo": pb.MODULO,
}
ALIASES = {"add": "sum", "sub": "subtract", "mul": "multiply", "div": "divide", "pow": "power", "mod": "modulo"}
DEMO = [("sum", 7, 3), ("subtract", 7, 3), ("multiply", 7, 3), ("divide", 7, 2), ("power", 2, 10), ("modulo", 7, 3)]

EXAMPLES = """examples:
  calculator_client.py                       a demo: one request per operation
  calculator_client.py sum 2 3               prints 5
  calculator_client.py div 1 0               error: INVALID_ARGUMENT: division by zero
  calculator_client.py pow 2 0.5 --json      one JSON object
  calculator_client.py submit mul 6 7        prints a ticket id
  calculator_client.py result TICKET         prints that request's result
  calculator_client.py bench -n 2000 -c 64   throughput and latency through the gateway
"""

err = Console(stderr=True)


class CliError(Exception):
    """One line for stderr, then exit 1."""


def format_number(value: float) -> str:
    """Integers without a trailing .0; everything else as Python's shortest repr."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return ("-" if math.copysign(1, value) < 0 else "") + str(abs(int(value)))
    return repr(value)


def _operation(name: str) -> int:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in OPERATIONS:
        raise argparse.ArgumentTypeError(f"unknown operation {name!r}")
    return OPERATIONS[key]


def _status_error(exc: grpc.RpcError, address: str) -> CliError:
    code = exc.code()  # type: ignore[attr-defined]
    details = exc.details() or ""  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower() or "connection" in details.lower()):
        details = f"cannot reach the gateway at {address}"
    return CliError(f"{code.name}: {details}")


def _result_json(result: pb.CalculationResult) -> dict[str, Any]:
    return {
        "request_id": result.request_id,
        "result": result.result,
        "worker": result.worker,
        "attempts": result.attempts,
    }


def _channel(args: argparse.Namespace) -> grpc.Channel:
    return grpc.insecure_channel(args.settings.gateway_address)


def cmd_calculate(args: argparse.Namespace) -> None:
    request = pb.CalculationRequest(operation=args.op, num1=args.a, num2=args.b, request_id=args.request_id or "")
    with _channel(args) as channel:
        result = pb_grpc.GatewayStub(channel).Calculate(request, timeout=args.timeout)
    print(json.dumps(_result_json(result)) if args.json else format_number(result.result))


def cmd_submit(args: argparse.Namespace) -> None:
    request = pb.CalculationRequest(operation=args.op, num1=args.a, num2=args.b, request_id=args.request_id or "")
    with _channel(args) as channel:
        ticket = pb_grpc.GatewayStub(channel).Submit(request, timeout=args.timeout)
    print(json.dumps({"request_id": ticket.request_id}) if args.json else ticket.request_id)


def cmd_result(args: argparse.Namespace) -> None:
    with _channel(args) as channel:
        result = pb_grpc.GatewayStub(channel).GetResult(pb.Ticket(request_id=args.ticket), timeout=args.timeout)
    print(json.dumps(_result_json(result)) if args.json else format_number(result.result))


def cmd_demo(args: argparse.Namespace) -> None:
    rows = []
    with _channel(args) as channel:
        stub = pb_grpc.GatewayStub(channel)
        for name, a, b in DEMO:
            request = pb.CalculationRequest(operation=OPERATIONS[name], num1=a, num2=b)
            result = stub.Calculate(request, timeout=args.timeout)
            rows.append((name, a, b, result))
    if args.json:
        print(json.dumps([{"operation": n, "a": a, "b": b, **_result_json(r)} for n, a, b, r in rows]))
        return
    for name, a, b, result in rows:
        answer = format_number(result.result)
        print(f"{name:>8} {a:>2} {b:>2} = {answer:<5} worker={result.worker} attempts={result.attempts}")


def cmd_bench(args: argparse.Namespace) -> None:
    latencies, errors, elapsed = asyncio.run(_bench(args.settings.gateway_address, args.n, args.c, args.timeout))
    ok = len(latencies)
    figures = {
        "requests": args.n,
        "concurrency": args.c,
        "ok": ok,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "throughput_rps": round(args.n / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 2),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"{figures['requests']} requests, {args.c} in flight: {figures['throughput_rps']} req/s, "
            f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, errors {errors}"
        )
    if errors:
        raise CliError(f"{errors} of {args.n} requests failed")


def _percentile(values: list[float], pct: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


async def _bench(address: str, total: int, inflight: int, timeout: float) -> tuple[list[float], int, float]:
    """`total` requests through one CalculateStream, at most `inflight` unanswered."""
    latencies: list[float] = []
    started: dict[str, float] = {}
    window = asyncio.Semaphore(inflight)
    errors = 0

    async def requests() -> AsyncIterator[pb.CalculationRequest]:
        for i in range(total):
            await window.acquire()
            request_id = str(uuid.uuid4())
            started[request_id] = time.perf_counter()
            yield pb.CalculationRequest(operation=OPERATIONS[DEMO[i % 6][0]], num1=i, num2=3, request_id=request_id)

    with Progress(
        TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err, transient=True
    ) as progress:
        bar = progress.add_task("bench", total=total)
        begin = time.perf_counter()
        async with grpc.aio.insecure_channel(address) as channel:
            call = pb_grpc.GatewayStub(channel).CalculateStream(requests(), timeout=timeout + total / 100)
            async for result in call:
                latencies.append(time.perf_counter() - started.pop(result.request_id, begin))
                if result.HasField("error"):
                    errors += 1
                window.release()
                progress.advance(bar)
        elapsed = time.perf_counter() - begin
    return latencies, errors + len(started), elapsed


# argparse takes "-1e3" or "-inf" for an option unless told they are numbers
# (Python 3.11 only knows -3 and -1.5); operands are the one place they occur.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


def _numbers_are_not_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser._negative_number_matcher = _NEGATIVE_NUMBER  # type: ignore[attr-defined]
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calculator_client.py",
        description="Call the calc-mq gateway. With no command, runs a short demo.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="seconds to wait (default 10)")
    config.add_flags(common, ["gateway_address"], suppress=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    config.add_flags(parser, ["gateway_address"])
    parser.set_defaults(func=cmd_demo)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, op in OPERATIONS.items():
        aliases = [alias for alias, target in ALIASES.items() if target == name]
        sub = commands.add_parser(name, aliases=aliases, parents=[common], help=f"{name} A B, print the result")
        _numbers_are_not_options(sub)
        sub.set_defaults(func=cmd_calculate, op=op)
        _operands(sub)
    sub = _numbers_are_not_options(
        commands.add_parser("submit", parents=[common], help="submit OP A B, print a ticket id")
    )
    sub.add_argument("op", type=_operation, metavar="OP")
    _operands(sub)
    sub.set_defaults(func=cmd_submit)
    sub = commands.add_parser("result", parents=[common], help="result TICKET, wait for and print its result")
    sub.add_argument("ticket")
    sub.set_defaults(func=cmd_result)
    sub = commands.add_parser("bench", parents=[common], help="bench -n N -c C, throughput and latency")
    sub.add_argument("-n", type=int, default=2000, help="requests (default 2000)")
    sub.add_argument("-c", type=int, default=64, help="requests in flight (default 64)")
    sub.set_defaults(func=cmd_bench)
    return parser


def _operands(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("a", type=float, metavar="A")
    sub.add_argument("b", type=float, metavar="B")
    sub.add_argument("--request-id", default="", help="idempotency key (default: a new UUID)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = ["gateway_address"]
    args.settings = config.from_args(args, names)
    try:
        args.func(args)
    except grpc.RpcError as exc:
        return _fail(_status_error(exc, args.settings.gateway_address), args)
    except CliError as exc:
        return _fail(exc, args)
    except KeyboardInterrupt:
        return 130
    return 0


def _fail(exc: CliError, args: argparse.Namespace) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1

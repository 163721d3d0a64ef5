# PYTHON_ARGCOMPLETE_OK  (argcomplete's global completion looks for this marker: `python -m calcmq.client <TAB>`)
"""The command-line client: `python calculator_client.py --help`.

Results go to stdout alone (so scripts can use them); progress, errors and
everything else to stderr. An expected failure is one line naming the gRPC
status and a non-zero exit, never a traceback; with --json it is also one
JSON object on stdout, so a script reading stdout learns why it got no result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from calcmq import config
from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from calcmq.stats import BrokerStats

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
STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
# The settings every command uses to reach the gateway; `stats` adds the broker's.
GATEWAY_SETTINGS = ["gateway_address", "auth_token", "tls_ca"]
BROKER_SETTINGS = ["rabbitmq_url", "rabbitmq_ca", "gateway_id"]

EXAMPLES = """examples:
  calculator_client.py                       a demo: one request per operation
  calculator_client.py sum 2 3               prints 5
  calculator_client.py div 1 0               error: INVALID_ARGUMENT: division by zero
  calculator_client.py pow 2 0.5 --json      one JSON object
  calculator_client.py submit mul 6 7        prints a ticket id
  calculator_client.py result TICKET         prints that request's result
  calculator_client.py bench -n 2000 -c 64   throughput and latency through the gateway
  calculator_client.py batch ops.txt         one "OP A B" per line in, one result per line out, in order
  calculator_client.py stats                 queue depths and the gateway's health
  AUTH_TOKEN=s3cret TLS_CA=ca.pem calculator_client.py sum 2 3
                                             a gateway that wants a bearer token, over TLS

shell completion (bash, zsh; needs the argcomplete package): run activate-global-python-argcomplete
once, then `python -m calcmq.client <TAB>` completes commands and flags.
"""

BATCH_HELP = """input: one "OP A B" per line, OP a name or alias (sum add subtract sub multiply mul
divide div power pow modulo mod); blank lines and lines starting with # are skipped.
output: one line per request line, in input order: the result, or "error: CODE: message".
A malformed line is reported on stderr with its line number and counts as a failure.
Exit 0 if every line succeeded, else 1.

examples:
  calculator_client.py batch ops.txt
  printf 'sum 1 2\\ndiv 1 0\\n' | calculator_client.py batch -
  calculator_client.py batch ops.txt --json -c 128   JSON Lines: {"line", "op", "a", "b", "result" or "error"}
"""

STATS_HELP = """Shows ready and unacked messages, consumers and publish/deliver rates per calc.* queue
from the broker's management HTTP API (port 15672, or 15671 for amqps) when it answers;
otherwise ready messages and consumers from passive declares over AMQP, for the four
shared queues and the reply queue of --gateway-id. Plus the gateway's gRPC health.
Exit 1 with one error line when the broker cannot be reached.

examples:
  calculator_client.py stats
  calculator_client.py stats --gateway-id gw-1 --amqp-only
  calculator_client.py stats --json
"""

err = Console(stderr=True)
out = Console(highlight=False)


class CliError(Exception):
    """One line for stderr (and with --json an error object on stdout), then exit 1.

    `code` is a gRPC status name, None for a summary of failures; `reported`
    means the output already shows the failure, so no JSON object is added.
    """

    def __init__(self, code: str | None, message: str, *, reported: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reported = reported

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class UsageError(SystemExit):
    """argparse's usage error (exit 2), carrying its message for --json."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error keeps its message (sub-parsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise UsageError(message)


def format_number(value: float) -> str:
    """Integers without a trailing .0; everything else as Python's shortest repr."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
        return ("-" if math.copysign(1, value) < 0 else "") + str(abs(int(value)))
    return repr(value)


def operation_name(name: str) -> str | None:
    """The canonical operation for a name or alias, in any case; None if unknown."""
    key = ALIASES.get(name.lower(), name.lower())
    return key if key in OPERATIONS else None


def _operation(name: str) -> int:
    key = operation_name(name)
    if key is None:
        raise argparse.ArgumentTypeError(f"unknown operation {name!r}")
    return OPERATIONS[key]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _status_error(exc: grpc.RpcError, address: str) -> CliError:
    code = exc.code()  # type: ignore[attr-defined]
    details = exc.details() or ""  # type: ignore[attr-defined]
    lowered = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE and ("ssl" in lowered or "handshake" in lowered):
        details = f"TLS handshake with the gateway at {address} failed (does TLS_CA hold the CA of its certificate?)"
    elif code == grpc.StatusCode.UNAVAILABLE and ("connect" in lowered or "connection" in lowered):
        details = f"cannot reach the gateway at {address}"
    return CliError(code.name, details)


def _result_json(result: pb.CalculationResult) -> dict[str, Any]:
    return {
        "request_id": result.request_id,
        "result": result.result,
        "worker": result.worker,
        "attempts": result.attempts,
    }


def _error_json(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# -- reaching the gateway: address, TLS, bearer token ------------------------------------------


@dataclass(frozen=True)
class GatewayTarget:
    """How to call the gateway: its address, the CA to trust (None: plaintext),
    and the metadata every call carries (the bearer token, when there is one)."""

    address: str
    root_certificates: bytes | None = None
    metadata: tuple[tuple[str, str], ...] = ()

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.root_certificates is None:
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.root_certificates)

    def channel(self) -> grpc.Channel:
        credentials = self.credentials()
        if credentials is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, credentials)

    def aio_channel(self) -> grpc.aio.Channel:
        credentials = self.credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(self.address)
        return grpc.aio.secure_channel(self.address, credentials)


def gateway_target(settings: config.Settings) -> GatewayTarget:
    """GATEWAY_ADDRESS, TLS_CA and AUTH_TOKEN as one thing every command uses."""
    token = settings.auth_token.strip()
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return GatewayTarget(settings.gateway_address, _read_ca(settings.tls_ca), metadata)


def _read_ca(path: str) -> bytes | None:
    """The CA file's bytes, checked now: gRPC would only say "handshake failed" later."""
    if not path:
        return None
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise CliError("INVALID_ARGUMENT", f"cannot read TLS_CA {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise CliError("INVALID_ARGUMENT", f"TLS_CA {path} holds no PEM certificate")
    return data


# -- one request at a time --------------------------------------------------------------------


def _request(args: argparse.Namespace) -> pb.CalculationRequest:
    return pb.CalculationRequest(operation=args.op, num1=args.a, num2=args.b, request_id=args.request_id or "")


def cmd_calculate(args: argparse.Namespace) -> None:
    gateway: GatewayTarget = args.gateway
    with gateway.channel() as channel:
        stub = pb_grpc.GatewayStub(channel)
        result = stub.Calculate(_request(args), timeout=args.timeout, metadata=gateway.metadata)
    print(json.dumps(_result_json(result)) if args.json else format_number(result.result))


def cmd_submit(args: argparse.Namespace) -> None:
    gateway: GatewayTarget = args.gateway
    with gateway.channel() as channel:
        ticket = pb_grpc.GatewayStub(channel).Submit(_request(args), timeout=args.timeout, metadata=gateway.metadata)
    print(json.dumps({"request_id": ticket.request_id}) if args.json else ticket.request_id)


def cmd_result(args: argparse.Namespace) -> None:
    gateway: GatewayTarget = args.gateway
    with gateway.channel() as channel:
        stub = pb_grpc.GatewayStub(channel)
        result = stub.GetResult(pb.Ticket(request_id=args.ticket), timeout=args.timeout, metadata=gateway.metadata)
    print(json.dumps(_result_json(result)) if args.json else format_number(result.result))


def cmd_demo(args: argparse.Namespace) -> None:
    gateway: GatewayTarget = args.gateway
    rows = []
    with gateway.channel() as channel:
        stub = pb_grpc.GatewayStub(channel)
        for name, a, b in DEMO:
            request = pb.CalculationRequest(operation=OPERATIONS[name], num1=a, num2=b)
            result = stub.Calculate(request, timeout=args.timeout, metadata=gateway.metadata)
            rows.append((name, a, b, result))
    if args.json:
        print(json.dumps([{"operation": n, "a": a, "b": b, **_result_json(r)} for n, a, b, r in rows]))
        return
    for name, a, b, result in rows:
        answer = format_number(result.result)
        print(f"{name:>8} {a:>2} {b:>2} = {answer:<5} worker={result.worker} attempts={result.attempts}")


# -- many requests on one stream: bench and batch ---------------------------------------------

# A result and how long it took, in seconds, keyed by request id.
Answers = dict[str, tuple[pb.CalculationResult, float]]


@contextmanager
def _progress(label: str, total: int) -> Iterator[tuple[Progress, TaskID]]:
    """A progress bar on stderr that disappears when done: stdout stays results only.
    No bar when stderr is not a terminal: a log file gets no stray blank line."""
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        yield progress, progress.add_task(label, total=total)


async def _stream(
    gateway: GatewayTarget, requests: Sequence[pb.CalculationRequest], inflight: int, timeout: float, label: str
) -> tuple[Answers, float]:
    """Every request through one CalculateStream, at most `inflight` unanswered.
    Returns the answers by request id and the seconds it all took."""
    answers: Answers = {}
    started: dict[str, float] = {}
    window = asyncio.Semaphore(inflight)

    async def send() -> AsyncIterator[pb.CalculationRequest]:
        for request in requests:
            await window.acquire()
            started[request.request_id] = time.perf_counter()
            yield request

    with _progress(label, len(requests)) as (progress, bar):
        begin = time.perf_counter()
        async with gateway.aio_channel() as channel:
            stub = pb_grpc.GatewayStub(channel)
            call = stub.CalculateStream(send(), timeout=timeout + len(requests) / 100, metadata=gateway.metadata)
            try:
                async for result in call:
                    answers[result.request_id] = (result, time.perf_counter() - started.get(result.request_id, begin))
                    window.release()
                    progress.advance(bar)
            except grpc.aio.AioRpcError as exc:
                raise await _status_behind_failed_write(stub, gateway, exc, timeout) from None
        return answers, time.perf_counter() - begin


async def _status_behind_failed_write(
    stub: pb_grpc.GatewayStub, gateway: GatewayTarget, exc: grpc.aio.AioRpcError, timeout: float
) -> grpc.aio.AioRpcError:
    """grpc.aio reports INTERNAL "Internal error from Core" instead of the server's
    status when the server ends a stream while the client is still writing
    (grpc/grpc#36066), as a gateway refusing the token does at once. One cheap
    unary call on the same channel tells the status a person needs to see."""
    if exc.code() != grpc.StatusCode.INTERNAL or "SendMessageOperation" not in (exc.debug_error_string() or ""):
        return exc
    probe = pb.Ticket(request_id="calc-mq-client-status-probe")
    try:
        await stub.GetResult(probe, timeout=min(timeout, 5.0), metadata=gateway.metadata)
    except grpc.aio.AioRpcError as answer:
        refused = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE)
        if answer.code() in refused:
            return answer
    return exc


def cmd_bench(args: argparse.Namespace) -> None:
    requests = [
        pb.CalculationRequest(operation=OPERATIONS[DEMO[i % 6][0]], num1=i, num2=3, request_id=str(uuid.uuid4()))
        for i in range(args.n)
    ]
    answers, elapsed = asyncio.run(_stream(args.gateway, requests, args.c, args.timeout, "bench"))
    latencies = [latency for _, latency in answers.values()]
    errors = sum(result.HasField("error") for result, _ in answers.values()) + args.n - len(answers)
    figures = {
        "requests": args.n,
        "concurrency": args.c,
        "ok": args.n - errors,
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
        raise CliError(None, f"{errors} of {args.n} requests failed", reported=True)


def _percentile(values: list[float], pct: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


@dataclass(frozen=True)
class BatchLine:
    """One request line of a batch file, or why it is not one (`problem`)."""

    number: int  # 1-based, as an editor shows it
    op: str = ""
    a: float = 0.0
    b: float = 0.0
    problem: str = ""


def parse_batch_line(number: int, text: str) -> BatchLine | None:
    """`OP A B`, or None for a blank line or a # comment."""
    fields = text.split()
    if not fields or fields[0].startswith("#"):
        return None
    if len(fields) != 3:
        return BatchLine(number, problem=f'expected "OP A B", got {text.strip()!r}')
    op = operation_name(fields[0])
    if op is None:
        return BatchLine(number, problem=f"unknown operation {fields[0]!r}")
    numbers = []
    for field in fields[1:]:
        try:
            numbers.append(float(field))
        except ValueError:
            return BatchLine(number, problem=f"{field!r} is not a number")
    return BatchLine(number, op, numbers[0], numbers[1])


def parse_batch(lines: Iterable[str]) -> list[BatchLine]:
    """The request lines of a batch file, malformed ones included (they keep their place)."""
    parsed = (parse_batch_line(number, text) for number, text in enumerate(lines, start=1))
    return [line for line in parsed if line is not None]


def _read_batch(path: str) -> list[str]:
    """The file (or stdin for `-`) as lines; undecodable bytes become U+FFFD and
    so a malformed line, not a crash."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise CliError("INVALID_ARGUMENT", f"cannot read {path}: {exc.strerror or exc}") from None
    return data.decode("utf-8", errors="replace").splitlines()


def _batch_outcome(line: BatchLine, result: pb.CalculationResult | None) -> dict[str, Any]:
    """One output record: the request and its result, or its error."""
    record: dict[str, Any] = {"line": line.number, "op": line.op or None, "a": None, "b": None}
    if line.problem:
        return record | _error_json("INVALID_ARGUMENT", f"line {line.number}: {line.problem}")
    record.update(a=line.a, b=line.b)
    if result is None:
        record.update(_error_json("UNKNOWN", "no answer on the stream"))
    elif result.HasField("error"):
        record.update(_error_json(STATUS_NAMES.get(result.error.code, "UNKNOWN"), result.error.message))
    else:
        record["result"] = result.result
    return record


def _batch_text(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"error: {record['error']['code']}: {record['error']['message']}"
    return format_number(record["result"])


def cmd_batch(args: argparse.Namespace) -> None:
    lines = parse_batch(_read_batch(args.file))
    for line in lines:
        if line.problem:
            print(f"error: line {line.number}: {line.problem}", file=sys.stderr)
    good = [line for line in lines if not line.problem]
    ids = {line.number: str(uuid.uuid4()) for line in good}
    requests = [
        pb.CalculationRequest(operation=OPERATIONS[x.op], num1=x.a, num2=x.b, request_id=ids[x.number]) for x in good
    ]
    answers, _ = asyncio.run(_stream(args.gateway, requests, args.c, args.timeout, "batch")) if requests else ({}, 0)
    results = {number: answers[rid][0] for number, rid in ids.items() if rid in answers}
    records = [_batch_outcome(line, results.get(line.number)) for line in lines]
    for record in records:
        print(json.dumps(record) if args.json else _batch_text(record))
    failed = sum("error" in record for record in records)
    if failed:
        raise CliError(None, f"{failed} of {len(records)} lines failed", reported=True)


# -- stats --------------------------------------------------------------------------------------


def cmd_stats(args: argparse.Namespace) -> None:
    # Imported here: pika and the AMQP code are needed by this command alone.
    from calcmq import stats

    timeout = min(args.timeout, 5.0)
    broker, health = asyncio.run(_stats(args, timeout))
    unreachable = CliError("UNAVAILABLE", f"cannot reach the broker at {broker.url} ({broker.error})")
    if broker.error and health == stats.UNREACHABLE:
        raise unreachable
    _show_stats(args, broker, health, unreachable)
    if broker.error:  # the output says so; stderr gets the usual one line
        unreachable.reported = True
        raise unreachable


def _show_stats(args: argparse.Namespace, broker: BrokerStats, health: str, unreachable: CliError) -> None:
    """The table (or JSON); with the broker down, what the gateway's health tells."""
    from calcmq import stats

    gateway: GatewayTarget = args.gateway
    if args.json:
        failure = _error_json("UNAVAILABLE", unreachable.message) if broker.error else {}
        print(json.dumps(failure | stats.as_json(broker, gateway.address, health)))
    elif broker.error:
        print("\n".join([*stats.broker_down_lines(broker, health), stats.gateway_line(gateway.address, health)]))
    else:
        print(stats.broker_line(broker))
        out.print(stats.table(broker))
        print(stats.gateway_line(gateway.address, health))


async def _stats(args: argparse.Namespace, timeout: float) -> tuple[BrokerStats, str]:
    """The broker's figures and the gateway's health, asked at the same time."""
    from calcmq import stats

    settings: config.Settings = args.settings
    gateway: GatewayTarget = args.gateway
    async with gateway.aio_channel() as channel:
        return await asyncio.gather(
            stats.collect_broker(
                settings.rabbitmq_url,
                gateway_id=settings.gateway_id,
                timeout=timeout,
                ca_file=settings.rabbitmq_ca,
                use_management=not args.amqp_only,
            ),
            stats.gateway_health(channel, gateway.metadata, timeout),
        )


# -- the parser -----------------------------------------------------------------------------------

# argparse takes "-1e3" or "-inf" for an option unless told they are numbers
# (Python 3.11 only knows -3 and -1.5); operands are the one place they occur.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


def _numbers_are_not_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser._negative_number_matcher = _NEGATIVE_NUMBER  # type: ignore[attr-defined]
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="calculator_client.py",
        description="Call the calc-mq gateway. With no command, runs a short demo.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = _common(GATEWAY_SETTINGS)
    parser.add_argument("--json", action="store_true", help="print JSON (errors too: {'error': {code, message}})")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    config.add_flags(parser, GATEWAY_SETTINGS)
    parser.set_defaults(func=cmd_demo)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_operations(commands, common)
    _add_submit_and_result(commands, common)
    _add_bench_and_batch(commands, common)
    _add_stats(commands, _common([*GATEWAY_SETTINGS, *BROKER_SETTINGS]))
    return parser


def _common(settings: list[str]) -> _Parser:
    """The flags every command takes after its name too; absent ones are left out
    of the namespace so they do not reset a value given before the command."""
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    common.add_argument("--timeout", type=float, default=argparse.SUPPRESS, help="seconds to wait (default 10)")
    config.add_flags(common, settings, suppress=True)
    return common


def _add_operations(commands: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
    for name, op in OPERATIONS.items():
        aliases = [alias for alias, target in ALIASES.items() if target == name]
        sub = commands.add_parser(name, aliases=aliases, parents=[common], help=f"{name} A B, print the result")
        _numbers_are_not_options(sub)
        sub.set_defaults(func=cmd_calculate, op=op)
        _operands(sub)


def _add_submit_and_result(commands: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
    sub = _numbers_are_not_options(
        commands.add_parser("submit", parents=[common], help="submit OP A B, print a ticket id")
    )
    sub.add_argument("op", type=_operation, metavar="OP")
    _operands(sub)
    sub.set_defaults(func=cmd_submit)
    sub = commands.add_parser("result", parents=[common], help="result TICKET, wait for and print its result")
    sub.add_argument("ticket")
    sub.set_defaults(func=cmd_result)


def _add_bench_and_batch(commands: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
    sub = commands.add_parser("bench", parents=[common], help="bench -n N -c C, throughput and latency")
    sub.add_argument("-n", type=_positive_int, default=2000, help="requests (default 2000)")
    sub.add_argument("-c", type=_positive_int, default=64, help="requests in flight (default 64)")
    sub.set_defaults(func=cmd_bench)
    sub = commands.add_parser(
        "batch",
        parents=[common],
        help="batch FILE, one OP A B per line; results in input order",
        description="Send every request of FILE through one stream, print the results in input order.",
        epilog=BATCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("file", metavar="FILE", help="the requests, one per line; - for stdin")
    sub.add_argument("-c", type=_positive_int, default=64, help="requests in flight (default 64)")
    sub.set_defaults(func=cmd_batch)


def _add_stats(commands: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
    sub = commands.add_parser(
        "stats",
        parents=[common],
        help="queue depths and rates, and the gateway's health",
        description="Queue depths and rates of calc-mq's queues, and the gateway's health.",
        epilog=STATS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("--amqp-only", action="store_true", help="skip the management HTTP API: passive declares only")
    sub.set_defaults(func=cmd_stats)


def _operands(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("a", type=float, metavar="A")
    sub.add_argument("b", type=float, metavar="B")
    sub.add_argument("--request-id", default="", help="idempotency key (default: a new UUID)")


# -- running ------------------------------------------------------------------------------------


def _complete(parser: argparse.ArgumentParser) -> None:
    """Shell completion when argcomplete is installed; it exits if the shell is asking."""
    try:
        import argcomplete  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    _complete(parser)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        if "--json" in argv:
            print(json.dumps(_error_json("INVALID_ARGUMENT", exc.message)))
        return 2
    try:
        args.settings = config.from_args(args, [*GATEWAY_SETTINGS, *BROKER_SETTINGS])
        args.gateway = gateway_target(args.settings)
        args.func(args)
    except SystemExit as exc:  # a setting's value refused by config, message already "error: ..."
        return _settings_error(exc, args)
    except grpc.RpcError as exc:
        return _fail(_status_error(exc, args.settings.gateway_address), args)
    except CliError as exc:
        return _fail(exc, args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `batch ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


def _settings_error(exc: SystemExit, args: argparse.Namespace) -> int:
    if not isinstance(exc.code, str):
        raise exc
    print(exc.code, file=sys.stderr)
    if args.json:
        print(json.dumps(_error_json("INVALID_ARGUMENT", exc.code.removeprefix("error: "))))
    return 1


def _fail(exc: CliError, args: argparse.Namespace) -> int:
    print(f"error: {exc}", file=sys.stderr)
    if args.json and not exc.reported:
        print(json.dumps(_error_json(exc.code or "UNKNOWN", exc.message)))
    return 1


if __name__ == "__main__":
    sys.exit(main())

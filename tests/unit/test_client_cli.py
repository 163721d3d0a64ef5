"""calcmq.client and calcmq.stats: number formatting, the argument parser, the
batch-file parser, --json errors, auth and TLS (against an in-process gateway
that records what it is sent), the stats sources, and failing cleanly when
nothing can be reached."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from rich.console import Console

from calcmq import client, config, stats
from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc
from tests.certs import Certs, make_certs
from tests.support import ROOT, free_port

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_settings_from_the_shell(monkeypatch):
    for name in ("GATEWAY_ADDRESS", "AUTH_TOKEN", "TLS_CA", "RABBITMQ_URL", "RABBITMQ_CA", "GATEWAY_ID"):
        monkeypatch.delenv(name, raising=False)


def parse(*argv: str) -> argparse.Namespace:
    return client.build_parser().parse_args(list(argv))


# -- format_number -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5.0, "5"),
        (-7.0, "-7"),
        (0.0, "0"),
        (1024.0, "1024"),
        (3.5, "3.5"),
        (-0.25, "-0.25"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e300, "1e+300"),
        (-1e300, "-1e+300"),
        (5e-324, "5e-324"),
        (2.0**53 - 1, "9007199254740991"),
        (2.0**53, "9007199254740992.0"),
        (math.inf, "inf"),
        (math.nan, "nan"),
    ],
)
def test_format_number_drops_the_trailing_zero_of_integers_only(value, text):
    assert client.format_number(value) == text


def test_format_number_keeps_huge_integral_floats_as_float_repr():
    assert client.format_number(1e300) == repr(1e300)
    assert "e" in client.format_number(1e300)


def test_format_number_output_parses_back_to_the_same_value():
    for value in [5.0, 3.5, 1e300, 5e-324, 0.1 + 0.2, -123456.789, 2.0**60]:
        assert float(client.format_number(value)) == value


def test_format_number_keeps_the_sign_of_negative_zero():
    assert client.format_number(-0.0) == "-0"


# -- the parser -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "operation"),
    [
        ("sum", pb.SUM),
        ("add", pb.SUM),
        ("subtract", pb.SUBTRACT),
        ("sub", pb.SUBTRACT),
        ("multiply", pb.MULTIPLY),
        ("mul", pb.MULTIPLY),
        ("divide", pb.DIVIDE),
        ("div", pb.DIVIDE),
        ("power", pb.POWER),
        ("pow", pb.POWER),
        ("modulo", pb.MODULO),
        ("mod", pb.MODULO),
    ],
)
def test_each_command_and_alias_maps_to_its_operation(command, operation):
    args = parse(command, "6", "3")
    assert args.op == operation
    assert args.func is client.cmd_calculate
    assert (args.a, args.b) == (6.0, 3.0)


@pytest.mark.parametrize(("name", "operation"), [("mul", pb.MULTIPLY), ("POWER", pb.POWER), ("Mod", pb.MODULO)])
def test_submit_takes_an_operation_name_or_alias_in_any_case(name, operation):
    args = parse("submit", name, "6", "7")
    assert args.op == operation
    assert args.func is client.cmd_submit


def test_submit_refuses_an_unknown_operation(capsys):
    with pytest.raises(SystemExit) as info:
        parse("submit", "frobnicate", "1", "2")
    assert info.value.code == 2
    assert "unknown operation 'frobnicate'" in capsys.readouterr().err


def test_no_command_runs_the_demo():
    assert parse().func is client.cmd_demo


def test_result_takes_a_ticket():
    args = parse("result", "abc-123")
    assert args.ticket == "abc-123"
    assert args.func is client.cmd_result


def test_json_is_off_by_default():
    assert parse("sum", "1", "2").json is False


@pytest.mark.parametrize(
    "argv", [["--json", "sum", "1", "2"], ["sum", "1", "2", "--json"], ["sum", "--json", "1", "2"]]
)
def test_json_is_honoured_before_or_after_the_command(argv):
    assert parse(*argv).json is True


@pytest.mark.parametrize("argv", [["--timeout", "3", "sum", "1", "2"], ["sum", "1", "2", "--timeout", "3"]])
def test_timeout_is_honoured_before_or_after_the_command(argv):
    assert parse(*argv).timeout == 3.0


def test_timeout_defaults_to_ten_seconds():
    assert parse("sum", "1", "2").timeout == 10.0


@pytest.mark.parametrize(
    "argv", [["--gateway-address", "gw:1", "sum", "1", "2"], ["sum", "1", "2", "--gateway-address", "gw:1"]]
)
def test_gateway_address_is_honoured_before_or_after_the_command(argv):
    settings = config.from_args(parse(*argv), ["gateway_address"])
    assert settings.gateway_address == "gw:1"


def test_gateway_address_comes_from_the_environment_without_the_flag(monkeypatch):
    monkeypatch.setenv("GATEWAY_ADDRESS", "env-gw:9")
    assert config.from_args(parse("sum", "1", "2"), ["gateway_address"]).gateway_address == "env-gw:9"


@pytest.mark.parametrize(
    ("argv", "a", "b"),
    [
        (["sum", "-3", "4"], -3.0, 4.0),
        (["sub", "4", "-3"], 4.0, -3.0),
        (["mul", "-1.5", "-2.5"], -1.5, -2.5),
        (["div", "-.5", "2"], -0.5, 2.0),
        (["submit", "add", "-3", "4"], -3.0, 4.0),
    ],
)
def test_negative_operands_parse(argv, a, b):
    args = parse(*argv)
    assert (args.a, args.b) == (a, b)


def test_negative_operand_in_exponent_notation_parses():
    args = parse("sum", "-1e3", "2")
    assert (args.a, args.b) == (-1000.0, 2.0)


def test_request_id_flag_is_the_idempotency_key():
    assert parse("sum", "1", "2", "--request-id", "key-1").request_id == "key-1"
    assert parse("sum", "1", "2").request_id == ""


def test_an_operand_that_is_not_a_number_is_refused(capsys):
    with pytest.raises(SystemExit) as info:
        parse("sum", "one", "2")
    assert info.value.code == 2
    assert "invalid float value" in capsys.readouterr().err


def test_bench_takes_count_and_concurrency():
    args = parse("bench", "-n", "50", "-c", "5")
    assert (args.n, args.c) == (50, 5)
    assert args.func is client.cmd_bench


# -- main() against nothing -----------------------------------------------------------------


def test_unreachable_gateway_is_one_unavailable_line_and_a_non_zero_exit(capsys):
    code = client.main(["sum", "1", "2", "--gateway-address", "127.0.0.1:1", "--timeout", "1"])
    out, err = capsys.readouterr()
    assert code != 0
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: UNAVAILABLE")
    assert "127.0.0.1:1" in lines[0]
    assert "Traceback" not in err


def test_unreachable_gateway_with_json_is_the_same_stderr_line_and_a_json_object(capsys):
    code = client.main(["--json", "submit", "mul", "6", "7", "--gateway-address", "127.0.0.1:1", "--timeout", "1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err == "error: UNAVAILABLE: cannot reach the gateway at 127.0.0.1:1\n"
    assert json.loads(out) == {"error": {"code": "UNAVAILABLE", "message": "cannot reach the gateway at 127.0.0.1:1"}}


def test_bench_refuses_a_window_of_zero(capsys):
    with pytest.raises(SystemExit):
        parse("bench", "-c", "0")
    assert "must be 1 or more" in capsys.readouterr().err


# -- --json errors ----------------------------------------------------------------------------


def test_a_usage_error_with_json_is_also_a_json_object(capsys):
    code = client.main(["--json", "sum", "one", "2"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "invalid float value: 'one'" in err
    assert json.loads(out) == {
        "error": {"code": "INVALID_ARGUMENT", "message": "argument A: invalid float value: 'one'"}
    }


def test_a_usage_error_without_json_prints_nothing_on_stdout(capsys):
    assert client.main(["sum", "one", "2"]) == 2
    assert capsys.readouterr().out == ""


def test_a_refused_setting_with_json_is_also_a_json_object(capsys):
    code = client.main(["stats", "--json", "--rabbitmq-url", " , "])
    out, err = capsys.readouterr()
    assert code == 1
    assert err == "error: RABBITMQ_URL is empty\n"
    assert json.loads(out) == {"error": {"code": "INVALID_ARGUMENT", "message": "RABBITMQ_URL is empty"}}


def test_help_works_for_every_command(capsys):
    for command in ["stats", "batch", "bench", "sum", "submit", "result"]:
        with pytest.raises(SystemExit) as info:
            parse(command, "--help")
        assert info.value.code == 0
    assert "register-python-argcomplete" not in capsys.readouterr().err


# -- the batch file -----------------------------------------------------------------------------


def test_batch_skips_blank_lines_and_comments_and_keeps_line_numbers():
    lines = client.parse_batch(["# a comment", "", "   ", "sum 1 2", "  # indented comment", "div 7 2"])
    assert lines == [client.BatchLine(4, "sum", 1.0, 2.0), client.BatchLine(6, "divide", 7.0, 2.0)]


@pytest.mark.parametrize(
    ("text", "op", "a", "b"),
    [
        ("sum 1 2", "sum", 1.0, 2.0),
        ("ADD 1 2", "sum", 1.0, 2.0),
        ("Mul -1.5 2e3", "multiply", -1.5, 2000.0),
        ("pow\t2\t0.5", "power", 2.0, 0.5),
        ("mod -7 3", "modulo", -7.0, 3.0),
        ("subtract .5 -.25", "subtract", 0.5, -0.25),
    ],
)
def test_batch_line_takes_names_aliases_and_any_float(text, op, a, b):
    assert client.parse_batch_line(9, text) == client.BatchLine(9, op, a, b)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("sum 1", "expected \"OP A B\", got 'sum 1'"),
        ("sum 1 2 3", "expected \"OP A B\", got 'sum 1 2 3'"),
        ("frobnicate 1 2", "unknown operation 'frobnicate'"),
        ("sum one 2", "'one' is not a number"),
        ("sum 1 two", "'two' is not a number"),
    ],
)
def test_a_malformed_batch_line_says_why(text, problem):
    assert client.parse_batch_line(3, text) == client.BatchLine(3, problem=problem)


def test_batch_keeps_malformed_lines_in_their_place():
    lines = client.parse_batch(["sum 1 2", "nonsense", "div 1 0"])
    assert [(line.number, bool(line.problem)) for line in lines] == [(1, False), (2, True), (3, False)]


def test_batch_takes_a_file_or_stdin_and_a_window():
    args = parse("batch", "ops.txt")
    assert (args.file, args.c, args.func) == ("ops.txt", 64, client.cmd_batch)
    assert parse("batch", "-", "-c", "8").file == "-"
    assert parse("batch", "-", "-c", "8").c == 8


def test_batch_of_a_missing_file_is_one_line(capsys, tmp_path):
    code = client.main(["batch", str(tmp_path / "nope.txt"), "--gateway-address", "127.0.0.1:1"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == f"error: INVALID_ARGUMENT: cannot read {tmp_path / 'nope.txt'}: No such file or directory\n"


# -- auth and TLS: what the client builds --------------------------------------------------------


def target(*argv: str) -> client.GatewayTarget:
    return client.gateway_target(config.from_args(parse(*argv), client.GATEWAY_SETTINGS))


def test_without_token_or_ca_the_client_calls_in_plaintext_with_no_metadata():
    gateway = target("sum", "1", "2")
    assert gateway == client.GatewayTarget("localhost:50051")
    assert gateway.credentials() is None


@pytest.mark.parametrize(
    "argv", [["--auth-token", "s3cret", "sum", "1", "2"], ["sum", "1", "2", "--auth-token", "s3cret"]]
)
def test_auth_token_flag_becomes_a_bearer_header(argv):
    assert target(*argv).metadata == (("authorization", "Bearer s3cret"),)


def test_auth_token_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("AUTH_TOKEN", "from-env\n")  # a trailing newline from `$(cat file)` does not count
    assert target("stats").metadata == (("authorization", "Bearer from-env"),)


def test_tls_ca_is_read_into_channel_credentials(tls):
    gateway = target("sum", "1", "2", "--tls-ca", str(tls.ca))
    assert gateway.root_certificates == tls.ca.read_bytes()
    assert isinstance(gateway.credentials(), grpc.ChannelCredentials)


def test_tls_ca_from_the_environment(monkeypatch, tls):
    monkeypatch.setenv("TLS_CA", str(tls.ca))
    assert target("bench").root_certificates == tls.ca.read_bytes()


def test_an_unreadable_tls_ca_is_one_line(capsys, tmp_path):
    code = client.main(["sum", "1", "2", "--tls-ca", str(tmp_path / "missing.pem")])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == f"error: INVALID_ARGUMENT: cannot read TLS_CA {tmp_path / 'missing.pem'}: No such file or directory\n"


def test_a_tls_ca_without_a_certificate_is_refused_before_any_call(capsys, tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    assert client.main(["sum", "1", "2", "--tls-ca", str(bogus), "--json"]) == 1
    out, err = capsys.readouterr()
    assert err == f"error: INVALID_ARGUMENT: TLS_CA {bogus} holds no PEM certificate\n"
    assert json.loads(out)["error"]["code"] == "INVALID_ARGUMENT"


# -- auth and TLS: what reaches an in-process gateway -------------------------------------------

ANSWERS = {pb.SUM: float.__add__, pb.SUBTRACT: float.__sub__, pb.MULTIPLY: float.__mul__, pb.DIVIDE: float.__truediv__}


class FakeGateway(pb_grpc.GatewayServicer):  # type: ignore[misc]
    """Answers like the gateway, without a broker; the stream answers each pair
    of requests in reverse order, so the client must put them back in order."""

    def Calculate(self, request: pb.CalculationRequest, context: grpc.ServicerContext) -> pb.CalculationResult:
        return self.answer(request)

    def Submit(self, request: pb.CalculationRequest, context: grpc.ServicerContext) -> pb.Ticket:
        return pb.Ticket(request_id="ticket-1")

    def GetResult(self, ticket: pb.Ticket, context: grpc.ServicerContext) -> pb.CalculationResult:
        return pb.CalculationResult(request_id=ticket.request_id, result=42.0)

    def CalculateStream(
        self, requests: Iterator[pb.CalculationRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.CalculationResult]:
        pending = []
        for request in requests:
            pending.append(self.answer(request))
            if len(pending) == 2:
                yield from reversed(pending)
                pending = []
        yield from reversed(pending)

    @staticmethod
    def answer(request: pb.CalculationRequest) -> pb.CalculationResult:
        if request.operation == pb.DIVIDE and request.num2 == 0:
            error = pb.Error(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="division by zero")
            return pb.CalculationResult(request_id=request.request_id, error=error)
        value = ANSWERS.get(request.operation, float.__add__)(request.num1, request.num2)
        return pb.CalculationResult(request_id=request.request_id, result=value, worker="fake", attempts=1)


class Doorman(grpc.ServerInterceptor):  # type: ignore[misc]
    """Records every call's method and authorization header; with a token,
    turns away calls that do not carry it, as the real gateway will."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.seen: list[tuple[str, str | None]] = []

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        authorization = dict(details.invocation_metadata).get("authorization")
        self.seen.append((details.method, authorization))
        handler = continuation(details)
        if not self.token or authorization == f"Bearer {self.token}" or handler is None:
            return handler
        return self.refuse(handler)

    @staticmethod
    def refuse(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        def abort(request: object, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        def abort_stream(requests: object, context: grpc.ServicerContext) -> Iterator[None]:
            abort(requests, context)
            yield  # a stream handler must be a generator

        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(abort_stream)
        return grpc.unary_unary_rpc_method_handler(abort)


@dataclass
class Fake:
    address: str
    doorman: Doorman
    server: grpc.Server = field(repr=False)

    def methods(self) -> set[str]:
        return {method.rsplit("/", 1)[1] for method, _ in self.doorman.seen}


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    return make_certs(tmp_path_factory.mktemp("tls"))


def start_fake(token: str = "", tls_files: Certs | None = None) -> Fake:
    doorman = Doorman(token)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=[doorman])
    pb_grpc.add_GatewayServicer_to_server(FakeGateway(), server)
    checker = health.HealthServicer()
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    if tls_files is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials([(tls_files.key.read_bytes(), tls_files.cert.read_bytes())])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return Fake(f"127.0.0.1:{port}", doorman, server)


@pytest.fixture
def fake() -> Iterator[Fake]:
    running = start_fake(token="s3cret")
    yield running
    running.server.stop(None)


@pytest.fixture
def fake_tls(tls: Certs) -> Iterator[Fake]:
    running = start_fake(tls_files=tls)
    yield running
    running.server.stop(None)


@pytest.fixture
def ops_file(tmp_path: Path) -> Path:
    path = tmp_path / "ops.txt"
    path.write_text("# two pairs and one over\nsum 1 2\ndiv 1 0\n\nmul 6 7\nfrob 1 2\nsub 10 4\n")
    return path


def dead_broker() -> str:
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"


COMMANDS = {
    "demo": ([], "Calculate"),
    "operation": (["sum", "1", "2"], "Calculate"),
    "submit": (["submit", "add", "1", "2"], "Submit"),
    "result": (["result", "ticket-1"], "GetResult"),
    "bench": (["bench", "-n", "5", "-c", "2"], "CalculateStream"),
    "batch": (["batch", "OPS"], "CalculateStream"),
    "stats": (["stats", "--amqp-only", "--rabbitmq-url", "DEAD"], "Check"),
}


def test_a_stream_refused_mid_write_still_reports_the_servers_status(fake, capsys):
    """grpc/grpc#36066 turns some of these into INTERNAL; the client asks again."""
    for _ in range(20):
        assert client.main(["bench", "-n", "50", "-c", "50", "--gateway-address", fake.address]) == 1
        assert capsys.readouterr().err == "error: UNAUTHENTICATED: missing or wrong bearer token\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_sends_the_bearer_token(command, fake, ops_file, capsys):
    argv, method = COMMANDS[command]
    argv = [str(ops_file) if a == "OPS" else dead_broker() if a == "DEAD" else a for a in argv]
    client.main([*argv, "--gateway-address", fake.address, "--auth-token", "s3cret", "--timeout", "5"])
    assert "UNAUTHENTICATED" not in capsys.readouterr().err
    assert method in fake.methods()
    assert {authorization for _, authorization in fake.doorman.seen} == {"Bearer s3cret"}


@pytest.mark.parametrize("command", ["operation", "submit", "result", "bench", "batch"])
def test_a_missing_or_wrong_token_is_one_unauthenticated_line(command, fake, ops_file, capsys):
    argv = [str(ops_file) if a == "OPS" else a for a in COMMANDS[command][0]]
    for token in ([], ["--auth-token", "wrong"]):
        code = client.main([*argv, "--gateway-address", fake.address, *token, "--timeout", "5"])
        out, err = capsys.readouterr()
        assert (code, out) == (1, "")
        assert err.splitlines()[-1] == "error: UNAUTHENTICATED: missing or wrong bearer token"  # batch: after line 6's


def test_unauthenticated_with_json_is_also_a_json_object(fake, capsys):
    assert client.main(["sum", "1", "2", "--gateway-address", fake.address, "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer == {"error": {"code": "UNAUTHENTICATED", "message": "missing or wrong bearer token"}}


def test_with_tls_ca_the_client_calls_over_tls(fake_tls, tls, capsys):
    assert client.main(["sum", "2", "3", "--gateway-address", fake_tls.address, "--tls-ca", str(tls.ca)]) == 0
    assert capsys.readouterr().out == "5\n"
    assert "Calculate" in fake_tls.methods()


def test_tls_covers_the_streaming_commands_and_the_health_check(fake_tls, tls, ops_file, capsys):
    flags = ["--gateway-address", fake_tls.address, "--tls-ca", str(tls.ca)]
    client.main(["batch", str(ops_file), *flags])
    client.main(["stats", "--amqp-only", "--rabbitmq-url", dead_broker(), *flags])
    assert {"CalculateStream", "Check"} <= fake_tls.methods()
    assert "gateway 127.0.0.1" in capsys.readouterr().out


def test_plaintext_against_a_tls_gateway_fails_in_one_line(fake_tls, capsys):
    code = client.main(["sum", "2", "3", "--gateway-address", fake_tls.address, "--timeout", "3"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err.startswith("error: UNAVAILABLE: ") and len(err.splitlines()) == 1


def test_a_ca_that_did_not_sign_the_certificate_is_a_tls_error(fake_tls, tmp_path, capsys):
    other = make_certs(tmp_path / "other")  # a CA that did not sign the gateway's certificate
    argv = ["sum", "2", "3", "--gateway-address", fake_tls.address, "--tls-ca", str(other.ca), "--timeout", "3"]
    assert client.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: UNAVAILABLE: TLS handshake with the gateway at 127.0.0.1:"), err
    assert len(err.splitlines()) == 1


# -- batch and stats against the in-process gateway ---------------------------------------------


def test_batch_prints_results_in_input_order_whatever_order_they_come_in(fake, ops_file, capsys):
    argv = ["batch", str(ops_file), "-c", "2", "--gateway-address", fake.address, "--auth-token", "s3cret"]
    assert client.main(argv) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "3",
        "error: INVALID_ARGUMENT: division by zero",
        "42",
        "error: INVALID_ARGUMENT: line 6: unknown operation 'frob'",
        "6",
    ]
    assert err == "error: line 6: unknown operation 'frob'\nerror: 2 of 5 lines failed\n"


def test_batch_json_is_one_object_per_line(fake, ops_file, capsys):
    argv = ["batch", str(ops_file), "--json", "--gateway-address", fake.address, "--auth-token", "s3cret"]
    assert client.main(argv) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[0] == {"line": 2, "op": "sum", "a": 1.0, "b": 2.0, "result": 3.0}
    assert records[1]["error"] == {"code": "INVALID_ARGUMENT", "message": "division by zero"}
    assert records[3] == {
        "line": 6,
        "op": None,
        "a": None,
        "b": None,
        "error": {"code": "INVALID_ARGUMENT", "message": "line 6: unknown operation 'frob'"},
    }
    assert len(records) == 5 and all("error" not in r for r in (records[0], records[2], records[4]))


def test_batch_reads_stdin_and_exits_0_when_all_succeed(fake, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Stdin(b"sum 1 2\n# done\nmul 2 2\n"))
    assert client.main(["batch", "-", "--gateway-address", fake.address, "--auth-token", "s3cret"]) == 0
    assert capsys.readouterr() == ("3\n4\n", "")


def test_an_empty_batch_prints_nothing_and_succeeds(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Stdin(b"# nothing\n\n"))
    assert client.main(["batch", "-", "--gateway-address", "127.0.0.1:1"]) == 0
    assert capsys.readouterr() == ("", "")


class _Stdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = _Buffer(data)


@dataclass
class _Buffer:
    data: bytes

    def read(self) -> bytes:
        return self.data


def test_stats_with_only_the_broker_down_shows_the_gateway_and_fails(fake, capsys):
    argv = ["stats", "--amqp-only", "--rabbitmq-url", dead_broker(), "--gateway-address", fake.address]
    assert client.main([*argv, "--auth-token", "s3cret"]) == 1
    out, err = capsys.readouterr()
    assert "unreachable" in out and f"gateway {fake.address}: SERVING" in out
    assert err.startswith("error: UNAVAILABLE: cannot reach the broker at amqp://guest:***@127.0.0.1:")
    assert len(err.splitlines()) == 1


def test_stats_json_with_only_the_broker_down_is_one_object_with_the_error(fake, capsys):
    argv = ["stats", "--json", "--amqp-only", "--rabbitmq-url", dead_broker(), "--gateway-address", fake.address]
    assert client.main([*argv, "--auth-token", "s3cret"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["error"]["code"] == "UNAVAILABLE"
    assert report["broker"]["reachable"] is False and report["queues"] == []
    assert report["gateway"] == {"address": fake.address, "health": "SERVING"}


def test_stats_reports_a_refused_health_check_by_its_status(fake, capsys):
    argv = ["stats", "--json", "--amqp-only", "--rabbitmq-url", dead_broker(), "--gateway-address", fake.address]
    assert client.main(argv) == 1  # no token
    assert json.loads(capsys.readouterr().out)["gateway"]["health"] == "UNAUTHENTICATED"


def test_stats_with_nothing_reachable_is_one_line(capsys):
    argv = ["stats", "--amqp-only", "--rabbitmq-url", dead_broker(), "--gateway-address", f"127.0.0.1:{free_port()}"]
    assert client.main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: UNAVAILABLE: cannot reach the broker at amqp://guest:***@127.0.0.1:")
    assert "Connection refused" in err and len(err.splitlines()) == 1


# -- stats: the management API --------------------------------------------------------------


@pytest.mark.parametrize(
    ("amqp_url", "http_url"),
    [
        ("amqp://guest:guest@localhost:5672/%2F", "http://localhost:15672/api/queues/%2F"),
        ("amqp://u:p@rabbit/", "http://rabbit:15672/api/queues/%2F"),
        ("amqp://u:p@rabbit", "http://rabbit:15672/api/queues/%2F"),
        ("amqp://u:p@rabbit:5673/calc", "http://rabbit:15672/api/queues/calc"),
        ("amqp://u:p@rabbit/my%20vhost", "http://rabbit:15672/api/queues/my%20vhost"),
        ("amqps://u:p@rabbit:5671/calc", "https://rabbit:15671/api/queues/calc"),
        ("amqp://u:p@[::1]:5672/%2F", "http://[::1]:15672/api/queues/%2F"),
    ],
)
def test_the_management_api_is_asked_on_the_brokers_host(amqp_url, http_url):
    assert stats.management_request(amqp_url).full_url == http_url


def test_the_management_api_is_asked_with_the_amqp_credentials():
    request = stats.management_request("amqp://calc%40ops:p%3Ass@rabbit:5672/%2F")
    scheme, token = str(request.get_header("Authorization")).split()
    assert (scheme, base64.b64decode(token).decode()) == ("Basic", "calc@ops:p:ss")


def test_the_first_address_of_a_list_is_the_one_asked():
    assert stats.first_url("amqp://u:p@node1:5672/v, node2:5673") == "amqp://u:p@node1:5672/v"


MANAGEMENT_ANSWER = [
    {
        "name": "calc.tasks",
        "messages_ready": 7,
        "messages_unacknowledged": 2,
        "consumers": 3,
        "message_stats": {"publish_details": {"rate": 12.5}, "deliver_get_details": {"rate": 11.0}},
    },
    {"name": "calc.replies.gw-1", "messages_ready": 0, "messages_unacknowledged": 1, "consumers": 1},
    {"name": "someone.else", "messages_ready": 99},
]


def test_management_queues_keep_calc_ones_and_read_no_stats_as_no_traffic():
    found = stats.queues_from_management(MANAGEMENT_ANSWER)
    assert found == [
        stats.QueueStats("calc.tasks", ready=7, unacked=2, consumers=3, publish_rate=12.5, deliver_rate=11.0),
        stats.QueueStats("calc.replies.gw-1", ready=0, unacked=1, consumers=1, publish_rate=0.0, deliver_rate=0.0),
    ]


class _Management(BaseHTTPRequestHandler):
    answer: bytes = json.dumps(MANAGEMENT_ANSWER).encode()
    status = 200
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.answer if self.status == 200 else b'{"error":"not_authorised"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def management() -> Iterator[tuple[int, type[_Management]]]:
    handler = type("Handler", (_Management,), {"seen": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


def test_fetch_management_reads_the_queues_with_basic_auth(management):
    port, handler = management
    found = stats.fetch_management("amqp://u:p@127.0.0.1:5672/calc", timeout=2, port=port)
    assert found is not None and [q.name for q in found] == ["calc.tasks", "calc.replies.gw-1"]
    assert handler.seen == [("/api/queues/calc", "Basic " + base64.b64encode(b"u:p").decode())]


def test_stats_prefers_the_management_api_and_orders_the_queues(management):
    port, _ = management
    broker = asyncio.run(
        stats.collect_broker("amqp://u:p@127.0.0.1:1/calc", gateway_id="gw-2", timeout=2, management_port=port)
    )
    assert (broker.source, broker.error) == ("management", "")
    assert [(q.name, q.exists) for q in broker.queues] == [
        ("calc.requests", False),
        ("calc.tasks", True),
        ("calc.retry", False),
        ("calc.dead", False),
        ("calc.replies.gw-2", False),
        ("calc.replies.gw-1", True),
    ]
    assert stats.broker_line(broker) == "broker amqp://u:***@127.0.0.1:1/calc via the management API"


def test_without_the_management_api_stats_falls_back_to_amqp():
    broker = asyncio.run(
        stats.collect_broker(
            f"amqp://u:p@127.0.0.1:{free_port()}/", gateway_id="", timeout=2, management_port=free_port()
        )
    )
    assert broker.source == "" and "Connection refused" in broker.error


def test_fetch_management_gives_none_when_refused_so_stats_falls_back(management):
    port, handler = management
    handler.status = 401
    assert stats.fetch_management("amqp://u:wrong@127.0.0.1/", timeout=2, port=port) is None
    assert stats.fetch_management("amqp://u:p@127.0.0.1/", timeout=2, port=free_port()) is None


def test_the_table_shows_absent_queues_and_dashes_for_what_is_unknown():
    broker = stats.BrokerStats(
        "amqp://guest:***@h/%2F",
        "amqp",
        [stats.QueueStats("calc.requests", ready=3, consumers=1), stats.QueueStats("calc.dead", exists=False)],
    )
    console = Console(record=True, width=100)
    console.print(stats.table(broker))
    text = console.export_text()
    assert "│ calc.requests │      3 │       - │         1 │         - │" in text
    assert "│ calc.dead     │ absent │" in text
    assert "passive declares" in stats.broker_line(broker)


# -- shell completion ---------------------------------------------------------------------------


def test_shell_completion_offers_the_commands(tmp_path):
    pytest.importorskip("argcomplete")
    answer = tmp_path / "completions"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": " ",
        "COMP_LINE": "calculator_client.py ba",
        "COMP_POINT": "23",
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    subprocess.run([sys.executable, "-m", "calcmq.client"], cwd=ROOT, env=env, check=True, timeout=60)
    assert answer.read_text().split() == ["batch"]

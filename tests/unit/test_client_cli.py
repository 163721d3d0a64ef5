"""calcmq.client: number formatting, the argument parser, and failing cleanly
when the gateway cannot be reached."""

from __future__ import annotations

import argparse
import math

import pytest

from calcmq import client, config
from calcmq.proto import calculator_pb2 as pb

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_gateway_address_from_the_shell(monkeypatch):
    monkeypatch.delenv("GATEWAY_ADDRESS", raising=False)


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


def test_unreachable_gateway_with_json_still_reports_on_stderr_only(capsys):
    code = client.main(["--json", "submit", "mul", "6", "7", "--gateway-address", "127.0.0.1:1", "--timeout", "1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith("error: UNAVAILABLE")
    assert len(err.splitlines()) == 1

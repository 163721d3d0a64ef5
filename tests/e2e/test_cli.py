"""calculator_client.py as a person runs it: output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT, System, free_port

pytestmark = pytest.mark.e2e


def client(*args: str, address: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "calculator_client.py", *args, "--gateway-address", address],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_an_operation_prints_the_result_alone(system: System) -> None:
    run = client("sum", "2", "3", address=system.gateway_address)
    assert (run.returncode, run.stdout) == (0, "5\n")


def test_aliases_and_negative_operands(system: System) -> None:
    assert client("sub", "-3", "4", address=system.gateway_address).stdout == "-7\n"
    assert client("div", "1", "4", address=system.gateway_address).stdout == "0.25\n"
    assert client("pow", "2", "0.5", address=system.gateway_address).stdout == "1.4142135623730951\n"


def test_json_gives_one_object(system: System) -> None:
    run = client("mul", "6", "7", "--json", address=system.gateway_address)
    answer = json.loads(run.stdout)
    assert answer["result"] == 42 and answer["worker"] in {"worker1", "worker2"} and answer["attempts"] == 1


def test_an_error_is_one_line_naming_the_status(system: System) -> None:
    run = client("divide", "1", "0", address=system.gateway_address)
    assert run.returncode != 0
    assert run.stdout == ""
    assert run.stderr == "error: INVALID_ARGUMENT: division by zero\n"


def test_submit_prints_a_ticket_and_result_redeems_it(system: System) -> None:
    ticket = client("submit", "mod", "10", "3", address=system.gateway_address).stdout.strip()
    assert ticket
    assert client("result", ticket, address=system.gateway_address).stdout == "1\n"
    missing = client("result", "no-such-ticket", address=system.gateway_address)
    assert missing.returncode != 0 and missing.stderr.startswith("error: NOT_FOUND")


def test_the_demo_shows_each_operation_and_its_worker(system: System) -> None:
    run = client(address=system.gateway_address)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 6
    assert all("worker=worker" in line for line in lines)


def test_bench_prints_throughput_and_latency(system: System) -> None:
    run = client("bench", "-n", "300", "-c", "16", "--json", address=system.gateway_address)
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)
    assert figures["ok"] == 300 and figures["errors"] == 0
    assert figures["throughput_rps"] > 0 and figures["p99_ms"] >= figures["p50_ms"] > 0


def test_an_unreachable_gateway_is_a_clear_message() -> None:
    run = client("sum", "1", "2", "--timeout", "2", address=f"127.0.0.1:{free_port()}", timeout=30)
    assert run.returncode != 0
    assert run.stderr.startswith("error: UNAVAILABLE: cannot reach the gateway at 127.0.0.1:")
    assert "Traceback" not in run.stderr


def test_a_bad_number_is_a_usage_error() -> None:
    run = client("sum", "one", "2", address="127.0.0.1:1")
    assert run.returncode == 2 and "invalid float value" in run.stderr and "Traceback" not in run.stderr

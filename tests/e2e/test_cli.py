"""calculator_client.py as a person runs it: output, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, System, free_port, publish_raw, take_all

pytestmark = pytest.mark.e2e


def client(*args: str, address: str, timeout: float = 60, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "calculator_client.py", *args, "--gateway-address", address],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


def stats(system: System, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    """`stats` on the system's vhost, by passive declares: the management API may
    or may not be there, and a test should not depend on it."""
    return client(
        "stats", "--amqp-only", "--rabbitmq-url", url or system.rabbitmq_url, *args, address=system.gateway_address
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


# -- stats -----------------------------------------------------------------------------------


def test_stats_shows_the_four_queues_and_the_gateway_serving(system: System) -> None:
    run = stats(system)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    rows = {line.split("│")[1].strip(): line for line in run.stdout.splitlines() if line.count("│") > 2}
    assert {"calc.requests", "calc.tasks", "calc.retry", "calc.dead"} <= rows.keys()
    assert f"gateway {system.gateway_address}: SERVING" in run.stdout
    assert "passive declares" in run.stdout


def test_stats_json_counts_consumers_and_shows_the_gateways_reply_queue(system: System) -> None:
    run = stats(system, "--json", "--gateway-id", system.gateway_id)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    queues = {q["name"]: q for q in report["queues"]}
    assert list(queues) == [
        "calc.requests",
        "calc.tasks",
        "calc.retry",
        "calc.dead",
        f"calc.replies.{system.gateway_id}",
    ]
    assert queues["calc.requests"]["consumers"] == 1  # the dispatcher
    assert queues["calc.tasks"]["consumers"] == 2  # two workers
    assert queues[f"calc.replies.{system.gateway_id}"]["consumers"] == 1  # the gateway
    assert all(q["exists"] and q["ready"] == 0 and q["unacked"] is None for q in queues.values())
    assert report["gateway"] == {"address": system.gateway_address, "health": "SERVING"}
    assert report["broker"]["source"] == "amqp" and "guest:***@" in report["broker"]["url"]


def test_stats_counts_ready_messages(system: System) -> None:
    publish_raw(system.rabbitmq_url, "calc.dead", b"parked by a test")
    try:
        report = json.loads(stats(system, "--json").stdout)
        assert {q["name"]: q["ready"] for q in report["queues"]}["calc.dead"] == 1
    finally:
        take_all(system.rabbitmq_url, "calc.dead")


def test_stats_asks_the_first_address_of_a_list(system: System) -> None:
    run = stats(system, "--json", url=f"{system.rabbitmq_url}, 127.0.0.1:{free_port()}")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["broker"]["reachable"] is True


def test_stats_with_the_broker_unreachable_but_the_gateway_up_says_both(system: System) -> None:
    run = stats(system, url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    assert run.returncode == 1
    assert "unreachable" in run.stdout and f"gateway {system.gateway_address}: SERVING" in run.stdout
    assert run.stderr.startswith("error: UNAVAILABLE: cannot reach the broker at amqp://guest:***@127.0.0.1:")
    assert len(run.stderr.splitlines()) == 1


def test_stats_with_nothing_reachable_is_one_error_line() -> None:
    dead_broker = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    run = client("stats", "--amqp-only", "--rabbitmq-url", dead_broker, address=f"127.0.0.1:{free_port()}")
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr.startswith("error: UNAVAILABLE: cannot reach the broker at amqp://guest:***@127.0.0.1:")
    assert len(run.stderr.splitlines()) == 1 and "Traceback" not in run.stderr


# -- batch -----------------------------------------------------------------------------------

BATCH = """# a batch file
sum 2 3

div 1 0
mul 6 7
frobnicate 1 2
pow 2 0.5
sub -3 4
"""


def test_batch_prints_results_in_input_order_and_fails_for_any_error(system: System, tmp_path: Path) -> None:
    ops = tmp_path / "ops.txt"
    ops.write_text(BATCH)
    run = client("batch", str(ops), "-c", "2", address=system.gateway_address)
    assert run.returncode == 1
    assert run.stdout.splitlines() == [
        "5",
        "error: INVALID_ARGUMENT: division by zero",
        "42",
        "error: INVALID_ARGUMENT: line 6: unknown operation 'frobnicate'",
        "1.4142135623730951",
        "-7",
    ]
    assert run.stderr.splitlines() == ["error: line 6: unknown operation 'frobnicate'", "error: 2 of 6 lines failed"]


def test_batch_json_from_stdin_is_one_object_per_line(system: System) -> None:
    run = client("batch", "-", "--json", address=system.gateway_address, stdin=BATCH)
    assert run.returncode == 1
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["line"] for r in records] == [2, 4, 5, 6, 7, 8]
    assert records[0] == {"line": 2, "op": "sum", "a": 2.0, "b": 3.0, "result": 5.0}
    assert records[1]["error"] == {"code": "INVALID_ARGUMENT", "message": "division by zero"}
    assert records[3]["error"]["message"] == "line 6: unknown operation 'frobnicate'"


def test_a_batch_without_errors_exits_0(system: System) -> None:
    lines = "".join(f"mul {i} 2\n" for i in range(200))
    run = client("batch", "-", address=system.gateway_address, stdin=lines)
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout.splitlines() == [str(2 * i) for i in range(200)]


# -- --json errors -----------------------------------------------------------------------------


def test_an_error_with_json_is_also_one_object_on_stdout(system: System) -> None:
    run = client("div", "1", "0", "--json", address=system.gateway_address)
    assert run.returncode == 1
    assert run.stderr == "error: INVALID_ARGUMENT: division by zero\n"
    assert json.loads(run.stdout) == {"error": {"code": "INVALID_ARGUMENT", "message": "division by zero"}}


def test_result_of_an_unknown_ticket_with_json(system: System) -> None:
    run = client("--json", "result", "no-such-ticket", address=system.gateway_address)
    assert run.returncode == 1 and run.stderr.startswith("error: NOT_FOUND: ")
    assert json.loads(run.stdout)["error"]["code"] == "NOT_FOUND"


def test_the_demo_and_submit_honour_json(system: System) -> None:
    demo = json.loads(client("--json", address=system.gateway_address).stdout)
    assert [row["operation"] for row in demo] == ["sum", "subtract", "multiply", "divide", "power", "modulo"]
    ticket = json.loads(client("submit", "add", "1", "2", "--json", address=system.gateway_address).stdout)
    answer = json.loads(client("result", ticket["request_id"], "--json", address=system.gateway_address).stdout)
    assert answer["result"] == 3


def test_an_unreachable_gateway_with_json() -> None:
    run = client("bench", "-n", "10", "--json", "--timeout", "2", address=f"127.0.0.1:{free_port()}", timeout=30)
    assert run.returncode == 1
    assert run.stderr.startswith("error: UNAVAILABLE: cannot reach the gateway at 127.0.0.1:")
    assert json.loads(run.stdout)["error"]["code"] == "UNAVAILABLE"

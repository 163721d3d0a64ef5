"""Kill anything, restart the broker, feed it garbage: lose nothing.

Each scenario sends at least 2,000 requests across two workers with generous
deadlines, injects its fault in the middle, and then checks every request got
exactly one answer, every success is arithmetically right, nothing was lost
or duplicated, and every process is alive (or was restarted by the test) and
serving. Each prints one `chaos ...:` line with its figures (`pytest -m chaos -s`).
"""

from __future__ import annotations

import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from calcmq import codec, topology
from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc
from tests.chaos.load import StreamLoad, Verdict, redeem_all, submit_all
from tests.conftest import show_logs_if_failed
from tests.support import PrivateBroker, System, free_port, publish_raw, queue_depth, take_all, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]

TOTAL = 2000
# Fast retries so a 3 s calculator outage is ridden out well inside MAX_ATTEMPTS.
WORKER_ENV = {"RETRY_DELAY": "0.1", "MAX_ATTEMPTS": "20"}


@pytest.fixture
def chaos_system(vhost_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    system = System(vhost_url, tmp_path, workers=2, extra_env=WORKER_ENV)
    yield system.start()
    system.stop()
    show_logs_if_failed(request, system)


def assert_clean(verdict: Verdict, scenario: str, allowed_errors: tuple[str, ...] = ()) -> None:
    print(verdict.line(scenario))
    assert verdict.lost == 0, "lost requests"
    assert verdict.duplicated == 0, "requests answered twice"
    assert verdict.wrong == 0, "wrong answers"
    assert set(verdict.errors) <= set(allowed_errors), f"unexpected errors {verdict.errors}"


def assert_serving(system: System) -> None:
    for process in system.processes.values():
        assert process.alive(), f"{process.name} died"
    with grpc.insecure_channel(system.gateway_address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        for i in range(20):
            result = stub.Calculate(pb.CalculationRequest(operation=pb.SUM, num1=i, num2=1), timeout=30)
            assert result.result == i + 1


def restart(system: System, name: str) -> None:
    script = {"calculator": "calculator_server.py", "dispatcher": "rabbitmq_worker.py", "gateway": "api_gateway.py"}
    if name.startswith("worker"):
        system.add(name, "worker.py", WORKER_NAME=name)
    else:
        system.add(name, script[name])


def test_a_worker_killed_mid_task_loses_nothing(chaos_system: System) -> None:
    load = StreamLoad(chaos_system.gateway_address, "kill-worker", TOTAL).start()
    load.wait_answered(TOTAL // 3)
    chaos_system.processes["worker1"].kill()
    load.assert_mid_load()
    load.wait_answered(2 * TOTAL // 3)
    restart(chaos_system, "worker1")
    assert_clean(load.join(), "kill -9 worker")
    assert_serving(chaos_system)


def test_a_dispatcher_killed_and_restarted_loses_nothing(chaos_system: System) -> None:
    load = StreamLoad(chaos_system.gateway_address, "kill-dispatcher", TOTAL).start()
    load.wait_answered(TOTAL // 3)
    chaos_system.processes["dispatcher"].kill()
    load.assert_mid_load()
    time.sleep(2)  # requests wait in calc.requests meanwhile
    restart(chaos_system, "dispatcher")
    assert_clean(load.join(), "kill -9 dispatcher, restart after 2 s")
    assert_serving(chaos_system)


def test_a_calculator_down_for_3_seconds_is_ridden_out(chaos_system: System) -> None:
    load = StreamLoad(chaos_system.gateway_address, "stop-calculator", TOTAL).start()
    load.wait_answered(TOTAL // 3)
    chaos_system.processes["calculator"].kill()
    load.assert_mid_load()
    time.sleep(3)
    restart(chaos_system, "calculator")
    assert_clean(load.join(), "calculator down 3 s")
    assert_serving(chaos_system)


@pytest.fixture
def on_private_broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[PrivateBroker, System]]:
    """The system on a broker node of its own, which the test may restart."""
    broker = PrivateBroker(tmp_path / "broker").start()
    system = System(broker.url, tmp_path, workers=2, extra_env=WORKER_ENV)
    try:
        yield broker, system.start()
    finally:
        system.stop()
        broker.stop()
        show_logs_if_failed(request, system)


def test_a_broker_restart_loses_nothing(on_private_broker: tuple[PrivateBroker, System]) -> None:
    broker, system = on_private_broker
    load = StreamLoad(system.gateway_address, "broker-restart", TOTAL, rate=250).start()  # rabbitmqctl takes seconds
    load.wait_answered(TOTAL // 3)
    broker.stop_app()
    load.assert_mid_load()
    time.sleep(2)
    broker.start_app()
    # Requests that reach the gateway while the broker is away are refused
    # at once with UNAVAILABLE: a clear error, not a loss.
    assert_clean(load.join(), "broker stop_app 2 s, start_app", allowed_errors=("UNAVAILABLE",))
    system.wait_serving(system.gateway_address)
    assert_serving(system)


def test_a_gateway_killed_between_submit_and_get_result_keeps_every_ticket(chaos_system: System) -> None:
    answers = submit_all(chaos_system.gateway_address, "kill-gateway", TOTAL)
    chaos_system.processes["gateway"].kill()  # results still on their way to it
    restart(chaos_system, "gateway")
    chaos_system.wait_serving(chaos_system.gateway_address)
    assert_clean(redeem_all(chaos_system.gateway_address, answers), "kill -9 gateway between Submit and GetResult")
    assert_serving(chaos_system)


def test_sigterm_to_each_component_in_turn_loses_nothing(chaos_system: System) -> None:
    load = StreamLoad(chaos_system.gateway_address, "sigterm", TOTAL, rate=250).start()  # four stops in turn
    for step, name in enumerate(["worker1", "dispatcher", "calculator", "worker2"], start=1):
        load.wait_answered(step * TOTAL // 6)
        process = chaos_system.processes[name]
        assert process.stop() == 0, f"{name} did not exit 0 on SIGTERM"
        load.assert_mid_load()
        restart(chaos_system, name)
    assert_clean(load.join(), "SIGTERM worker, dispatcher, calculator, worker in turn")
    _sigterm_the_gateway_with_calls_waiting_in_it(chaos_system)
    for name in ("worker2", "gateway"):
        restart(chaos_system, name)
    chaos_system.wait_serving(chaos_system.gateway_address)
    assert_serving(chaos_system)


def _sigterm_the_gateway_with_calls_waiting_in_it(system: System, calls: int = 200) -> None:
    """Calls waiting in the gateway when it gets SIGTERM still get their answers."""
    for name in ("worker1", "worker2"):
        assert system.processes[name].stop() == 0
    metrics_port = free_port()  # to see the calls arrive
    assert system.processes["gateway"].stop() == 0
    gateway = system.add("gateway", "api_gateway.py", METRICS_PORT=str(metrics_port))
    system.wait_serving(system.gateway_address)
    with grpc.insecure_channel(system.gateway_address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        futures = [
            stub.Calculate.future(pb.CalculationRequest(operation=pb.SUM, num1=i, num2=i), timeout=60)
            for i in range(calls)
        ]
        wait_until(lambda: _inflight(metrics_port) == calls, 30, f"{calls} calls waiting in the gateway")
        gateway.signal(signal.SIGTERM)
        restart(system, "worker1")  # answers arrive while the gateway drains
        assert [f.result().result for f in futures] == [2 * i for i in range(calls)]
    assert gateway.wait(30) == 0


def _inflight(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("calcmq_gateway_inflight "):
                return float(line.split()[1])
    return -1.0


GARBAGE = [
    (b"\xff\xfe\x00garbage", codec.REQUEST_TYPE),
    (b"{}", "application/json"),
    (b"", codec.REQUEST_TYPE),
    (b"x" * (codec.MAX_BODY_BYTES + 1), codec.REQUEST_TYPE),
    (b"\x08\x63\x11\x00\x00\x00\x00\x00\x00\xf8\x7f", codec.REQUEST_TYPE),  # operation 99, num1 NaN
]


def test_garbage_on_every_queue_under_load_is_dead_lettered(chaos_system: System) -> None:
    url = chaos_system.rabbitmq_url
    reply_queue = topology.reply_queue_name(chaos_system.gateway_id)
    queues = [topology.REQUESTS, topology.TASKS, topology.RETRY, reply_queue]
    load = StreamLoad(chaos_system.gateway_address, "garbage", TOTAL).start()
    load.wait_answered(TOTAL // 3)
    for i in range(10):
        for queue in queues:
            body, content_type = GARBAGE[i % len(GARBAGE)]
            publish_raw(
                url, queue, body, content_type=content_type, correlation_id=f"junk-{queue}-{i}", reply_to=reply_queue
            )
    assert_clean(load.join(), "garbage x40 into every queue under load")
    assert_serving(chaos_system)
    # Garbage in calc.retry reaches calc.dead by way of calc.tasks when its queue TTL runs out.
    wait_until(lambda: queue_depth(url, topology.DEAD) >= 40, 30, "40 dead letters")
    dead = take_all(url, topology.DEAD)
    junk = [m for m in dead if (m.correlation_id or "").startswith("junk-")]
    assert len(junk) == 40, f"{len(junk)} of 40 garbage messages in {topology.DEAD}"
    assert all(m.headers.get(codec.H_REASON) for m in junk)


def test_a_blocked_broker_is_back_pressure_not_a_crash(on_private_broker: tuple[PrivateBroker, System]) -> None:
    """A memory alarm blocks publishers (connection.blocked): calls wait or fail
    by their deadline, nothing crashes, and the flow resumes when it clears."""
    broker, system = on_private_broker
    with grpc.insecure_channel(system.gateway_address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        assert stub.Calculate(pb.CalculationRequest(operation=pb.SUM, num1=1, num2=1), timeout=10).result == 2
        broker.ctl("set_vm_memory_high_watermark", "0")  # https://www.rabbitmq.com/docs/memory: 0 blocks publishing
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.Calculate(pb.CalculationRequest(operation=pb.SUM, num1=2, num2=2), timeout=2)
        assert info.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)  # type: ignore[attr-defined]
        assert time.monotonic() - started < 5, "a blocked broker must not hold a call past its deadline"
        waiting = stub.Calculate.future(pb.CalculationRequest(operation=pb.SUM, num1=3, num2=3), timeout=30)
        time.sleep(1.5)
        broker.ctl("set_vm_memory_high_watermark", "0.4")
        assert waiting.result().result == 6, "a call waiting through the alarm completes after it"
    assert_serving(system)

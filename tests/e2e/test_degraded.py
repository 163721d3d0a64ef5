"""The pipeline with a piece missing, broken or overloaded: each failure has
its status code, work nobody waits for is dropped, and nothing crashes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from calcmq import codec, topology
from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc
from tests.conftest import show_logs_if_failed
from tests.support import System, free_port, publish_raw, queue_depth, take_all, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def bare(vhost_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    """A System whose programs each test starts itself."""
    system = System(vhost_url, tmp_path, workers=0)
    yield system
    system.stop()
    show_logs_if_failed(request, system)


def stub(system: System) -> pb_grpc.GatewayStub:
    return pb_grpc.GatewayStub(grpc.insecure_channel(system.gateway_address))


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[attr-defined,no-any-return]


SUM = pb.CalculationRequest(operation=pb.SUM, num1=1, num2=2)


def test_no_worker_means_deadline_exceeded_and_the_work_is_dropped(bare: System) -> None:
    bare.add("dispatcher", "rabbitmq_worker.py")
    bare.add("gateway", "api_gateway.py")
    bare.wait_serving(bare.gateway_address)
    assert code_of(lambda: stub(bare).Calculate(SUM, timeout=1.5)) == grpc.StatusCode.DEADLINE_EXCEEDED
    # The task's expiration ran out with the caller's deadline: the broker
    # dropped it, so a worker started now finds nothing to compute.
    wait_until(lambda: queue_depth(bare.rabbitmq_url, topology.TASKS) == 0, 10, "the expired task to go")
    bare.add("calculator", "calculator_server.py")
    bare.add("worker1", "worker.py", WORKER_NAME="worker1")
    assert stub(bare).Calculate(SUM, timeout=10).result == 3


def test_an_unreachable_broker_is_unavailable_at_once(bare: System) -> None:
    gateway = bare.add("gateway", "api_gateway.py", RABBITMQ_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    with grpc.insecure_channel(bare.gateway_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        wait_until(lambda: _health(health) is not None, 20, "the gateway to listen")
        assert _health(health) == health_pb2.HealthCheckResponse.NOT_SERVING
        started = time.monotonic()
        assert code_of(lambda: stub(bare).Calculate(SUM, timeout=30)) == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 5, "UNAVAILABLE must come promptly, not at the deadline"
        assert code_of(lambda: stub(bare).Submit(SUM, timeout=30)) == grpc.StatusCode.UNAVAILABLE
        answers = list(stub(bare).CalculateStream(iter([SUM, SUM]), timeout=30))
        assert [a.error.code for a in answers] == [grpc.StatusCode.UNAVAILABLE.value[0]] * 2
    assert gateway.alive()
    assert "Traceback" not in gateway.log()


def _health(health: health_pb2_grpc.HealthStub) -> int | None:
    try:
        return int(health.Check(health_pb2.HealthCheckRequest(), timeout=1).status)
    except grpc.RpcError:
        return None


def test_the_inflight_limit_answers_resource_exhausted(bare: System) -> None:
    bare.add("gateway", "api_gateway.py", GATEWAY_MAX_INFLIGHT="2")
    bare.wait_serving(bare.gateway_address)
    gateway = stub(bare)
    gateway.Submit(pb.CalculationRequest(operation=pb.SUM, num1=1, num2=1), timeout=5)
    gateway.Submit(pb.CalculationRequest(operation=pb.SUM, num1=2, num2=2), timeout=5)
    assert code_of(lambda: gateway.Calculate(SUM, timeout=5)) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_calculator_that_comes_back_is_retried_through_the_delay_queue(bare: System) -> None:
    bare.add("dispatcher", "rabbitmq_worker.py")
    bare.add("worker1", "worker.py", WORKER_NAME="worker1", RETRY_DELAY="0.3", MAX_ATTEMPTS="10")
    bare.add("gateway", "api_gateway.py")
    bare.wait_serving(bare.gateway_address)
    future = stub(bare).Calculate.future(SUM, timeout=30)
    wait_until(lambda: "retrying in" in bare.processes["worker1"].log(), 15, "a retry")
    bare.add("calculator", "calculator_server.py")
    result = future.result()
    assert result.result == 3 and result.attempts > 1 and result.worker == "worker1"


def test_a_calculator_that_stays_down_gives_unavailable_and_a_dead_letter(bare: System) -> None:
    bare.add("dispatcher", "rabbitmq_worker.py")
    bare.add("worker1", "worker.py", WORKER_NAME="worker1", RETRY_DELAY="0.05", MAX_ATTEMPTS="3")
    bare.add("gateway", "api_gateway.py")
    bare.wait_serving(bare.gateway_address)
    with pytest.raises(grpc.RpcError) as info:
        stub(bare).Calculate(pb.CalculationRequest(operation=pb.SUM, num1=1, num2=2, request_id="down-1"), timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "3 attempts" in info.value.details()  # type: ignore[attr-defined]
    dead = take_all(bare.rabbitmq_url, topology.DEAD)
    assert [m.correlation_id for m in dead] == ["down-1"]
    assert "unavailable" in str(dead[0].headers[codec.H_REASON])


def test_garbage_on_every_queue_is_dead_lettered_and_nobody_crashes(system_for_garbage: System) -> None:
    system = system_for_garbage
    url = system.rabbitmq_url
    reply_queue = topology.reply_queue_name(system.gateway_id)
    publish_raw(
        url,
        topology.REQUESTS,
        b"\xff\x00garbage",
        content_type=codec.REQUEST_TYPE,
        correlation_id="junk-1",
        reply_to=reply_queue,
    )
    publish_raw(url, topology.REQUESTS, b"{}", content_type="application/json", correlation_id="junk-2")
    publish_raw(url, topology.TASKS, b"\x08\x63", content_type=codec.REQUEST_TYPE, correlation_id="junk-3")
    publish_raw(url, topology.REQUESTS, b"x" * (codec.MAX_BODY_BYTES + 1), content_type=codec.REQUEST_TYPE)
    publish_raw(url, reply_queue, b"not a result", content_type=codec.RESULT_TYPE, correlation_id="junk-4")
    wait_until(lambda: queue_depth(url, topology.DEAD) >= 5, 15, "five dead letters")
    dead = take_all(url, topology.DEAD)
    assert all(m.headers.get(codec.H_REASON) for m in dead)
    assert {m.headers[codec.H_SOURCE] for m in dead} == {topology.REQUESTS, topology.TASKS, reply_queue}
    for process in system.processes.values():
        assert process.alive(), process.name
    result = pb_grpc.GatewayStub(grpc.insecure_channel(system.gateway_address)).Calculate(SUM, timeout=10)
    assert result.result == 3


@pytest.fixture
def system_for_garbage(vhost_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    system = System(vhost_url, tmp_path, workers=1)
    yield system.start()
    system.stop()
    show_logs_if_failed(request, system)


def test_sigterm_stops_every_program_with_exit_0(system_for_garbage: System) -> None:
    assert pb_grpc.GatewayStub(grpc.insecure_channel(system_for_garbage.gateway_address)).Calculate(SUM, timeout=10)
    codes = system_for_garbage.stop()
    assert codes == {name: 0 for name in codes}
    for process in system_for_garbage.processes.values():
        assert "Traceback" not in process.log(), process.name


def test_a_stream_without_a_deadline_gives_each_request_its_own_time(bare: System) -> None:
    bare.extra_env["REQUEST_TIMEOUT"] = "1.5"
    bare.workers = 1
    bare.start()

    def slowly() -> Iterator[pb.CalculationRequest]:
        for i in range(8):  # 8 requests over ~3 s: longer than REQUEST_TIMEOUT
            yield pb.CalculationRequest(operation=pb.SUM, num1=i, num2=1, request_id=f"slow-{i}")
            time.sleep(0.4)

    results = list(stub(bare).CalculateStream(slowly()))  # no deadline on the call
    assert sorted(r.result for r in results) == [i + 1 for i in range(8)]
    assert not any(r.HasField("error") for r in results)


def test_an_unreadable_request_in_a_stream_ends_it_with_invalid_argument(system_for_garbage: System) -> None:
    with grpc.insecure_channel(system_for_garbage.gateway_address) as channel:
        raw = channel.stream_stream(
            "/calculator.Gateway/CalculateStream",
            request_serializer=lambda body: body,
            response_deserializer=pb.CalculationResult.FromString,
        )
        frames = [SUM.SerializeToString(), b"\\xff\\xff\\xff"]
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            list(raw(iter(frames)))  # no deadline: it must end by itself
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert time.monotonic() - started < 10


def test_a_deadline_of_decades_is_served_not_refused(system_for_garbage: System) -> None:
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    request = '{"operation":"SUM","num1":2,"num2":3}'
    for _ in range(3):  # each once took the gateway's broker session down
        done = subprocess.run(
            [grpcurl, "-plaintext", "-max-time", "5000000000", "-d", request, system_for_garbage.gateway_address,
             "calculator.Gateway/Calculate"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == 5
    assert "lost the broker connection" not in system_for_garbage.processes["gateway"].log()


def test_a_submit_of_an_id_under_way_as_a_calculate_gets_a_redeemable_ticket(bare: System) -> None:
    bare.add("dispatcher", "rabbitmq_worker.py")
    bare.add("gateway", "api_gateway.py")
    bare.wait_serving(bare.gateway_address)
    gateway = stub(bare)
    request = pb.CalculationRequest(operation=pb.MULTIPLY, num1=6, num2=7, request_id=f"join-{uuid.uuid4()}")
    calculate = gateway.Calculate.future(request, timeout=1.5)  # no worker yet: it will time out
    time.sleep(0.3)
    ticket = gateway.Submit(request, timeout=10)
    with pytest.raises(grpc.RpcError):
        calculate.result()
    bare.add("calculator", "calculator_server.py")
    bare.add("worker1", "worker.py", WORKER_NAME="worker1")
    assert gateway.GetResult(ticket, timeout=20).result == 42


def test_a_submit_joining_a_calculate_does_not_stretch_the_calculates_own_time(bare: System) -> None:
    """The call has no gRPC deadline: REQUEST_TIMEOUT is its time, whatever the Submit's."""
    bare.extra_env["REQUEST_TIMEOUT"] = "1.5"
    bare.add("dispatcher", "rabbitmq_worker.py")
    bare.add("gateway", "api_gateway.py")
    bare.wait_serving(bare.gateway_address)
    gateway = stub(bare)
    request = pb.CalculationRequest(operation=pb.SUM, num1=1, num2=2, request_id=f"stretch-{uuid.uuid4()}")
    started = time.monotonic()
    calculate = gateway.Calculate.future(request)  # no worker: nothing will answer it
    time.sleep(0.3)
    gateway.Submit(request, timeout=10)  # its result is kept for RESULT_TTL, far longer
    with pytest.raises(grpc.RpcError) as info:
        calculate.result(timeout=10)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert time.monotonic() - started < 4


def test_a_transient_failure_is_not_the_final_answer_for_its_id(bare: System) -> None:
    bare.add("dispatcher", "rabbitmq_worker.py")
    bare.add("worker1", "worker.py", WORKER_NAME="worker1", RETRY_DELAY="0.05", MAX_ATTEMPTS="2")
    bare.add("gateway", "api_gateway.py")
    bare.wait_serving(bare.gateway_address)
    gateway = stub(bare)
    request = pb.CalculationRequest(operation=pb.SUM, num1=1, num2=2, request_id=f"retry-{uuid.uuid4()}")
    ticket = gateway.Submit(request, timeout=10)
    assert code_of(lambda: gateway.GetResult(ticket, timeout=20)) == grpc.StatusCode.UNAVAILABLE
    bare.add("calculator", "calculator_server.py")
    bare.wait_serving(bare.calculator_address)
    gateway.Submit(request, timeout=10)  # the client retries with the same id: it runs again
    assert gateway.GetResult(ticket, timeout=20).result == 3


def test_a_stream_client_that_never_reads_stalls_its_stream(bare: System) -> None:
    """Past what HTTP/2 flow control buffers, the gateway stops taking requests
    from a stream whose answers nobody reads, instead of piling them up."""
    metrics_port = free_port()
    bare.add("calculator", "calculator_server.py")
    bare.add("dispatcher", "rabbitmq_worker.py")
    bare.add("worker1", "worker.py", WORKER_NAME="worker1")
    bare.add("gateway", "api_gateway.py", METRICS_PORT=str(metrics_port))
    bare.wait_serving(bare.gateway_address)
    total = 30_000
    # Without BDP probing the client's HTTP/2 window stays at 64 KiB, so what
    # the transport buffers is small and the stall shows quickly.
    with grpc.insecure_channel(bare.gateway_address, options=[("grpc.http2.bdp_probe", 0)]) as channel:
        requests = (pb.CalculationRequest(operation=pb.SUM, num1=i, num2=1) for i in range(total))
        call = pb_grpc.GatewayStub(channel).CalculateStream(requests, timeout=120)  # never read
        wait_until(lambda: _stream_served(metrics_port) > 500, 60, "the stream to get going")
        # Socket and HTTP/2 buffers absorb some answers first; then it must stop.
        readings = [_stream_served(metrics_port)]
        give_up = time.monotonic() + 45
        while not (len(readings) > 1 and readings[-1] == readings[-2]):
            assert time.monotonic() < give_up, f"the gateway kept taking requests: {readings}"
            time.sleep(2)
            readings.append(_stream_served(metrics_port))
        assert readings[-1] < total
        call.cancel()


def _stream_served(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("calcmq_gateway_requests_total{") and 'rpc="CalculateStream"' in line
    )

"""Restarting the gateway: tickets stay redeemable; one GATEWAY_ID, one gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc
from tests.conftest import show_logs_if_failed
from tests.support import System, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_system(vhost_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    system = System(vhost_url, tmp_path, workers=2)
    yield system.start()
    system.stop()
    show_logs_if_failed(request, system)


def gateway(system: System) -> pb_grpc.GatewayStub:
    return pb_grpc.GatewayStub(grpc.insecure_channel(system.gateway_address))


def submit_many(system: System, count: int) -> dict[str, float]:
    stub = gateway(system)
    tickets = {}
    for i in range(count):
        ticket = stub.Submit(pb.CalculationRequest(operation=pb.MULTIPLY, num1=i, num2=3), timeout=10)
        tickets[ticket.request_id] = 3.0 * i
    return tickets


def redeem_all(system: System, tickets: dict[str, float]) -> None:
    stub = gateway(system)
    for request_id, want in tickets.items():
        assert stub.GetResult(pb.Ticket(request_id=request_id), timeout=30).result == want


def test_tickets_survive_a_gateway_killed_between_submit_and_get_result(own_system: System) -> None:
    tickets = submit_many(own_system, 200)
    own_system.processes["gateway"].kill()  # some results came in already, some are on their way
    own_system.add("gateway", "api_gateway.py")
    own_system.wait_serving(own_system.gateway_address)
    redeem_all(own_system, tickets)


def test_tickets_submitted_while_no_worker_runs_survive_a_gateway_restart(own_system: System) -> None:
    for name in ("worker1", "worker2"):
        own_system.processes[name].stop()
    tickets = submit_many(own_system, 50)
    own_system.processes["gateway"].kill()
    own_system.add("worker1", "worker.py", WORKER_NAME="worker1")
    time.sleep(1)  # the replies now wait in the durable reply queue
    own_system.add("gateway", "api_gateway.py")
    own_system.wait_serving(own_system.gateway_address)
    redeem_all(own_system, tickets)


def test_a_second_gateway_with_the_same_id_does_not_take_the_replies(own_system: System) -> None:
    port = free_port()
    twin = own_system.add("twin", "api_gateway.py", GATEWAY_LISTEN=f"127.0.0.1:{port}")
    time.sleep(3)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert "GATEWAY_ID must be unique" in twin.log()
    stub = gateway(own_system)
    for i in range(100):
        assert stub.Calculate(pb.CalculationRequest(operation=pb.SUM, num1=i, num2=1), timeout=10).result == i + 1

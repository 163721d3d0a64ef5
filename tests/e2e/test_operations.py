"""What people who run the service look for: metrics, reflection, liveness,
JSON logs, TLS, a token check, no password in the logs."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from calcmq.proto import calculator_pb2 as pb
from calcmq.proto import calculator_pb2_grpc as pb_grpc
from tests.certs import make_certs
from tests.conftest import show_logs_if_failed
from tests.support import ROOT, PrivateBroker, System, free_port, rabbitmqctl, wait_until

pytestmark = pytest.mark.e2e

SUM = pb.CalculationRequest(operation=pb.SUM, num1=2, num2=3)


@pytest.fixture
def own(vhost_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[System]:
    system = System(vhost_url, tmp_path, workers=1)
    yield system
    system.stop()
    show_logs_if_failed(request, system)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            head = line.split(" ")[0]
            if head == name or head.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


def test_every_program_serves_metrics_after_traffic(own: System) -> None:
    ports = {name: free_port() for name in ("calculator", "dispatcher", "worker1", "gateway")}
    own.add("calculator", "calculator_server.py", METRICS_PORT=str(ports["calculator"]))
    own.add("dispatcher", "rabbitmq_worker.py", METRICS_PORT=str(ports["dispatcher"]))
    own.add("worker1", "worker.py", WORKER_NAME="worker1", METRICS_PORT=str(ports["worker1"]))
    own.add("gateway", "api_gateway.py", METRICS_PORT=str(ports["gateway"]))
    own.wait_serving(own.gateway_address)
    stub = pb_grpc.GatewayStub(grpc.insecure_channel(own.gateway_address))
    for _ in range(5):
        stub.Calculate(SUM, timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.Calculate(pb.CalculationRequest(operation=pb.DIVIDE, num1=1, num2=0), timeout=10)
    gateway = scrape(ports["gateway"])
    assert sample(gateway, "calcmq_gateway_requests_total", rpc="Calculate", operation="SUM", outcome="OK") == 5
    assert sample(gateway, "calcmq_gateway_requests_total", operation="DIVIDE", outcome="INVALID_ARGUMENT") == 1
    assert sample(gateway, "calcmq_gateway_request_seconds_count", rpc="Calculate") == 6
    assert sample(gateway, "calcmq_gateway_inflight") == 0
    assert sample(gateway, "calcmq_broker_connected") == 1
    assert sample(scrape(ports["dispatcher"]), "calcmq_dispatcher_requests_total", outcome="forwarded") == 6
    worker = scrape(ports["worker1"])
    assert sample(worker, "calcmq_worker_tasks_total", operation="SUM", outcome="OK") == 5
    assert sample(worker, "calcmq_worker_calculator_seconds_count") == 6
    assert "python_info" in scrape(ports["calculator"])


def test_reflection_lets_grpcurl_list_and_describe(own: System) -> None:
    own.add("calculator", "calculator_server.py")
    own.wait_serving(own.calculator_address)
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    listed = subprocess.run([grpcurl, "-plaintext", own.calculator_address, "list"], capture_output=True, text=True,
                            timeout=30, check=True)  # fmt: skip
    assert {"calculator.Calculator", "grpc.health.v1.Health"} <= set(listed.stdout.split())
    own.add("gateway", "api_gateway.py")
    own.wait_serving(own.gateway_address)
    described = subprocess.run([grpcurl, "-plaintext", own.gateway_address, "describe", "calculator.Gateway"],
                               capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    assert "rpc CalculateStream ( stream .calculator.CalculationRequest )" in described.stdout


def test_dispatcher_and_worker_keep_a_liveness_file(own: System, tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.alive" for name in ("dispatcher", "worker1")}
    own.add("dispatcher", "rabbitmq_worker.py", HEALTH_FILE=str(files["dispatcher"]))
    own.add("worker1", "worker.py", HEALTH_FILE=str(files["worker1"]))
    for name, path in files.items():
        wait_until(path.exists, 20, f"{name}'s liveness file")
        probe = [sys.executable, "-m", "calcmq.healthcheck", "--file", str(path)]
        assert subprocess.run(probe, cwd=ROOT, timeout=30).returncode == 0
        assert own.processes[name].stop() == 0
        assert not path.exists(), "a stopped program must not look alive"
        failed = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert failed.returncode == 1 and failed.stderr.startswith("unhealthy:")


def test_json_logs_carry_the_request_id(own: System) -> None:
    own.extra_env["LOG_FORMAT"] = "json"
    own.extra_env["LOG_LEVEL"] = "DEBUG"
    own.start()
    stub = pb_grpc.GatewayStub(grpc.insecure_channel(own.gateway_address))
    stub.Calculate(pb.CalculationRequest(operation=pb.SUM, num1=1, num2=1, request_id="follow-me"), timeout=10)
    for name in ("gateway", "dispatcher", "worker1"):
        entries = [json.loads(line) for line in own.processes[name].log().splitlines() if line.strip()]
        assert {"ts", "level", "program", "msg"} <= entries[0].keys()
        assert any(e.get("request_id") == "follow-me" for e in entries), f"{name} never logged the request id"


def test_the_broker_password_never_reaches_the_logs(own: System) -> None:
    user, secret = f"calcmq-{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    vhost = own.rabbitmq_url.rsplit("/", 1)[1]
    rabbitmqctl("add_user", user, secret)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        own.rabbitmq_url = own.rabbitmq_url.replace("guest:guest", f"{user}:{secret}")
        own.start()
        assert pb_grpc.GatewayStub(grpc.insecure_channel(own.gateway_address)).Calculate(SUM, timeout=10).result == 5
        own.stop()
        for process in own.processes.values():
            assert secret not in process.log()
        assert f"{user}:***@" in own.processes["gateway"].log()
    finally:
        rabbitmqctl("delete_user", user)


def test_a_token_protected_gateway_answers_unauthenticated_without_it(own: System) -> None:
    own.extra_env["AUTH_TOKEN"] = "s3cret"
    own.start()  # the health probe in start() works without the token
    with grpc.insecure_channel(own.gateway_address) as channel:
        stub = pb_grpc.GatewayStub(channel)
        for metadata in [(), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)]:
            with pytest.raises(grpc.RpcError) as info:
                stub.Calculate(SUM, timeout=10, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as info:
            list(stub.CalculateStream(iter([SUM]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        assert stub.Calculate(SUM, timeout=10, metadata=(("authorization", "Bearer s3cret"),)).result == 5


def test_grpc_over_tls_end_to_end(own: System, tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    tls = {"TLS_CERT": str(certs.cert), "TLS_KEY": str(certs.key), "TLS_CA": str(certs.ca)}
    own.extra_env.update(tls)
    own.add("calculator", "calculator_server.py")
    own.add("dispatcher", "rabbitmq_worker.py")
    own.add("worker1", "worker.py", WORKER_NAME="worker1")  # calls the calculator over TLS
    own.add("gateway", "api_gateway.py")
    credentials = grpc.ssl_channel_credentials(certs.ca.read_bytes())
    with grpc.secure_channel(own.gateway_address, credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        wait_until(lambda: _serving(health), 30, "the TLS gateway")
        assert pb_grpc.GatewayStub(channel).Calculate(SUM, timeout=10).result == 5
    with grpc.insecure_channel(own.gateway_address) as plain, pytest.raises(grpc.RpcError):
        pb_grpc.GatewayStub(plain).Calculate(SUM, timeout=5)


def _serving(health: health_pb2_grpc.HealthStub) -> bool:
    try:
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
    except grpc.RpcError:
        return False
    return bool(status == health_pb2.HealthCheckResponse.SERVING)


def test_amqps_to_a_tls_broker(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The three AMQP programs reach a broker that only speaks TLS, trusting RABBITMQ_CA."""
    certs = make_certs(tmp_path / "certs")
    tls_port = free_port()
    broker = PrivateBroker(
        tmp_path / "broker",
        extra_conf=(
            f"listeners.ssl.default = 127.0.0.1:{tls_port}\n"
            f"ssl_options.cacertfile = {certs.ca}\nssl_options.certfile = {certs.cert}\n"
            f"ssl_options.keyfile = {certs.key}\nssl_options.verify = verify_none\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        ),
    )
    system = System(f"amqps://guest:guest@127.0.0.1:{tls_port}/%2F", tmp_path, workers=1)
    system.extra_env["RABBITMQ_CA"] = str(certs.ca)
    try:
        broker.start()
        system.start()
        assert pb_grpc.GatewayStub(grpc.insecure_channel(system.gateway_address)).Calculate(SUM, timeout=10).result == 5
        assert "connected to broker amqps://guest:***@127.0.0.1" in system.processes["worker1"].log()
    finally:
        system.stop()
        broker.stop()
        show_logs_if_failed(request, system)

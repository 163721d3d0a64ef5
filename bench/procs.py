"""The benchmark's processes and its private vhost.

Every program runs as a child in its own session (Ctrl-C reaches only the
orchestrator, which then stops the children in order) with PR_SET_PDEATHSIG,
so not even a SIGKILLed orchestrator leaves load or servers behind. Stopping
is by PID: SIGTERM, then SIGKILL after a timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pika  # type: ignore[import-untyped]
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
BROKER = os.environ.get("BENCH_BROKER", "localhost:5672")
_PR_SET_PDEATHSIG = 1


class Broke(Exception):
    """Something other than speed went wrong: the run's figures mean nothing."""


def rabbitmqctl(*args: str) -> str:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise Broke("rabbitmqctl not found: the benchmark needs a local RabbitMQ (make broker)")
    done = subprocess.run([ctl, "-q", *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise Broke(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def private_vhost() -> Iterator[str]:
    """A fresh vhost for guest, deleted afterwards whatever happens; yields its AMQP URL."""
    name = f"calcmq-bench-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{BROKER}/{name}"
    finally:
        with contextlib.suppress(Broke, subprocess.TimeoutExpired):
            rabbitmqctl("delete_vhost", name)


def broker_pid() -> int:
    """The process listening on the broker's port: the RabbitMQ node we measure.

    By port, not by name: rabbitmqctl runs a beam.smp too, and a test suite
    may run a second broker on another port.
    """
    port = int(BROKER.rpartition(":")[2] or 5672)
    for connection in psutil.net_connections(kind="tcp"):
        listening = connection.status == psutil.CONN_LISTEN and getattr(connection.laddr, "port", None) == port
        if listening and connection.pid:
            return connection.pid
    raise Broke(f"nothing on this machine listens on port {port}: the benchmark measures a local broker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the orchestrator dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: list[str], env: dict[str, str], log_path: Path, stdout: int | None = None) -> subprocess.Popen[bytes]:
    """Start `python argv...` from the repository root; stderr (and stdout unless piped) to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env=env,
            stdout=log if stdout is None else stdout,
            stderr=log,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # safe: no threads exist yet in this process
        )


def stop(popen: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """SIGTERM, wait; SIGKILL if it overstays. Returns the exit code (None: killed)."""
    if popen.poll() is not None:
        return popen.returncode
    popen.send_signal(signal.SIGTERM)
    try:
        return popen.wait(timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(10)
        return None


@dataclass
class Program:
    """One long-running program of a system under test."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 2000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]


@dataclass
class Group:
    """Programs started together and stopped together, in reverse order."""

    env: dict[str, str]
    logs: Path
    programs: list[Program] = field(default_factory=list)

    def start(self, name: str, *argv: str, **env: str) -> Program:
        log_path = self.logs / f"{name}.log"
        program = Program(name, spawn(list(argv), {**self.env, **env}, log_path), log_path)
        self.programs.append(program)
        return program

    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.programs}

    def check_alive(self) -> None:
        for program in self.programs:
            if not program.alive():
                raise Broke(f"{program.name} died (exit {program.popen.returncode}):\n{program.tail()}")

    def stop(self) -> None:
        for program in reversed(self.programs):
            stop(program.popen)
        self.programs.clear()


def base_env() -> dict[str, str]:
    """The orchestrator's environment without any calc-mq setting that could leak in."""
    prefixes = ("GATEWAY_", "CALCULATOR_", "WORKER_", "DISPATCHER_", "RABBITMQ_", "REQUEST_", "RESULT_", "MAX_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING")
    return env


def wait_serving(address: str, group: Group, timeout: float = 30.0) -> None:
    """Until the gRPC health check says SERVING (the gateway's: broker connected)."""
    give_up = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < give_up:
            group.check_alive()
            with contextlib.suppress(grpc.RpcError):
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    raise Broke(f"{address} not serving after {timeout:.0f}s")


def wait_consumers(url: str, wanted: dict[str, int], group: Group, timeout: float = 30.0) -> None:
    """Until each queue has its consumers: the pipeline is connected end to end before any load."""
    give_up = time.monotonic() + timeout
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        while time.monotonic() < give_up:
            group.check_alive()
            if all(_consumers(connection, queue) >= n for queue, n in wanted.items()):
                return
            time.sleep(0.1)
    finally:
        connection.close()
    raise Broke(f"queues {wanted} still without their consumers after {timeout:.0f}s")


def _consumers(connection: pika.BlockingConnection, queue: str) -> int:
    """Consumers of `queue`, 0 while it does not exist (a passive declare of it closes the channel)."""
    channel = connection.channel()
    try:
        return int(channel.queue_declare(queue, passive=True).method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if channel.is_open:
            channel.close()

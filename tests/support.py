"""Test support: private vhosts on the real broker, and the five programs as
real processes on free loopback ports.

Every test system gets its own vhost (created and deleted with rabbitmqctl),
so the tests neither see nor disturb queues a person runs by hand on the same
broker, and its own GATEWAY_ID and ports.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from aio_pika.abc import AbstractIncomingMessage
from grpc_health.v1 import health_pb2, health_pb2_grpc

from calcmq.proto import calculator_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
BROKER_HOST = os.environ.get("CALCMQ_TEST_BROKER", "localhost:5672")


def expected(op: int, a: float, b: float) -> float:
    """The right answer, by Python's own operators: the tests' oracle."""
    table: dict[int, float] = {
        pb.SUM: a + b,
        pb.SUBTRACT: a - b,
        pb.MULTIPLY: a * b,
        pb.DIVIDE: a / b,
        pb.POWER: math.pow(a, b),
        pb.MODULO: a % b,
    }
    return table[op]


def rabbitmqctl(*args: str) -> None:
    subprocess.run([_ctl(), "-q", *args], check=True, capture_output=True, timeout=60)


def _ctl() -> str:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise RuntimeError("rabbitmqctl not found: the integration tests need a local RabbitMQ (see README)")
    return ctl


# Each rabbitmqctl call starts an Erlang VM (about half a second), and most tests
# make a vhost: it is made in one call, and deleted in the background.
_ADD_VHOST = (
    'ok = rabbit_vhost:add(<<"{name}">>, <<"calcmq-tests">>), '
    'rabbit_auth_backend_internal:set_permissions(<<"guest">>, <<"{name}">>, '
    '<<".*">>, <<".*">>, <<".*">>, <<"calcmq-tests">>).'
)
_deleting: list[subprocess.Popen[bytes]] = []


@contextmanager
def private_vhost() -> Iterator[str]:
    """A fresh vhost for guest; yields its AMQP URL."""
    name = f"calcmq-test-{uuid.uuid4().hex[:10]}"
    _add_vhost(name)
    try:
        yield f"amqp://guest:guest@{BROKER_HOST}/{name}"
    finally:
        command = [_ctl(), "-q", "delete_vhost", name]
        _deleting.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def _add_vhost(name: str) -> None:
    try:
        rabbitmqctl("eval", _ADD_VHOST.format(name=name))
    except subprocess.CalledProcessError:  # a broker whose internals differ: the two plain commands
        with contextlib.suppress(subprocess.CalledProcessError):
            rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def finish_deleting_vhosts() -> None:
    """Wait for the vhosts deleted in the background (at the end of the session)."""
    for deletion in _deleting:
        deletion.wait(timeout=60)
    _deleting.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, *self.argv], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then wait; SIGKILL only if it overstays. Returns the exit code."""
        self.signal(signal.SIGTERM)
        code = self.wait(timeout)
        if code is None:
            self.kill()
        return code

    def wait(self, timeout: float) -> int | None:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class System:
    """The five programs wired to one private vhost."""

    rabbitmq_url: str
    workdir: Path
    workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    gateway_port: int = field(default_factory=free_port)
    calculator_port: int = field(default_factory=free_port)
    gateway_id: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def gateway_address(self) -> str:
        return f"127.0.0.1:{self.gateway_port}"

    @property
    def calculator_address(self) -> str:
        return f"127.0.0.1:{self.calculator_port}"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "CALCULATOR_", "WORKER_"))}
        env.update(
            RABBITMQ_URL=self.rabbitmq_url,
            GATEWAY_LISTEN=self.gateway_address,
            GATEWAY_ADDRESS=self.gateway_address,
            GATEWAY_ID=self.gateway_id,
            CALCULATOR_LISTEN=self.calculator_address,
            CALCULATOR_ADDRESS=self.calculator_address,
            GATEWAY_STATE_DIR=str(self.workdir / "state"),
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def add(self, name: str, script: str, **env: str) -> Process:
        process = Process(name, [script], self.env(**env), self.workdir / f"{name}.log")
        self.processes[name] = process
        process.start()
        return process

    def start(self) -> System:
        self.add("calculator", "calculator_server.py")
        self.add("dispatcher", "rabbitmq_worker.py")
        for i in range(self.workers):
            self.add(f"worker{i + 1}", "worker.py", WORKER_NAME=f"worker{i + 1}")
        self.add("gateway", "api_gateway.py")
        self.wait_serving(self.gateway_address)
        self.wait_serving(self.calculator_address)
        return self

    def wait_serving(self, address: str, timeout: float = 30) -> None:
        """Until the gRPC health check says SERVING (the gateway: broker connected)."""
        give_up = time.monotonic() + timeout
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < give_up:
                try:
                    if (
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"{address} not serving after {timeout}s\n{self.logs()}")

    def stop(self) -> dict[str, int | None]:
        return {name: p.stop() for name, p in reversed(self.processes.items())}

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{p.log()[-4000:]}" for name, p in self.processes.items())


# -- looking at queues directly (sync wrappers around aio-pika) ---------------


def queue_depth(url: str, queue: str) -> int:
    async def go() -> int:
        import aio_pika

        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)

    return asyncio.run(go())


def take_all(url: str, queue: str) -> list[AbstractIncomingMessage]:
    """Every message now in `queue`, acked (removed)."""

    async def go() -> list[AbstractIncomingMessage]:
        import aio_pika

        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel()
            declared = await channel.get_queue(queue, ensure=False)
            taken = []
            while (message := await declared.get(fail=False, no_ack=True)) is not None:
                taken.append(message)
            return taken

    return asyncio.run(go())


def publish_raw(url: str, queue: str, body: bytes, **properties: Any) -> None:
    async def go() -> None:
        import aio_pika

        connection = await aio_pika.connect(url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.default_exchange.publish(aio_pika.Message(body, **properties), queue)

    asyncio.run(go())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            raise TimeoutError(f"gave up waiting for {what} after {timeout}s")
        time.sleep(0.1)


# -- broker nodes of our own, to stop, start and kill without disturbing anyone --


class PrivateBroker:
    """A RabbitMQ node on free loopback ports, with its own data, cookie and
    node name, run as a child process: restarting it touches nobody else's
    broker. Needs rabbitmq-server installed (not running).

    Nodes given the same `cookie` can form a cluster (`join`); each still has
    its own AMQP and distribution ports, data directory and HOME. The node
    runs in a process group of its own (the rabbitmq-server shell, the Erlang
    VM and its helpers), led by the shell: `kill` and `stop` signal it by that
    PID, and nodes still running when the interpreter exits are killed.
    """

    def __init__(
        self, workdir: Path, *, node: str | None = None, cookie: str | None = None, extra_conf: str = ""
    ) -> None:
        self.workdir = workdir
        self.extra_conf = extra_conf  # more rabbitmq.conf lines (a TLS listener, say)
        self.port = free_port()
        self.dist_port = free_port()
        self.node = node or f"calcmq-{uuid.uuid4().hex[:8]}@localhost"
        self.cookie = cookie or uuid.uuid4().hex
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "HOME": str(workdir),  # the Erlang cookie lives here, for the node and for rabbitmqctl
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq"),
            "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    def binary(name: str) -> str | None:
        debian = Path("/usr/lib/rabbitmq/bin") / name  # Debian's wrapper would switch users
        return str(debian) if debian.exists() else shutil.which(name)

    def launch(self) -> PrivateBroker:
        """Start the node without waiting for it (see `wait_port`)."""
        server = self.binary("rabbitmq-server")
        if server is None:
            raise RuntimeError("rabbitmq-server is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cookie = self.workdir / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o600)
        (self.workdir / "enabled_plugins").write_text("[].\n")
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n{self.extra_conf}"
        )
        log = (self.workdir / "server.log").open("ab")
        self.process = subprocess.Popen(
            [server], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        _RUNNING_NODES.add(self)
        return self

    def start(self) -> PrivateBroker:
        self.launch()
        self.wait_port(60)
        return self

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl against this node, with its cookie; returns the output."""
        ctl = self.binary("rabbitmqctl")
        assert ctl is not None
        done = subprocess.run(
            [ctl, "-q", "-n", self.node, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {self.node} {' '.join(args)}: {done.stderr.strip() or done.stdout}")
        return done.stdout

    def wait_port(self, timeout: float) -> None:
        def answers() -> bool:
            assert self.alive(), f"the private broker {self.node} exited; see {self.workdir / 'server.log'}"
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(answers, timeout, f"the private broker on port {self.port}")

    def join(self, other: PrivateBroker) -> None:
        """Make this node a member of `other`'s cluster (same cookie needed)."""
        self.ctl("stop_app")
        self.ctl("join_cluster", other.node)
        self.ctl("start_app")
        self.wait_port(60)

    def stop_app(self) -> None:
        """Every client connection drops; the node keeps its data."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.wait_port(60)

    def alive(self) -> bool:
        """The node's shell has not exited (it waits for the Erlang VM)."""
        return self.process is not None and self.process.returncode is None and not self._exited()

    def _exited(self) -> bool:
        # WNOWAIT leaves the shell unreaped, so its PID (our process group's id)
        # cannot be reused by another process until `_reap`.
        assert self.process is not None
        try:
            return os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        if self.process.returncode is None:  # not reaped: the group id is still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signum)

    def _reap(self) -> None:
        assert self.process is not None
        self._signal_group(signal.SIGKILL)  # whatever outlived the shell (the VM, its helpers)
        self.process.wait(10)
        _RUNNING_NODES.discard(self)

    def kill(self) -> None:
        """A crash: SIGKILL to the whole node (its epmd registration lingers briefly)."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self._reap()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (the shell stops the node cleanly), then SIGKILL if it overstays."""
        if self.process is None or self.process.returncode is not None:
            return
        if not self._exited():
            self.process.send_signal(signal.SIGTERM)
            give_up = time.monotonic() + timeout
            while not self._exited() and time.monotonic() < give_up:
                time.sleep(0.1)
        self._reap()


# Nodes launched and not yet stopped: killed at exit should a test run end
# without its finalizers (a hard timeout, Ctrl-C twice).
_RUNNING_NODES: set[PrivateBroker] = set()


@atexit.register
def _kill_running_nodes() -> None:
    for node in list(_RUNNING_NODES):
        node.kill()


@contextmanager
def private_cluster(workdir: Path, size: int = 3) -> Iterator[list[PrivateBroker]]:
    """`size` PrivateBrokers, calcmq-<hex>-1@localhost and on, sharing one cookie,
    clustered (each joined to the first). Every node is stopped on the way out."""
    tag = uuid.uuid4().hex[:8]
    cookie = uuid.uuid4().hex
    nodes = [
        PrivateBroker(workdir / f"node{i}", node=f"calcmq-{tag}-{i}@localhost", cookie=cookie)
        for i in range(1, size + 1)
    ]
    try:
        for node in nodes:  # boot side by side: a node takes seconds to start
            node.launch()
        for node in nodes:
            node.wait_port(90)
        for node in nodes[1:]:
            node.join(nodes[0])
        yield nodes
    finally:
        for node in nodes:
            node.stop()

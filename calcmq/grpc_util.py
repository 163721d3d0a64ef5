"""Health and reflection for our gRPC servers, and how we bind them.

Both are the standard services (grpcio-health-checking, grpcio-reflection), so
`grpcurl -plaintext HOST:PORT list` and any gRPC health probe just work.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

# gRPC's own limit is 4 MiB; our messages are a few dozen bytes.
MAX_MESSAGE_BYTES = 64 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


def new_server(interceptors: list[grpc.aio.ServerInterceptor] | None = None) -> grpc.aio.Server:
    return grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)


def bind(server: grpc.aio.Server, address: str, tls_cert: str = "", tls_key: str = "") -> int:
    """Listen on `address`, over TLS when given a certificate and key; port 0
    picks a free one. Returns the port."""
    if bool(tls_cert) != bool(tls_key):
        raise SystemExit("error: TLS_CERT and TLS_KEY go together: set both or neither")
    try:
        if tls_cert:
            pair = (Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())
            port: int = server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
        else:
            port = server.add_insecure_port(address)
    except OSError as exc:
        raise SystemExit(f"error: cannot read the TLS files: {exc}") from None
    except RuntimeError:
        port = 0
    if port == 0:
        raise SystemExit(f"error: cannot listen on {address}")
    return port


def client_channel(address: str, tls_ca: str = "", options: list[tuple[str, int]] | None = None) -> grpc.aio.Channel:
    """A channel to one of our servers: TLS trusting `tls_ca` when given, else plaintext."""
    if not tls_ca:
        return grpc.aio.insecure_channel(address, options=options)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
    except OSError as exc:
        raise SystemExit(f"error: cannot read TLS_CA: {exc}") from None
    return grpc.aio.secure_channel(address, credentials, options=options)


def add_health_and_reflection(server: grpc.aio.Server, service_names: list[str]) -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    return servicer


async def set_serving(servicer: health.aio.HealthServicer, service_names: list[str], up: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await servicer.set(name, status)


class HealthReporter:
    """Health that follows a state changed from plain callbacks (the broker
    link going up or down): one task applies the latest state, in order."""

    def __init__(self, servicer: health.aio.HealthServicer, service_names: list[str]) -> None:
        self._servicer = servicer
        self._names = service_names
        self._up = False
        self._changed = asyncio.Event()
        self._changed.set()  # start as NOT_SERVING
        self._task = asyncio.get_running_loop().create_task(self._apply())

    def report(self, up: bool) -> None:
        self._up = up
        self._changed.set()

    async def _apply(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await set_serving(self._servicer, self._names, self._up)

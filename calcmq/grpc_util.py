"""Health and reflection for our gRPC servers, and how we bind them.

Both are the standard services (grpcio-health-checking, grpcio-reflection), so
`grpcurl -plaintext HOST:PORT list` and any gRPC health probe just work.
"""

from __future__ import annotations

import asyncio

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


def new_server() -> grpc.aio.Server:
    return grpc.aio.server(options=SERVER_OPTIONS)


def bind(server: grpc.aio.Server, address: str) -> int:
    """Listen on `address`; port 0 picks a free one. Returns the port."""
    port: int = server.add_insecure_port(address)
    if port == 0:
        raise SystemExit(f"error: cannot listen on {address}")
    return port


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

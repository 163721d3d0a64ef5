"""A gRPC health probe for container health checks:
`python -m calcmq.healthcheck ADDRESS [SERVICE]`.

Calls grpc.health.v1.Health/Check on ADDRESS with a 2 s deadline. Exits 0
when SERVICE ("" for the whole server) is SERVING; otherwise prints one line
saying why on stderr and exits 1 (never 2: Docker reserves that exit code).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT = 2.0
USAGE = "usage: python -m calcmq.healthcheck ADDRESS [SERVICE]"


def check(address: str, service: str = "", timeout: float = TIMEOUT) -> str | None:
    """None when `service` at `address` is SERVING, else why not."""
    request = health_pb2.HealthCheckRequest(service=service)
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    if response.status == health_pb2.HealthCheckResponse.SERVING:
        return None
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if not 1 <= len(args) <= 2:
        print(USAGE, file=sys.stderr)
        return 1
    address, service = args[0], args[1] if len(args) == 2 else ""
    try:
        problem = check(address, service)
    except Exception as exc:  # a probe answers with one line, never a traceback
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        return 0
    print(f"unhealthy: {address} {service or '(server)'}: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""A health probe for container health checks:
`python -m calcmq.healthcheck ADDRESS [SERVICE]` or `--file PATH [MAX_AGE]`.

With an address, calls grpc.health.v1.Health/Check with a 2 s deadline (over
TLS when TLS_CA is set) and exits 0 when SERVICE ("" for the whole server) is
SERVING. With --file, exits 0 when the liveness file of a dispatcher or worker
(HEALTH_FILE) was touched less than MAX_AGE seconds ago (default 20).
Otherwise it prints one line saying why on stderr and exits 1 (never 2:
Docker reserves that exit code).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT = 2.0
USAGE = "usage: python -m calcmq.healthcheck ADDRESS [SERVICE] | --file PATH [MAX_AGE]"
MAX_AGE = 20.0


def check(address: str, service: str = "", timeout: float = TIMEOUT) -> str | None:
    """None when `service` at `address` is SERVING, else why not."""
    request = health_pb2.HealthCheckRequest(service=service)
    ca = os.environ.get("TLS_CA")
    if ca:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(Path(ca).read_bytes()))
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    if response.status == health_pb2.HealthCheckResponse.SERVING:
        return None
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def check_file(path: str, max_age: float = MAX_AGE) -> str | None:
    """None when the liveness file at `path` is fresh, else why not."""
    try:
        age = time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:
        return "no liveness file (no broker session)"
    return None if age < max_age else f"liveness file {age:.0f}s old"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    try:
        if args[:1] == ["--file"] and 2 <= len(args) <= 3:
            target = args[1]
            problem = check_file(target, float(args[2]) if len(args) == 3 else MAX_AGE)
        elif 1 <= len(args) <= 2 and not args[0].startswith("-"):
            target = f"{args[0]} {args[1] if len(args) == 2 else '(server)'}"
            problem = check(args[0], args[1] if len(args) == 2 else "")
        else:
            print(USAGE, file=sys.stderr)
            return 1
    except Exception as exc:  # a probe answers with one line, never a traceback
        target, problem = " ".join(args), f"{type(exc).__name__}: {exc}"
    if problem is None:
        return 0
    print(f"unhealthy: {target}: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

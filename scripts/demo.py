"""`make demo`: start the five programs, run the client's demo, stop them.

The programs use the settings in your environment (RABBITMQ_URL and so on);
the gRPC ports default to free ones, so a system you already run by hand on
50051/50052 is left alone. Their logs go to .demo/*.log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ["calculator_server.py", "rabbitmq_worker.py", "worker.py", "worker.py", "api_gateway.py"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(address: str, timeout: float = 30) -> bool:
    give_up = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < give_up:
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return False


def main() -> int:
    gateway, calculator = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "GATEWAY_LISTEN": gateway,
        "GATEWAY_ADDRESS": gateway,
        "CALCULATOR_LISTEN": calculator,
        "CALCULATOR_ADDRESS": calculator,
        "GATEWAY_ID": os.environ.get("GATEWAY_ID", "demo"),
        "PYTHONUNBUFFERED": "1",
    }
    logs = ROOT / ".demo"
    logs.mkdir(exist_ok=True)
    processes = []
    for i, program in enumerate(PROGRAMS):
        log = (logs / f"{i}-{program.removesuffix('.py')}.log").open("w")
        processes.append(subprocess.Popen([sys.executable, program], cwd=ROOT, env=env, stdout=log, stderr=log))
    try:
        if not wait_serving(gateway):
            print(f"error: the gateway did not come up; see {logs}/*.log", file=sys.stderr)
            return 1
        print(f"five programs up (gateway {gateway}); the client's demo:\n", file=sys.stderr)
        return subprocess.call([sys.executable, "calculator_client.py", "--gateway-address", gateway], cwd=ROOT)
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        print("\nstopped them all; logs in .demo/", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

"""Settings for all five programs: one frozen dataclass, read from the
environment and overridable by command-line flags of the same name.

Every field carries the environment variable that sets it; the flag is the
variable in lower case with dashes (`GATEWAY_LISTEN` -> `--gateway-listen`).
Each program asks only for the fields it uses, so `--help` stays short.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

# It names a queue and a file: keep it to characters safe in both.
_GATEWAY_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")


def _setting(default: Any, env: str, help: str) -> Any:
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True)
class Settings:
    rabbitmq_url: str = _setting("amqp://guest:guest@localhost:5672/%2F", "RABBITMQ_URL", "AMQP URL of the broker")
    rabbitmq_ca: str = _setting("", "RABBITMQ_CA", "CA file to trust for amqps:// brokers (default: the system's)")
    gateway_listen: str = _setting("[::]:50051", "GATEWAY_LISTEN", "gateway gRPC listen address")
    gateway_address: str = _setting("localhost:50051", "GATEWAY_ADDRESS", "gateway address to call")
    gateway_id: str = _setting("", "GATEWAY_ID", "stable id naming the reply queue (default: from the host name)")
    calculator_listen: str = _setting("[::]:50052", "CALCULATOR_LISTEN", "calculator gRPC listen address")
    calculator_address: str = _setting("localhost:50052", "CALCULATOR_ADDRESS", "calculator address to call")
    gateway_max_inflight: int = _setting(10000, "GATEWAY_MAX_INFLIGHT", "requests in flight before RESOURCE_EXHAUSTED")
    # 64: enough that a worker's deliveries, calculator batches and acks come
    # in batches (16 cost a fifth more CPU per request, bench/README.md), and a
    # crash returns no more than that to the queue; RabbitMQ's own advice is
    # tens to hundreds (https://www.rabbitmq.com/docs/confirms#channel-qos-prefetch-throughput).
    worker_concurrency: int = _setting(64, "WORKER_CONCURRENCY", "prefetch and parallel calculator calls per worker")
    dispatcher_prefetch: int = _setting(256, "DISPATCHER_PREFETCH", "unacked requests the dispatcher holds at once")
    request_timeout: float = _setting(
        30.0, "REQUEST_TIMEOUT", "seconds a request may take when the caller set no deadline"
    )
    result_ttl: float = _setting(600.0, "RESULT_TTL", "seconds a finished result stays redeemable with GetResult")
    max_attempts: int = _setting(8, "MAX_ATTEMPTS", "calculator tries per task before giving up with UNAVAILABLE")
    retry_delay: float = _setting(
        0.25, "RETRY_DELAY", "first retry delay in seconds (doubles each attempt, with jitter)"
    )
    gateway_state_dir: str = _setting(
        "~/.local/state/calc-mq", "GATEWAY_STATE_DIR", "where the gateway keeps issued tickets and their results"
    )
    worker_name: str = _setting("", "WORKER_NAME", "name reported in results (default: host name and pid)")
    log_level: str = _setting("INFO", "LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = _setting("text", "LOG_FORMAT", "text (key=value lines) or json (one object per line)")
    metrics_port: int = _setting(0, "METRICS_PORT", "serve Prometheus metrics on 127.0.0.1:PORT/metrics (0: off)")
    metrics_host: str = _setting("127.0.0.1", "METRICS_HOST", "address the metrics endpoint listens on")
    auth_token: str = _setting("", "AUTH_TOKEN", "gateway: require 'authorization: Bearer <token>'; client: send it")
    tls_cert: str = _setting("", "TLS_CERT", "gateway/calculator: serve gRPC over TLS with this certificate (PEM)")
    tls_key: str = _setting("", "TLS_KEY", "gateway/calculator: the certificate's private key (PEM)")
    health_file: str = _setting("", "HEALTH_FILE", "dispatcher/worker: a liveness file kept fresh while connected")
    tls_ca: str = _setting("", "TLS_CA", "client/worker: trust this CA (PEM) and call the gateway/calculator over TLS")

    def effective_gateway_id(self) -> str:
        gateway_id = self.gateway_id or socket.gethostname()
        if not _GATEWAY_ID.fullmatch(gateway_id):
            raise SystemExit(f"error: GATEWAY_ID={gateway_id!r}: use 1-100 letters, digits, '.', '_' or '-'")
        return gateway_id

    def ticket_store_path(self) -> Path:
        return Path(self.gateway_state_dir).expanduser() / f"tickets-{self.effective_gateway_id()}.sqlite3"

    def effective_worker_name(self) -> str:
        return self.worker_name or f"{socket.gethostname()}-{os.getpid()}"


def _env_name(name: str) -> str:
    return Settings.__dataclass_fields__[name].metadata["env"]  # type: ignore[no-any-return]


def from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment alone (tests and the demo use this)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = environ.get(f.metadata["env"])
        if raw is not None and raw != "":
            values[f.name] = _convert(f.name, type(f.default), raw)
    return Settings(**values)


def _convert(name: str, kind: type, raw: str) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        raise SystemExit(f"error: {_env_name(name)}={raw!r} is not a valid {kind.__name__}") from None
    if kind in (int, float):
        floor = 0 if Settings.__dataclass_fields__[name].default == 0 else 1e-9  # a default of 0 means "off"
        if not (math.isfinite(value) and value >= floor):
            raise SystemExit(f"error: {_env_name(name)} must be {'0 or more' if floor == 0 else 'positive'}, got {raw}")
    return value


def add_flags(parser: argparse.ArgumentParser, names: Sequence[str], *, suppress: bool = False) -> None:
    """Add one flag per setting; the environment supplies the default.

    `suppress` leaves an absent flag out of the namespace, for sub-commands
    that share flags with their parent parser (argparse would otherwise reset
    the parent's value to the default).
    """
    group = parser.add_argument_group("settings (flag or environment variable)")
    for name in names:
        f = Settings.__dataclass_fields__[name]
        env = f.metadata["env"]
        group.add_argument(
            "--" + env.lower().replace("_", "-"),
            dest=name,
            metavar=env,
            default=argparse.SUPPRESS if suppress else None,
            help=_help(f.metadata["help"], f.default),
        )


def _help(text: str, default: Any) -> str:
    """The flag's help: its text, then its default unless the text already says it or
    it is empty; escaped, since argparse %-formats help (the URL's %2F)."""
    if "default" not in text and default not in ("", None):
        text = f"{text} (default: {default})"
    return text.replace("%", "%%")


def from_args(args: argparse.Namespace, names: Sequence[str]) -> Settings:
    """Environment first, then any flag the user gave."""
    settings = from_env()
    overrides = {
        name: _convert(name, type(Settings.__dataclass_fields__[name].default), value)
        for name in names
        if (value := getattr(args, name, None)) is not None
    }
    return replace(settings, **overrides)


COMMON = ["log_level", "log_format", "metrics_port", "metrics_host"]


def load(description: str, names: Sequence[str], argv: Sequence[str] | None = None) -> Settings:
    """Parse the flags of a server program (its own, plus logging and metrics)."""
    parser = argparse.ArgumentParser(description=description)
    add_flags(parser, [*names, *COMMON])
    args = parser.parse_args(argv)
    return from_args(args, [*names, *COMMON])

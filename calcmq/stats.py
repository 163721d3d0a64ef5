"""Queue depths and gateway health for `calculator_client.py stats`.

Two sources for the queues, best first. The broker's management HTTP API
lists every calc.* queue (the gateways' reply queues included) with unacked
counts and rates, but it is a plugin that may be off or firewalled. Passive
declares over AMQP work on every broker the programs can use, but tell only
ready messages and consumers, and only for queues we can name: so without the
API the reply queue shown is the one for GATEWAY_ID (or this host's name).
Both look at the first address of RABBITMQ_URL: one node answers for a
(quorum-replicated) queue wherever it lives.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import ssl
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from calcmq import topology
from calcmq.amqp import NOT_FOUND, BrokerUnavailable, ChannelClosed, Session, describe, parse_urls
from calcmq.logs import mask_url

SHARED_QUEUES = (topology.REQUESTS, topology.TASKS, topology.RETRY, topology.DEAD)
MANAGEMENT_PORT = 15672
MANAGEMENT_TLS_PORT = 15671
UNREACHABLE = "unreachable"
# What "the broker cannot be asked" looks like; ValueError: an unusable URL.
BROKER_ERRORS: tuple[type[BaseException], ...] = (BrokerUnavailable, ConnectionError, OSError, TimeoutError, ValueError)


@dataclass(frozen=True)
class QueueStats:
    """One queue's figures; None where the source cannot tell."""

    name: str
    exists: bool = True
    ready: int | None = None
    unacked: int | None = None
    consumers: int | None = None
    publish_rate: float | None = None
    deliver_rate: float | None = None


@dataclass
class BrokerStats:
    """What the broker told, or why it told nothing (`error`)."""

    url: str  # masked: fit to print
    source: str = ""  # "management" or "amqp"; "" when unreachable
    queues: list[QueueStats] = field(default_factory=list)
    error: str = ""


def first_url(rabbitmq_url: str) -> str:
    """The address stats asks: the first of a comma-separated RABBITMQ_URL."""
    return parse_urls(rabbitmq_url)[0]


# -- the management HTTP API ------------------------------------------------------------------


def management_request(amqp_url: str, port: int | None = None) -> urllib.request.Request:
    """GET /api/queues/<vhost> on the broker's host, with the AMQP URL's credentials
    (the management plugin accepts the same users)."""
    parts = urlsplit(amqp_url)
    secure = parts.scheme == "amqps"
    host = parts.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    port = port or (MANAGEMENT_TLS_PORT if secure else MANAGEMENT_PORT)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    url = f"{'https' if secure else 'http'}://{host}:{port}/api/queues/{quote(vhost, safe='')}"
    user = unquote(parts.username or "guest")
    password = unquote(parts.password or "guest")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.request.Request(url, headers={"Authorization": f"Basic {token}", "Accept": "application/json"})


def queues_from_management(payload: Any) -> list[QueueStats]:
    """The calc.* queues of an /api/queues answer. No message_stats means no
    traffic yet: a rate of 0, not an unknown one."""
    found = []
    for queue in payload if isinstance(payload, list) else []:
        name = str(queue.get("name", ""))
        if not name.startswith("calc."):
            continue
        rates = queue.get("message_stats") or {}
        found.append(
            QueueStats(
                name=name,
                ready=int(queue.get("messages_ready") or 0),
                unacked=int(queue.get("messages_unacknowledged") or 0),
                consumers=int(queue.get("consumers") or 0),
                publish_rate=float((rates.get("publish_details") or {}).get("rate", 0.0)),
                deliver_rate=float((rates.get("deliver_get_details") or {}).get("rate", 0.0)),
            )
        )
    return found


def fetch_management(
    amqp_url: str, timeout: float, ca_file: str = "", port: int | None = None
) -> list[QueueStats] | None:
    """The queues from the management API, or None when it does not answer
    usefully (absent plugin, refused credentials, timeout): the caller falls back."""
    request = management_request(amqp_url, port)
    context = ssl.create_default_context(cafile=ca_file or None) if request.full_url.startswith("https") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            payload = json.loads(response.read())
    except (OSError, ValueError):  # URLError and HTTPError are OSErrors; bad JSON a ValueError
        return None
    return queues_from_management(payload)


# -- passive declares over AMQP ---------------------------------------------------------------


async def fetch_amqp(
    amqp_url: str, names: Sequence[str], optional: Sequence[str] = (), *, timeout: float, ca_file: str = ""
) -> list[QueueStats]:
    """Ready counts and consumers by passive declare. Queues in `optional` are
    left out when absent. Raises BROKER_ERRORS when the broker cannot be had."""
    context = ssl.create_default_context(cafile=ca_file or None)
    found = []
    session: Session | None = None
    try:
        for name in [*names, *optional]:
            if session is None or not session.is_open:  # the broker closes the channel that asks for a missing queue
                session = Session(asyncio.get_running_loop())
                await asyncio.wait_for(session.open(amqp_url, "calculator_client stats", context), timeout)
            stats = await asyncio.wait_for(_declare_passively(session, name), timeout)
            if stats.exists or name not in optional:
                found.append(stats)
    finally:
        if session is not None:
            await session.close()
    return found


async def _declare_passively(session: Session, name: str) -> QueueStats:
    try:
        declared = await session.declare_queue(name, passive=True)
    except ChannelClosed as exc:
        if exc.reply_code != NOT_FOUND:
            raise
        return QueueStats(name=name, exists=False)
    return QueueStats(name=name, ready=int(declared.message_count or 0), consumers=int(declared.consumer_count or 0))


# -- putting it together ----------------------------------------------------------------------


def _order(queues: list[QueueStats], wanted: Sequence[str]) -> list[QueueStats]:
    """The queues asked for first (absent ones shown as such), then the rest by name."""
    by_name = {q.name: q for q in queues}
    shared = [by_name.pop(name, QueueStats(name=name, exists=False)) for name in wanted]
    return shared + sorted(by_name.values(), key=lambda q: q.name)


async def collect_broker(
    rabbitmq_url: str,
    *,
    gateway_id: str,
    timeout: float,
    ca_file: str = "",
    use_management: bool = True,
    management_port: int | None = None,
) -> BrokerStats:
    """The queues, from the management API if it answers, else by passive declare."""
    url = first_url(rabbitmq_url)
    stats = BrokerStats(url=mask_url(url))
    wanted = [*SHARED_QUEUES, *([topology.reply_queue_name(gateway_id)] if gateway_id else [])]
    if use_management:
        queues = await asyncio.to_thread(fetch_management, url, min(timeout, 2.0), ca_file, management_port)
        if queues is not None:
            stats.source, stats.queues = "management", _order(queues, wanted)
            return stats
    guess = [] if gateway_id else [topology.reply_queue_name(socket.gethostname())]  # the gateway's default id
    _quiet_amqp_logs()
    try:
        queues = await fetch_amqp(url, wanted, guess, timeout=timeout, ca_file=ca_file)
    except BROKER_ERRORS as exc:
        stats.error = describe(exc)
        return stats
    stats.source, stats.queues = "amqp", _order(queues, wanted)
    return stats


def _quiet_amqp_logs() -> None:
    """pika logs a failed connect at ERROR; with no logging configured Python
    would print it to stderr beside our own one-line error."""
    logger = logging.getLogger("pika")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())


async def gateway_health(channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]], timeout: float) -> str:
    """The gateway's overall health (service ""): SERVING, NOT_SERVING (its broker
    link is down, or it is draining), `unreachable`, or the status code it answered."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return (
            UNREACHABLE
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            else exc.code().name
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


# -- output -----------------------------------------------------------------------------------


def as_json(broker: BrokerStats, gateway_address: str, health: str) -> dict[str, Any]:
    return {
        "broker": {"url": broker.url, "source": broker.source or None, "reachable": not broker.error}
        | ({"error": broker.error} if broker.error else {}),
        "gateway": {"address": gateway_address, "health": health},
        "queues": [asdict(q) for q in broker.queues],
    }


def _cell(value: float | None, rate: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if rate else str(value)


def broker_line(broker: BrokerStats) -> str:
    how = "the management API" if broker.source == "management" else "passive declares (no unacked counts or rates)"
    return f"broker {broker.url} via {how}"


def table(broker: BrokerStats) -> Table:
    """One row per queue; '-' where the source cannot tell."""
    grid = Table()
    for heading in ("queue", "ready", "unacked", "consumers", "publish/s", "deliver/s"):
        grid.add_column(heading, justify="left" if heading == "queue" else "right")
    for q in broker.queues:
        if not q.exists:
            grid.add_row(q.name, "absent", "", "", "", "")
            continue
        grid.add_row(
            q.name,
            _cell(q.ready),
            _cell(q.unacked),
            _cell(q.consumers),
            _cell(q.publish_rate, rate=True),
            _cell(q.deliver_rate, rate=True),
        )
    return grid


def gateway_line(address: str, health: str) -> str:
    return f"gateway {address}: {health}"


def broker_down_lines(broker: BrokerStats, health: str) -> list[str]:
    """What to say when only the broker is unreachable: the gateway's view hints at why."""
    lines = [f"broker {broker.url}: unreachable ({broker.error})"]
    if health == "SERVING":
        lines.append("the gateway is SERVING, so it reaches a broker: is this RABBITMQ_URL the one it uses?")
    elif health == "NOT_SERVING":
        lines.append("the gateway is NOT_SERVING: it cannot reach the broker either")
    return lines

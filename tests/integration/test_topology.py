"""The AMQP topology on the real broker: declarations, poison handling, the
dispatcher's forwarding, each on a private vhost."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from pathlib import Path

import aio_pika
import pytest

from calcmq import codec, topology
from calcmq.amqp import Message, Session
from calcmq.proto import calculator_pb2 as pb
from tests.support import System, queue_depth, take_all, wait_until

pytestmark = pytest.mark.integration


async def _session(url: str) -> Session:
    session = Session(asyncio.get_running_loop())
    await session.open(url, "test", ssl.create_default_context())
    return session


async def _declare_twice(url: str) -> dict[str, int]:
    session = await _session(url)
    try:
        await topology.declare(session)
        await topology.declare(session)  # idempotent: same arguments, no error
        await topology.declare_reply_queue(session, "calc.replies.t", topology.REPLY_QUEUE_TTL_MS)
        counts = {}
        for name in [*topology.QUEUES, "calc.replies.t"]:
            declared = await session.declare_queue(name, passive=True)
            counts[name] = int(declared.message_count)
        return counts
    finally:
        await session.close()


def test_declaring_the_topology_twice_is_harmless(vhost_url: str) -> None:
    counts = asyncio.run(_declare_twice(vhost_url))
    assert set(counts) == {"calc.requests", "calc.tasks", "calc.retry", "calc.dead", "calc.replies.t"}


async def _crash_on(url: str, deliveries: int) -> None:
    """Take the one task in calc.tasks and die holding it, `deliveries` times."""
    for _ in range(deliveries):
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        queue = await channel.get_queue(topology.TASKS, ensure=False)
        message = await queue.get(fail=False, timeout=5)
        if message is None:
            await connection.close()
            return
        await connection.close()  # no ack: like a worker killed mid-task


def test_a_poison_task_is_stopped_by_the_delivery_limit(vhost_url: str) -> None:
    asyncio.run(_declare_twice(vhost_url))
    request = pb.CalculationRequest(operation=pb.SUM, num1=1, num2=2, request_id="poison-1")
    message = codec.request_message(request, reply_to="calc.replies.t", deadline=time.time() + 300, kind="call")
    asyncio.run(_publish(vhost_url, topology.TASKS, message))
    asyncio.run(_crash_on(vhost_url, topology.DELIVERY_LIMIT + 2))
    wait_until(lambda: queue_depth(vhost_url, topology.DEAD) == 1, 10, "the poison task in calc.dead")
    (dead,) = take_all(vhost_url, topology.DEAD)
    assert dead.correlation_id == "poison-1"
    assert dead.headers["x-first-death-reason"] == "delivery_limit"
    assert queue_depth(vhost_url, topology.TASKS) == 0


async def _publish(url: str, queue: str, message: Message) -> None:
    session = await _session(url)
    try:
        await session.publish(message, queue, timeout=10)
    finally:
        await session.close()


def test_the_dispatcher_forwards_a_valid_request_with_its_properties(vhost_url: str, tmp_path: Path) -> None:
    system = System(vhost_url, tmp_path, workers=0)
    system.add("dispatcher", "rabbitmq_worker.py")
    try:
        request = pb.CalculationRequest(operation=pb.POWER, num1=2, num2=8, request_id="fwd-1")
        deadline = time.time() + 60
        message = codec.request_message(request, reply_to="calc.replies.t", deadline=deadline, kind="submit")
        wait_until(lambda: "connected" in system.processes["dispatcher"].log(), 20, "the dispatcher")
        asyncio.run(_publish(vhost_url, topology.REQUESTS, message))
        wait_until(lambda: queue_depth(vhost_url, topology.TASKS) == 1, 10, "the forwarded task")
        (task,) = take_all(vhost_url, topology.TASKS)
        assert (task.correlation_id, task.message_id, task.reply_to) == ("fwd-1", "fwd-1", "calc.replies.t")
        assert task.content_type == codec.REQUEST_TYPE
        assert task.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert task.headers[codec.H_DEADLINE] == int(deadline * 1000)
        assert task.headers[codec.H_KIND] == "submit"
        assert isinstance(task.expiration, (int, float)) and 0 < task.expiration <= 60
        assert pb.CalculationRequest.FromString(task.body) == request
        assert queue_depth(vhost_url, topology.REQUESTS) == 0
    finally:
        system.stop()


async def _backlog(url: str, count: int) -> None:
    session = await _session(url)
    try:
        await topology.declare(session)
        deadline = time.time() + 60
        messages = [
            codec.request_message(
                pb.CalculationRequest(operation=pb.SUM, num1=i, num2=1, request_id=f"backlog-{i}"),
                reply_to="calc.replies.t",
                deadline=deadline,
                kind="call",
            )
            for i in range(count)
        ]
        await asyncio.gather(*(session.publish(m, topology.REQUESTS, timeout=10) for m in messages))
    finally:
        await session.close()


def test_a_dispatcher_starting_on_a_backlog_forwards_it_without_bouncing_any(vhost_url: str, tmp_path: Path) -> None:
    """The backlog arrives with the consumer's confirmation, before the session is fully set up."""
    asyncio.run(_backlog(vhost_url, 120))
    system = System(vhost_url, tmp_path, workers=0)
    system.add("dispatcher", "rabbitmq_worker.py")
    try:
        wait_until(lambda: queue_depth(vhost_url, topology.TASKS) == 120, 20, "the forwarded backlog")
        assert "goes back to" not in system.processes["dispatcher"].log()
        tasks = take_all(vhost_url, topology.TASKS)
        assert sorted(str(t.correlation_id) for t in tasks) == sorted(f"backlog-{i}" for i in range(120))
        assert not any(t.headers.get("x-delivery-count") for t in tasks)
    finally:
        system.stop()


def test_the_dispatcher_drops_an_expired_request(vhost_url: str, tmp_path: Path) -> None:
    system = System(vhost_url, tmp_path, workers=0)
    system.add("dispatcher", "rabbitmq_worker.py")
    try:
        request = pb.CalculationRequest(operation=pb.SUM, num1=1, num2=1, request_id="late-1")
        # Expired by its header, though the broker's TTL (60 s) has not run out.
        message = codec.request_message(
            request, reply_to="calc.replies.t", deadline=time.time() - 1, kind="call", expiration=60
        )
        wait_until(lambda: "connected" in system.processes["dispatcher"].log(), 20, "the dispatcher")
        asyncio.run(_publish(vhost_url, topology.REQUESTS, message))
        wait_until(lambda: "deadline passed" in system.processes["dispatcher"].log(), 10, "the drop")
        assert queue_depth(vhost_url, topology.TASKS) == 0
    finally:
        system.stop()


def test_a_reply_queue_expires_when_its_gateway_is_gone_for_good(vhost_url: str) -> None:
    """An abandoned gateway's reply queue has a queue TTL (x-expires), so it cleans itself up."""
    asyncio.run(_declare_twice(vhost_url))
    vhost = vhost_url.rsplit("/", 1)[1]
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "arguments", "--formatter", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    arguments = {q["name"]: {key: value for key, _type, value in q["arguments"]} for q in json.loads(listed.stdout)}
    assert arguments["calc.replies.t"]["x-expires"] == topology.REPLY_QUEUE_TTL_MS
    assert arguments["calc.tasks"]["x-delivery-limit"] == topology.DELIVERY_LIMIT
    assert arguments["calc.retry"]["x-dead-letter-routing-key"] == topology.TASKS

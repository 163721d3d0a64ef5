"""Queue names and declarations: the AMQP half of the public contract.

Every program declares everything it touches on every (re)connect, so the
first one up creates the topology and the broker's equivalence check catches
a program built with different arguments. All queues are durable quorum
queues: replicated, and with a delivery limit that stops poison messages
(https://www.rabbitmq.com/docs/quorum-queues#poison-message-handling).
Dead-lettering uses the default exchange with a routing key, so no extra
exchange needs declaring (https://www.rabbitmq.com/docs/dlx).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from calcmq.amqp import Session

REQUESTS = "calc.requests"
TASKS = "calc.tasks"
DEAD = "calc.dead"
# Retry delay: tasks sit here for their per-message TTL, then the broker
# dead-letters them back to calc.tasks (https://www.rabbitmq.com/docs/ttl).
RETRY = "calc.retry"
REPLY_PREFIX = "calc.replies."

# Deliveries of one message before the broker gives up on it: a message that
# kills every consumer it reaches ends in calc.dead instead of looping forever.
# Each lost session of a consumer returns its unacked messages, and every
# return counts too: leave room for a few failovers.
DELIVERY_LIMIT = 10
# The longest a task waits in calc.retry.
MAX_RETRY_DELAY_MS = 5000
# An abandoned gateway's reply queue disappears after this long unused.
REPLY_QUEUE_TTL_MS = 24 * 3600 * 1000

_QUORUM = {"x-queue-type": "quorum"}
_TO_DEAD = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": DEAD}

QUEUES: dict[str, dict[str, object]] = {
    REQUESTS: {**_QUORUM, **_TO_DEAD, "x-delivery-limit": DELIVERY_LIMIT},
    TASKS: {**_QUORUM, **_TO_DEAD, "x-delivery-limit": DELIVERY_LIMIT},
    # The queue TTL caps every message's stay: TTLs expire only at the head
    # of a queue, so a message without its own (forged, or garbage) must not
    # sit there holding the retries behind it.
    RETRY: {
        **_QUORUM,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": TASKS,
        "x-message-ttl": MAX_RETRY_DELAY_MS,
    },
    DEAD: dict(_QUORUM),
}


def reply_queue_name(gateway_id: str) -> str:
    return REPLY_PREFIX + gateway_id


def gateway_lock_name(gateway_id: str) -> str:
    """An exclusive queue held by the one gateway using `gateway_id`."""
    return f"calc.gateway-lock.{gateway_id}"


async def declare(session: Session) -> None:
    """Declare the shared queues; idempotent."""
    for name, arguments in QUEUES.items():
        await session.declare_queue(name, arguments=arguments)


async def declare_reply_queue(session: Session, name: str, ttl_ms: int) -> None:
    """A gateway's own reply queue: durable, so replies wait through a restart."""
    await session.declare_queue(name, arguments={**_QUORUM, "x-expires": ttl_ms})

"""Baseline load client: `python -m bench.baseline.client URL --inflight N ...`.

Closed loop over AMQP: N requests outstanding, each published (persistent,
confirmed) to baseline.requests with a correlation id and reply_to
baseline.replies; a reply is acked, matched by correlation id, and the next
request goes out. Prints one JSON object (bench.measure).

`Client` is also the broker ceiling (bench/ceiling.py): the same loop with one
queue as both the request and the reply queue.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.baseline.common import REPLIES, REQUESTS, TASKS, Program, persistent, setup_logging
from bench.measure import Plan, Probe, Window, add_plan_flags, calculation, emit, plan_from
from calcmq.proto import calculator_pb2 as pb

# Is this body the right answer to that request id?
Check = Callable[[bytes, str], bool]


def correct_result(body: bytes, request_id: str) -> bool:
    result = pb.CalculationResult.FromString(body)
    return result.request_id == request_id and not result.HasField("error")


class Client(Program):
    """A closed loop of `plan.inflight` requests, measured by a bench.measure.Window.

    Warm-up, window and time limit are I/O-loop timers, so measuring never blocks the loop
    that also carries the load.
    """

    def __init__(
        self, url: str, plan: Plan, *, publish_to: str, consume_from: str, queues: tuple[str, ...], check: Check
    ) -> None:
        super().__init__(url)
        self.plan = plan
        self.publish_to = publish_to
        self.consume_from = consume_from
        self.queues = queues
        self.check = check
        self.window = Window(Probe(plan.watch), count=plan.count)
        self.outstanding: dict[str, float] = {}
        self.sent = 0

    def ready(self) -> None:
        self.channel.basic_consume(self.consume_from, self.on_reply)
        loop = self.connection.ioloop
        loop.call_later(self.plan.warmup, self.window.open)
        loop.call_later(self.plan.warmup + (self.plan.duration or 0.0), self.close_window)
        loop.call_later(self.plan.time_limit, self.stop)
        for _ in range(self.plan.inflight):
            self.send()

    def send(self) -> None:
        request_id = str(uuid.uuid4())
        body = calculation(self.sent, request_id).SerializeToString()
        self.sent += 1
        self.outstanding[request_id] = time.perf_counter()
        properties = persistent(correlation_id=request_id, reply_to=self.consume_from)
        self.publish(self.publish_to, body, properties, request_id)

    def on_reply(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        channel.basic_ack(method.delivery_tag)
        request_id = properties.correlation_id
        started = self.outstanding.pop(request_id, None)
        if started is None:
            return  # a second answer after a redelivery
        self.window.completed(started, self.check(body, request_id))
        self.next()

    def confirmed(self, item: Any, ok: bool) -> None:
        if not ok and self.outstanding.pop(item, None) is not None:
            self.window.completed(0.0, False)  # the broker refused the request: an error
            self.next()

    def next(self) -> None:
        if not self.window.closed:
            self.send()
        elif not self.outstanding:
            self.stop()

    def close_window(self) -> None:
        self.window.close()
        if not self.outstanding:
            self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="AMQP URL, vhost included")
    add_plan_flags(parser)
    args = parser.parse_args(argv)
    setup_logging()
    queues = (REQUESTS, TASKS, REPLIES)
    client = Client(
        args.url, plan_from(args), publish_to=REQUESTS, consume_from=REPLIES, queues=queues, check=correct_result
    )
    code = client.run()
    client.window.close()
    emit(client.window.result(unanswered=len(client.outstanding)))
    return code


if __name__ == "__main__":
    raise SystemExit(main())

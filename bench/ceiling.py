"""Broker ceiling: `python -m bench.ceiling URL --inflight N ...`.

Raw pika publish and consume on one durable quorum queue, with publisher
confirms and manual acks: the same loop as the baseline client, with one
queue as both its request and its reply queue. A request through calc-mq or
the baseline crosses three such queues, so a third of this is the most any
pipeline of that shape can do on this broker.
"""

from __future__ import annotations

import argparse

from bench.baseline.client import Client
from bench.baseline.common import setup_logging
from bench.measure import add_plan_flags, emit, plan_from
from calcmq.proto import calculator_pb2 as pb

QUEUE = "bench.ceiling"


def same_request(body: bytes, request_id: str) -> bool:
    return pb.CalculationRequest.FromString(body).request_id == request_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="AMQP URL, vhost included")
    add_plan_flags(parser)
    args = parser.parse_args(argv)
    setup_logging()
    client = Client(
        args.url, plan_from(args), publish_to=QUEUE, consume_from=QUEUE, queues=(QUEUE,), check=same_request
    )
    code = client.run()
    client.window.close()
    emit(client.window.result(unanswered=len(client.outstanding)))
    return code


if __name__ == "__main__":
    raise SystemExit(main())

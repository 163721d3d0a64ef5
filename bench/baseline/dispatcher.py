"""Baseline dispatcher: `python -m bench.baseline.dispatcher URL`.

baseline.requests -> baseline.tasks, the message forwarded as it came
(persistent, its correlation id and reply_to kept); the original is acked
only when the broker confirmed the forward, so a crash duplicates, never loses.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.baseline.common import REQUESTS, TASKS, Program, setup_logging


class Dispatcher(Program):
    queues = (REQUESTS, TASKS)

    def ready(self) -> None:
        self.channel.basic_consume(REQUESTS, self.on_message)

    def on_message(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.publish(TASKS, body, properties, method.delivery_tag)

    def confirmed(self, item: Any, ok: bool) -> None:
        if ok:
            self.channel.basic_ack(item)
        else:
            self.channel.basic_nack(item, requeue=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="AMQP URL, vhost included")
    args = parser.parse_args(argv)
    setup_logging()
    return Dispatcher(args.url).run()


if __name__ == "__main__":
    raise SystemExit(main())

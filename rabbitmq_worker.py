"""The dispatcher: `python rabbitmq_worker.py`. Moves calc.requests to calc.tasks."""

from __future__ import annotations

import asyncio
import logging

from calcmq import config, dispatcher, logs, runtime

log = logging.getLogger("rabbitmq_worker")


def main() -> None:
    settings = config.load(
        "The calc-mq dispatcher: validates requests and hands them to the workers.",
        ["rabbitmq_url", "rabbitmq_ca", "dispatcher_prefetch"],
    )
    logs.setup(settings.log_level, "dispatcher")

    async def program(stop: asyncio.Event) -> None:
        service = dispatcher.Dispatcher(settings)
        broker = asyncio.create_task(service.broker.run())
        log.info("dispatcher started")
        await stop.wait()
        await service.consumer.drain(timeout=10)
        service.broker.stop()
        await broker
        log.info(
            "dispatcher stopped (forwarded=%d rejected=%d expired=%d)",
            service.forwarded,
            service.rejected,
            service.expired,
        )

    runtime.run(program)


if __name__ == "__main__":
    main()

"""The dispatcher: `python rabbitmq_worker.py`. Moves calc.requests to calc.tasks."""

from __future__ import annotations

import asyncio
import logging

from calcmq import config, dispatcher, runtime
from calcmq.liveness import LivenessFile

log = logging.getLogger("rabbitmq_worker")

SETTINGS = ["rabbitmq_url", "rabbitmq_ca", "dispatcher_prefetch", "health_file"]


def main() -> None:
    settings = config.load("The calc-mq dispatcher: validates requests and hands them to the workers.", SETTINGS)
    runtime.prepare(settings, "dispatcher")

    async def program(stop: asyncio.Event) -> None:
        service = dispatcher.Dispatcher(settings)
        liveness = LivenessFile(settings.health_file)
        service.broker.on_state_change = liveness.report
        broker = asyncio.create_task(service.broker.run())
        log.info("dispatcher started")
        await stop.wait()
        await service.consumer.drain(timeout=10)
        service.broker.stop()
        await broker
        liveness.close()
        log.info("dispatcher stopped")

    runtime.run(program)


if __name__ == "__main__":
    main()

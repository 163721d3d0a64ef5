"""A worker: `python worker.py`. Takes tasks from calc.tasks, calls the Calculator, replies."""

from __future__ import annotations

import asyncio
import logging

from calcmq import config, logs, runtime
from calcmq.worker import Worker

log = logging.getLogger("worker")

SETTINGS = [
    "rabbitmq_url",
    "rabbitmq_ca",
    "calculator_address",
    "worker_concurrency",
    "worker_name",
    "max_attempts",
    "retry_delay",
]


def main() -> None:
    settings = config.load("A calc-mq worker: computes tasks with the Calculator server.", SETTINGS)
    logs.setup(settings.log_level, "worker")

    async def program(stop: asyncio.Event) -> None:
        worker = Worker(settings)
        broker = asyncio.create_task(worker.broker.run())
        log.info("worker %s started, calculator at %s", worker.name, settings.calculator_address)
        await stop.wait()
        await worker.consumer.drain(timeout=10)
        worker.broker.stop()
        await broker
        await worker.channel.close()
        log.info(
            "worker stopped (completed=%d retried=%d expired=%d)", worker.completed, worker.retried, worker.expired
        )

    runtime.run(program)


if __name__ == "__main__":
    main()

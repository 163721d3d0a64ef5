"""A worker: `python worker.py`. Takes tasks from calc.tasks, calls the Calculator, replies."""

from __future__ import annotations

import asyncio
import logging

from calcmq import config, runtime
from calcmq.liveness import LivenessFile
from calcmq.worker import Worker

log = logging.getLogger("worker")

SETTINGS = [
    "rabbitmq_url",
    "rabbitmq_ca",
    "calculator_address",
    "tls_ca",
    "worker_concurrency",
    "worker_name",
    "max_attempts",
    "retry_delay",
    "health_file",
]


def main() -> None:
    settings = config.load("A calc-mq worker: computes tasks with the Calculator server.", SETTINGS)
    runtime.prepare(settings, "worker")

    async def program(stop: asyncio.Event) -> None:
        worker = Worker(settings)
        liveness = LivenessFile(settings.health_file)
        worker.broker.on_state_change = liveness.report
        broker = asyncio.create_task(worker.broker.run())
        log.info("worker %s started, calculator at %s", worker.name, settings.calculator_address)
        await stop.wait()
        await worker.consumer.drain(timeout=10)
        worker.broker.stop()
        await broker
        liveness.close()
        worker.calculator.close()
        await worker.channel.close()
        log.info("worker stopped")

    runtime.run(program)


if __name__ == "__main__":
    main()

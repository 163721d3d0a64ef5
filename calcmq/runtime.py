"""Running an asyncio program until SIGTERM or SIGINT, then stopping it well.

Every program's `main()` ends in `run(program)`: the signal sets an event, the
program stops taking work, finishes or hands back what it holds, and the
process exits 0. A second signal while draining exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from calcmq import logs, metrics
from calcmq.config import Settings

log = logging.getLogger(__name__)

Program = Callable[[asyncio.Event], Awaitable[None]]


def prepare(settings: Settings, name: str) -> None:
    """What every program does first: logging, then metrics if asked for."""
    logs.setup(settings.log_level, name, settings.log_format)
    try:
        metrics.serve(settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        raise SystemExit(
            f"error: cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}"
        ) from None


def run(program: Program) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(program))
    sys.exit(0)


async def _main(program: Program) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            raise SystemExit(1)
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await program(stop)

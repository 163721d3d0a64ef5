"""The Calculator gRPC server: `python calculator_server.py [--calculator-listen ADDR]`."""

from __future__ import annotations

import asyncio
import logging

from calcmq import calculator, config, runtime

log = logging.getLogger("calculator_server")


def main() -> None:
    settings = config.load("The calc-mq Calculator gRPC server.", ["calculator_listen", "tls_cert", "tls_key"])
    runtime.prepare(settings, "calculator")

    async def program(stop: asyncio.Event) -> None:
        server, port, service = await calculator.create_server(
            settings.calculator_listen, settings.tls_cert, settings.tls_key
        )
        log.info(
            "calculator listening on %s (port %d%s)",
            settings.calculator_listen,
            port,
            ", TLS" if settings.tls_cert else "",
        )
        await stop.wait()
        service.stop()
        await server.stop(grace=5)
        log.info("calculator stopped")

    runtime.run(program)


if __name__ == "__main__":
    main()

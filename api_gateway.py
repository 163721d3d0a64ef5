"""The gRPC gateway: `python api_gateway.py [--gateway-listen ADDR] [--gateway-id ID]`."""

from __future__ import annotations

import asyncio
import logging

from calcmq import config, gateway, runtime

log = logging.getLogger("api_gateway")

SETTINGS = [
    "rabbitmq_url",
    "rabbitmq_ca",
    "gateway_listen",
    "gateway_id",
    "gateway_max_inflight",
    "request_timeout",
    "result_ttl",
    "gateway_state_dir",
    "auth_token",
    "tls_cert",
    "tls_key",
]


def main() -> None:
    settings = config.load("The calc-mq gRPC gateway: publishes calls to RabbitMQ.", SETTINGS)
    runtime.prepare(settings, "gateway")

    async def program(stop: asyncio.Event) -> None:
        server, port, service = await gateway.create_server(settings, settings.gateway_listen)
        log.info(
            "gateway listening on %s (port %d%s%s), replies on %s",
            settings.gateway_listen,
            port,
            ", TLS" if settings.tls_cert else "",
            ", token required" if settings.auth_token else "",
            service.reply_queue,
        )
        await stop.wait()
        await gateway.shutdown(server, service)
        log.info("gateway stopped")

    runtime.run(program)


if __name__ == "__main__":
    main()

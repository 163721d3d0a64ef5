"""One line per event, key=value, with the request id whenever there is one,
so `grep <request id>` follows a request across all five programs.

The request id travels in a context variable: each AMQP delivery and each gRPC
call runs in its own asyncio task, so setting it once at the top of a handler
tags every line that handler (and what it awaits) logs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from urllib.parse import urlsplit, urlunsplit

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        record.rid = f" request_id={rid}" if rid else ""
        return True


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (LOG_FORMAT=json)."""

    def __init__(self, program: str) -> None:
        super().__init__()
        self._program = program

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "program": self._program,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if rid := request_id.get():
            entry["request_id"] = rid
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup(level: str, program: str, fmt: str = "text") -> None:
    """Configure the root logger for one program; stderr, so stdout stays for results."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter(program))
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s.%(msecs)03d level=%(levelname)s program={program}%(rid)s %(message)s",
                datefmt="%Y-%m-%dT%H:%M:%S",
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    try:
        root.setLevel(level.upper())
    except ValueError:
        root.setLevel(logging.INFO)
        logging.getLogger(__name__).warning("unknown LOG_LEVEL=%s, using INFO", level)
    # pika logs a lost connection at ERROR, with a traceback; the Broker
    # reports it in one line, so pika speaks only at DEBUG. grpc is chatty.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL
    logging.getLogger("pika").setLevel(quiet)
    logging.getLogger("grpc").setLevel(max(root.level, logging.WARNING))


def mask_url(url: str) -> str:
    """The broker URL with its password replaced, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as written: keeps an IPv6 host's brackets and the port
    netloc = f"{parts.username}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))

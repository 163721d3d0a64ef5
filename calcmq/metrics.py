"""Prometheus metrics, one set per program, served on METRICS_PORT (off by default).

Every metric is named `calcmq_*` and documented in the README. Counters and
histograms live in the default registry; a program that never calls `serve`
pays only for incrementing them.
"""

from __future__ import annotations

import functools
import logging
from typing import TypeVar

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

log = logging.getLogger(__name__)

# Latency buckets from a millisecond (a hop on loopback) to a minute (a long deadline).
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

M = TypeVar("M", bound=MetricWrapperBase)


@functools.cache
def labelled(metric: M, *values: str) -> M:
    """`metric.labels(*values)`, looked up once: prometheus_client checks and
    locks on every `labels` call, a cost paid per request on the hot paths."""
    return metric.labels(*values)


# -- gateway ----------------------------------------------------------------------
REQUESTS = Counter(
    "calcmq_gateway_requests_total",
    "Requests answered by the gateway, by RPC, operation and outcome (OK or a gRPC status name).",
    ["rpc", "operation", "outcome"],
)
LATENCY = Histogram(
    "calcmq_gateway_request_seconds",
    "End-to-end time from a request reaching the gateway to its answer, by RPC.",
    ["rpc"],
    buckets=_SECONDS,
)
INFLIGHT = Gauge("calcmq_gateway_inflight", "Requests published and waiting for their reply.")
REPLIES_DROPPED = Counter(
    "calcmq_gateway_replies_dropped_total",
    "Replies nobody waited for: second answers after a redelivery, or answers after the deadline.",
)

# -- dispatcher -------------------------------------------------------------------
DISPATCHED = Counter(
    "calcmq_dispatcher_requests_total",
    "Requests the dispatcher handled, by outcome: forwarded, rejected (dead-lettered), expired.",
    ["outcome"],
)

# -- worker -----------------------------------------------------------------------
TASKS = Counter(
    "calcmq_worker_tasks_total",
    "Tasks a worker finished, by operation and outcome (OK or a gRPC status name).",
    ["operation", "outcome"],
)
CALCULATOR_LATENCY = Histogram(
    "calcmq_worker_calculator_seconds", "Time of one calculator call, as the worker sees it.", buckets=_SECONDS
)
RETRIES = Counter("calcmq_worker_retries_total", "Tasks sent to calc.retry because the calculator could not answer.")

# -- everyone on the broker --------------------------------------------------------
EXPIRED = Counter(
    "calcmq_expired_dropped_total",
    "Messages dropped because their deadline passed, by the stage that dropped them.",
    ["stage"],
)
DEAD_LETTERS = Counter(
    "calcmq_dead_letters_total", "Messages this program parked in calc.dead, by the queue they came from.", ["queue"]
)
RECONNECTS = Counter("calcmq_broker_reconnects_total", "Broker sessions started after the first one.")
BROKER_UP = Gauge("calcmq_broker_connected", "1 while this program holds a broker session, else 0.")


def serve(host: str, port: int) -> None:
    """Serve /metrics on host:port; port 0 leaves metrics off."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)

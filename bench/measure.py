"""Measuring one load run the same way for every system.

Only the steady state counts: requests complete during a warm-up that is not
recorded, then during a window whose edges are also where CPU time and RSS of
every watched process are read, then the requests still in flight drain
unrecorded. Throughput is completions inside the window divided by its length,
so the warm-up's queue filling and the drain's emptying bias no system.

Every load generator (load.py, ceiling.py, baseline/client.py) uses this module
and prints `Window.result()` as one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from calcmq.proto import calculator_pb2 as pb

# The request mix of every system: all six operations, never an error.
OPERATIONS = (pb.SUM, pb.SUBTRACT, pb.MULTIPLY, pb.DIVIDE, pb.POWER, pb.MODULO)


def calculation(i: int, request_id: str = "") -> pb.CalculationRequest:
    """The i-th request of the mix (divisor 3, small powers: always a finite answer)."""
    return pb.CalculationRequest(operation=OPERATIONS[i % 6], num1=i % 1000, num2=3, request_id=request_id)


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(math.ceil(pct / 100 * len(ordered)), 1)
    return ordered[rank - 1]


class Probe:
    """CPU seconds and RSS of named processes, read from /proc through psutil.

    The load generator itself is always watched as "client". A process that
    is gone is skipped here; the orchestrator notices the death and says so.
    """

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.processes["client"] = psutil.Process()

    def cpu(self) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for name, process in self.processes.items():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            seconds[name] = times.user + times.system
        return seconds

    @staticmethod
    def machine_busy() -> float:
        """CPU seconds the whole machine spent busy so far: what the watched processes
        do not account for is someone else's load (or a hypervisor's steal), skewing the run."""
        times = psutil.cpu_times()
        busy = ("user", "nice", "system", "irq", "softirq", "steal")  # guest time is already in user
        return sum(getattr(times, name, 0.0) for name in busy)

    def rss(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for name, process in self.processes.items():
            try:
                sizes[name] = process.memory_info().rss
            except psutil.Error:
                continue
        return sizes


@dataclass
class Window:
    """The recorded part of a run, opened after the warm-up and closed by time or count."""

    probe: Probe
    count: int | None = None  # close after this many completions (a soak); else the caller closes it
    latencies: list[float] = field(default_factory=list)
    completions: int = 0
    errors: int = 0
    state: str = "warmup"  # then "open", then "closed"
    _t0: float = 0.0
    _t1: float = 0.0
    _cpu0: dict[str, float] = field(default_factory=dict)
    _cpu1: dict[str, float] = field(default_factory=dict)
    _rss0: dict[str, int] = field(default_factory=dict)
    _rss1: dict[str, int] = field(default_factory=dict)
    _busy0: float = 0.0
    _busy1: float = 0.0
    rss_samples: list[tuple[int, dict[str, int]]] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return self.state == "closed"

    def open(self) -> None:
        if self.state != "warmup":
            return
        self._cpu0, self._rss0, self._busy0 = self.probe.cpu(), self.probe.rss(), self.probe.machine_busy()
        self._t0 = time.perf_counter()
        self.state = "open"

    def close(self) -> None:
        if self.state == "closed":
            return
        if self.state == "warmup":  # never opened (nothing came back): an empty window
            self.open()
        self._t1 = time.perf_counter()
        self._cpu1, self._rss1, self._busy1 = self.probe.cpu(), self.probe.rss(), self.probe.machine_busy()
        self.state = "closed"

    def completed(self, started: float, ok: bool) -> None:
        """One request came back (`ok`: with a correct answer)."""
        if not ok:
            self.errors += 1
        if self.state != "open":
            return
        self.completions += 1
        if ok:
            self.latencies.append(time.perf_counter() - started)
        if self.count is not None and self.completions >= self.count:
            self.close()

    def sample_rss(self) -> None:
        self.rss_samples.append((self.completions, self.probe.rss()))

    def result(self, unanswered: int = 0) -> dict[str, Any]:
        """The run as plain data; `unanswered` requests (lost or stuck) count as errors."""
        seconds = self._t1 - self._t0
        ordered = sorted(self.latencies)
        cpu = {name: round(self._cpu1[name] - start, 3) for name, start in self._cpu0.items() if name in self._cpu1}
        others = self._busy1 - self._busy0 - sum(cpu.values())
        return {
            "requests": self.completions,
            "seconds": round(seconds, 3),
            "throughput": round(self.completions / seconds, 1) if seconds > 0 else 0.0,
            "p50_ms": round(percentile(ordered, 50) * 1000, 3),
            "p99_ms": round(percentile(ordered, 99) * 1000, 3),
            "errors": self.errors + unanswered,
            "unanswered": unanswered,
            "cpu_seconds": cpu,
            # cores kept busy by processes we do not watch (other people's load, the kernel's own work)
            "other_cores": round(max(others, 0.0) / seconds, 2) if seconds > 0 else 0.0,
            "rss_start": self._rss0,
            "rss_end": self._rss1,
            "rss_samples": self.rss_samples,
        }


@dataclass(frozen=True)
class Plan:
    """How long a load generator runs: warm-up, then a window by time or by count, then a bounded drain."""

    inflight: int
    warmup: float
    duration: float | None
    count: int | None
    drain: float
    watch: dict[str, int]
    rss_every: float

    @property
    def time_limit(self) -> float:
        """Seconds after which the generator gives up (a count window is bounded by --duration)."""
        return self.warmup + (self.duration or 0.0) + self.drain


def add_plan_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inflight", type=int, default=1, help="requests outstanding at once (1: sequential)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds first")
    parser.add_argument("--duration", type=float, default=10.0, help="window length; with --count, the time limit")
    parser.add_argument("--count", type=int, default=None, help="close the window after this many completions")
    parser.add_argument("--drain", type=float, default=15.0, help="seconds to wait for the last answers")
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PID", help="a process to measure")
    parser.add_argument("--rss-every", type=float, default=0.0, help="sample RSS every so many seconds (0: never)")


def plan_from(args: argparse.Namespace) -> Plan:
    watch = {}
    for item in args.watch:
        name, _, pid = item.partition("=")
        watch[name] = int(pid)
    return Plan(args.inflight, args.warmup, args.duration, args.count, args.drain, watch, args.rss_every)


def emit(result: Mapping[str, Any]) -> None:
    """The one line of stdout the orchestrator reads."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()

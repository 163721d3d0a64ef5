"""The calc-mq benchmark (issue 4): `python bench/run.py [--quick] [--workers N] [--soak N]`.

One invocation, on the local RabbitMQ in a vhost of its own (deleted at the
end, also on Ctrl-C or an error), measures side by side:

  floor     the Calculator over gRPC directly, no broker
  ceiling   raw pika publish+consume on one quorum queue; ÷ 3 for three hops
  baseline  a plain pika pipeline of calc-mq's shape and durability (bench/baseline/)
  calc-mq   the five programs, through the gateway

and prints one table, the ratios and PASS/FAIL against the issue's targets,
then writes bench/results/<UTC timestamp>.{json,png,md} and latest.*.
`--workers N` measures throughput with 1, 2, 4... N workers instead;
`--soak N` sends N requests through one stream and reports gateway and
worker RSS. A FAIL is reported, not fatal: the exit status is 1 only when
something broke (a process died, a request failed or went unanswered).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `bench` and `calcmq` importable
    sys.path.insert(0, str(ROOT))

from bench import chart, report  # noqa: E402
from bench.procs import Broke, broker_pid, private_vhost, rabbitmqctl  # noqa: E402
from bench.systems import DEFAULT_TIMING, QUICK_TIMING, Bench, Run, baseline, calcmq, calculator  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SHOWN_ORDER = ["floor", "ceiling", "baseline", "calc-mq"]
progress = Console(stderr=True, highlight=False, width=max(shutil.get_terminal_size((140, 50)).columns, 140))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="See bench/README.md for what each row means."
    )
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke run under 60 s")
    parser.add_argument("--workers", type=int, metavar="N", help="calc-mq stream throughput with 1, 2, 4... N workers")
    parser.add_argument(
        "--soak", type=int, metavar="N", help="N requests through one CalculateStream; RSS at both ends"
    )
    parser.add_argument("--duration", type=float, help="seconds in each measured window (default 10, quick 2)")
    parser.add_argument("--warmup", type=float, help="unrecorded seconds before each window (default 2, quick 0.75)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON, PNG and MD go")
    parser.add_argument("--keep-logs", action="store_true", help="keep the programs' logs even after a clean run")
    args = parser.parse_args(argv)
    for name in ("workers", "soak"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


# -- the phases ----------------------------------------------------------------


def note(run: Run) -> Run:
    figures = f"{run.throughput:9,.1f} req/s  p50 {run.p50_ms:8.2f} ms  errors {run.errors}"
    attempts = run.data.get("attempts", 1)
    noise = f"other load {run.data.get('other_cores', 0):.2f} cores" + (f", best of {attempts}" if attempts > 1 else "")
    progress.print(f"  {run.system:<9} {run.name:<38} {figures}  {noise}")
    return run


def phase_floor(bench: Bench) -> list[Run]:
    """The Calculator alone: what one gRPC call costs without any queue."""
    target = ["bench.load", "floor", "--target", bench.calculator_address]
    return [
        note(bench.load(Run(f"floor/{n}", "floor", f"Calculator gRPC, {label}", n, 0), target))
        for n, label in ((1, "sequential"), (64, "64 in flight"))
    ]


def phase_ceiling(bench: Bench) -> list[Run]:
    """The broker alone: one quorum queue, confirms and manual acks, from raw pika."""
    run = Run("ceiling/256", "ceiling", "pika, 1 quorum queue, 256 in flight", 256, 0)
    return [note(bench.load(run, ["bench.ceiling", bench.url], uses_calculator=False))]


def phase_pipelines(bench: Bench) -> list[Run]:
    """The baseline and calc-mq side by side, alternating at each in-flight count.

    Both systems stay up (idle, they cost next to nothing), so each pair of rows that a ratio
    compares is measured a few seconds apart and shares whatever else the machine was doing.
    """
    runs = []
    with baseline(bench, workers=1) as base, calcmq(bench, workers=1) as (mine, gateway):
        for n in (1, 64, 256):
            label = "sequential" if n == 1 else f"{n} in flight"
            run = Run(f"baseline/{n}", "baseline", f"pika pipeline, {label}", n, 1)
            runs.append(note(bench.load(run, ["bench.baseline.client", bench.url], base)))
            label = "sequential" if n == 1 else f"{n} concurrent"
            run = Run(f"calculate/{n}", "calc-mq", f"Calculate, {label}", n, 1)
            runs.append(note(bench.load(run, ["bench.load", "calculate", "--target", gateway], mine)))
        run = Run("stream/256", "calc-mq", "CalculateStream, 256 in flight", 256, 1)
        runs.append(note(bench.load(run, ["bench.load", "stream", "--target", gateway], mine)))
    return runs


def worker_counts(n: int) -> list[int]:
    """1, 2, 4... up to n, and n itself."""
    counts, k = [], 1
    while k < n:
        counts.append(k)
        k *= 2
    return [*counts, n]


def phase_workers(bench: Bench, most: int) -> list[Run]:
    runs = []
    for workers in worker_counts(most):
        with calcmq(bench, workers=workers) as (group, gateway):
            run = Run(f"workers/{workers}", "calc-mq", f"CalculateStream 256, {workers} worker(s)", 256, workers)
            runs.append(note(bench.load(run, ["bench.load", "stream", "--target", gateway], group)))
    return runs


def phase_soak(bench: Bench, requests: int, quick: bool) -> list[Run]:
    """One long stream; the window opens after a warm-up so start-up allocations do not count as growth."""
    warmup = 2.0 if quick else 10.0
    limit = max(120.0, requests / 100)  # a bound, not an expectation: 100 req/s would be very slow
    with calcmq(bench, workers=1) as (group, gateway):
        run = Run("soak", "calc-mq", f"soak: CalculateStream 256, {requests:,} requests", 256, 1)
        argv = ["bench.load", "stream", "--target", gateway]
        every = max(0.25, min(5.0, requests / 20000))
        return [note(bench.load(run, argv, group, count=requests, duration=limit, warmup=warmup, rss_every=every))]


def measure(args: argparse.Namespace, bench: Bench, runs: list[Run]) -> None:
    """The selected phases, appending to `runs` as they finish (so a failure keeps what was measured)."""
    if args.workers is None and args.soak is None:
        # The rows the targets compare first: they get first call on repeats of disturbed runs.
        for phase in (phase_pipelines, phase_ceiling, phase_floor):
            runs.extend(phase(bench))
        runs.sort(key=lambda run: SHOWN_ORDER.index(run.system))
    if args.workers is not None:
        runs.extend(phase_workers(bench, args.workers))
    if args.soak is not None:
        runs.extend(phase_soak(bench, args.soak, args.quick))


# -- around the phases -----------------------------------------------------------


def machine() -> dict[str, Any]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "rabbitmq": rabbitmqctl("version"),
        **{package: version(package) for package in ("pika", "grpcio", "protobuf")},
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the programs' code differed from it (a benchmark of a work in progress)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "calcmq", ":(glob)*.py")
    return {"commit": git("rev-parse", "HEAD") or "?", "uncommitted_changes": changed.splitlines()}


def broker_idle_share(pid: int) -> float:
    """The broker's CPU use, in cores, over half a second before we start: other load skews everything."""
    return psutil.Process(pid).cpu_percent(interval=0.5) / 100


def save(directory: Path, stamp: str, runs: list[Run], meta: dict[str, Any], title: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    base = directory / stamp
    base.with_suffix(".json").write_text(json.dumps(report.record(runs, meta), indent=2) + "\n")
    chart.draw(base.with_suffix(".png"), runs, title)
    report.write_markdown(base.with_suffix(".md"), runs, title)
    for suffix in (".json", ".png", ".md"):
        shutil.copyfile(base.with_suffix(suffix), directory / f"latest{suffix}")
    return base


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):  # cleanup (processes, vhost) runs in the finally blocks
        signal.signal(signum, _interrupt)
    timing = QUICK_TIMING if args.quick else DEFAULT_TIMING
    timing = replace(timing, duration=args.duration or timing.duration, warmup=args.warmup or timing.warmup)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = Path(tempfile.mkdtemp(prefix="calcmq-bench-"))
    began = time.monotonic()
    runs: list[Run] = []
    meta: dict[str, Any] = {"timestamp": stamp, "quick": args.quick, "timing": asdict(timing)}
    meta.update(workers_mode=args.workers, soak=args.soak, failure=None)
    try:
        meta["machine"] = machine()
        meta["code"] = code_version()
        beam = broker_pid()
        meta["broker_busy_cores_before"] = busy = broker_idle_share(beam)
        if busy > 0.2:
            progress.print(f"[yellow]warning: RabbitMQ already uses {busy:.2f} cores: other load will skew this run")
        progress.print(f"calc-mq benchmark {stamp} at {meta['code']['commit'][:10]}; programs' logs in {logs}")
        if changed := meta["code"]["uncommitted_changes"]:
            progress.print(f"[yellow]note: measuring uncommitted changes: {', '.join(changed)}")
        with private_vhost() as url:
            bench = Bench(url, logs, timing, beam)
            with calculator(bench):
                measure(args, bench, runs)
    except Broke as exc:
        meta["failure"] = str(exc)
    except KeyboardInterrupt:
        progress.print(f"interrupted; everything stopped, vhost deleted; logs in {logs}")
        return 130
    meta["elapsed_s"] = round(time.monotonic() - began, 1)
    return finish(args, runs, meta, logs)


def finish(args: argparse.Namespace, runs: list[Run], meta: dict[str, Any], logs: Path) -> int:
    window = f"{meta['timing']['duration']:g} s windows"
    title = f"calc-mq benchmark {meta['timestamp']}: {os.cpu_count()} cores, {window}, {meta['elapsed_s']:g} s in all"
    out = report.console()
    if runs:
        report.show(runs, title, out)
        base = save(args.results_dir, meta["timestamp"], runs, meta, title)
        out.print(f"\nwrote {base}.json, .png, .md (and latest.*) in {args.results_dir}")
    errors = sum(run.errors for run in runs)
    if meta["failure"]:
        out.print(f"[red]broke: {meta['failure']}[/red]\nlogs kept in {logs}")
        return 1
    if errors:
        out.print(f"[red]broke: {errors} request(s) failed or went unanswered[/red]; logs kept in {logs}")
        return 1
    if not args.keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

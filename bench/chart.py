"""The PNG next to the JSON: throughput and latency per row, plus the worker
scaling and the soak's memory when those modes ran. matplotlib's Agg backend,
so it draws without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.report import MB, ceiling_third
from bench.systems import Run

COLORS = {"floor": "#7f7f7f", "ceiling": "#bcbd22", "baseline": "#1f77b4", "calc-mq": "#d62728"}


def _label(run: Run) -> str:
    return f"{run.system}: {run.name}"


def _throughput(ax: Axes, runs: Sequence[Run]) -> None:
    labels = [_label(r) for r in runs]
    ax.barh(labels, [r.throughput for r in runs], color=[COLORS.get(r.system, "#2ca02c") for r in runs])
    third = ceiling_third(runs)
    if third:
        ax.axvline(third, color=COLORS["ceiling"], linestyle="--", label=f"ceiling ÷ 3 = {third:,.0f}/s")
        ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("requests per second (higher is better)")
    ax.set_title("throughput")


def _latency(ax: Axes, runs: Sequence[Run]) -> None:
    positions = range(len(runs))
    p50 = [max(r.p50_ms, 0.01) for r in runs]
    p99 = [max(float(r.data.get("p99_ms", 0.0)), 0.01) for r in runs]
    ax.barh([p - 0.2 for p in positions], p50, height=0.4, label="p50", color="#1f77b4")
    ax.barh([p + 0.2 for p in positions], p99, height=0.4, label="p99", color="#ff7f0e")
    ax.set_yticks(list(positions), [_label(r) for r in runs])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds, log scale (lower is better)")
    ax.set_title("latency")
    ax.legend(loc="upper right", fontsize=8)


def _workers(ax: Axes, runs: Sequence[Run]) -> None:
    ax.bar([str(r.workers) for r in runs], [r.throughput for r in runs], color=COLORS["calc-mq"])
    ax.set_xlabel("workers")
    ax.set_ylabel("requests per second")
    ax.set_title("calc-mq scaling: CalculateStream, 256 in flight")


def _soak(ax: Axes, run: Run) -> None:
    samples = run.data.get("rss_samples", [])
    names = sorted({name for _, sizes in samples for name in sizes if name == "gateway" or name.startswith("worker")})
    for name in names:
        points = [(done, sizes[name] / MB) for done, sizes in samples if name in sizes]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name)
    start = run.data.get("rss_start", {}).get("gateway")
    if start:
        ax.axhline(start / MB + 20, color="#d62728", linestyle="--", label="gateway target: start + 20 MB")
    ax.set_xlabel("requests completed after warm-up")
    ax.set_ylabel("RSS, MB")
    ax.set_title(f"soak: {run.data.get('requests', 0):,} requests through CalculateStream")
    ax.legend(fontsize=8)


def draw(path: Path, runs: Sequence[Run], title: str) -> None:
    main = [r for r in runs if not r.key.startswith(("workers/", "soak"))]
    workers = [r for r in runs if r.key.startswith("workers/")]
    soak = [r for r in runs if r.key == "soak"]
    panels = (2 if main else 0) + bool(workers) + bool(soak)
    fig, axes = plt.subplots(1, panels, figsize=(7.5 * panels, 0.45 * max(len(main), 6) + 1.8), squeeze=False)
    slots = iter(axes[0])
    if main:
        _throughput(next(slots), main)
        _latency(next(slots), main)
    if workers:
        _workers(next(slots), workers)
    if soak:
        _soak(next(slots), soak[0])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

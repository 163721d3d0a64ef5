"""What a benchmark run shows: the table, the ratios, PASS/FAIL against the
targets of issue 4, the JSON record, a markdown copy of the table and the chart.

Targets are reported, never asserted: a FAIL is a finding, not a crash.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.systems import NOISY_CORES, Run

ROLES = ("client", "gateway", "dispatcher", "worker", "calculator", "rabbitmq")
MB = 1024 * 1024


@dataclass(frozen=True)
class Ratio:
    name: str
    calcmq: str  # run key
    other: str  # run key, or "ceiling/3"
    value: float | None


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    rule: str  # e.g. ">= 1.0x"
    passed: bool
    note: str = ""
    digits: int = 3

    def line(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.{self.digits}f}"
        verdict = "PASS" if self.passed else "FAIL"
        return f"{verdict}  {self.name}: {shown} (target {self.rule}){self.note}"


# -- figures --------------------------------------------------------------------


def by_key(runs: Sequence[Run]) -> dict[str, Run]:
    return {run.key: run for run in runs}


def ceiling_third(runs: Sequence[Run]) -> float | None:
    ceiling = by_key(runs).get("ceiling/256")
    return ceiling.throughput / 3 if ceiling else None


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


COMPARED = [
    ("Calculate sequential", "calculate/1", "baseline/1"),
    ("Calculate 64 concurrent", "calculate/64", "baseline/64"),
    ("Calculate 256 concurrent", "calculate/256", "baseline/256"),
    ("CalculateStream 256 in flight", "stream/256", "baseline/256"),
]


def ratios(runs: Sequence[Run]) -> list[Ratio]:
    """calc-mq throughput over the baseline's at the same in-flight count, and over the ceiling / 3."""
    runs_by_key, third = by_key(runs), ceiling_third(runs)
    found = []
    for name, mine, theirs in COMPARED:
        if mine not in runs_by_key:
            continue
        mine_tput = runs_by_key[mine].throughput
        other = runs_by_key.get(theirs)
        theirs_tput = other.throughput if other else None
        found.append(Ratio(f"{name}: throughput / baseline", mine, theirs, _div(mine_tput, theirs_tput)))
        found.append(Ratio(f"{name}: throughput / ceiling ÷ 3", mine, "ceiling/3", _div(mine_tput, third)))
    return found


def comparison_targets(runs: Sequence[Run]) -> list[Target]:
    k = by_key(runs)
    if not {"stream/256", "baseline/256", "calculate/64", "baseline/64", "calculate/1", "baseline/1"} <= k.keys():
        return []
    stream = _div(k["stream/256"].throughput, k["baseline/256"].throughput)
    calc64 = _div(k["calculate/64"].throughput, k["baseline/64"].throughput)
    seq = _div(k["calculate/1"].p50_ms, k["baseline/1"].p50_ms)
    stretch = " [stretch 1.5x reached]" if stream and stream >= 1.5 else " [stretch 1.5x not reached]"
    return [
        Target(
            "CalculateStream 256 throughput / baseline 256", stream, ">= 1.0x", bool(stream and stream >= 1.0), stretch
        ),
        Target("Calculate 64 throughput / baseline 64", calc64, ">= 0.8x", bool(calc64 and calc64 >= 0.8)),
        Target("Calculate sequential p50 / baseline sequential p50", seq, "<= 1.5x", seq is not None and seq <= 1.5),
    ]


def workers_targets(runs: Sequence[Run]) -> list[Target]:
    k = by_key(runs)
    if "workers/1" not in k or "workers/2" not in k:
        return []
    value = _div(k["workers/2"].throughput, k["workers/1"].throughput)
    return [Target("2 workers throughput / 1 worker", value, ">= 1.0x", value is not None and value >= 1.0)]


def soak_summary(runs: Sequence[Run]) -> dict[str, Any] | None:
    soak = by_key(runs).get("soak")
    if soak is None:
        return None
    start, end = soak.data.get("rss_start", {}), soak.data.get("rss_end", {})
    return {
        name: {"start_mb": start[name] / MB, "end_mb": end[name] / MB, "growth_mb": (end[name] - start[name]) / MB}
        for name in start
        if name in end and (name == "gateway" or name.startswith("worker"))
    }


def soak_targets(runs: Sequence[Run]) -> list[Target]:
    summary = soak_summary(runs)
    if summary is None:
        return []
    soak = by_key(runs)["soak"]
    growth = summary.get("gateway", {}).get("growth_mb")
    small = growth is not None and growth < 20
    return [
        Target("soak: gateway RSS growth after warm-up, MB", growth, "< 20 MB", small, digits=1),
        Target("soak: errors", float(soak.errors), "= 0", soak.errors == 0, digits=0),
    ]


def disturbed(runs: Sequence[Run]) -> list[str]:
    """Runs during which other processes kept the machine busy (a test suite, another benchmark)."""
    return [
        f"{run.system}: {run.name} ({run.data['other_cores']:.2f} cores, best of {run.data.get('attempts', 1)})"
        for run in runs
        if run.data.get("other_cores", 0.0) > NOISY_CORES
    ]


def all_targets(runs: Sequence[Run]) -> list[Target]:
    return comparison_targets(runs) + workers_targets(runs) + soak_targets(runs)


# -- the table ------------------------------------------------------------------


def _num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def rows(runs: Sequence[Run]) -> list[list[str]]:
    """The table's cells, one list per row, ceiling ÷ 3 right after the ceiling."""
    table = []
    for run in runs:
        per_1k = run.cpu_per_1k()
        cpu = [f"{per_1k[role]:.2f}" if role in per_1k else "" for role in ROLES]
        total = f"{sum(per_1k.values()):.2f}" if per_1k else ""
        table.append(
            [
                run.system,
                run.name,
                str(run.inflight),
                f"{run.data.get('requests', 0):,}",
                _num(run.throughput),
                _num(run.p50_ms, 2),
                _num(float(run.data.get("p99_ms", 0.0)), 2),
                str(run.errors),
                *cpu,
                total,
            ]
        )
        if run.key == "ceiling/256":
            table.append(["ceiling ÷ 3", "three queue hops per request", "", "", _num(run.throughput / 3)] + [""] * 10)
    return table


HEADERS = ["system", "run", "in flight", "requests", "req/s", "p50 ms", "p99 ms", "errors", *ROLES, "total"]


def table(runs: Sequence[Run], title: str) -> Table:
    rich_table = Table(title=title, caption="client … total: CPU seconds per 1,000 requests (messages for the ceiling)")
    for i, header in enumerate(HEADERS):
        rich_table.add_column(header, justify="left" if i < 2 else "right", no_wrap=i < 2)
    for row in rows(runs):
        rich_table.add_row(*row)
    return rich_table


def markdown(runs: Sequence[Run], title: str) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(runs)]
    lines.append("")
    lines.append("client … total: CPU seconds per 1,000 requests (messages for the ceiling).")
    return "\n".join(lines) + "\n"


def console() -> Console:
    """Wide enough for the table even when stdout is a pipe (rich would assume 80 columns)."""
    width = shutil.get_terminal_size((200, 50)).columns
    return Console(width=max(width, 170))


def show(runs: Sequence[Run], title: str, out: Console) -> list[Target]:
    out.print(table(runs, title))
    found = ratios(runs)
    if found:
        out.print()
        for ratio in found:
            shown = "n/a" if ratio.value is None else f"{ratio.value:.2f}x"
            out.print(f"  {ratio.name:<62} {shown:>7}")
    summary = soak_summary(runs)
    if summary:
        out.print()
        for name, rss in summary.items():
            out.print(
                f"  soak RSS {name:<10} after warm-up {rss['start_mb']:7.1f} MB, "
                f"at the end {rss['end_mb']:7.1f} MB ({rss['growth_mb']:+.1f} MB)"
            )
    noisy = disturbed(runs)
    if noisy:
        out.print()
        out.print(f"warning: other processes kept over {NOISY_CORES} cores busy during:", style="yellow")
        for line in noisy:
            out.print(f"  {line}", style="yellow", markup=False, highlight=False)
    targets = all_targets(runs)
    if targets:
        out.print()
        for target in targets:
            out.print(target.line(), style="green" if target.passed else "red", markup=False, highlight=False)
    return targets


def record(runs: Sequence[Run], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of the run."""
    return {
        **meta,
        "runs": [{**asdict(run), "cpu_per_1k": run.cpu_per_1k()} for run in runs],
        "ceiling_third": ceiling_third(runs),
        "ratios": [asdict(r) for r in ratios(runs)],
        "soak_rss": soak_summary(runs),
        "targets": [asdict(t) for t in all_targets(runs)],
        "disturbed": disturbed(runs),
    }


def write_markdown(path: Path, runs: Sequence[Run], title: str) -> None:
    """The table, the ratios and the targets, for pasting into a README or an issue."""
    lines = [markdown(runs, title)]
    shown = [(r.name, "n/a" if r.value is None else f"{r.value:.2f}x") for r in ratios(runs)]
    if shown:
        lines += ["| ratio | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in shown), ""]
    lines += [f"- {t.line()}" for t in all_targets(runs)]
    lines += [f"- warning: other load during {line}" for line in disturbed(runs)]
    path.write_text("\n".join(lines) + "\n")

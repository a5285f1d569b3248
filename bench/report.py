"""Results of the benchmarks: one JSON file each, a Markdown table and PNG plots built from them.

Each benchmark writes `bench/results/<name>.json` (date, machine, every figure, each check against its
target, the series its plot needs). `python -m bench.report` turns whatever results are there into
`bench/results/table.md` and the plots in `docs/bench/`, which the README shows.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.figures import Check, window_rates

__all__ = [
    "PLOTS_DIR",
    "RESULTS_DIR",
    "BenchResult",
    "load_results",
    "machine_info",
    "print_result",
    "pyplot",
    "render_table",
    "write_plots",
    "write_result",
]

_REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = _REPO_ROOT / "bench" / "results"
PLOTS_DIR = _REPO_ROOT / "docs" / "bench"


def machine_info() -> dict[str, Any]:
    """Where the figures were measured: ratios travel between machines, absolute numbers do not."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the machine, when it started
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class BenchResult:
    """What one benchmark measured; `checks` are the figures that have a target."""

    number: int
    name: str
    title: str
    checks: list[Check]
    figures: dict[str, Any]
    series: dict[str, Any] = field(default_factory=dict)
    scale_note: str = ""
    date: str = field(default_factory=_now)
    machine: dict[str, Any] = field(default_factory=machine_info)
    duration_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "title": self.title,
            "date": self.date,
            "machine": self.machine,
            "duration_seconds": round(self.duration_seconds, 1),
            "scale_note": self.scale_note,
            "all_targets_met": all(check.met for check in self.checks),
            "checks": [check.to_json() for check in self.checks],
            "figures": self.figures,
            "series": self.series,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchResult:
        return cls(
            number=int(data["number"]),
            name=data["name"],
            title=data["title"],
            checks=[Check.from_json(item) for item in data["checks"]],
            figures=data.get("figures", {}),
            series=data.get("series", {}),
            scale_note=data.get("scale_note", ""),
            date=data["date"],
            machine=data.get("machine", {}),
            duration_seconds=float(data.get("duration_seconds", 0.0)),
        )


def write_result(result: BenchResult, directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{result.name}.json"
    path.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_results(directory: Path = RESULTS_DIR) -> list[BenchResult]:
    """Every result file in `directory`, in benchmark order."""
    results = [
        BenchResult.from_json(json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(directory.glob("*.json"))
    ]
    return sorted(results, key=lambda result: result.number)


def print_result(result: BenchResult) -> None:
    """A benchmark's figures, printed last: every figure, then each check against its target."""
    print(f"\n== {result.number}. {result.title} ({result.duration_seconds:.0f}s)")
    if result.scale_note:
        print(f"   scaled: {result.scale_note}")
    for name, value in result.figures.items():
        print(f"   {name}: {value}")
    for check in result.checks:
        verdict = "met" if check.met else "MISSED"
        print(f"   {check.label}: {check.value_text} (target {check.target_text}) -> {verdict}")


# --- the table --------------------------------------------------------------------------------------------


def _machine_line(results: Sequence[BenchResult]) -> str:
    first = results[0]
    machine = first.machine
    dates = sorted({result.date[:10] for result in results})
    loads = [r.machine["load_average_1min"] for r in results if "load_average_1min" in r.machine]
    load = f", 1-min load average {min(loads):g} to {max(loads):g} when benchmarks started" if loads else ""
    return (
        f"Measured {', '.join(dates)} on {machine.get('platform', '?')} "
        f"({machine.get('cpu_count', '?')} CPUs, Python {machine.get('python', '?')}{load})."
    )


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(results: Sequence[BenchResult]) -> str:
    """The Markdown table the README quotes: one row per check, then the notes on scaling."""
    if not results:
        return "No benchmark results yet: run `make bench`.\n"
    lines = [
        _machine_line(results),
        "",
        "| # | benchmark | figure | measured | target | vs target | |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        for check in result.checks:
            verdict = "met" if check.met else "**missed**"
            vs = "n/a" if check.vs_target != check.vs_target else f"{check.vs_target:.2f}"
            label = _escape(check.label + (f" ({check.note})" if check.note else ""))
            lines.append(
                f"| {result.number} | {_escape(result.title)} | {label} | {check.value_text} | "
                f"{check.target_text} | {vs} | {verdict} |"
            )
    notes = [f"- {result.number}. {_escape(result.scale_note)}" for result in results if result.scale_note]
    if notes:
        lines += ["", "Scaled from the issue's specification to keep `make bench` short:", *notes]
    return "\n".join(lines) + "\n"


# --- the plots --------------------------------------------------------------------------------------------


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (files only, no display), imported when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_summary(results: Sequence[BenchResult], path: Path) -> None:
    plt = pyplot()
    checks = [(f"{r.number}. {c.label}", c) for r in results for c in r.checks]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(checks) + 1.2))
    values = [c.vs_target if c.vs_target == c.vs_target else 0.0 for _, c in checks]
    shown = [min(v, 20.0) for v in values]
    colours = ["#2e7d32" if c.met else "#c62828" for _, c in checks]
    ax.barh([label for label, _ in checks], shown, color=colours)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ticks = [0.25, 0.5, 1, 2, 5, 10, 20]
    ax.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    ax.set_xlim(min([0.2, *(v for v in shown if v > 0)]), 25)
    ax.set_xlabel("measured vs target (≥ 1 = met, log scale, capped at 20)")
    ax.set_title("dli-exporter benchmarks: every figure against its target")
    for index, value in enumerate(values):
        ax.text(shown[index], index, f" {value:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_rate_limit(result: BenchResult, path: Path) -> None:
    plt = pyplot()
    samples = result.series["samples"]
    limit = float(result.figures["R (req/s)"])
    exports = window_rates([(s[0], s[1]) for s in samples], 1.0)
    throttled = window_rates([(s[0], s[2]) for s in samples], 1.0)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot([t for t, _ in exports], [r for _, r in exports], label="exports answered / s")
    ax.plot([t for t, _ in throttled], [r for _, r in throttled], label="429s / s", color="#c62828")
    ax.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"R = {limit:g}/s")
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests / s (1 s windows)")
    ax.set_title("1. Rate-limit saturation: a strict sliding-window server at R")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(path: Path, title: str, panels: Sequence[dict[str, Any]]) -> None:
    """Side-by-side bar panels, each {"ylabel", "bars": {name: value}, optional "log", "xlabel", "target"}."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        bars: dict[str, float] = panel["bars"]
        names = list(bars)
        ax.bar(names, [bars[name] for name in names], color=["#607d8b", "#1565c0", "#2e7d32", "#ef6c00"])
        ax.set_ylabel(panel["ylabel"])
        ax.set_xlabel(panel.get("xlabel", ""))
        if panel.get("log"):
            ax.set_yscale("log")
        if "target" in panel:
            ax.axhline(panel["target"], color="#c62828", linestyle="--", linewidth=1, label="target")
            ax.legend(loc="lower right")
        for index, name in enumerate(names):
            value = bars[name]
            text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
            ax.text(index, value, text, ha="center", va="bottom", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_bars_from_series(result: BenchResult, path: Path) -> None:
    _bars(path, f"{result.number}. {result.title}", result.series["bars"])


def _plot_memory(result: BenchResult, path: Path) -> None:
    plt = pyplot()
    runs = result.series["runs"]
    ids = [run["ids"] for run in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(ids, [run["peak_rss_mb"] for run in runs], marker="o")
    left.axhline(120, color="#c62828", linestyle="--", linewidth=1, label="target 120 MB")
    left.set_xscale("log")
    left.set_xlabel("job IDs in the campaign")
    left.set_ylabel("peak RSS of the worker (MB)")
    left.set_ylim(bottom=0)
    left.legend()
    right.plot(ids, [run["seconds_per_1000_ids"] for run in runs], marker="o")
    right.set_xscale("log")
    right.set_xlabel("job IDs in the campaign")
    right.set_ylabel("seconds per 1,000 IDs")
    right.set_ylim(bottom=0)
    fig.suptitle(f"{result.number}. {result.title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_campaign(result: BenchResult, path: Path) -> None:
    """Per-region rates against each region's limit; drawn where the benchmark's series is defined."""
    from bench.campaign import plot_campaign

    plot_campaign(result, path)


def _plot_migration(result: BenchResult, path: Path) -> None:
    """Chunks through each stage over time, and DLI calls per route; drawn by the benchmark's module."""
    from bench.migration import plot_migration

    plot_migration(result, path)


def _plot_adaptive(result: BenchResult, path: Path) -> None:
    """Learned pace against each limit, stated and unstated; drawn by the benchmark's module."""
    from bench.adaptive import plot_adaptive

    plot_adaptive(result, path)


_PLOTTERS: dict[str, Callable[[BenchResult, Path], None]] = {
    "rate_limit": _plot_rate_limit,
    "memory": _plot_memory,
    "campaign": _plot_campaign,
    "migration": _plot_migration,
    "adaptive": _plot_adaptive,
}


def write_plots(results: Sequence[BenchResult], directory: Path = PLOTS_DIR) -> list[Path]:
    """summary.png plus one plot per benchmark that recorded a series for it."""
    if not results:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "summary.png"]
    _plot_summary(results, written[0])
    for result in results:
        plotter = _PLOTTERS.get(result.name)
        if plotter is None and "bars" in result.series:
            plotter = _plot_bars_from_series
        if plotter is None:
            continue
        path = directory / f"{result.name}.png"
        plotter(result, path)
        written.append(path)
    return written


def main() -> int:
    started = time.monotonic()
    results = load_results()
    table = render_table(results)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "table.md").write_text(table, encoding="utf-8")
    plots = write_plots(results)
    print(f"wrote {RESULTS_DIR / 'table.md'} and {len(plots)} plots in {time.monotonic() - started:.1f}s:")
    for plot in plots:
        print(f"  {plot.relative_to(_REPO_ROOT)}")
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

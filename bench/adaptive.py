"""10. EXPORTER_RATE_LIMIT=auto: how close to an unknown gateway limit does the learned pace get?

One simulator (strict sliding one-second window, 50 ms ± 20 ms latency, no ZIP writes, verification
in-process as in benchmark 1) is set in turn to limits of 20, 60 and 150 requests/s, once with 429s that
state their policy ("limit:60,time:1 second") and once with 429s that state nothing. Each run is a fresh
exporter (its own SQLite file, so nothing learned before) with EXPORTER_RATE_LIMIT=auto from the default
EXPORTER_RATE_START of 5/s, working a batch of one-job exports: `limit x 15` when the 429 states the
limit (the pace is set by the first one), `limit x 40` when it does not (two cycles of the search).

Figures per run, from the simulator's own counters sampled every 0.1 s:
- time to 90%: when a one-second window of answered exports first reached 0.9 x limit;
- steady rate / limit: exports per second between the moments 40% and 95% of the exports were
  answered (the ramp and the last requests' tail left out);
- 429 share: 429s served / export requests, over the whole run (the search's probes included).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from bench.common import (
    export_requests,
    exporter_command,
    run_benchmark,
    running_stack,
    submit,
    wait_ok,
    watch,
)
from bench.figures import Check, Direction, safe_ratio, steady_rate, window_rates
from bench.processes import Child
from bench.report import BenchResult, pyplot

NUMBER = 10
LIMITS = (20, 60, 150)
SECONDS_AT_LIMIT = {True: 15, False: 40}
LATENCY_MS, JITTER_MS = 50, 20
CONCURRENCY = 40  # above 150/s x 0.07 s in flight: the limiter alone sets the pace
LIMIT_SECONDS = 90.0
TARGETS = {True: (0.95, 1.0), False: (0.85, 3.0)}  # stated: (rate / limit, 429 %), unstated


def _steady(samples: list[tuple[float, float]], limit: float, total: int) -> tuple[float, float]:
    """(seconds to 90% of the limit in a 1-s window, exports/s between 40% and 95% of the exports)."""
    rates = window_rates(samples, 1.0)
    reached = next((t for t, rate in rates if rate >= 0.9 * limit), math.nan)
    return reached, steady_rate(samples, total, low=0.4, high=0.95)


async def _run(stack: Any, workdir: Path, limit: int, stated: bool) -> dict[str, Any]:
    await stack.sim.set_faults(rate_limit=limit, throttle_states_limit=stated)
    await stack.sim.reset()
    total = limit * SECONDS_AT_LIMIT[stated]
    name = f"auto-{limit}-{'stated' if stated else 'silent'}"
    overrides = {
        "rate_limit": "auto",
        "concurrency": CONCURRENCY,
        "chunk_size": 1,
        "queue_url": f"sqlite:///{workdir / name}.db",
    }
    await submit(stack.settings(**overrides), name, range(1, total + 1), chunk_size=1)
    command = exporter_command("work", "--until-empty", instant_verify=True, label=name)
    child = Child(name, command, env=stack.env(**overrides), logdir=workdir)
    samples = await watch(stack.sim, [child], limit_seconds=LIMIT_SECONDS, interval=0.1)
    await wait_ok(child)
    stats = await stack.sim.stats()
    exports = [(s.t, float(s.exports)) for s in samples]
    reached, rate = _steady(exports, limit, total)
    return {
        "limit": limit,
        "stated": stated,
        "exports": total,
        "seconds_to_90": reached,
        "steady_share": rate / limit,
        "share_429": safe_ratio(int(stats["throttled"]), export_requests(stats)) * 100,
        "throttled": int(stats["throttled"]),
        "samples": [(round(s.t, 3), s.exports, s.throttled) for s in samples],
    }


def _checks(runs: list[dict[str, Any]]) -> list[Check]:
    checks = []
    for run in runs:
        rate_target, share_target = TARGETS[run["stated"]]
        mode = "stated" if run["stated"] else "unstated"
        label = f"{run['limit']}/s {mode}"
        checks.append(
            Check(f"{label}: steady rate / limit", run["steady_share"], rate_target, Direction.AT_LEAST)
        )
        checks.append(
            Check(f"{label}: 429 share", run["share_429"], share_target, Direction.AT_MOST, unit="%")
        )
    return checks


async def measure(workdir: Path) -> BenchResult:
    faults = {"latency_ms": LATENCY_MS, "latency_jitter_ms": JITTER_MS, "p_never": 1.0}
    jobs = max(LIMITS) * max(SECONDS_AT_LIMIT.values())
    async with running_stack(workdir, jobs=jobs, faults=faults) as stack:
        runs = [await _run(stack, workdir, limit, stated) for stated in (True, False) for limit in LIMITS]
    figures: dict[str, Any] = {"start rate (req/s)": 5, "concurrency": CONCURRENCY}
    for run in runs:
        key = f"{run['limit']}/s {'stated' if run['stated'] else 'unstated'}"
        figures[f"{key}: steady / limit"] = round(run["steady_share"], 3)
        figures[f"{key}: 429 %"] = round(run["share_429"], 2)
        figures[f"{key}: s to 90%"] = round(run["seconds_to_90"], 1)
    return BenchResult(
        number=NUMBER,
        name="adaptive",
        title="Learned rate limit",
        checks=_checks(runs),
        figures=figures,
        series={"runs": runs},
    )


def plot_adaptive(result: BenchResult, path: Path) -> None:
    """Exports/s over time for each run against its limit: stated (left) and unstated (right)."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, stated in zip(axes, (True, False), strict=True):
        for index, run in enumerate(r for r in result.series["runs"] if r["stated"] is stated):
            colour = f"C{index}"
            rates = window_rates([(s[0], s[1]) for s in run["samples"]], 1.0)
            ax.plot(
                [t for t, _ in rates], [r for _, r in rates], color=colour, label=f"limit {run['limit']}/s"
            )
            ax.axhline(run["limit"], color=colour, linestyle="--", linewidth=1)
        ax.set_title("429 states the limit" if stated else "429 states nothing (CUBIC search)")
        ax.set_xlabel("seconds since the exporter started")
        ax.set_ylim(bottom=0)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("exports answered / s (1 s windows)")
    fig.suptitle(f"{result.number}. {result.title}: EXPORTER_RATE_LIMIT=auto from 5/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(run_benchmark(measure))

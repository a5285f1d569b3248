"""8. Campaign across regions: does each region run at its own gateway's limit, all at once?

Three simulated regions (strict 1-s windows of 20, 40 and 60 requests/s; region-a serves two projects),
each its own process (bench.procs.regions), and one campaign file with a target per (region, project)
and each region's `rate_limit`, submitted with `dli-exporter campaign submit` and worked by
`work --until-empty` (SQLite).
Each region's rate is read from its own simulator's export counter between 5% and 95% of its calls;
the campaign's wall time (first claim to last completion, from the exporter's log) is set against its
slowest region alone: that region's calls / its limit. If the regions shared one pace, or one region's
batches waited for another's, the slow region would stretch the whole campaign.

The targets are listed region by region, region-a's two first. With EXPORTER_MAX_BATCHES = 2 the
worker holds two batches until some region's slots are full, so a file that listed region-b and
region-c first would run region-a only once one of them ended (measured: 1.93 x the slowest alone).

Export path only, as in benchmark 1: the simulators write no ZIPs and verification answers in-process,
so moto's write rate on this 2-core machine cannot set the pace.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.common import (
    BUCKET,
    SimulatorControl,
    event_times,
    exporter_command,
    read_events,
    run_benchmark,
)
from bench.figures import Check, Direction, crossing_time, safe_ratio, steady_rate, window_rates
from bench.processes import BenchError, Child
from bench.procs.regions import Region, running_regions
from bench.report import BenchResult, pyplot
from exporter.devstack import DEV_AK, DEV_SK, free_port, settings_env
from exporter.settings import Settings

NUMBER = 8
CAMPAIGN_ID = "bench-campaign"
SIM_KNOBS = {"latency_ms": 100, "latency_jitter_ms": 40, "p_never": 1.0, "seed": 7}  # no ZIP writes
CONCURRENCY = 16  # per region: above 60/s x 0.14 s in flight, so the limiters alone set each pace
LIMIT_SECONDS = 120.0
SAMPLE_SECONDS = 0.1


# Sized so each region alone takes 25-30 s; chunk size 1 makes every job ID one export call.
REGIONS = (
    Region(
        "region-a", 20, {"a0000000000000000000000000000001": 300, "a0000000000000000000000000000002": 300}
    ),
    Region("region-b", 40, {"b0000000000000000000000000000001": 1100}),
    Region("region-c", 60, {"c0000000000000000000000000000001": 1500}),
)


# --- the campaign ----------------------------------------------------------------------------------------


def _campaign_file(workdir: Path, s3_endpoint: str, sims: Mapping[str, SimulatorControl]) -> Path:
    """The campaign as a user writes it, every target's IDs in a `job_ids_file` beside it."""
    lines = [
        f'campaign_id = "{CAMPAIGN_ID}"',
        f'obs_dir = "{BUCKET}/{{region}}/{{project_id}}"',
        "chunk_size = 1",
    ]
    for region in REGIONS:
        lines += [f"[regions.{region.name}]", f'dli_endpoint = "{sims[region.name].url}"']
        lines += [f'obs_endpoint = "{s3_endpoint}"', f"rate_limit = {region.limit}"]
    for region in REGIONS:
        for project, count in region.projects.items():
            ids = workdir / f"{region.name}-{project}.txt"
            ids.write_text("".join(f"{job_id}\n" for job_id in range(1, count + 1)), encoding="utf-8")
            lines += ["[[targets]]", f'region = "{region.name}"', f'project_id = "{project}"']
            lines.append(f'job_ids_file = "{ids.name}"')
    path = workdir / "campaign.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _exporter_env(workdir: Path, s3_endpoint: str) -> dict[str, str]:
    """SQLite in the workdir; the default DLI endpoint is a port nobody serves, as every batch of the
    campaign carries its region's route (and a route naming the default endpoint would share its limiter)."""
    settings = Settings(
        dli_endpoint=f"http://127.0.0.1:{free_port()}",
        ak=DEV_AK,
        sk=DEV_SK,
        obs_endpoint=s3_endpoint,
        obs_region="us-east-1",
        obs_addressing_style="path",
        queue_url=f"sqlite:///{workdir / 'exporter.db'}",
        report_dir=workdir / "reports",
        log_format="json",
        log_level="info",
        poll_interval=0.05,
        http_port=0,
        http_host="127.0.0.1",
        concurrency=CONCURRENCY,
        max_batches=2,  # the default, stated: region-a's two batches fill its slots
    )
    return settings_env(settings)


async def _cli(name: str, env: dict[str, str], workdir: Path, *args: str) -> dict[str, Any]:
    """Run `dli-exporter ARGS` to the end; its JSON answer (BenchError when it failed)."""
    child = Child(name, exporter_command(*args, label=None), env=env, logdir=workdir)
    usage = await child.wait(60.0)
    if usage.returncode != 0:
        raise BenchError(f"{name} exited with {usage.returncode}\n{child.tail()}")
    answer: dict[str, Any] = json.loads(child.read_stdout().strip().splitlines()[-1])
    return answer


async def _sample(sims: Mapping[str, SimulatorControl], exporter: Child) -> dict[str, list[list[float]]]:
    """Every region's (t, exports, 429s) until the exporter exits; BenchError past the time limit."""
    started = time.monotonic()
    series: dict[str, list[list[float]]] = {name: [] for name in sims}
    while True:
        done = exporter.poll() is not None
        stats = await asyncio.gather(*(control.stats() for control in sims.values()))
        now = round(time.monotonic() - started, 3)
        for name, stat in zip(sims, stats, strict=True):
            series[name].append([now, int(stat["exports"]), int(stat["throttled"])])
        if done:
            return series
        if now > LIMIT_SECONDS:
            raise BenchError(f"the exporter still ran after {LIMIT_SECONDS:g}s\n{exporter.tail()}")
        await asyncio.sleep(SAMPLE_SECONDS)


# --- the figures -----------------------------------------------------------------------------------------


def _log_seconds(log: Path, started_epoch: float) -> dict[str, float]:
    """From the exporter's log: first claim, first verified ZIP and last completion, from its start."""
    events = list(read_events(log))
    claimed, completed = event_times(events, "batch.claimed"), event_times(events, "batch.completed")
    verified = event_times(events, "zip.verified")
    if not claimed or not completed or not verified:
        raise BenchError(f"the exporter did not complete its batches (log: {log.name})")
    return {
        "wall": completed[-1] - claimed[0],
        "first_verified": min(verified) - started_epoch,
        "first_verified_after_claim": min(verified) - claimed[0],
    }


def _region_figures(region: Region, samples: list[list[float]], stats: Mapping[str, Any]) -> dict[str, Any]:
    exports = [(s[0], s[1]) for s in samples]
    requests = sum(int(n) for n in stats["requests"].get("export_jobs", {}).values())
    rate = steady_rate(exports, region.calls)
    first = crossing_time(exports, 1)
    return {
        "rate": round(rate, 2),
        "rate_over_limit": round(safe_ratio(rate, region.limit), 3),
        "throttled": int(stats["throttled"]),
        "share_429_percent": round(safe_ratio(int(stats["throttled"]), requests) * 100, 2),
        "started": round(first, 2),
        "seconds": round(crossing_time(exports, region.calls) - first, 2),
        "exported": int(stats["exports"]),
    }


def _checks(per_region: Mapping[str, dict[str, Any]], wall_ratio: float) -> list[Check]:
    checks = []
    for region in REGIONS:
        figures = per_region[region.name]
        label = f"{region.name} ({region.limit:g}/s)"
        checks.append(
            Check(f"{label}: steady rate / its limit", figures["rate_over_limit"], 0.95, Direction.AT_LEAST)
        )
        checks.append(
            Check(f"{label}: 429 share", figures["share_429_percent"], 1.0, Direction.AT_MOST, unit="%")
        )
    checks.append(Check("campaign wall time / slowest region alone", wall_ratio, 1.1, Direction.AT_MOST))
    return checks


async def _run(workdir: Path, session: aiohttp.ClientSession) -> dict[str, Any]:
    async with running_regions(workdir, REGIONS, SIM_KNOBS, session) as rig:
        env = _exporter_env(workdir, rig.s3_endpoint)
        campaign = _campaign_file(workdir, rig.s3_endpoint, rig.sims)
        submitted = await _cli("submit", env, workdir, "campaign", "submit", str(campaign), "--json")
        psutil.cpu_percent(None)  # the machine's CPU from here on
        started_epoch = time.time()
        command = exporter_command("work", "--until-empty", instant_verify=True, label="campaign")
        exporter = Child("exporter", command, env=env, logdir=workdir)
        samples = await _sample(rig.sims, exporter)
        busy, load = psutil.cpu_percent(None), os.getloadavg()[0]
        if exporter.usage is None or exporter.usage.returncode != 0:
            raise BenchError(f"the exporter failed\n{exporter.tail()}")
        stats = {name: await control.stats() for name, control in rig.sims.items()}
        cpu = {child.name: round(child.cpu_seconds(), 1) for child in rig.children}
        report = await _cli("report", env, workdir, "campaign", "report", CAMPAIGN_ID, "--json")
    return {
        "submitted": submitted,
        "samples": samples,
        "stats": stats,
        "report": report,
        "log": _log_seconds(exporter.stderr_path, started_epoch),
        "machine": {
            "busy": busy,
            "load": load,
            "cpu": {**cpu, "exporter": round(exporter.usage.cpu_seconds, 1)},
        },
    }


def _figures(
    run: Mapping[str, Any], per_region: Mapping[str, dict[str, Any]], alone: float
) -> dict[str, Any]:
    """Everything measured, for the printout and the JSON (the checks carry the targets)."""
    figures: dict[str, Any] = {"batches": len(run["submitted"]["batch_ids"])}
    figures["jobs verified"] = run["report"]["totals"]["verified"]
    for region in REGIONS:
        got = per_region[region.name]
        figures[f"{region.name}: limit, calls, alone (s)"] = (
            f"{region.limit:g}/s, {region.calls}, {region.alone_seconds:g}"
        )
        figures[f"{region.name}: steady rate (req/s)"] = f"{got['rate']} ({got['rate_over_limit']} of limit)"
        figures[f"{region.name}: 429s, first export at, took (s)"] = (
            f"{got['throttled']}, {got['started']}, {got['seconds']}"
        )
    log = run["log"]
    return figures | {
        "campaign wall time (s)": round(log["wall"], 2),
        "slowest region alone (s)": round(alone, 2),
        "time to first verified job (s, from daemon start)": round(log["first_verified"], 2),
        "time to first verified job (s, from first claim)": round(log["first_verified_after_claim"], 3),
        "machine CPU busy during the run (%)": run["machine"]["busy"],
        "1-min load average at the end": round(run["machine"]["load"], 2),
        "CPU seconds per process": run["machine"]["cpu"],
    }


async def measure(workdir: Path) -> BenchResult:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        run = await _run(workdir, session)
    per_region = {r.name: _region_figures(r, run["samples"][r.name], run["stats"][r.name]) for r in REGIONS}
    alone = max(region.alone_seconds for region in REGIONS)
    report = run["report"]
    if report["state"] != "completed" or report["totals"]["verified"] != sum(r.calls for r in REGIONS):
        raise BenchError(f"campaign ended {report['state']} with totals {report['totals']}")
    return BenchResult(
        number=NUMBER,
        name="campaign",
        title="Campaign across regions",
        checks=_checks(per_region, safe_ratio(run["log"]["wall"], alone)),
        figures=_figures(run, per_region, alone),
        series={"limits": {r.name: r.limit for r in REGIONS}, "samples": run["samples"]},
    )


def plot_campaign(result: BenchResult, path: Path) -> None:
    """Each region's exports/s over 1-s windows against its own limit (drawn by bench.report)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 4.6))
    for index, (name, limit) in enumerate(result.series["limits"].items()):
        colour = f"C{index}"
        samples = result.series["samples"][name]
        rates = window_rates([(s[0], s[1]) for s in samples], 1.0)
        ax.plot([t for t, _ in rates], [r for _, r in rates], color=colour, label=f"{name} exports / s")
        ax.axhline(limit, color=colour, linestyle="--", linewidth=1, label=f"{name} limit {limit:g}/s")
        throttled = window_rates([(s[0], s[2]) for s in samples], 1.0)
        if any(rate > 0 for _, rate in throttled):
            times, values = [t for t, _ in throttled], [r for _, r in throttled]
            ax.plot(times, values, color=colour, linestyle=":", linewidth=1, label=f"{name} 429s / s")
    ax.set_xlabel("seconds since the exporter started")
    ax.set_ylabel("requests / s (1 s windows)")
    ax.set_title(f"{result.number}. {result.title}: each region at its own gateway limit")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=7, ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(run_benchmark(measure))

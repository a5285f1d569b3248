"""9. Migration: 10,000 jobs exported, copied to another bucket and imported into an empty project.

One strict simulator (one 100 requests/s window for every DLI call: export, listing, import, job detail)
writes real ZIPs into moto; the exporter is told the same limit. Each run has a fresh worker (`work
--until-empty`, SQLite): a plain `submit` of the 10,000 jobs (export and verify alone), then `migrate`
of 1,000 and of 10,000 jobs, each into a target project of its own, with `--to-obs-dir` another bucket
(the only one the simulator imports from), so the copy stage runs. Wall time is the worker's, claim to
completion; stage times come from the chunk events of its log (`chunk.export.sent` → `exported` →
`verified` → `copied` → `imported` → `confirmed`; a stage's time includes waiting for its turn), calls
per route from the simulator's counters. Every job-map row of the report is checked against the
simulator's `/_sim/projects/{project}/jobs`: imported, with the ID the target holds under its name.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.common import (
    BUCKET,
    Stack,
    campaign_seconds,
    event_times,
    exporter_command,
    peak_rss_mb,
    read_events,
    run_benchmark,
    running_stack,
    submit,
    wait_ok,
)
from bench.figures import Check, Direction, safe_ratio
from bench.processes import BenchError, Child
from bench.report import BenchResult, pyplot
from exporter.devstack import DEV_PROJECT, create_bucket
from exporter.simulator.gateway import API_ROUTES, DETAIL_ROUTE
from exporter.simulator.job_fields import job_name

NUMBER = 9
SIZES = (1_000, 10_000)
CHUNK = 100
RATE = 100
HEADROOM = 0.03  # the exporter's default EXPORTER_RATE_HEADROOM: it paces at 97/s
CONCURRENCY = 16
TARGET_BUCKET = "bench-migrated"
TARGET_PREFIX = "f0000000000000000000000000"  # + the run's size: each run imports into its own project
SIM_KNOBS = {"latency_ms": 20, "latency_jitter_ms": 10, "rate_limit": RATE, "readable_buckets": TARGET_BUCKET}
LIMIT_SECONDS = 240.0
STAGES = ("exported", "verified", "copied", "imported", "confirmed")  # each after the one before it
_STARTED = "export.sent"
_TIMES = "\N{MULTIPLICATION SIGN}"


def _target(ids: int) -> str:
    return f"{TARGET_PREFIX}{ids:06d}"


def _overrides(folder: Path) -> dict[str, Any]:
    return {
        "rate_limit": RATE,
        "concurrency": CONCURRENCY,
        "chunk_size": CHUNK,
        "queue_url": f"sqlite:///{folder / 'exporter.db'}",
        "report_dir": folder / "reports",
    }


async def _cli(stack: Stack, folder: Path, name: str, *args: str) -> str:
    """`dli-exporter ARGS` run to the end; its standard output."""
    command = exporter_command(*args, label=None)
    child = Child(name, command, env=stack.env(**_overrides(folder)), logdir=stack.workdir)
    await wait_ok(child, limit_seconds=60.0)
    return child.read_stdout()


async def _work(stack: Stack, folder: Path, name: str) -> dict[str, Any]:
    """A fresh worker until the queue is empty: its figures, the simulator's counters, the machine's."""
    psutil.cpu_percent(None)
    command = exporter_command("work", "--until-empty", label=name)
    child = Child(name, command, env=stack.env(**_overrides(folder)), logdir=stack.workdir)
    usage = await wait_ok(child, limit_seconds=LIMIT_SECONDS)
    busy, load = psutil.cpu_percent(None), os.getloadavg()[0]
    stats = await stack.sim.stats()
    times = chunk_times(list(read_events(child.stderr_path)))
    requests = stats["requests"]  # DLI calls per route, 429s included (control calls are not DLI's)
    calls = {
        route: sum(int(n) for n in requests[route].values()) for route in sorted(API_ROUTES & set(requests))
    }
    return {
        "seconds": round(campaign_seconds(child.stderr_path), 2),
        "peak_rss_mb": round(peak_rss_mb(child.stderr_path), 1),
        "worker_cpu_seconds": round(usage.cpu_seconds, 1),
        "calls": calls,
        "throttled": int(stats["throttled"]),
        "machine_busy_percent": busy,
        "load_1min": round(load, 2),
        "stages": stage_figures(times),
        "timeline": timeline(times),
    }


async def _export_alone(stack: Stack, ids: int) -> dict[str, Any]:
    folder = stack.workdir / f"export-{ids}"
    folder.mkdir()
    await stack.sim.reset()
    settings = stack.settings(**_overrides(folder))
    await submit(settings, f"export-{ids}", range(1, ids + 1), chunk_size=CHUNK)
    return {"ids": ids, **await _work(stack, folder, f"export-{ids}")}


async def _migration(stack: Stack, session: aiohttp.ClientSession, ids: int) -> dict[str, Any]:
    folder = stack.workdir / f"migrate-{ids}"
    folder.mkdir()
    await stack.sim.reset()  # zero counters; the run's target project starts empty
    id_file = folder / "ids.txt"
    id_file.write_text("".join(f"{job_id}\n" for job_id in range(1, ids + 1)), encoding="utf-8")
    batch_id, target = f"migrate-{ids}", _target(ids)
    flags = ["--from-project", DEV_PROJECT, "--to-project", target, "--job-ids-file", str(id_file)]
    flags += ["--obs-dir", f"{BUCKET}/{batch_id}"]
    flags += ["--to-obs-dir", f"{TARGET_BUCKET}/{batch_id}", "--chunk-size", str(CHUNK)]
    await _cli(stack, folder, f"submit-{ids}", "migrate", *flags, "--batch-id", batch_id, "--json")
    run = await _work(stack, folder, batch_id)
    report = json.loads(await _cli(stack, folder, f"report-{ids}", "report", batch_id, "--json"))
    held = await _target_jobs(session, stack.sim.url, target)
    wrong = job_map_mismatches(report.get("job_map", []), held, ids)
    keys = ("imported", "skipped", "import_failed", "verified", "failed")
    totals = {"state": report.get("state"), **{key: report.get("totals", {}).get(key) for key in keys}}
    return {"ids": ids, **run, "totals": totals, "mismatch_count": len(wrong), "mismatches": wrong[:20]}


async def _target_jobs(session: aiohttp.ClientSession, url: str, project: str) -> dict[str, int]:
    async with session.get(f"{url}/_sim/projects/{project}/jobs") as response:
        if response.status != 200:
            raise BenchError(f"simulator has no target {project}: {await response.text()}")
        jobs: dict[str, int] = (await response.json())["jobs"]
        return jobs


def job_map_mismatches(job_map: Iterable[Mapping[str, Any]], held: Mapping[str, int], ids: int) -> list[str]:
    """Every disagreement between the job map and the target's name -> ID map."""
    wrong: list[str] = []
    seen: set[int] = set()
    for row in job_map:
        old, new = int(row["old_job_id"]), row.get("new_job_id")
        seen.add(old)
        there = held.get(job_name(old))
        if row.get("state") != "imported" or there is None or there != new:
            wrong.append(f"job {old}: map says {row.get('state')} -> {new}, the target holds {there}")
    missing = len(set(range(1, ids + 1)) - seen)
    if missing:
        wrong.append(f"{missing} job IDs have no row in the job map")
    if len(held) != ids:
        wrong.append(f"the target holds {len(held)} jobs, {ids} were migrated")
    return wrong


def chunk_times(events: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per chunk: the seconds after the batch's claim at which each `chunk.*` stage event first came."""
    claimed = event_times(events, "batch.claimed")
    start = claimed[0] if claimed else 0.0
    names = {f"chunk.{stage}": stage for stage in (_STARTED, *STAGES)}
    times: dict[int, dict[str, float]] = {}
    for event in events:
        stage = names.get(str(event.get("event")))
        if stage is not None and isinstance(event.get("chunk"), int):
            epoch = datetime.fromisoformat(str(event["timestamp"])).timestamp()
            times.setdefault(int(event["chunk"]), {}).setdefault(stage, round(epoch - start, 3))
    return times


def stage_figures(times: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Each stage's share of the summed chunk time (%) and when its last chunk got through (s)."""
    spent, done = dict.fromkeys(STAGES, 0.0), dict.fromkeys(STAGES, 0.0)
    for chunk in times.values():
        before = chunk.get(_STARTED)
        for stage in STAGES:
            at = chunk.get(stage)
            if at is None or before is None:
                break
            spent[stage], done[stage] = spent[stage] + at - before, max(done[stage], at)
            before = at
    total = sum(spent.values())
    return {
        stage: {"share_percent": round(safe_ratio(spent[stage], total) * 100, 1), "done_at": done[stage]}
        for stage in STAGES
        if done[stage] > 0
    }


def timeline(times: Mapping[int, Mapping[str, float]]) -> dict[str, list[float]]:
    """Per stage, the sorted seconds at which a chunk got through it (for the plot)."""
    return {stage: sorted(c[stage] for c in times.values() if stage in c) for stage in STAGES}


def _checks(small: Mapping[str, Any], large: Mapping[str, Any]) -> list[Check]:
    ids, calls, paced = large["ids"], sum(large["calls"].values()), RATE * (1 - HEADROOM)
    matched = round((ids - large["mismatch_count"]) / ids * 100, 2)
    rss = safe_ratio(large["peak_rss_mb"], small["peak_rss_mb"])
    share_429 = safe_ratio(large["throttled"], calls) * 100
    pace = safe_ratio(large["seconds"], calls / paced)
    note = f"{calls:,} calls / {paced:g} per s = {calls / paced:.1f} s"
    return [
        Check(
            f"jobs imported with the simulator's ID ({ids:,})", matched, 100.0, Direction.AT_LEAST, unit="%"
        ),
        Check(f"peak RSS {ids:,} / {small['ids']:,} jobs", rss, 1.3, Direction.AT_MOST, unit=_TIMES),
        Check("429 share of DLI calls", share_429, 1.0, Direction.AT_MOST, unit="%"),
        Check("migration time / its DLI calls at the paced rate", pace, 1.15, Direction.AT_MOST, note=note),
    ]


def _figures(alone: Mapping[str, Any], runs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    large = runs[max(SIZES)]
    ids, calls = large["ids"], sum(large["calls"].values())
    confirm_calls = large["calls"].get(DETAIL_ROUTE, 0)
    figures: dict[str, Any] = {
        f"export alone, {ids:,} jobs (s)": alone["seconds"],
        f"migration, {ids:,} jobs (s)": large["seconds"],
        "migration / export alone (same jobs)": round(safe_ratio(large["seconds"], alone["seconds"]), 1),
        f"migration {ids:,}: DLI calls by route": large["calls"],
        "job detail (confirm) share of DLI calls (%)": round(safe_ratio(confirm_calls, calls) * 100, 1),
        f"migration {ids:,}: stage share % / done at s": _stage_text(large["stages"]),
        f"export alone {ids:,}: stage share % / done at s": _stage_text(alone["stages"]),
        f"migration {ids:,}: report totals": large["totals"],
    }
    for run in (*runs.values(), alone):
        label = f"{'migration' if 'totals' in run else 'export alone'} {run['ids']:,}"
        figures[f"{label}: peak RSS MB, worker CPU s, machine busy %, load"] = ", ".join(
            str(run[key])
            for key in ("peak_rss_mb", "worker_cpu_seconds", "machine_busy_percent", "load_1min")
        )
    if large["mismatches"]:
        figures["job map vs simulator: first disagreements"] = large["mismatches"]
    return figures


def _stage_text(stages: Mapping[str, Mapping[str, float]]) -> str:
    return ", ".join(f"{name} {s['share_percent']:g}% / {s['done_at']:g}" for name, s in stages.items())


async def measure(workdir: Path) -> BenchResult:
    knobs = {**SIM_KNOBS, "target_projects": ",".join(_target(ids) for ids in SIZES)}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        running_stack(workdir, jobs=max(SIZES), faults=knobs) as stack,
    ):
        await create_bucket(stack.s3_endpoint, TARGET_BUCKET)
        alone = await _export_alone(stack, max(SIZES))
        runs = {ids: await _migration(stack, session, ids) for ids in SIZES}
    large = runs[max(SIZES)]
    return BenchResult(
        number=NUMBER,
        name="migration",
        title="Migration: export, copy, import",
        checks=_checks(runs[min(SIZES)], large),
        figures=_figures(alone, runs),
        series={"runs": [alone, *runs.values()]},
    )


def plot_migration(result: BenchResult, path: Path) -> None:
    """Chunks through each stage over time (the largest migration; export alone dashed), calls per route."""
    plt = pyplot()

    alone, large = result.series["runs"][0], result.series["runs"][-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    lines = {**large["timeline"], "verified (export alone)": alone["timeline"]["verified"]}
    for index, (stage, times) in enumerate(lines.items()):
        style = "--" if "alone" in stage else "-"
        left.step(
            times, range(1, len(times) + 1), where="post", color=f"C{index}", linestyle=style, label=stage
        )
    left.set(xlabel="seconds since the batch was claimed", ylabel="chunks through the stage")
    left.legend(fontsize=8)
    bars = right.bar(list(large["calls"]), list(large["calls"].values()), color="#607d8b")
    right.bar_label(bars, fontsize=8)
    right.set(ylabel=f"DLI calls, {large['ids']:,} jobs")
    right.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"{result.number}. {result.title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(run_benchmark(measure))

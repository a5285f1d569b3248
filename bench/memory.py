"""4. Memory and scale: campaigns of 10,000, 100,000 and 1,000,000 job IDs (chunk 100, instant simulator).

The whole real path: the simulator writes every ZIP into the local S3 server and the worker verifies each
with a HEAD, so the worker's memory includes its S3 client. Each campaign runs in a fresh worker process
with a fresh ledger; peak RSS is the kernel's own figure for that process (`VmHWM`, which the process logs
at exit), time is from claiming the batch to writing its report. Time per ID should stay flat (a linear
total), memory nearly flat.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.common import (
    Stack,
    campaign_seconds,
    exporter_command,
    peak_rss_mb,
    run_benchmark,
    running_stack,
    submit,
    wait_ok,
)
from bench.figures import Check, Direction, safe_ratio
from bench.processes import Child
from bench.report import BenchResult

NUMBER = 4
CAMPAIGNS = (10_000, 100_000, 1_000_000)
CHUNK = 100
CONCURRENCY = 32
LIMIT_SECONDS = 300.0


async def _campaign(stack: Stack, ids: int) -> dict[str, Any]:
    folder = stack.workdir / f"campaign-{ids}"
    folder.mkdir()
    overrides: dict[str, Any] = {
        "rate_limit": 100_000,
        "concurrency": CONCURRENCY,
        "chunk_size": CHUNK,
        "queue_url": f"sqlite:///{folder / 'exporter.db'}",
        "report_dir": folder / "reports",
    }
    await submit(stack.settings(**overrides), f"scale-{ids}", range(1, ids + 1), chunk_size=CHUNK)
    servers_before = stack.s3_process.cpu_seconds(), stack.sim_process.cpu_seconds()
    child = Child(
        f"worker-{ids}",
        exporter_command("work", "--until-empty", label=f"memory-{ids}"),
        env=stack.env(**overrides),
        logdir=stack.workdir,
    )
    usage = await wait_ok(child, limit_seconds=LIMIT_SECONDS)
    seconds = campaign_seconds(child.stderr_path)
    s3_cpu = stack.s3_process.cpu_seconds() - servers_before[0]
    sim_cpu = stack.sim_process.cpu_seconds() - servers_before[1]
    return {
        "ids": ids,
        "peak_rss_mb": round(peak_rss_mb(child.stderr_path), 1),
        "cpu_seconds": round(usage.cpu_seconds, 1),
        "campaign_seconds": round(seconds, 1),
        "seconds_per_1000_ids": round(seconds / ids * 1000, 3),
        "busy": {
            "worker": round(usage.cpu_seconds / usage.wall_seconds, 2),
            "simulator": round(sim_cpu / usage.wall_seconds, 2),
            "s3 server": round(s3_cpu / usage.wall_seconds, 2),
        },
    }


async def measure(workdir: Path) -> BenchResult:
    async with running_stack(workdir, jobs=max(CAMPAIGNS)) as stack:
        runs = [await _campaign(stack, ids) for ids in CAMPAIGNS]
    by_ids = {run["ids"]: run for run in runs}
    largest, middle, smallest = by_ids[CAMPAIGNS[-1]], by_ids[CAMPAIGNS[1]], by_ids[CAMPAIGNS[0]]
    return BenchResult(
        number=NUMBER,
        name="memory",
        title="Memory and scale",
        checks=[
            Check("peak RSS at 1M IDs", largest["peak_rss_mb"], 120.0, Direction.AT_MOST, unit=" MB"),
            Check(
                "peak RSS 1M / 100k",
                safe_ratio(largest["peak_rss_mb"], middle["peak_rss_mb"]),
                1.3,
                Direction.AT_MOST,
                unit="\N{MULTIPLICATION SIGN}",
            ),
            Check(
                "time per ID, 1M / 10k (flat = 1)",
                safe_ratio(largest["seconds_per_1000_ids"], smallest["seconds_per_1000_ids"]),
                1.3,
                Direction.AT_MOST,
                unit="\N{MULTIPLICATION SIGN}",
                note="target: flat; 1.3\N{MULTIPLICATION SIGN} allowed",
            ),
        ],
        figures={
            "time per ID, 1M / 100k": round(
                safe_ratio(largest["seconds_per_1000_ids"], middle["seconds_per_1000_ids"]), 2
            ),
            **{f"{run['ids']:,} IDs: peak RSS (MB)": run["peak_rss_mb"] for run in runs},
            **{f"{run['ids']:,} IDs: s per 1,000 IDs": run["seconds_per_1000_ids"] for run in runs},
            **{f"{run['ids']:,} IDs: campaign (s)": run["campaign_seconds"] for run in runs},
            **{f"{run['ids']:,} IDs: worker CPU (s)": run["cpu_seconds"] for run in runs},
            **{f"{run['ids']:,} IDs: CPU busy share": run["busy"] for run in runs},
        },
        series={"runs": runs},
    )


if __name__ == "__main__":
    sys.exit(run_benchmark(measure))

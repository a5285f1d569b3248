"""3. Against what users would pick instead: the official `huaweicloudsdkdli` client, sequential and on a
16-thread pool, versus the exporter, all exporting against the same simulator (100 ms per call, no limit).

Like for like, export calls only: the SDK loops verify nothing, so here the simulator writes no ZIPs and the
exporter's object store answers in-process (as in benchmark 2). The exporter runs with
EXPORTER_CONCURRENCY=100, which costs it coroutines where the SDK would need threads. Rates: the SDK's
from its own clock around the loop; the exporter's from claiming the batch to writing its report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import (
    BUCKET,
    PYTHON,
    Stack,
    campaign_seconds,
    exporter_command,
    run_benchmark,
    running_stack,
    submit,
    wait_ok,
)
from bench.figures import Check, Direction
from bench.processes import BenchError, Child
from bench.report import BenchResult

NUMBER = 3
EXPORTS = 1_000
SEQUENTIAL_EXPORTS = 100  # 1,000 sequential calls at 100 ms would take 100 s alone
THREADS = 16
CONCURRENCY = 100
LATENCY_MS = 100


async def _sdk(stack: Stack, first: int, count: int, threads: int) -> dict[str, Any]:
    args = [PYTHON, "-m", "bench.procs.sdk_export", stack.sim.url, f"{BUCKET}/sdk", str(first), str(count)]
    child = Child(
        f"sdk-{threads}", [*args, str(threads)], env={"HOME": str(stack.workdir)}, logdir=stack.workdir
    )
    await wait_ok(child, limit_seconds=count * LATENCY_MS / 1000 * 3 + 30)
    figures: dict[str, Any] = json.loads(child.read_stdout().splitlines()[-1])
    if figures["ok"] != count:
        raise BenchError(f"SDK with {threads} thread(s): {figures['ok']} of {count} exports succeeded")
    return figures


async def _exporter(stack: Stack, first: int, count: int) -> float:
    overrides = {"rate_limit": 100_000, "concurrency": CONCURRENCY, "chunk_size": 1}
    await submit(stack.settings(**overrides), "vs-sdk", range(first, first + count), chunk_size=1)
    child = Child(
        "exporter",
        exporter_command("work", "--until-empty", instant_verify=True, label="vs_sdk"),
        env=stack.env(**overrides),
        logdir=stack.workdir,
    )
    await wait_ok(child, limit_seconds=120)
    return count / campaign_seconds(child.stderr_path)


async def measure(workdir: Path) -> BenchResult:
    faults = {"latency_ms": LATENCY_MS, "p_never": 1.0}
    total_ids = SEQUENTIAL_EXPORTS + 2 * EXPORTS
    async with running_stack(workdir, jobs=total_ids, faults=faults) as stack:
        sequential = await _sdk(stack, 1, SEQUENTIAL_EXPORTS, 1)
        pooled = await _sdk(stack, SEQUENTIAL_EXPORTS + 1, EXPORTS, THREADS)
        exporter_rate = await _exporter(stack, SEQUENTIAL_EXPORTS + EXPORTS + 1, EXPORTS)
    return BenchResult(
        number=NUMBER,
        name="vs_sdk",
        title="Against the official SDK",
        checks=[
            Check(
                f"exporter / SDK {THREADS} threads",
                exporter_rate / pooled["rate"],
                4.0,
                Direction.AT_LEAST,
                unit="\N{MULTIPLICATION SIGN}",
            ),
            Check(
                "exporter / SDK sequential",
                exporter_rate / sequential["rate"],
                50.0,
                Direction.AT_LEAST,
                unit="\N{MULTIPLICATION SIGN}",
            ),
        ],
        figures={
            "simulator latency (ms)": LATENCY_MS,
            "SDK sequential (exports/s)": round(sequential["rate"], 1),
            f"SDK {THREADS} threads (exports/s)": round(pooled["rate"], 1),
            "exporter (exports/s)": round(exporter_rate, 1),
            "exporter concurrency": CONCURRENCY,
        },
        series={
            "bars": [
                {
                    "ylabel": "exports / s (log scale)",
                    "log": True,
                    "bars": {
                        "SDK sequential": sequential["rate"],
                        f"SDK {THREADS} threads": pooled["rate"],
                        "exporter": exporter_rate,
                    },
                }
            ]
        },
        scale_note=(
            f"the sequential SDK run makes {SEQUENTIAL_EXPORTS} calls instead of {EXPORTS:,} "
            "(one call at a time, so its rate does not depend on the count)"
        ),
    )


if __name__ == "__main__":
    sys.exit(run_benchmark(measure))

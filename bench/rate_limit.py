"""1. Rate-limit saturation: does the exporter hold a strict server's limit R without being punished?

The simulator answers after 200 ms ± jitter and refuses (429 with Retry-After) any request beyond R in
its sliding one-second window; the exporter is told the same R. A limiter that releases a period's quota
at once, or that does not back off together on a 429, earns 429s and loses pace; one that spaces requests
evenly runs at R. The rate is read from the simulator's own counter between 5% and 95% of the campaign;
latency is the exporter's per-chunk figure (from its `chunk.exported` log lines: sending to answer,
including waits for a rate slot and any retries).

Like benchmarks 2 and 3 it times the export path only: the simulator writes no ZIPs and the exporter's
verification answers in-process. With moto taking ~150 writes/s on this 2-core machine, real ZIP writes
made the simulator's own event loop lag and admit arrivals in clumps, so its window counted jitter of
its own making rather than the exporter's pacing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import (
    export_requests,
    exporter_command,
    read_events,
    run_benchmark,
    running_stack,
    submit,
    wait_ok,
    watch,
)
from bench.figures import Check, Direction, percentile, safe_ratio, steady_rate
from bench.processes import Child
from bench.report import BenchResult

NUMBER = 1
RATE = 100
REQUESTS = 2_000
LATENCY_MS = 200
JITTER_MS = 50
CONCURRENCY = 40  # comfortably above R x latency (25 in flight), so the limiter alone sets the pace
LIMIT_SECONDS = 120.0


async def measure(workdir: Path) -> BenchResult:
    faults = {"latency_ms": LATENCY_MS, "latency_jitter_ms": JITTER_MS, "rate_limit": RATE, "p_never": 1.0}
    async with running_stack(workdir, jobs=REQUESTS, faults=faults) as stack:
        overrides = {
            "rate_limit": RATE,  # EXPORTER_RATE_LIMIT = R exactly, as the issue says
            "concurrency": CONCURRENCY,
            "chunk_size": 1,
        }
        await submit(stack.settings(**overrides), "ratelimit", range(1, REQUESTS + 1), chunk_size=1)
        child = Child(
            "exporter",
            exporter_command("work", "--until-empty", instant_verify=True, label="rate_limit"),
            env=stack.env(**overrides),
            logdir=workdir,
        )
        samples = await watch(stack.sim, [child], limit_seconds=LIMIT_SECONDS, interval=0.1)
        await wait_ok(child)
        stats = await stack.sim.stats()
    latencies = [
        float(e["latency_ms"]) for e in read_events(child.stderr_path) if e.get("event") == "chunk.exported"
    ]
    exports = [(s.t, float(s.exports)) for s in samples]
    achieved = steady_rate(exports, REQUESTS)
    throttled = int(stats["throttled"])
    share_429 = safe_ratio(throttled, export_requests(stats))
    return BenchResult(
        number=NUMBER,
        name="rate_limit",
        title="Rate-limit saturation",
        checks=[
            Check("achieved rate / R", achieved / RATE, 0.95, Direction.AT_LEAST),
            Check("429 share of export requests", share_429 * 100, 1.0, Direction.AT_MOST, unit="%"),
        ],
        figures={
            "R (req/s)": RATE,
            "export requests": REQUESTS,
            "simulator latency (ms)": f"{LATENCY_MS} + 0..{JITTER_MS}",
            "concurrency": CONCURRENCY,
            "achieved rate (req/s)": round(achieved, 1),
            "429s served": throttled,
            "most requests in any 1 s window": stats["max_in_window"],
            "p50 export latency (ms)": round(percentile(latencies, 50), 1),
            "p99 export latency (ms)": round(percentile(latencies, 99), 1),
        },
        series={"samples": [(round(s.t, 3), s.exports, s.throttled) for s in samples]},
    )


if __name__ == "__main__":
    sys.exit(run_benchmark(measure))

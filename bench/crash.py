"""7. Crash cost: `kill -9` half-way through a 5,000-chunk campaign, restart, count repeated exports.

The worker is killed when the simulator has answered half the chunks; a new worker (after the first one's
lease ran out) finishes the batch. Exports the simulator answered beyond one per chunk were repeated; the
ledger records a chunk before the next step depends on it, so at most the chunks in flight at the kill (up
to the concurrency) may be exported twice. The whole real path runs: ZIPs in S3, HEADs to verify.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from bench.common import Sample, exporter_command, run_benchmark, running_stack, submit, wait_ok, watch
from bench.figures import Check, Direction
from bench.processes import BenchError, Child
from bench.report import BenchResult

NUMBER = 7
CHUNKS = 5_000
CONCURRENCY = 16
LEASE_SECONDS = 2.0
LIMIT_SECONDS = 180.0


async def measure(workdir: Path) -> BenchResult:
    faults = {"latency_ms": 20, "latency_jitter_ms": 10}
    async with running_stack(workdir, jobs=CHUNKS, faults=faults) as stack:
        overrides = {
            "rate_limit": 100_000,
            "concurrency": CONCURRENCY,
            "chunk_size": 1,
            "lease_seconds": LEASE_SECONDS,
        }
        await submit(stack.settings(**overrides), "crash", range(1, CHUNKS + 1), chunk_size=1)
        first = Child(
            "worker-killed",
            exporter_command("work", "--until-empty", label=None),
            env=stack.env(**overrides),
            logdir=workdir,
        )

        def half_done(sample: Sample) -> bool:
            return sample.exports >= CHUNKS // 2

        await watch(stack.sim, [first], until=half_done, limit_seconds=LIMIT_SECONDS)
        first.send(signal.SIGKILL)
        killed = await first.wait(10)
        if killed.returncode != -signal.SIGKILL:
            raise BenchError(f"the worker ended by itself ({killed.returncode}) before it could be killed")
        at_kill = (await stack.sim.stats())["exports"]
        second = Child(
            "worker-restarted",
            exporter_command("work", "--until-empty", label="crash-restarted"),
            env=stack.env(**overrides),
            logdir=workdir,
        )
        await wait_ok(second, limit_seconds=LIMIT_SECONDS)
        stats = await stack.sim.stats()
    report = json.loads((workdir / "reports" / "crash.json").read_text())
    if report["totals"]["verified"] != CHUNKS:
        raise BenchError(f"after the restart only {report['totals']['verified']} of {CHUNKS} jobs verified")
    extra = int(stats["exports"]) - CHUNKS
    return BenchResult(
        number=NUMBER,
        name="crash",
        title="Crash cost (kill -9 at 50%)",
        checks=[Check("extra exports / concurrency", extra / CONCURRENCY, 1.0, Direction.AT_MOST)],
        figures={
            "chunks": CHUNKS,
            "concurrency": CONCURRENCY,
            "exports answered when killed": at_kill,
            "exports answered in all": stats["exports"],
            "extra exports": extra,
            "job IDs exported more than once": stats["job_ids_exported_more_than_once"],
            "jobs verified in the report": report["totals"]["verified"],
        },
    )


if __name__ == "__main__":
    sys.exit(run_benchmark(measure))

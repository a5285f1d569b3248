"""6. Replicas: 1, 2 and 3 `serve` processes sharing R through Redis against a strict simulator.

The export path only, as in benchmark 1 (no ZIP writes, verification in-process). Every replica count
gets the same work (six batches, so each replica has batches to claim) under a fresh Redis key prefix,
and the simulator's counters are reset in between. The aggregate rate is read from the simulator's
export counter between 5% and 95% of the work; the 429 share is of all export requests. The keys are
purged afterwards. Needs Redis on 127.0.0.1:6379 (database 14).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio
import redis.exceptions

from bench.common import (
    Sample,
    Stack,
    export_requests,
    exporter_command,
    run_benchmark,
    running_stack,
    submit,
    watch,
)
from bench.figures import Check, Direction, safe_ratio, steady_rate
from bench.processes import BenchError, Child
from bench.report import BenchResult
from exporter.adapters.redis import open_redis

NUMBER = 6
RATE = 60
REPLICAS = (1, 2, 3)
BATCHES = 6
CHUNKS_PER_BATCH = 120
CONCURRENCY = 16
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
LIMIT_SECONDS = 120.0


async def _require_redis() -> None:
    """Fail at once, with the fix in the message, when there is no Redis to share the limit through."""
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except redis.exceptions.RedisError as error:
        raise BenchError(
            f"Redis is not reachable at {REDIS_URL} ({error}); start redis-server or set BENCH_REDIS_URL"
        ) from None
    finally:
        await client.aclose()


async def _purge(prefix: str) -> None:
    async with open_redis(REDIS_URL, key_prefix=prefix, consumer_group="exporters") as backend:
        await backend.purge()


async def _run(stack: Stack, replicas: int) -> dict[str, Any]:
    prefix = f"bench-{uuid.uuid4().hex[:12]}"
    overrides = {
        "queue_url": REDIS_URL,
        "redis_key_prefix": prefix,
        "rate_limit": RATE,
        "concurrency": CONCURRENCY,
        "chunk_size": 1,
        "drain_seconds": 2,
    }
    await stack.sim.reset()
    total = BATCHES * CHUNKS_PER_BATCH
    try:
        for batch in range(BATCHES):
            first = batch * CHUNKS_PER_BATCH + 1
            ids = range(first, first + CHUNKS_PER_BATCH)
            await submit(stack.settings(**overrides), f"replicas-{replicas}-{batch}", ids, chunk_size=1)
        children = [
            Child(
                f"serve-{replicas}-{n}",
                exporter_command("serve", instant_verify=True, label=f"replicas-{replicas}-{n}"),
                env=stack.env(**overrides),
                logdir=stack.workdir,
            )
            for n in range(replicas)
        ]

        def all_exported(sample: Sample) -> bool:
            return sample.exports >= total

        try:
            samples = await watch(stack.sim, children, until=all_exported, limit_seconds=LIMIT_SECONDS)
        finally:
            await asyncio.gather(*(child.stop() for child in children))
        ended = [child for child in children if child.usage is None or child.usage.returncode != 0]
        if ended or samples[-1].exports < total:
            tails = "\n".join(f"--- {child.name}\n{child.tail()}" for child in ended)
            raise BenchError(f"replicas did not finish cleanly: {children}\n{tails}")
        stats = await stack.sim.stats()
    finally:
        await _purge(prefix)
    rate = steady_rate([(s.t, float(s.exports)) for s in samples], total)
    return {
        "replicas": replicas,
        "rate": round(rate, 1),
        "rate_over_r": round(rate / RATE, 3),
        "throttled": int(stats["throttled"]),
        "share_429_percent": round(safe_ratio(int(stats["throttled"]), export_requests(stats)) * 100, 2),
    }


async def measure(workdir: Path) -> BenchResult:
    await _require_redis()
    # Export path only, as in benchmark 1: no ZIP writes to load the simulator, verification in-process.
    faults = {"latency_ms": 50, "latency_jitter_ms": 20, "rate_limit": RATE, "p_never": 1.0}
    async with running_stack(workdir, jobs=BATCHES * CHUNKS_PER_BATCH, faults=faults) as stack:
        runs = [await _run(stack, replicas) for replicas in REPLICAS]
    checks = []
    for run in runs:
        checks.append(
            Check(
                f"{run['replicas']} replica(s): aggregate rate / R",
                run["rate_over_r"],
                0.95,
                Direction.AT_LEAST,
            )
        )
        checks.append(
            Check(
                f"{run['replicas']} replica(s): 429 share",
                run["share_429_percent"],
                1.0,
                Direction.AT_MOST,
                unit="%",
            )
        )
    return BenchResult(
        number=NUMBER,
        name="replicas",
        title="Replicas sharing R (Redis)",
        checks=checks,
        figures={
            "R (req/s)": RATE,
            "export requests per replica count": BATCHES * CHUNKS_PER_BATCH,
            **{f"{run['replicas']} replica(s): rate (req/s)": run["rate"] for run in runs},
            **{f"{run['replicas']} replica(s): 429s": run["throttled"] for run in runs},
        },
        series={
            "bars": [
                {
                    "ylabel": "aggregate rate / R",
                    "xlabel": "serve replicas",
                    "target": 0.95,
                    "bars": {f"{r['replicas']}": r["rate_over_r"] for r in runs},
                },
                {
                    "ylabel": "429 share (%)",
                    "xlabel": "serve replicas",
                    "target": 1.0,
                    "bars": {f"{r['replicas']}": r["share_429_percent"] for r in runs},
                },
            ]
        },
    )


if __name__ == "__main__":
    sys.exit(run_benchmark(measure))

"""The timed part shared by the raw baselines: N workers drain one iterator, wall and CPU time measured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def timed_workers(
    count: int, concurrency: int, worker: Callable[[], Awaitable[int]]
) -> dict[str, float]:
    """Run `concurrency` workers (each returns how many requests succeeded); rate and CPU per request."""
    started, cpu_started = time.perf_counter(), time.process_time()
    succeeded = await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "requests": count,
        "ok": sum(succeeded),
        "seconds": seconds,
        "rate": count / seconds,
        "cpu_ms_per_request": cpu / count * 1000,
    }

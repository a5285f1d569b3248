"""What `/metrics` refreshes before it answers: readiness, queue depth, and gauges read from the stores.

Gauges of state that lives in the queue and the ledger (how deep the queue is, how far each campaign
got) are read when Prometheus asks, not pushed by whoever changes them: every replica answers for the
shared state as it is now. A store that does not answer in time leaves the last values in place and the
scrape still succeeds; `exporter_ready` then says 0, as `/readyz` would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client.metrics import MetricWrapperBase

from exporter import metrics
from exporter.errors import StoreUnavailable
from exporter.ports import BatchQueue

__all__ = ["REFRESH_TIMEOUT_SECONDS", "ScrapeHook", "add_scrape_hook", "refresh_on_scrape"]

log = structlog.get_logger("exporter.http")

ScrapeHook = Callable[[], Awaitable[None]]
"""Refreshes some gauges from a store; raises StoreUnavailable (or overruns) when the store is away."""

REFRESH_TIMEOUT_SECONDS = 2.0  # well inside Prometheus' default scrape timeout (10 s)

_HOOKS = web.AppKey("scrape_hooks", list[ScrapeHook])

# Series the alert rules take increase() of show at 0 from the first scrape on: increase() cannot count
# the event a series is born with (a first dead letter, a first missing ZIP would go unseen).
_ZEROED: tuple[tuple[MetricWrapperBase, tuple[tuple[str, ...], ...]], ...] = (
    (metrics.CHUNKS, (("exported",), ("verified",), ("failed",))),
    (metrics.VERIFY_RESULTS, (("verified",), ("missing",), ("empty",), ("invalid",), ("error",))),
    (metrics.DEAD_LETTERS, (("invalid",), ("failed",), ("failed_repeatedly",), ("unfinished",))),
    (metrics.DLI_REQUESTS, (("export", "ok"), ("list", "ok"))),
)


def add_scrape_hook(app: web.Application, hook: ScrapeHook) -> None:
    """Run `hook` on every scrape of this app's `/metrics` (before the app starts)."""
    app.setdefault(_HOOKS, []).append(hook)


async def refresh_on_scrape(app: web.Application, queue: BatchQueue, *, ready: bool) -> None:
    """Show the alerted series (0 until their first event), set `exporter_ready` and
    `exporter_queue_depth`, then run the app's scrape hooks, each bounded in time."""
    for metric, label_sets in _ZEROED:
        for values in label_sets:
            metrics.labelled(metric, *values)
    try:
        async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):
            metrics.QUEUE_DEPTH.set(await queue.depth())
    except (StoreUnavailable, TimeoutError) as error:
        log.warning("metrics.refresh.failed", what="queue_depth", error=str(error) or "no answer in time")
        ready = False
    metrics.READY.set(1 if ready else 0)
    for hook in app.get(_HOOKS, ()):
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):
                await hook()
        except (StoreUnavailable, TimeoutError) as error:
            what = getattr(hook, "__qualname__", "hook")
            log.warning("metrics.refresh.failed", what=what, error=str(error) or "no answer in time")

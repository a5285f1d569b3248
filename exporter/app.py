"""Composition root: settings → adapters inside one AsyncExitStack, torn down in reverse order.

Commands that only read or write the queue and ledger (submit, status, report, dead letters) open just
the stores; the daemon opens everything: stores, rate limiter, DLI client, OBS client, pipeline, worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial

import structlog
from aiohttp import web

from exporter.adapters.adaptive_limiter import AdaptiveLimiter, MeteredLimiter, PacedLimiter
from exporter.adapters.limiter import LocalRateLimiter
from exporter.adapters.rate_sync import RateSync
from exporter.adapters.redis import open_redis
from exporter.adapters.sqlite import open_sqlite, sqlite_path_from_url
from exporter.adaptive import RateController
from exporter.campaign.record import CampaignStore
from exporter.clock import SystemClock
from exporter.dli.session import create_session
from exporter.dli.signer import Credentials
from exporter.errors import ConfigError
from exporter.http import create_http_app
from exporter.http_campaigns import add_campaign_routes
from exporter.http_status import add_status_page
from exporter.iam import discovered_targets, list_projects
from exporter.logs import log_asyncio_exception, log_tasks
from exporter.migration.ports import MigrationLedger
from exporter.paces import campaign_paces
from exporter.pipeline import Pipeline
from exporter.pipeline.campaigns import CampaignCloser
from exporter.ports import BatchQueue, Ledger, RateLimiter
from exporter.rate_states import RateStates
from exporter.region_clients import default_auth, open_regions
from exporter.report import LocalReportWriter
from exporter.routes import RateLimit
from exporter.settings import Settings
from exporter.wiring import (
    pipeline_options,
    plan_defaults,
    redis_auth,
    session_options,
    worker_options,
)
from exporter.worker import Worker

__all__ = [
    "Runtime",
    "Stores",
    "consumer_name",
    "discover_projects",
    "open_runtime",
    "open_stores",
    "run_daemon",
]

log = structlog.get_logger("exporter.app")


LimiterFactory = Callable[[RateLimit | None, str | None], RateLimiter]
"""A limiter for a gateway limit (requests/s, auto, or None: EXPORTER_RATE_LIMIT) and a scope (a DLI
endpoint; None: the default one)."""


@dataclass(slots=True)
class Stores:
    """Queue, ledger, campaign records, and rate limiters that match the backend (shared on Redis), with
    the rates they learned."""

    queue: BatchQueue
    ledger: Ledger
    campaigns: CampaignStore
    limiter_for: LimiterFactory
    migrations: MigrationLedger
    rates: RateStates

    @property
    def limiter(self) -> RateLimiter:
        """A limiter for the default endpoint at its own pace (tests and tools that need just one)."""
        return self.limiter_for(None, None)


@dataclass(slots=True)
class Runtime:
    """Everything the daemon runs on."""

    settings: Settings
    stores: Stores
    pipeline: Pipeline
    worker: Worker


def consumer_name() -> str:
    """Unique per process: hostname (the pod name in Kubernetes) and PID."""
    return f"{socket.gethostname()}-{os.getpid()}"


@asynccontextmanager
async def open_stores(settings: Settings) -> AsyncIterator[Stores]:
    """Open the queue and ledger named by EXPORTER_QUEUE_URL."""
    opened = _redis_stores(settings) if settings.uses_redis else _sqlite_stores(settings)
    async with opened as stores:
        yield stores


@asynccontextmanager
async def _redis_stores(settings: Settings) -> AsyncIterator[Stores]:
    auth = redis_auth(settings)
    async with open_redis(
        auth.url,
        key_prefix=settings.redis_key_prefix,
        consumer_group=settings.redis_consumer_group,
        password=auth.provider or auth.password,
        max_deliveries=settings.max_deliveries,
        ssl_ca_file=str(settings.ca_bundle) if settings.ca_bundle else None,
    ) as redis:

        def shared(pace: float, scope: str | None) -> PacedLimiter:
            return redis.limiter(pace, settings.rate_burst, scope, settings.window_slack)

        limiters = _limiters(settings, shared, redis.rates)
        yield Stores(redis.queue, redis.ledger, redis.campaigns, limiters, redis.migrations, redis.rates)


@asynccontextmanager
async def _sqlite_stores(settings: Settings) -> AsyncIterator[Stores]:
    async with open_sqlite(sqlite_path_from_url(settings.queue_url)) as sqlite:

        def local(pace: float, _scope: str | None) -> PacedLimiter:
            return LocalRateLimiter(pace, settings.rate_burst, window_slack=settings.window_slack)

        limiters = _limiters(settings, local, sqlite.rates)
        yield Stores(sqlite.queue, sqlite.ledger, sqlite.campaigns, limiters, sqlite.migrations, sqlite.rates)


def _limiters(
    settings: Settings, make: Callable[[float, str | None], PacedLimiter], rates: RateStates
) -> LimiterFactory:
    """The backend's limiter per (gateway limit, scope), each fixed or learned as `_limiter` decides."""

    def limiter_for(rate: RateLimit | None, scope: str | None) -> RateLimiter:
        return _limiter(settings, lambda pace: make(pace, scope), rate, scope, rates)

    return limiter_for


def _limiter(
    settings: Settings,
    make: Callable[[float], PacedLimiter],
    rate: RateLimit | None,
    scope: str | None,
    rates: RateStates,
) -> RateLimiter:
    """A fixed pace (the region's rate_limit, else EXPORTER_RATE_LIMIT, less the headroom), or with
    `auto` (the region's, or EXPORTER_RATE_LIMIT's when the region has none) one learned from the
    gateway and shared in `rates` by every replica of the endpoint (and the next run)."""
    endpoint = scope or "default"
    if settings.learns(rate):
        controller = RateController(
            start=settings.rate_start,
            minimum=settings.rate_min,
            maximum=settings.rate_max,
            headroom=settings.rate_headroom,
        )
        clock = SystemClock()
        sync = RateSync(rates, endpoint, clock)
        return AdaptiveLimiter(make(settings.rate_start), controller, clock, endpoint=endpoint, sync=sync)
    return MeteredLimiter(make(settings.paced(None if rate == "auto" else rate)), endpoint=endpoint)


async def discover_projects(settings: Settings, regions: Collection[str] | None) -> list[tuple[str, str]]:
    """(region, project_id) of every project of the account (IAM `GET /v3/projects`, AK/SK signed)."""
    auth = await default_auth(settings)
    if not isinstance(auth, Credentials):
        raise ConfigError(
            "--all-projects signs IAM's project listing with AK/SK: set EXPORTER_AK and EXPORTER_SK"
        )
    async with create_session(session_options(settings)) as session:
        projects = await list_projects(session, settings.iam_endpoint, auth)
    return discovered_targets(projects, regions)


@asynccontextmanager
async def open_runtime(settings: Settings, *, consumer: str | None = None) -> AsyncIterator[Runtime]:
    """Build every adapter the daemon needs; close them in reverse order on exit."""
    settings.require("dli_endpoint")
    settings.require_credentials()
    clock = SystemClock()
    owner = consumer or consumer_name()
    async with AsyncExitStack() as stack:
        stores = await stack.enter_async_context(open_stores(settings))
        regions = await open_regions(settings, stack, stores.limiter_for, clock)
        reports = LocalReportWriter(settings.report_dir)
        closer = CampaignCloser(
            stores.campaigns,
            stores.ledger,
            reports,
            upload=settings.upload_manifest,
            report_dir=str(settings.report_dir),
            migrations=stores.migrations,
        )
        pipeline = Pipeline(
            regions,
            stores.ledger,
            reports,
            pipeline_options(settings),
            owner=owner,
            clock=clock,
            campaigns=closer,
            migrations=stores.migrations,
        )
        worker = Worker(stores.queue, pipeline, consumer=owner, options=worker_options(settings), clock=clock)
        yield Runtime(settings, stores, pipeline, worker)


async def run_daemon(settings: Settings, *, until_empty: bool = False, serve_http: bool = True) -> None:
    """`serve` / `work`: the worker loop (plus HTTP endpoints); SIGTERM and SIGINT drain and return."""
    async with open_runtime(settings) as runtime:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(log_asyncio_exception)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, runtime.worker.stop)
        loop.add_signal_handler(signal.SIGUSR1, log_tasks)
        runner: web.AppRunner | None = None
        if serve_http:
            app = create_http_app(runtime.stores.queue, runtime.stores.ledger, runtime.worker, settings)
            add_campaign_routes(
                app,
                runtime.stores.campaigns,
                runtime.stores.queue,
                runtime.stores.ledger,
                defaults=plan_defaults(settings),
                report_dir=str(settings.report_dir),
                migrations=runtime.stores.migrations,
                paces=partial(campaign_paces, runtime.stores.rates, settings),
            )
            add_status_page(app, runtime.stores.queue, runtime.stores.ledger, runtime.stores.campaigns)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, settings.http_host, settings.http_port).start()
            log.info("http.listening", host=settings.http_host, port=settings.http_port)
        try:
            await runtime.worker.run(until_empty=until_empty)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                with contextlib.suppress(ValueError, RuntimeError):
                    loop.remove_signal_handler(signum)
            if runner is not None:
                await runner.cleanup()

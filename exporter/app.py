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
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import structlog
from aiohttp import web

from exporter.adapters.limiter import LocalRateLimiter
from exporter.adapters.redis import open_redis
from exporter.adapters.s3 import open_object_store
from exporter.adapters.sqlite import open_sqlite, sqlite_path_from_url
from exporter.clock import SystemClock
from exporter.dli.client import DliClient
from exporter.dli.session import create_session
from exporter.dli.signer import Credentials
from exporter.http import create_http_app
from exporter.logs import log_asyncio_exception, log_tasks
from exporter.pipeline import Pipeline
from exporter.ports import BatchQueue, Ledger, RateLimiter
from exporter.report import LocalReportWriter
from exporter.settings import Settings
from exporter.wiring import pipeline_options, retry_policy, s3_options, session_options, worker_options
from exporter.worker import Worker

__all__ = [
    "Runtime",
    "Stores",
    "consumer_name",
    "open_runtime",
    "open_stores",
    "run_daemon",
]

log = structlog.get_logger("exporter.app")


@dataclass(slots=True)
class Stores:
    """Queue, ledger and the rate limiter that matches the backend (shared with replicas on Redis)."""

    queue: BatchQueue
    ledger: Ledger
    limiter: RateLimiter


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
    if settings.uses_redis:
        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        async with open_redis(
            settings.queue_url,
            key_prefix=settings.redis_key_prefix,
            consumer_group=settings.redis_consumer_group,
            password=password,
            max_deliveries=settings.max_deliveries,
            ssl_ca_file=str(settings.ca_bundle) if settings.ca_bundle else None,
        ) as backend:
            yield Stores(
                backend.queue, backend.ledger, backend.limiter(settings.effective_rate, settings.rate_burst)
            )
    else:
        async with open_sqlite(sqlite_path_from_url(settings.queue_url)) as backend:
            yield Stores(
                backend.queue, backend.ledger, LocalRateLimiter(settings.effective_rate, settings.rate_burst)
            )


def _dli_auth(settings: Settings) -> Credentials | str:
    if settings.ak is not None and settings.sk is not None:
        token = settings.security_token.get_secret_value() if settings.security_token else None
        return Credentials(
            ak=settings.ak.get_secret_value(),
            sk=settings.sk.get_secret_value(),
            project_id=settings.project_id,
            security_token=token,
        )
    assert settings.auth_token is not None  # noqa: S101 - require_credentials() checked it
    return settings.auth_token.get_secret_value()


@asynccontextmanager
async def open_runtime(settings: Settings, *, consumer: str | None = None) -> AsyncIterator[Runtime]:
    """Build every adapter the daemon needs; close them in reverse order on exit."""
    settings.require("dli_endpoint")
    settings.require_credentials()
    assert settings.dli_endpoint is not None  # noqa: S101 - require() checked it
    clock = SystemClock()
    owner = consumer or consumer_name()
    async with AsyncExitStack() as stack:
        stores = await stack.enter_async_context(open_stores(settings))
        session = await stack.enter_async_context(create_session(session_options(settings)))
        store = await stack.enter_async_context(open_object_store(s3_options(settings)))
        dli = DliClient(
            session,
            settings.dli_endpoint,
            _dli_auth(settings),
            stores.limiter,
            retry_policy(settings),
            clock=clock,
        )
        reports = LocalReportWriter(settings.report_dir)
        options = pipeline_options(settings)
        pipeline = Pipeline(dli, store, stores.ledger, reports, options, owner=owner, clock=clock)
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

"""The DLI simulator: an aiohttp.web server speaking DLI's export, listing, job detail and import APIs
(for one region and one or more projects, static or migration targets), plus IAM's project listing.

It checks AK/SK signatures (or an IAM token) like the real gateway, writes real ZIPs into an S3 server,
and injects the faults the exporter must survive: throttling with `Retry-After`, latency, 5xx answers,
gateway HTML pages, connection resets, truncated JSON, `is_success: false`, answers that come too late,
ZIPs that appear late or never, and fixed permanent errors (`list_error`, `export_error`, `iam_error`).

This module wires the pieces together; each lives in a module of its own:
`gateway` (middlewares, and the order of events of a DLI call), `auth` (signatures and tokens),
`export`, `listing`, `detail` and `importing` (the DLI APIs; `import_source` reads the imported ZIPs),
`projects` (the target projects' job store), `iam` (IAM's project listing), `tokens` (IAM's tokens),
`metadata` (the instance metadata service's temporary keys), `federation` (IAM's keys for a workload's id
token), `keys` (which keys and tokens are valid now), `bodies` (request bodies),
`store` (ZIP writes), `control` (the `/_sim/` endpoints), `state` (knobs, dice and counters), `answers`.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aioboto3
import structlog
from aiobotocore.config import AioConfig
from aiohttp import web

from exporter.simulator.answers import reset_connection
from exporter.simulator.control import (
    disable_key,
    expire_tokens,
    get_faults,
    get_keys,
    get_project_jobs,
    get_stats,
    post_faults,
    post_key,
    post_reset,
)
from exporter.simulator.detail import show_job
from exporter.simulator.export import export_jobs
from exporter.simulator.faults import FaultKnobs
from exporter.simulator.federation import (
    ID_TOKEN_ROUTE,
    SECURITY_TOKENS_ROUTE,
    create_security_token,
    create_token_by_id_token,
)
from exporter.simulator.gateway import DETAIL_ROUTE, EXPORT_ROUTE, IMPORT_ROUTE, LIST_ROUTE, frame, gateway
from exporter.simulator.iam import IAM_ROUTE, list_iam_projects
from exporter.simulator.importing import import_jobs
from exporter.simulator.listing import list_jobs
from exporter.simulator.metadata import (
    METADATA_KEY_ROUTE,
    METADATA_TOKEN_ROUTE,
    get_security_key,
    put_session_token,
)
from exporter.simulator.settings import SimulatorSettings
from exporter.simulator.state import STATE, SimulatorState
from exporter.simulator.tokens import TOKENS_ROUTE, create_token

__all__ = [
    "STATE",
    "SimulatorHandle",
    "SimulatorState",
    "create_app",
    "reset_connection",
    "running_simulator",
    "serve_simulator",
]

log = structlog.get_logger(__name__)


def _s3_config(settings: SimulatorSettings) -> AioConfig:
    return AioConfig(
        s3={"addressing_style": settings.obs_addressing_style},
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=64,
        connect_timeout=5,
        read_timeout=30,
    )


async def _object_store(app: web.Application) -> AsyncIterator[None]:
    """Open the S3 client for the app's lifetime; cancel ZIP writes still waiting when it stops."""
    state = app[STATE]
    settings = state.settings
    session = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=settings.obs_endpoint,
        region_name=settings.obs_region,
        aws_access_key_id=settings.obs_ak.get_secret_value() if settings.obs_ak else None,
        aws_secret_access_key=settings.obs_sk.get_secret_value() if settings.obs_sk else None,
        config=_s3_config(settings),
    ) as client:
        state.s3 = client
        try:
            yield
        finally:
            pending = list(state.late_writes)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            state.s3 = None


def create_app(settings: SimulatorSettings) -> web.Application:
    """The simulator as an aiohttp application (S3 client opened on startup, closed on cleanup)."""
    app = web.Application(middlewares=[frame, gateway], client_max_size=8 * 1024 * 1024)
    app[STATE] = SimulatorState(settings)
    api = "/v1.0/{project_id}/streaming/jobs"
    app.router.add_post(f"{api}/export", export_jobs, name=EXPORT_ROUTE)
    app.router.add_get(api, list_jobs, name=LIST_ROUTE, allow_head=False)
    app.router.add_post(f"{api}/import", import_jobs, name=IMPORT_ROUTE)
    app.router.add_get(api + r"/{job_id:\d+}", show_job, name=DETAIL_ROUTE, allow_head=False)
    app.router.add_get("/v3/projects", list_iam_projects, name=IAM_ROUTE, allow_head=False)
    app.router.add_post("/v3/auth/tokens", create_token, name=TOKENS_ROUTE)
    app.router.add_post("/v3.0/OS-AUTH/id-token/tokens", create_token_by_id_token, name=ID_TOKEN_ROUTE)
    securitytokens = "/v3.0/OS-CREDENTIAL/securitytokens"
    app.router.add_post(securitytokens, create_security_token, name=SECURITY_TOKENS_ROUTE)
    app.router.add_put("/meta-data/latest/api/token", put_session_token, name=METADATA_TOKEN_ROUTE)
    app.router.add_get(
        "/openstack/latest/securitykey", get_security_key, name=METADATA_KEY_ROUTE, allow_head=False
    )
    _add_control_routes(app)
    app.cleanup_ctx.append(_object_store)
    return app


def _add_control_routes(app: web.Application) -> None:
    app.router.add_get("/_sim/faults", get_faults, name="sim_faults_get", allow_head=False)
    app.router.add_post("/_sim/faults", post_faults, name="sim_faults")
    app.router.add_get("/_sim/stats", get_stats, name="sim_stats", allow_head=False)
    app.router.add_post("/_sim/reset", post_reset, name="sim_reset")
    jobs_of = "/_sim/projects/{project_id}/jobs"
    app.router.add_get(jobs_of, get_project_jobs, name="sim_project_jobs", allow_head=False)
    app.router.add_get("/_sim/keys", get_keys, name="sim_keys_get", allow_head=False)
    app.router.add_post("/_sim/keys", post_key, name="sim_keys")
    app.router.add_post("/_sim/keys/{label}/disable", disable_key, name="sim_key_disable")
    app.router.add_post("/_sim/tokens/expire", expire_tokens, name="sim_tokens_expire")


@dataclass(frozen=True, slots=True)
class SimulatorHandle:
    """A running simulator: where it listens, and in-process access to its knobs and counters."""

    url: str
    port: int
    app: web.Application

    def set_faults(self, **knobs: Any) -> FaultKnobs:
        """Change fault knobs (`p_500=1.0`, `rate_limit=5`, ...); ValueError when invalid."""
        return self.app[STATE].set_faults(knobs)

    def stats(self) -> dict[str, Any]:
        return self.app[STATE].snapshot()

    def reset(self) -> None:
        self.app[STATE].reset()

    def add_key(
        self, ak: str, sk: str, *, label: str | None = None, security_token: str | None = None
    ) -> str:
        """Accept another key pair (a rotation begins); its label."""
        return self.app[STATE].keys.add(ak, sk, label=label, security_token=security_token).label

    def disable_key(self, label: str) -> bool:
        """Refuse a key from now on (a rotation ends)."""
        return self.app[STATE].keys.disable(label)

    def expire_tokens(self) -> int:
        """End every IAM token issued (or configured) now."""
        return self.app[STATE].keys.expire_tokens(time.time())

    def keys_used(self) -> dict[str, int]:
        """Accepted requests by key label (`initial`, `metadata-N`, ...; `token` for IAM tokens)."""
        return dict(self.app[STATE].keys.used)


@asynccontextmanager
async def running_simulator(
    settings: SimulatorSettings, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[SimulatorHandle]:
    """Serve the simulator on host:port (0 = a free port) for the duration of the block."""
    app = create_app(settings)
    # A short shutdown grace: handlers asleep in a `timeout` fault would otherwise hold the exit.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = int(runner.addresses[0][1])
        url_host = f"[{host}]" if ":" in host else host
        handle = SimulatorHandle(url=f"http://{url_host}:{bound_port}", port=bound_port, app=app)
        log.info(
            "simulator.started",
            url=handle.url,
            region=settings.sim_region,
            jobs=settings.sim_jobs,
            project_id=settings.project_id,
            projects=len(settings.served_projects),
        )
        yield handle
    finally:
        await runner.cleanup()
        log.info("simulator.stopped", region=settings.sim_region)


_COLLECT_EVERY_SECONDS = 5.0


async def serve_simulator(settings: SimulatorSettings, host: str, port: int) -> None:
    """Run the simulator until the task is cancelled (the CLI's `simulate` command).

    The simulator stamps a request when its event loop reaches it, so a garbage-collector pause bunches
    evenly spaced requests into a clump that its strict rate window answers with 429: jitter of its own
    making, which a real gateway, stamping on arrival, would not add. So once it is up, everything
    allocated so far (aiohttp, botocore's models, the job table) is frozen out of the collector's sight,
    and instead of collections at moments of the collector's choosing, a short one runs every few seconds.
    """
    async with running_simulator(settings, host, port):
        gc.freeze()
        gc.disable()
        try:
            while True:
                await asyncio.sleep(_COLLECT_EVERY_SECONDS)
                gc.collect()
        finally:
            gc.enable()

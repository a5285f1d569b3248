"""`Regions` for the daemon: DLI and OBS clients per endpoint, opened when first needed, closed with it.

Part of the composition root. A DLI client per DLI endpoint and credential profile, each endpoint with its
own rate limiter (a gateway's limit belongs to a region and an account; on Redis the limiter and its 429
pause are shared by every replica under a scope named after the endpoint; clients of several profiles on
one endpoint share its limiter, so profiles never add up to more than its limit), and an OBS client per
OBS endpoint and profile. Routes that name the default endpoints and profile get the default clients, so
a region spelled out in a campaign file and the same endpoint in EXPORTER_DLI_ENDPOINT share one limiter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Protocol
from urllib.parse import urlsplit

import structlog

from exporter.migration.ports import DliImporter, ObjectCopier
from exporter.models import RegionRoute
from exporter.ports import DliApi, ObjectStore, RegionClients
from exporter.routes import RateLimit

__all__ = ["DliFactory", "RegionDirectory", "StoreFactory", "limiter_scope"]

log = structlog.get_logger("exporter.regions")


class RegionDli(DliApi, DliImporter, Protocol):
    """A DLI client of a region: the export side and the import side (one client, one limiter)."""


class RegionStore(ObjectStore, ObjectCopier, Protocol):
    """An OBS client of a region: verification and uploads, and copies for migrations."""


DliFactory = Callable[[str, RateLimit | None, str | None], RegionDli]
"""A DLI client for (endpoint, the region's gateway limit, auto, or None for EXPORTER_RATE_LIMIT, the
credential profile or None for the default)."""
StoreFactory = Callable[[RegionRoute], AbstractAsyncContextManager[RegionStore]]
"""An OBS client for the route's OBS endpoint and profile, as an async context manager (closed with the
runtime)."""


def limiter_scope(endpoint: str) -> str:
    """The Redis key scope of an endpoint's limiter: its host and port, readable in `redis-cli keys`."""
    parts = urlsplit(endpoint)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


class RegionDirectory:
    """Clients per endpoint for every route a batch carries; the default route is None."""

    def __init__(
        self,
        stack: AsyncExitStack,
        *,
        default: tuple[str, RegionDli, str | None, RegionStore],
        dli_for: DliFactory,
        store_for: StoreFactory,
    ) -> None:
        """`default` is (DLI endpoint, its client, OBS endpoint, its client) of EXPORTER_DLI_ENDPOINT."""
        dli_endpoint, dli, obs_endpoint, store = default
        self._stack = stack
        self._default = RegionClients(dli_endpoint, dli, store, importer=dli, copier=store)
        self._default_obs_endpoint = obs_endpoint
        self._dli_for = dli_for
        self._store_for = store_for
        self._lock = asyncio.Lock()
        self._dli: dict[tuple[str, str | None], RegionDli] = {(dli_endpoint, None): dli}
        self._stores: dict[tuple[str | None, str | None], RegionStore] = {(obs_endpoint, None): store}

    def __repr__(self) -> str:
        return f"<RegionDirectory dli={sorted(self._dli, key=str)} obs={len(self._stores)}>"

    async def clients(self, route: RegionRoute | None) -> RegionClients:
        if route is None:
            return self._default
        if route.dli_endpoint == self._default.key and route.rate_limit is not None:
            log.warning(  # one gateway, one limiter: the default's, at EXPORTER_RATE_LIMIT
                "region.rate_limit_ignored",
                region=route.name,
                endpoint=route.dli_endpoint,
                reason="it names EXPORTER_DLI_ENDPOINT, whose limiter runs at EXPORTER_RATE_LIMIT",
            )
        profile = route.credentials
        async with self._lock:  # two batches of a new region at once must not open two clients
            dli = self._dli.get((route.dli_endpoint, profile))
            if dli is None:
                dli = self._dli_for(route.dli_endpoint, route.rate_limit, profile)
                self._dli[(route.dli_endpoint, profile)] = dli
                log.info("region.dli_opened", region=route.name, endpoint=route.dli_endpoint, profile=profile)
            store = self._stores.get((route.obs_endpoint, profile))
            if store is None:
                store = await self._stack.enter_async_context(self._store_for(route))
                self._stores[(route.obs_endpoint, profile)] = store
                log.info("region.obs_opened", region=route.name, endpoint=route.obs_endpoint, profile=profile)
        if dli is self._default.dli and store is self._default.store:
            return self._default
        return RegionClients(route.dli_endpoint, dli, store, importer=dli, copier=store)

"""The daemon's region directory: clients per endpoint, opened once on first use, closed with the runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fakes import FakeDli, FakeStore

from exporter.models import RegionRoute
from exporter.ports import DliApi, ObjectStore
from exporter.regions import RegionDirectory, limiter_scope


def route(name: str, dli: str, obs: str, rate: float | None = None) -> RegionRoute:
    return RegionRoute(name=name, dli_endpoint=dli, obs_endpoint=obs, rate_limit=rate)


async def test_clients_are_opened_once_per_endpoint_and_closed_with_the_stack() -> None:
    store = FakeStore()
    default_dli = FakeDli(store=store)
    made: list[tuple[str, float | str | None, str | None]] = []
    opened: list[str] = []
    closed: list[str] = []

    def dli_for(endpoint: str, rate: float | str | None, profile: str | None) -> DliApi:
        made.append((endpoint, rate, profile))
        return FakeDli(store=store)

    def store_for(region: RegionRoute) -> AbstractAsyncContextManager[ObjectStore]:
        @asynccontextmanager
        async def opening() -> AsyncIterator[ObjectStore]:
            opened.append(region.obs_endpoint)
            yield FakeStore()
            closed.append(region.obs_endpoint)

        return opening()

    async with AsyncExitStack() as stack:
        regions = RegionDirectory(
            stack,
            default=("https://dli.default", default_dli, "https://obs.default", store),  # type: ignore[arg-type]
            dli_for=dli_for,  # type: ignore[arg-type]
            store_for=store_for,  # type: ignore[arg-type]
        )
        a = route("region-a", "https://dli.a", "https://obs.a", 20)
        first, second = await asyncio.gather(regions.clients(a), regions.clients(a))
        assert first.dli is second.dli and first.store is second.store and first.key == "https://dli.a"
        b = route("region-b", "https://dli.b", "https://obs.a")  # its own gateway, a shared OBS
        other = await regions.clients(b)
        assert other.dli is not first.dli and other.store is first.store
        same_as_default = await regions.clients(route("x", "https://dli.default", "https://obs.default"))
        assert same_as_default.dli is default_dli and same_as_default.store is store
        assert (await regions.clients(None)).dli is default_dli
        assert made == [("https://dli.a", 20, None), ("https://dli.b", None, None)]
        assert opened == ["https://obs.a"] and closed == []
    assert closed == ["https://obs.a"]


def test_limiter_scope_names_host_and_port() -> None:
    assert (
        limiter_scope("https://dli.ap-southeast-1.myhuaweicloud.com")
        == "dli.ap-southeast-1.myhuaweicloud.com:443"
    )
    assert limiter_scope("http://127.0.0.1:8780") == "127.0.0.1:8780"

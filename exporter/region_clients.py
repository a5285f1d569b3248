"""Part of the composition root: the credential profiles, and the DLI and OBS clients of every region and
profile that sign with them.

The profiles' sources are built once, when the daemon starts (a key file that cannot be read stops it
there, naming the file), and the default profile's keys are looked at once, so that `metadata` or
`iam-token` without a reachable service fails at start with its cause rather than in the first batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import replace

import aiohttp

from exporter.adapters.s3 import open_object_store
from exporter.clock import SystemClock
from exporter.credentials.profiles import Profiles
from exporter.credentials.source import Auth
from exporter.credentials.unknown import RefusingStore
from exporter.dli.client import DliClient
from exporter.dli.session import create_session
from exporter.errors import ConfigError, ExporterError
from exporter.ports import Clock, RateLimiter
from exporter.regions import RegionDirectory, RegionStore, limiter_scope
from exporter.routes import RateLimit, RegionRoute
from exporter.settings import Settings
from exporter.wiring import profile_defaults, profile_specs, retry_policy, s3_options, session_options

__all__ = ["default_auth", "open_profiles", "open_regions"]

LimiterFor = Callable[[RateLimit | None, str | None], RateLimiter]


@asynccontextmanager
async def open_profiles(
    settings: Settings, session: aiohttp.ClientSession, clock: Clock
) -> AsyncIterator[Profiles]:
    """The profiles' sources, the default one looked at once; renewals stopped on exit."""
    settings.require_credentials()
    profiles = Profiles(profile_specs(settings), profile_defaults(settings), session, clock)
    try:
        await _first_look(profiles, settings)
        yield profiles
    finally:
        await profiles.aclose()


async def _first_look(profiles: Profiles, settings: Settings) -> Auth:
    try:
        return await profiles.sources(None).dli.current()
    except ExporterError as error:
        source = f"EXPORTER_CREDENTIALS={settings.credentials}"
        raise ConfigError(f"cannot get the DLI credentials ({source}): {error}") from None


async def default_auth(settings: Settings) -> Auth:
    """The default profile's credentials now (for one-off calls such as IAM's project listing)."""
    async with (
        create_session(session_options(settings)) as session,
        open_profiles(settings, session, SystemClock()) as profiles,
    ):
        return await profiles.sources(None).dli.current()


async def open_regions(
    settings: Settings, stack: AsyncExitStack, limiter_for: LimiterFor, clock: Clock
) -> RegionDirectory:
    """The DLI session, the profiles, and the default DLI and OBS clients; other regions' (and
    profiles') clients open on first use. Clients of one endpoint share its limiter, whatever their
    profile: a gateway's limit is not multiplied by the number of accounts that call it."""
    assert settings.dli_endpoint is not None  # noqa: S101 - open_runtime required it
    session = await stack.enter_async_context(create_session(session_options(settings)))
    profiles = await stack.enter_async_context(open_profiles(settings, session, clock))
    limiters: dict[str, RateLimiter] = {}

    def dli_for(endpoint: str, rate_limit: RateLimit | None, profile: str | None) -> DliClient:
        scope = limiter_scope(endpoint)
        limiter = limiters.get(scope) or limiters.setdefault(scope, limiter_for(rate_limit, scope))
        source = profiles.sources(profile).dli
        return DliClient(session, endpoint, source, limiter, retry_policy(settings), clock=clock)

    store_for = _store_factory(settings, profiles)
    default_store = await stack.enter_async_context(store_for(None))
    return RegionDirectory(
        stack,
        default=(
            settings.dli_endpoint,
            dli_for(settings.dli_endpoint, None, None),
            settings.obs_endpoint,
            default_store,
        ),
        dli_for=dli_for,
        store_for=store_for,
    )


def _store_factory(
    settings: Settings, profiles: Profiles
) -> Callable[[RegionRoute | None], AbstractAsyncContextManager[RegionStore]]:
    """An OBS client per region and profile: the default client's options with the region's endpoint and
    name, signed by the profile's OBS source (None: the default endpoint and profile)."""

    def open_for(route: RegionRoute | None) -> AbstractAsyncContextManager[RegionStore]:
        options = s3_options(settings)
        if route is not None:
            options = replace(options, endpoint=route.obs_endpoint, region=route.name)
        profile = route.credentials if route is not None else None
        if not profiles.known(profile):
            return _refusing(profile or "")
        source = profiles.sources(profile).obs
        if source is not None:
            options = replace(
                options, credentials=source, access_key=None, secret_key=None, session_token=None
            )
        return open_object_store(options)

    return open_for


@asynccontextmanager
async def _refusing(name: str) -> AsyncIterator[RegionStore]:
    yield RefusingStore(name)

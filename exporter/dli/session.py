"""The one aiohttp session every DLI call shares: pooled connections, bounded timeouts, the TLS policy.

Shared so that keep-alive connections are reused across tasks; the pool size caps the sockets to DLI no
matter how many tasks run. No total timeout: a request is bounded by the connect and per-read timeouts,
and the retry deadline bounds the whole call.
"""

from __future__ import annotations

import ssl

import aiohttp

from exporter.settings import Settings

__all__ = ["USER_AGENT", "create_session", "ssl_context"]

USER_AGENT = "dli-exporter/0.1"


def ssl_context(settings: Settings) -> ssl.SSLContext | bool:
    """`False` when TLS verification is off, else a verifying context (with the CA bundle if one is set)."""
    if not settings.tls_verify:
        return False
    cafile = str(settings.ca_bundle) if settings.ca_bundle is not None else None
    return ssl.create_default_context(cafile=cafile)


def create_session(settings: Settings) -> aiohttp.ClientSession:
    """A ClientSession for DLI; the caller owns it and must close it (e.g. in the app's AsyncExitStack)."""
    connector = aiohttp.TCPConnector(limit=settings.pool_size, ssl=ssl_context(settings))
    timeout = aiohttp.ClientTimeout(
        total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
        raise_for_status=False,
    )

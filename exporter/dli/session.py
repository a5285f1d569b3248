"""The one aiohttp session every DLI call shares: pooled connections, bounded timeouts, the TLS policy.

Shared so that keep-alive connections are reused across tasks; the pool size caps the sockets to DLI no
matter how many tasks run. No total timeout: a request is bounded by the connect and per-read timeouts,
and the retry deadline bounds the whole call.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp

__all__ = ["USER_AGENT", "SessionOptions", "create_session", "ssl_context"]

USER_AGENT = "dli-exporter/0.1"


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """What the DLI session is built from (`exporter.wiring.session_options` reads them from settings).

    `pool_size` caps the open connections; the timeouts are in seconds. With `tls_verify` off no
    certificate is checked (`ca_bundle` is then ignored); otherwise `ca_bundle`, if set, replaces the
    system's trusted roots.
    """

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    pool_size: int = 100
    tls_verify: bool = True
    ca_bundle: Path | None = None

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("connect_timeout and read_timeout must be positive")
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")


def ssl_context(options: SessionOptions) -> ssl.SSLContext | bool:
    """`False` when TLS verification is off, else a verifying context (with the CA bundle if one is set)."""
    if not options.tls_verify:
        return False
    cafile = str(options.ca_bundle) if options.ca_bundle is not None else None
    return ssl.create_default_context(cafile=cafile)


def create_session(options: SessionOptions) -> aiohttp.ClientSession:
    """A ClientSession for DLI; the caller owns it and must close it (e.g. in the app's AsyncExitStack)."""
    connector = aiohttp.TCPConnector(limit=options.pool_size, ssl=ssl_context(options))
    timeout = aiohttp.ClientTimeout(
        total=None, connect=options.connect_timeout, sock_read=options.read_timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
        raise_for_status=False,
    )

"""A throw-away `redis-server` on a free 127.0.0.1 port, with a password or TLS, for one test.

The shared Redis on 6379 has neither, and the security tests need both: a password to prove it never
leaks, TLS to prove a bad certificate is refused. Skipped where no `redis-server` binary is installed.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from security.certs import SelfSigned
from support import free_port

__all__ = ["needs_redis_server", "private_redis"]

needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="no redis-server binary to start a private Redis"
)
_READY_LIMIT_S = 10.0


def _arguments(workdir: Path, port: int, password: str | None, tls: SelfSigned | None) -> list[str]:
    args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    if tls is None:
        args += ["--port", str(port)]
    else:
        args += [
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(tls.cert),
            "--tls-key-file",
            str(tls.key),
            "--tls-ca-cert-file",
            str(tls.cert),
            "--tls-auth-clients",
            "no",
        ]
    if password is not None:
        args += ["--requirepass", password]
    return args


async def _wait_listening(port: int) -> None:
    """Bounded poll until the port accepts TCP connections."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _READY_LIMIT_S
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return


@asynccontextmanager
async def private_redis(
    workdir: Path, *, password: str | None = None, tls: SelfSigned | None = None
) -> AsyncIterator[int]:
    """Start redis-server (its files in the existing `workdir`), yield its port, stop it."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *_arguments(workdir, port, password, tls),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await _wait_listening(port)
        yield port
    finally:
        process.terminate()
        await process.wait()

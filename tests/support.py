"""Constants and helpers shared by tests (importable as `support`; conftest modules are not)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from exporter.devstack import free_port

TEST_AK = "AKTESTEXAMPLE0000001"
TEST_SK = "SKtestExampleSecretKey0000000000000000001"
TEST_PROJECT = "0123456789abcdef0123456789abcdef"
TEST_BUCKET = "dli-exports"

__all__ = [
    "CLI",
    "TEST_AK",
    "TEST_BUCKET",
    "TEST_PROJECT",
    "TEST_SK",
    "Ran",
    "eventually",
    "free_port",
    "run_cli",
    "start_cli",
]

CLI = (sys.executable, "-m", "exporter.cli")


@dataclass(frozen=True)
class Ran:
    """What a command printed, and how it ended."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


async def run_cli(env: dict[str, str], *args: str, limit_s: float = 90) -> Ran:
    """Run `dli-exporter ARGS` as a process (what the console script runs) with these settings added to
    the environment; bounded in time."""
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), limit_s)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def start_cli(
    env: dict[str, str], *args: str, stderr: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """Start `dli-exporter ARGS` in the background (`serve`, `work`) with these settings added to the
    environment; stdout is discarded, stderr piped (read it with `communicate()`) unless told otherwise."""
    return await asyncio.create_subprocess_exec(
        *CLI, *args, env={**os.environ, **env}, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
    )


async def eventually(
    check: Callable[[], Any | Awaitable[Any]],
    what: str,
    *,
    limit_s: float = 60,
    interval: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call `check` (plain or async) until it returns something true, bounded in time; that is the answer.
    Exceptions of the `ignore` types count as "not yet" (a server still starting, say)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        try:
            answer = check()
            if isinstance(answer, Awaitable):
                answer = await answer
        except ignore:
            answer = None
        if answer:
            return answer
        if loop.time() >= deadline:
            raise AssertionError(f"{what}: not within {limit_s:g} s")
        await asyncio.sleep(interval)

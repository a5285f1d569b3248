"""Constants and helpers shared by tests (importable as `support`; conftest modules are not)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from exporter.devstack import free_port

TEST_AK = "AKTESTEXAMPLE0000001"
TEST_SK = "SKtestExampleSecretKey0000000000000000001"
TEST_PROJECT = "0123456789abcdef0123456789abcdef"
TEST_BUCKET = "dli-exports"

__all__ = ["CLI", "TEST_AK", "TEST_BUCKET", "TEST_PROJECT", "TEST_SK", "Ran", "free_port", "run_cli"]

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

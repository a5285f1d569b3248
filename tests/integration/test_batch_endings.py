"""How a batch pass ends, seen as a user would: the real command line in subprocesses, against the
simulator and the S3 server over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from exporter.devstack import settings_env


async def cli(env: dict[str, str], *args: str, limit: float = 60) -> tuple[int, str, str]:
    """Run `dli-exporter ARGS` to its end; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter.cli",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), limit)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_refused_listing_ends_the_batch_in_one_pass(stack: Any) -> None:
    """`submit --all` against a DLI refusing the listing with 403 DLI.0003: `work --until-empty` ends,
    the batch is failed with DLI.0003 in its report and its dead letter, and every log line is JSON."""
    async with stack(jobs=20, faults={"list_error": "403:DLI.0003"}) as s:
        env = settings_env(s.settings, log_format="json", max_deliveries=5, poll_interval=0.05)
        code, out, err = await cli(
            env, "submit", "--all", "--obs-dir", s.bucket, "--batch-id", "all", "--json"
        )
        assert code == 0, err
        assert json.loads(out)["accepted"] is True
        code, _, logs = await cli(env, "work", "--until-empty", limit=30)
        assert code == 0
        listings = sum(s.simulator.stats()["requests"].get("list_jobs", {}).values())
        _, letters, _ = await cli(env, "dead-letters", "--json")
        _, report, _ = await cli(env, "report", "all", "--json")
    assert listings == 1, "one pass, no redelivery"
    [letter] = json.loads(letters)
    assert letter["reason"].startswith("DLI.0003: ")
    content = json.loads(report)
    assert content["state"] == "failed"
    assert content["error"]["code"] == "DLI.0003" and content["totals"]["jobs"] == 0
    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines and all(line.startswith("{") for line in lines), "no plain-text traceback escapes"
    assert any(json.loads(line)["event"] == "batch.failed" for line in lines)

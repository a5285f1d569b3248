"""Regenerate `docs/status-page.png`: the daemon's status page in the middle of a two-region campaign.

`python -m bench.status_page_shot [OUT.png]` starts the local stand-ins (S3 server, one DLI simulator
per region, each with a gateway limit and a few jobs it does not know), submits a campaign of three
targets and one malformed message, runs `dli-exporter serve`, and once about half the campaign is done
photographs `/` in headless chromium (Debian's `/usr/bin/chromium`, driven by playwright). Not part of
`make bench`: it measures nothing; the PNG in docs/ was made with it once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import async_playwright

from bench.common import PYTHON, REPO_ROOT
from exporter.app import open_stores
from exporter.devstack import RegionSim, RegionsStack, free_port, local_regions, settings_env

OUT = REPO_ROOT / "docs" / "status-page.png"
CAMPAIGN_ID = "tenant-2026-12"
CHROMIUM = "/usr/bin/chromium"
PROJECTS = {
    "cn-north-4": ("c4e1" + "0" * 27 + "1", "c4e1" + "0" * 27 + "2"),
    "ap-southeast-1": ("a5e1" + "0" * 28,),
}
# cn-north-4 learns its pace (EXPORTER_RATE_LIMIT=auto) from the 429s of a gateway at 12 requests/s;
# ap-southeast-1 keeps the campaign file's 7/s.
GATEWAYS = {"cn-north-4": 12.0, "ap-southeast-1": 0.0}
LIMITS = {"cn-north-4": None, "ap-southeast-1": 7.0}
JOBS = {"cn-north-4": 600, "ap-southeast-1": 300}  # IDs per target: ap-southeast-1 ends first
SNAP_AT = 0.5  # share of the campaign's jobs done (and one batch finished) when the picture is taken


def _campaign_file(stack: RegionsStack, workdir: Path) -> Path:
    regions = "".join(
        f'[regions.{name}]\ndli_endpoint = "{sim.url}"\nobs_endpoint = "{stack.s3_endpoint}"\n'
        + ("" if LIMITS[name] is None else f"rate_limit = {LIMITS[name]}\n")
        + "\n"
        for name, sim in stack.simulators.items()
    )
    targets = "".join(
        f'[[targets]]\nregion = "{region}"\nproject_id = "{project}"\n'
        f"job_ids = {list(range(1, JOBS[region] + 1))}\n\n"
        for region, projects in PROJECTS.items()
        for project in projects
    )
    text = f'campaign_id = "{CAMPAIGN_ID}"\nobs_dir = "{stack.bucket}/{{region}}/{{project_id}}"\n'
    path = workdir / "campaign.toml"
    path.write_text(f"{text}chunk_size = 10\n\n{regions}{targets}")
    return path


async def _cli(env: dict[str, str], *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "exporter.cli",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    if await process.wait() != 0:
        raise RuntimeError(f"dli-exporter {' '.join(args)} exited with {process.returncode}")


async def _done_share(session: aiohttp.ClientSession, base: str) -> float:
    try:
        async with session.get(f"{base}/campaigns/{CAMPAIGN_ID}") as response:
            report: dict[str, Any] = await response.json() if response.status == 200 else {}
    except aiohttp.ClientError:
        return 0.0
    totals = report.get("totals") or {}
    if not totals.get("batches_finished"):
        return 0.0
    done = int(totals.get("verified", 0)) + int(totals.get("failed", 0))
    return done / max(1, int(totals.get("jobs", 0)))


async def _wait_for_progress(base: str, limit_s: float = 90) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    async with aiohttp.ClientSession() as session:
        while await _done_share(session, base) < SNAP_AT:
            if loop.time() > deadline:
                raise RuntimeError(f"the campaign did not reach {SNAP_AT:.0%} within {limit_s:g} s")
            await asyncio.sleep(0.1)


async def _photograph(url: str, out: Path) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page(viewport={"width": 1320, "height": 900}, device_scale_factor=1)
            await page.goto(url)
            await page.screenshot(path=str(out), full_page=True)
        finally:
            await browser.close()


async def _shoot(stack: RegionsStack, workdir: Path, out: Path) -> None:
    port = free_port()
    env = settings_env(
        stack.settings,
        http_host="127.0.0.1",
        http_port=port,
        poll_interval=0.1,
        rate_limit="auto",
        rate_start=8,
    )
    await _cli(env, "campaign", "submit", str(_campaign_file(stack, workdir)))
    async with open_stores(stack.settings) as stores:  # an older producer's message: it is parked
        await stores.queue.put("broken", '{"batch_id": "broken", "job_ids": "not a list"}')
    daemon = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "exporter.cli", "serve", env={**os.environ, **env}, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await _wait_for_progress(f"http://127.0.0.1:{port}")
        await _photograph(f"http://127.0.0.1:{port}/", out)
    finally:
        daemon.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.wait(), 60)


async def main(out: Path) -> None:
    sims = {
        region: RegionSim(
            projects=projects,
            rate_limit=GATEWAYS[region],
            faults={"latency_ms": 30, "missing_ids": frozenset({3, 15})},
        )
        for region, projects in PROJECTS.items()
    }
    with tempfile.TemporaryDirectory(prefix="status-shot-") as tmp:
        workdir = Path(tmp)
        async with local_regions(
            workdir=workdir, regions=sims, jobs=max(JOBS.values()), bucket="status-shot"
        ) as stack:
            await _shoot(stack, workdir, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))

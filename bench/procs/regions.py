"""The simulated regions benchmark 8 runs against: moto's S3 and one simulator process per region.

`exporter.devstack.local_regions` serves its simulators in the caller's event loop; a benchmark that also
samples, submits and waits in that loop would bunch the simulators' arrivals with its own stalls and
their strict windows would count them. So, as `bench.common.running_stack` does for one simulator, each
region here is `python -m exporter.cli simulate` in a process of its own, configured by EXPORTER_SIM_*.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import BUCKET, PYTHON, SimulatorControl, until_answering
from bench.processes import BenchError, Child
from exporter.devstack import DEV_AK, DEV_SK, create_bucket, free_port
from exporter.dli.signer import Credentials, sign_request

__all__ = ["Region", "RegionsRig", "running_regions"]


@dataclass(frozen=True, slots=True)
class Region:
    """A simulated region: its gateway limit and the export calls (= job IDs) of each of its projects."""

    name: str
    limit: float
    projects: dict[str, int]

    @property
    def calls(self) -> int:
        return sum(self.projects.values())

    @property
    def alone_seconds(self) -> float:
        """How long the region's calls take at exactly its limit: no campaign can beat it."""
        return self.calls / self.limit


@dataclass(frozen=True, slots=True)
class RegionsRig:
    """The running servers: the S3 endpoint, each region's simulator, and every process (for CPU)."""

    s3_endpoint: str
    sims: dict[str, SimulatorControl]
    children: list[Child]


def _sim_env(region: Region, s3_endpoint: str, knobs: Mapping[str, Any]) -> dict[str, str]:
    """The region's simulator: its first project is `project_id`, the others `sim_projects`."""
    first, *others = region.projects
    values = {"region": region.name, "projects": ",".join(others), "rate_limit": region.limit, **knobs}
    env = {"EXPORTER_AK": DEV_AK, "EXPORTER_SK": DEV_SK, "EXPORTER_PROJECT_ID": first}
    env |= {"EXPORTER_OBS_ENDPOINT": s3_endpoint, "EXPORTER_OBS_REGION": "us-east-1"}
    return env | {f"EXPORTER_SIM_{name.upper()}": str(value) for name, value in values.items()}


async def _warm_up(control: SimulatorControl, session: aiohttp.ClientSession, project: str) -> None:
    """One export, then zeroed counters: a cold first request must not count (see bench.common)."""
    body = json.dumps({"obs_dir": BUCKET, "is_selected": True, "job_selected": [1]}).encode()
    path = f"/v1.0/{project}/streaming/jobs/export"
    credentials = Credentials(DEV_AK, DEV_SK, project_id=project)
    host = control.url.removeprefix("http://")
    headers, _ = sign_request("POST", host, path, [], {"Content-Type": "application/json"}, body, credentials)
    async with session.post(f"{control.url}{path}", data=body, headers=headers) as response:
        if response.status != 200:
            raise BenchError(f"warm-up export answered {response.status}: {await response.text()}")
    await control.reset()


async def _start_simulator(
    stack: AsyncExitStack,
    region: Region,
    s3_endpoint: str,
    knobs: Mapping[str, Any],
    session: aiohttp.ClientSession,
    workdir: Path,
) -> tuple[SimulatorControl, Child]:
    jobs = max(region.projects.values())
    port = free_port()
    args = [PYTHON, "-m", "exporter.cli", "simulate", "--port", str(port), "--jobs", str(jobs)]
    child = Child(f"sim-{region.name}", args, env=_sim_env(region, s3_endpoint, knobs), logdir=workdir)
    stack.push_async_callback(child.stop)
    control = SimulatorControl(f"http://127.0.0.1:{port}", session)
    await until_answering(f"{control.url}/_sim/stats", session, child)
    await _warm_up(control, session, next(iter(region.projects)))
    return control, child


@asynccontextmanager
async def running_regions(
    workdir: Path, regions: Sequence[Region], knobs: Mapping[str, Any], session: aiohttp.ClientSession
) -> AsyncIterator[RegionsRig]:
    """S3 (with the bucket) and a simulator per region with the fault `knobs`; all stopped at the end."""
    async with AsyncExitStack() as stack:
        s3_port = free_port()
        s3_endpoint = f"http://127.0.0.1:{s3_port}"
        s3 = Child("s3", [PYTHON, "-m", "bench.procs.s3_server", str(s3_port)], env={}, logdir=workdir)
        stack.push_async_callback(s3.stop)
        await until_answering(s3_endpoint, session, s3)
        await create_bucket(s3_endpoint, BUCKET)
        sims: dict[str, SimulatorControl] = {}
        children = [s3]
        for region in regions:
            sims[region.name], child = await _start_simulator(
                stack, region, s3_endpoint, knobs, session, workdir
            )
            children.append(child)
        yield RegionsRig(s3_endpoint, sims, children)

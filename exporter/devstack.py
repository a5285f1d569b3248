"""A whole DLI + OBS stand-in on this machine: a local S3 server, a bucket, the DLI simulator.

Used by `dli-exporter demo`, the end-to-end tests and the benchmarks, so all three run the exporter
against the same real sockets. Needs the dev extras (moto's S3 server). `local_regions` starts several
simulated regions at once, each with its projects and gateway limit, for campaigns across regions.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aioboto3

from exporter.settings import Settings
from exporter.settings_env import settings_env
from exporter.simulator import SimulatorHandle, SimulatorSettings, running_simulator
from exporter.simulator.iam import iam_entries
from exporter.simulator.settings import SimIamProject, migration_settings

__all__ = [
    "DEV_AK",
    "DEV_PROJECT",
    "DEV_SK",
    "LocalStack",
    "RegionSim",
    "RegionsStack",
    "create_bucket",
    "dev_s3_client",
    "free_port",
    "local_regions",
    "local_stack",
    "s3_server",
    "settings_env",
]

# Made-up credentials shared by the simulator and the exporter on this machine only.
DEV_AK = "DEVAKEXAMPLE000000001"
DEV_SK = "devSecretKeyExample00000000000000000001"
DEV_PROJECT = "0123456789abcdef0123456789abcdef"


@dataclass(frozen=True, slots=True)
class LocalStack:
    s3_endpoint: str
    bucket: str
    simulator: SimulatorHandle
    settings: Settings


@dataclass(frozen=True, slots=True)
class RegionSim:
    """One simulated region: its projects (the first is its main one), gateway limit and fault knobs;
    for migrations, projects that start empty, the buckets it may import from, names seeded there."""

    projects: tuple[str, ...]
    rate_limit: float = 0
    faults: dict[str, Any] = field(default_factory=dict)
    target_projects: tuple[str, ...] = ()
    readable_buckets: tuple[str, ...] = ()
    existing_names: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.projects:
            raise ValueError("a simulated region needs at least one project")


@dataclass(frozen=True, slots=True)
class RegionsStack:
    """Several simulated regions on one S3 server; `iam_endpoint` is the first region's simulator."""

    s3_endpoint: str
    bucket: str
    simulators: dict[str, SimulatorHandle]
    iam_endpoint: str
    settings: Settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on a free 127.0.0.1 port, in a process of its own.

    Not `ThreadedMotoServer`: a thread of ours would take the GIL from the simulator's event loop for
    every S3 request the daemons make, so the simulator's throttle would see arrivals bunched by our own
    stalls and answer 429s that a real gateway on its own machine never would.
    """
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], limit_s: float = 30.0) -> None:
    """Block (bounded) until something accepts connections on the port; fail if the process died."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the S3 server exited with code {process.returncode} before it listened")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the S3 server did not listen on port {port} within {limit_s:g} s")


def dev_s3_client(endpoint: str, **client_options: Any) -> Any:
    """An aioboto3 S3 client (an async context manager) for the local S3 server, with the dev keys."""
    return aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=DEV_AK,
        aws_secret_access_key=DEV_SK,
        **client_options,
    )


async def create_bucket(endpoint: str, bucket: str) -> None:
    """Create the bucket the exports go to (idempotent)."""
    async with dev_s3_client(endpoint) as client:
        existing = await client.list_buckets()
        if bucket not in {b["Name"] for b in existing.get("Buckets", [])}:
            await client.create_bucket(Bucket=bucket)


@asynccontextmanager
async def local_stack(
    *,
    workdir: Path,
    jobs: int = 1000,
    missing_ids: frozenset[int] = frozenset(),
    faults: dict[str, Any] | None = None,
    bucket: str = "dli-exports",
    s3_endpoint: str | None = None,
    ak: str = DEV_AK,
    sk: str = DEV_SK,
    security_token: str | None = None,
    target_projects: Sequence[str] = (),  # the migration options: the simulator's `sim_*` of those names
    readable_buckets: Sequence[str] = (),
    existing_names: Mapping[str, Sequence[str]] | None = None,
    **exporter_settings: Any,
) -> AsyncIterator[LocalStack]:
    """Start (or reuse) an S3 server, create the bucket, start the simulator; yield exporter settings.

    The simulator demands `ak`/`sk` (and `security_token` when given); the settings carry the same."""
    with _maybe_s3(s3_endpoint) as endpoint:
        await create_bucket(endpoint, bucket)
        # What the simulator demands and the exporter must carry: the same project, keys and OBS.
        shared: dict[str, Any] = {"project_id": DEV_PROJECT, "ak": ak, "sk": sk}
        shared |= {"security_token": security_token, "obs_endpoint": endpoint, "obs_region": "us-east-1"}
        sim_faults = {f"sim_{k}": v for k, v in (faults or {}).items()}
        sim_faults |= migration_settings(target_projects, readable_buckets, existing_names or {})
        sim_settings = SimulatorSettings(**shared, sim_jobs=jobs, sim_missing_ids=missing_ids, **sim_faults)
        async with running_simulator(sim_settings) as simulator:
            settings = Settings(
                **{
                    **shared,
                    "dli_endpoint": simulator.url,
                    "obs_addressing_style": "path",
                    "queue_url": f"sqlite:///{workdir / 'exporter.db'}",
                    "report_dir": workdir / "reports",
                    **exporter_settings,
                }
            )
            yield LocalStack(endpoint, bucket, simulator, settings)


@asynccontextmanager
async def local_regions(
    *,
    workdir: Path,
    regions: Mapping[str, RegionSim],
    s3_endpoint: str | None = None,
    bucket: str = "dli-exports",
    jobs: int = 1000,
    **exporter_settings: Any,
) -> AsyncIterator[RegionsStack]:
    """Start (or reuse) an S3 server, create the bucket, start one simulator per region; yield settings.

    Each simulator is a region of its own (own port, gateway limit and faults) serving its projects
    with jobs 1..`jobs`, and every one answers the same IAM listing of all regions' projects, as IAM is
    global; the first region's URL is both the IAM endpoint and the default DLI endpoint.
    """
    listing = _iam_listing(regions)
    with _maybe_s3(s3_endpoint) as endpoint:
        await create_bucket(endpoint, bucket)
        async with AsyncExitStack() as stack:
            simulators: dict[str, SimulatorHandle] = {}
            for name, region in regions.items():
                sim_settings = _region_settings(name, region, endpoint, jobs, listing)
                simulators[name] = await stack.enter_async_context(running_simulator(sim_settings))
            first_url = next(iter(simulators.values())).url
            settings = _regions_settings(workdir, endpoint, first_url, listing[0].id, exporter_settings)
            yield RegionsStack(endpoint, bucket, simulators, first_url, settings)


def _regions_settings(
    workdir: Path, s3_endpoint: str, first_url: str, project_id: str, overrides: dict[str, Any]
) -> Settings:
    """Like local_stack's settings (dev keys, path addressing, SQLite queue), IAM at the first region."""
    return Settings(
        **{
            "project_id": project_id,
            "ak": DEV_AK,
            "sk": DEV_SK,
            "obs_endpoint": s3_endpoint,
            "obs_region": "us-east-1",
            "obs_addressing_style": "path",
            "dli_endpoint": first_url,
            "iam_endpoint": first_url,
            "queue_url": f"sqlite:///{workdir / 'exporter.db'}",
            "report_dir": workdir / "reports",
            **overrides,
        }
    )


def _iam_listing(regions: Mapping[str, RegionSim]) -> list[SimIamProject]:
    """Every region's projects as IAM names them; a project ID may belong to one region only."""
    if not regions:
        raise ValueError("local_regions needs at least one region")
    listing = [entry for name, region in regions.items() for entry in iam_entries(name, region.projects)]
    ids = [entry.id for entry in listing]
    repeated = sorted({project_id for project_id in ids if ids.count(project_id) > 1})
    if repeated:
        raise ValueError(f"project IDs in more than one region (or twice in one): {repeated}")
    return listing


def _region_settings(
    name: str, region: RegionSim, s3_endpoint: str, jobs: int, listing: list[SimIamProject]
) -> SimulatorSettings:
    """One region's simulator: its projects, limit and faults, the dev keys and the shared IAM listing."""
    sim_faults = {f"sim_{knob.removeprefix('sim_')}": value for knob, value in region.faults.items()}
    values: dict[str, Any] = {
        "project_id": region.projects[0],
        "sim_projects": frozenset(region.projects[1:]),
        "sim_region": name,
        "sim_jobs": jobs,
        "sim_rate_limit": region.rate_limit,
        "sim_iam_projects": listing,
        "ak": DEV_AK,
        "sk": DEV_SK,
        "obs_endpoint": s3_endpoint,
        "obs_region": "us-east-1",
        **migration_settings(region.target_projects, region.readable_buckets, region.existing_names),
    }
    return SimulatorSettings(**{**values, **sim_faults})  # a `rate_limit` among the faults wins


@contextmanager
def _maybe_s3(endpoint: str | None) -> Iterator[str]:
    if endpoint is not None:
        yield endpoint
        return
    with s3_server() as started:
        yield started

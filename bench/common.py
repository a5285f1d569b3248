"""What every benchmark stands on: the servers (S3, DLI simulator), the exporter as a process, submitting
batches, reading the exporter's JSON logs, and sampling the simulator's counters over time.

The S3 server and the simulator each run in a process of their own, started here; the exporter and the
baselines run in further processes, so CPU and memory figures belong to the process they name.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.processes import BenchError, Child, Usage, kill_leftovers
from bench.procs.exporter import PEAK_RSS_EVENT
from bench.profiles import profiler_prefix
from bench.report import BenchResult, print_result, write_result
from exporter.app import open_stores
from exporter.devstack import DEV_AK, DEV_PROJECT, DEV_SK, create_bucket, free_port, settings_env
from exporter.dli.signer import Credentials, sign_request
from exporter.intake import build_request
from exporter.logs import configure_logging
from exporter.settings import Settings
from exporter.submission import submit_batch

__all__ = [
    "BUCKET",
    "PYTHON",
    "REPO_ROOT",
    "Sample",
    "SimulatorControl",
    "Stack",
    "campaign_seconds",
    "event_times",
    "export_requests",
    "exporter_command",
    "quiet_driver_logs",
    "read_events",
    "run_benchmark",
    "running_stack",
    "submit",
    "until_answering",
    "wait_ok",
    "watch",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BUCKET = "bench-exports"
_STARTUP_SECONDS = 30.0
_SAMPLE_SECONDS = 0.05


def quiet_driver_logs() -> None:
    """The driver submits through the exporter's code; keep its info lines off the benchmark's output."""
    configure_logging("console", "warning")


# --- the simulator's control endpoints ---------------------------------------------------------------------


class SimulatorControl:
    """`/_sim/stats`, `/_sim/faults` and `/_sim/reset` of a simulator in another process."""

    __slots__ = ("_session", "url")

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self._session = session

    async def stats(self) -> dict[str, Any]:
        async with self._session.get(f"{self.url}/_sim/stats") as response:
            response.raise_for_status()
            data: dict[str, Any] = await response.json()
            return data

    async def set_faults(self, **knobs: Any) -> None:
        async with self._session.post(f"{self.url}/_sim/faults", json=knobs) as response:
            if response.status != 200:
                raise BenchError(f"simulator refused knobs {knobs}: {await response.text()}")

    async def reset(self) -> None:
        async with self._session.post(f"{self.url}/_sim/reset") as response:
            response.raise_for_status()


# --- the servers -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stack:
    """A running S3 server and simulator, and exporter settings pointing at them."""

    workdir: Path
    s3_endpoint: str
    sim: SimulatorControl
    s3_process: Child
    sim_process: Child

    def settings(self, **overrides: Any) -> Settings:
        """Exporter settings for this stack (SQLite in the workdir unless `queue_url` says otherwise)."""
        values: dict[str, Any] = {
            "dli_endpoint": self.sim.url,
            "project_id": DEV_PROJECT,
            "ak": DEV_AK,
            "sk": DEV_SK,
            "obs_endpoint": self.s3_endpoint,
            "obs_region": "us-east-1",
            "obs_addressing_style": "path",
            "queue_url": f"sqlite:///{self.workdir / 'exporter.db'}",
            "report_dir": self.workdir / "reports",
            "log_format": "json",
            "log_level": "info",
            "poll_interval": 0.05,
            "http_host": "127.0.0.1",
            "http_port": 0,
        }
        values.update(overrides)
        return Settings(**values)

    def env(self, **overrides: Any) -> dict[str, str]:
        """The same settings as EXPORTER_* variables for an exporter process."""
        return settings_env(self.settings(**overrides))


def _server_env(s3_endpoint: str, faults: Mapping[str, Any], seed: int) -> dict[str, str]:
    env = {
        "EXPORTER_AK": DEV_AK,
        "EXPORTER_SK": DEV_SK,
        "EXPORTER_PROJECT_ID": DEV_PROJECT,
        "EXPORTER_OBS_ENDPOINT": s3_endpoint,
        "EXPORTER_OBS_REGION": "us-east-1",
        "EXPORTER_SIM_SEED": str(seed),
    }
    env.update({f"EXPORTER_SIM_{name.upper()}": str(value) for name, value in faults.items()})
    return env


async def until_answering(url: str, session: aiohttp.ClientSession, child: Child) -> None:
    """Poll `url` until anything answers over HTTP; BenchError if the process dies or time runs out."""
    deadline = time.monotonic() + _STARTUP_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise BenchError(f"{child.name} exited during start-up\n{child.tail()}")
        try:
            async with session.get(url) as response:
                await response.read()
                return
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
    raise BenchError(f"{child.name} did not answer on {url} within {_STARTUP_SECONDS:g}s\n{child.tail()}")


@asynccontextmanager
async def running_stack(
    workdir: Path, *, jobs: int, faults: Mapping[str, Any] | None = None, seed: int = 7
) -> AsyncIterator[Stack]:
    """Start moto's S3 server and the simulator (each its own process), create the bucket; stop both."""
    s3_port, sim_port = free_port(), free_port()
    s3_endpoint = f"http://127.0.0.1:{s3_port}"
    sim_url = f"http://127.0.0.1:{sim_port}"
    env = _server_env(s3_endpoint, faults or {}, seed)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        s3 = Child("s3", [PYTHON, "-m", "bench.procs.s3_server", str(s3_port)], env={}, logdir=workdir)
        sim: Child | None = None
        try:
            await until_answering(s3_endpoint, session, s3)
            await create_bucket(s3_endpoint, BUCKET)
            args = [PYTHON, "-m", "exporter.cli", "simulate", "--port", str(sim_port), "--jobs", str(jobs)]
            sim = Child("simulator", args, env=env, logdir=workdir)
            await until_answering(f"{sim_url}/_sim/stats", session, sim)
            control = SimulatorControl(sim_url, session)
            await _warm_up(sim_url, session, control)
            yield Stack(workdir, s3_endpoint, control, s3, sim)
        finally:
            if sim is not None:
                await sim.stop()
            await s3.stop()


async def _warm_up(sim_url: str, session: aiohttp.ClientSession, control: SimulatorControl) -> None:
    """One export before measuring, then zeroed counters.

    The simulator's first ZIP write loads botocore's models and blocks its event loop for a moment;
    requests that arrive meanwhile are then admitted in one clump, which its strict sliding window
    answers with a 429. A real gateway has no cold start like that, so it must not count.
    """
    body = json.dumps({"obs_dir": BUCKET, "is_selected": True, "job_selected": [1]}).encode()
    host = sim_url.removeprefix("http://")
    path = f"/v1.0/{DEV_PROJECT}/streaming/jobs/export"
    credentials = Credentials(DEV_AK, DEV_SK, project_id=DEV_PROJECT)
    headers, _ = sign_request("POST", host, path, [], {"Content-Type": "application/json"}, body, credentials)
    async with session.post(f"{sim_url}{path}", data=body, headers=headers) as response:
        if response.status != 200:
            raise BenchError(f"simulator warm-up export answered {response.status}: {await response.text()}")
    await control.reset()


# --- the exporter ------------------------------------------------------------------------------------------


def exporter_command(*args: str, instant_verify: bool = False, label: str | None = "exporter") -> list[str]:
    """`dli-exporter ARGS` as a process (see bench.procs.exporter for `instant_verify`).

    With BENCH_PROFILE=1 it runs under py-spy, its profile saved as `label` (see bench.profiles); None
    never profiles (a process the benchmark kills must be the exporter itself, not py-spy).
    """
    flag = ["--instant-verify"] if instant_verify else []
    prefix = profiler_prefix(label) if label is not None else []
    return [*prefix, PYTHON, "-m", "bench.procs.exporter", *flag, *args]


async def submit(
    settings: Settings,
    batch_id: str,
    job_ids: Sequence[int],
    chunk_size: int,
) -> None:
    """Validate and queue a batch the way `dli-exporter submit` does (in this process: no CLI start-up)."""
    request = build_request(
        {
            "batch_id": batch_id,
            "project_id": DEV_PROJECT,
            "obs_dir": f"{BUCKET}/{batch_id}",
            "job_ids": list(job_ids),
            "chunk_size": chunk_size,
        },
        max_jobs=settings.max_jobs_per_batch,
    )
    async with open_stores(settings) as stores:
        if not await submit_batch(stores.queue, request, stores.ledger):
            raise BenchError(f"batch {batch_id} was already on the queue")


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """The exporter's JSON log lines (anything else on stderr is skipped)."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def event_times(events: Iterable[dict[str, Any]], name: str) -> list[float]:
    """Epoch seconds of every event called `name`."""
    return [datetime.fromisoformat(e["timestamp"]).timestamp() for e in events if e.get("event") == name]


def campaign_seconds(log_path: Path) -> float:
    """From the first `batch.claimed` to the last `batch.completed` in an exporter's log."""
    events = list(read_events(log_path))
    claimed, completed = event_times(events, "batch.claimed"), event_times(events, "batch.completed")
    if not claimed or not completed:
        raise BenchError(f"the exporter did not complete its batches (log: {log_path.name})")
    return completed[-1] - claimed[0]


def peak_rss_mb(log_path: Path) -> float:
    """The exporter's own peak RSS in MB (10^6 bytes), as `bench.procs.exporter` logged it at exit."""
    peaks = [e.get("vmhwm_kib") for e in read_events(log_path) if e.get("event") == PEAK_RSS_EVENT]
    if not peaks or not isinstance(peaks[-1], int):
        raise BenchError(f"the exporter did not log its peak RSS (log: {log_path.name})")
    return peaks[-1] * 1024 / 1e6


def export_requests(stats: Mapping[str, Any]) -> int:
    """Answers of the simulator's export route (429s included), from its stats; control calls are not."""
    return sum(int(count) for count in stats["requests"].get("export_jobs", {}).values())


# --- sampling while processes run -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """The simulator's counters and each process's CPU seconds so far, `t` seconds into the watch."""

    t: float
    exports: int
    throttled: int
    requests: int
    cpu: dict[str, float]


async def watch(
    sim: SimulatorControl,
    children: Sequence[Child],
    *,
    limit_seconds: float,
    until: Callable[[Sample], bool] | None = None,
    observed: Sequence[Child] = (),
    interval: float = _SAMPLE_SECONDS,
) -> list[Sample]:
    """Sample until every child has exited or `until(sample)` holds; BenchError past the time limit.

    `observed` processes (the simulator, say) have their CPU sampled too but are not waited for.
    """
    started = time.monotonic()
    samples: list[Sample] = []
    while True:
        finished = [child.poll() for child in children]
        stats = await sim.stats()
        sample = Sample(
            t=time.monotonic() - started,
            exports=int(stats["exports"]),
            throttled=int(stats["throttled"]),
            requests=int(stats["requests_total"]),
            cpu={child.name: child.cpu_seconds() for child in (*children, *observed)},
        )
        samples.append(sample)
        if all(usage is not None for usage in finished) or (until is not None and until(sample)):
            return samples
        if sample.t > limit_seconds:
            tails = "\n".join(f"--- {c.name}\n{c.tail()}" for c in children)
            raise BenchError(f"still running after {limit_seconds:g}s: {list(children)}\n{tails}")
        await asyncio.sleep(interval)


async def wait_ok(child: Child, limit_seconds: float = 30.0) -> Usage:
    """Wait for a process that must succeed; BenchError with its stderr when it did not."""
    usage = await child.wait(limit_seconds)
    if usage.returncode != 0:
        raise BenchError(f"{child.name} exited with {usage.returncode}\n{child.tail()}")
    return usage


# --- running one benchmark -------------------------------------------------------------------------------


def run_benchmark(measure: Callable[[Path], Coroutine[Any, Any, BenchResult]]) -> int:
    """Run `measure` in a scratch folder, save and print its result last; 1 only when it could not run."""
    quiet_driver_logs()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dli-bench-") as scratch:
        try:
            result = asyncio.run(measure(Path(scratch)))
        except BenchError as error:
            print(f"benchmark failed: {error}", file=sys.stderr)
            return 1
        finally:
            leftovers = kill_leftovers()
            if leftovers:
                print(f"killed processes left running: {', '.join(leftovers)}", file=sys.stderr)
    result.duration_seconds = time.monotonic() - started
    write_result(result)
    print_result(result)
    return 0

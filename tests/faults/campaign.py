"""The campaign every row of the fault matrix runs, and the plumbing to run and measure it.

A campaign is jobs 1..1000 plus five IDs DLI does not know, spread among them (so bisection has good
neighbours to save), 20 IDs per chunk, against the DLI simulator and a real S3 server on 127.0.0.1,
with fast retry settings so that a fault costs seconds, not minutes. `case_stack` puts relays in front
of DLI or S3 when a row needs them; `run_in_process` drives the real runtime while a disturbance runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from faults.invariants import Outcome
from faults.relay import Relay, Rule, running_relay

from exporter.adapters.sqlite import open_sqlite, sqlite_path_from_url
from exporter.adapters.sqlite_db import SqliteDatabase
from exporter.app import open_runtime
from exporter.devstack import LocalStack, local_stack
from exporter.models import BatchRequest
from exporter.settings import Settings
from exporter.simulator import SimulatorHandle
from exporter.submission import submit_batch

__all__ = [
    "BATCH",
    "CAMPAIGN_LIMIT_S",
    "CHUNK",
    "GOOD",
    "SUBMITTED",
    "UNKNOWN",
    "Case",
    "Run",
    "Totals",
    "batch_request",
    "captured_logs",
    "case_stack",
    "exports_at_least",
    "ledger_totals",
    "read_report",
    "record",
    "run_in_process",
    "start_worker",
    "wait_for_ledger",
    "wait_until",
]

GOOD = range(1, 1001)
UNKNOWN = (900_001, 900_002, 900_003, 900_004, 900_005)


def _interleaved() -> list[int]:
    """Good IDs with the unknown ones spread among them, so bisection has good neighbours to save."""
    ids = list(GOOD)
    for n, unknown in enumerate(UNKNOWN, start=1):
        ids.insert(n * 173, unknown)
    return ids


SUBMITTED = _interleaved()
CHUNK = 20
BATCH = "faults"
CAMPAIGN_LIMIT_S = 90.0
EXPORTER_SETTINGS: dict[str, Any] = {
    "rate_limit": 300,
    "rate_burst": 4,
    "concurrency": 16,
    "verify_concurrency": 32,
    "retry_initial_backoff": 0.02,
    "retry_max_backoff": 0.5,
    "retry_max_attempts": 12,
    "read_timeout": 5,  # generous: a slow answer under CI load must not be mistaken for a fault
    "connect_timeout": 2,
    "verify_grace_seconds": 10,
    "poll_interval": 0.05,
    "lease_seconds": 2,
}


@dataclass(slots=True)
class Run:
    """Everything a row's checks may look at once its campaign has finished."""

    stack: LocalStack
    relays: dict[str, Relay]
    databases: list[SqliteDatabase]
    report: dict[str, Any] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)
    outcome: Outcome | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    logs: list[MutableMapping[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def simulator(self) -> SimulatorHandle:
        return self.stack.simulator

    @property
    def sqlite_path(self) -> Path:
        return sqlite_path_from_url(self.stack.settings.queue_url)


Disturbance = Callable[[Run], Awaitable[str]]
Check = Callable[[Run], None]


@dataclass(frozen=True, slots=True)
class Case:
    """One fault: how to inject it, what the campaign must end with, and the proof it was injected."""

    name: str
    faults: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    dli_rule: Callable[[], Rule] | None = None
    obs_rule: Callable[[], Rule] | None = None
    s3_behind_relay: bool = False
    disturbance: Disturbance | None = None
    expect: Check | None = None
    evidence: Callable[[Run], int] = lambda run: 0
    repeats_allowed: bool = False


async def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    """Poll (bounded) until `condition()` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.01)


def exports_at_least(run: Run, count: int) -> Callable[[], bool]:
    """A condition for `wait_until`: the simulator has answered this many exports with success."""
    return lambda: run.simulator.stats()["exports"] >= count


@asynccontextmanager
async def case_stack(case: Case, s3_server: str, workdir: Path) -> AsyncIterator[Run]:
    """The simulator, the bucket and the relays this row needs, with exporter settings pointing at them."""
    async with AsyncExitStack() as stack:
        relays: dict[str, Relay] = {}
        s3_for_everyone = s3_server
        if case.s3_behind_relay:
            relays["s3"] = await stack.enter_async_context(running_relay(s3_server))
            s3_for_everyone = relays["s3"].url
        local = await stack.enter_async_context(
            local_stack(
                workdir=workdir,
                s3_endpoint=s3_for_everyone,
                bucket=f"faults-{case.name}",
                jobs=len(GOOD),
                faults={"seed": 7, **case.faults},
                **{**EXPORTER_SETTINGS, **case.settings},
            )
        )
        updates: dict[str, Any] = {}
        if case.obs_rule is not None:
            relays["obs"] = await stack.enter_async_context(running_relay(s3_server, case.obs_rule()))
            updates["obs_endpoint"] = relays["obs"].url
        if case.dli_rule is not None:
            relays["dli"] = await stack.enter_async_context(
                running_relay(local.simulator.url, case.dli_rule())
            )
            updates["dli_endpoint"] = relays["dli"].url
        settings = local.settings.model_copy(update=updates)
        yield Run(LocalStack(local.s3_endpoint, local.bucket, local.simulator, settings), relays, [])


def batch_request(run: Run) -> BatchRequest:
    return BatchRequest(
        batch_id=BATCH,
        project_id=run.stack.settings.project_id,
        obs_dir=f"{run.stack.bucket}/exports",
        job_ids=SUBMITTED,
        chunk_size=CHUNK,
    )


async def run_in_process(run: Run, disturbance: Disturbance | None) -> str:
    """Submit, then work the queue until it is empty while the disturbance (if any) runs alongside."""
    settings = run.stack.settings
    note = ""
    async with open_runtime(settings, consumer="matrix") as runtime:
        await submit_batch(runtime.stores.queue, batch_request(run))
        work = asyncio.create_task(runtime.worker.run(until_empty=True))
        try:
            if disturbance is not None:
                note = await disturbance(run)
            await asyncio.wait_for(asyncio.shield(work), CAMPAIGN_LIMIT_S)
        finally:
            if not work.done():
                runtime.worker.stop()
                await asyncio.wait_for(work, 10)
    return note


@contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every structlog event at any level, whatever level an earlier test configured globally."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


def read_report(settings: Settings) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(settings.report_dir) / f"{BATCH}.json").read_text())
    return data


def record(record_property: Callable[[str, object], None], name: str, run: Run, **extra: Any) -> None:
    """Keep the measured outcome: as a junit property, and in FAULT_MATRIX_RESULTS when that is set."""
    assert run.outcome is not None
    measured = {
        "case": name,
        **run.outcome.describe(),
        "seconds": round(run.seconds, 1),
        "export_calls": run.stats.get("exports"),
        "requests": run.stats.get("requests_total"),
        "job_ids_exported_twice": run.stats.get("job_ids_exported_more_than_once"),
        **extra,
    }
    record_property("outcome", json.dumps(measured))
    target = os.environ.get("FAULT_MATRIX_RESULTS")
    if target:
        with Path(target).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(measured) + "\n")


async def start_worker(env: dict[str, str], stderr: Path) -> asyncio.subprocess.Process:
    """`dli-exporter work --until-empty` as a process, its stderr appended to a file."""
    with stderr.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter.cli",
            "work",
            "--until-empty",
            env={**os.environ, **env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=sink,
        )


Totals = dict[str, int]


async def ledger_totals(settings: Settings) -> Totals:
    """The batch's totals as the ledger file holds them now."""
    async with open_sqlite(sqlite_path_from_url(settings.queue_url)) as backend:
        info = await backend.ledger.get_batch(BATCH)
    assert info is not None
    return info.totals.model_dump()


async def wait_for_ledger(settings: Settings, condition: Callable[[Totals], bool], what: str) -> None:
    """Poll (bounded) the batch's totals, as the worker process commits them, until `condition` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    async with open_sqlite(sqlite_path_from_url(settings.queue_url)) as backend:
        while True:
            info = await backend.ledger.get_batch(BATCH)
            if info is not None and condition(info.totals.model_dump()):
                return
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)

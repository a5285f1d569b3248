"""5. Verification: the verify stage's HEAD rate against a raw aioboto3 `head_object` loop, same S3 server.

5,000 ZIPs are put into the local S3 server and a batch of 5,000 one-ID chunks is written to the ledger as
already exported (each pointing at its ZIP), so the worker that claims it does nothing but verify: HEAD,
size check, ledger write, log line. The raw loop HEADs the same keys at the same concurrency with one
client and nothing else. Rates: the raw loop's own clock; the worker's from claiming the batch to its
last `chunk.verified`.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from bench.common import (
    BUCKET,
    PYTHON,
    Stack,
    event_times,
    exporter_command,
    read_events,
    run_benchmark,
    running_stack,
    submit,
    wait_ok,
)
from bench.figures import Check, Direction
from bench.processes import BenchError, Child
from bench.report import BenchResult
from exporter.app import open_stores
from exporter.devstack import DEV_PROJECT, dev_s3_client
from exporter.models import BatchInfo, ChunkRecord, ChunkState, Segment, ZipRecord

NUMBER = 5
ZIPS = 5_000
CONCURRENCY = 32  # EXPORTER_VERIFY_CONCURRENCY's default
PREFIX = "verify"
BATCH = "verify"


def _tiny_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("flink_job_1.json", "{}")
    return buffer.getvalue()


async def _put_zips(endpoint: str) -> None:
    """Put the ZIPs, 32 at a time (setup: not timed)."""
    body = _tiny_zip()
    async with dev_s3_client(endpoint) as client:
        keys = iter(range(ZIPS))

        async def put_some() -> None:
            for index in keys:
                await client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{index}.zip", Body=body)

        await asyncio.gather(*(put_some() for _ in range(CONCURRENCY)))


def _exported_chunk(index: int) -> ChunkRecord:
    job_ids = [index + 1]
    zip_record = ZipRecord(path=f"{BUCKET}/{PREFIX}/{index}.zip")
    segment = Segment(job_ids=job_ids, state=ChunkState.EXPORTED, zip_files=[zip_record])
    return ChunkRecord(
        batch_id=BATCH,
        index=index,
        job_ids=job_ids,
        state=ChunkState.EXPORTED,
        segments=[segment],
        attempts=1,
    )


async def _ledger_of_exported_chunks(stack: Stack) -> None:
    """The ledger as a worker leaves it after exporting every chunk, and the batch message on the queue."""
    settings = stack.settings()
    now = time.time()
    info = BatchInfo(
        batch_id=BATCH,
        project_id=DEV_PROJECT,
        obs_dir=f"{BUCKET}/{PREFIX}",
        chunk_size=1,
        created_at=now,
        updated_at=now,
    )
    async with open_stores(settings) as stores:
        await stores.ledger.create_batch(info, [[index + 1] for index in range(ZIPS)])
        await asyncio.gather(
            *(
                stores.ledger.save_chunk(
                    _exported_chunk(index), ChunkRecord(batch_id=BATCH, index=index, job_ids=[index + 1])
                )
                for index in range(ZIPS)
            )
        )
    await submit(settings, BATCH, range(1, ZIPS + 1), chunk_size=1)


async def _raw(stack: Stack) -> dict[str, Any]:
    args = [
        PYTHON,
        "-m",
        "bench.procs.raw_head",
        stack.s3_endpoint,
        BUCKET,
        PREFIX,
        str(ZIPS),
        str(CONCURRENCY),
    ]
    child = Child("raw-head", args, env={}, logdir=stack.workdir)
    await wait_ok(child, limit_seconds=120)
    figures: dict[str, Any] = json.loads(child.read_stdout().splitlines()[-1])
    if figures["ok"] != ZIPS:
        raise BenchError(f"raw HEAD loop found {figures['ok']} of {ZIPS} ZIPs")
    return figures


async def _worker(stack: Stack) -> tuple[float, float]:
    """The worker's verify rate (claim to last verified chunk) and its CPU ms per HEAD (whole process)."""
    child = Child(
        "worker",
        exporter_command("work", "--until-empty", label="verify"),
        env=stack.env(verify_concurrency=CONCURRENCY),
        logdir=stack.workdir,
    )
    usage = await wait_ok(child, limit_seconds=120)
    events = list(read_events(child.stderr_path))
    claimed, verified = event_times(events, "batch.claimed"), event_times(events, "chunk.verified")
    if len(verified) != ZIPS:
        raise BenchError(f"the worker verified {len(verified)} of {ZIPS} chunks\n{child.tail()}")
    return ZIPS / (max(verified) - claimed[0]), usage.cpu_seconds / ZIPS * 1000


async def measure(workdir: Path) -> BenchResult:
    async with running_stack(workdir, jobs=ZIPS) as stack:
        await _put_zips(stack.s3_endpoint)
        await _ledger_of_exported_chunks(stack)
        raw = await _raw(stack)
        worker_rate, worker_cpu_ms = await _worker(stack)
    return BenchResult(
        number=NUMBER,
        name="verify",
        title="Verification vs raw aioboto3",
        checks=[
            Check("verify HEAD rate / raw HEAD rate", worker_rate / raw["rate"], 0.8, Direction.AT_LEAST)
        ],
        figures={
            "ZIPs": ZIPS,
            "concurrency": CONCURRENCY,
            "raw head_object (HEAD/s)": round(raw["rate"]),
            "verify stage (HEAD/s)": round(worker_rate),
            "raw CPU per HEAD (ms)": round(raw["cpu_ms_per_request"], 3),
            "worker CPU per HEAD, whole process (ms)": round(worker_cpu_ms, 3),
        },
        series={
            "bars": [
                {"ylabel": "HEAD / s", "bars": {"raw aioboto3": raw["rate"], "verify stage": worker_rate}}
            ]
        },
    )


if __name__ == "__main__":
    sys.exit(run_benchmark(measure))

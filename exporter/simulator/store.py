"""The simulator's side of the object store: bucket checks and ZIP writes, now, late or never.

A missing bucket is DLI's 400 DLI.0002; any other store failure is 500 DLI.0999 (see `store_failure`,
which the outermost middleware also applies to S3 errors a handler lets through).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from exporter.simulator.answers import DliFailure
from exporter.simulator.faults import ZipFate, decide_zip_fate
from exporter.simulator.state import SimulatorState

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["deliver", "ensure_bucket", "s3_client", "store_failure"]

log = structlog.get_logger(__name__)


def s3_client(state: SimulatorState) -> S3Client:
    if state.s3 is None:
        raise DliFailure(500, "DLI.0999", "The simulator has no object store client (not started?).")
    return state.s3


def _is_missing_bucket(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in {"NoSuchBucket", "404", "NotFound"}


def _no_bucket(bucket: str) -> DliFailure:
    return DliFailure(400, "DLI.0002", f"The OBS bucket {bucket} does not exist.")


async def ensure_bucket(state: SimulatorState, bucket: str) -> None:
    if bucket in state.known_buckets:
        return
    try:
        await s3_client(state).head_bucket(Bucket=bucket)
    except ClientError as error:
        if _is_missing_bucket(error):
            raise _no_bucket(bucket) from None
        raise
    state.known_buckets.add(bucket)


def store_failure(error: Exception) -> DliFailure:
    log.warning("simulator.store_failed", error=repr(error))
    return DliFailure(500, "DLI.0999", "Writing to OBS failed; try again later.")


async def _put_zip(state: SimulatorState, bucket: str, key: str, data: bytes) -> None:
    try:
        await s3_client(state).put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/zip")
    except ClientError as error:
        if _is_missing_bucket(error):
            state.known_buckets.discard(bucket)
            raise _no_bucket(bucket) from None
        raise
    state.known_buckets.add(bucket)
    state.stats.zips_written += 1


async def _put_zip_later(state: SimulatorState, bucket: str, key: str, data: bytes) -> None:
    await asyncio.sleep(state.knobs.late_seconds)
    try:
        await _put_zip(state, bucket, key, data)
    except (DliFailure, BotoCoreError, ClientError) as error:
        log.warning("simulator.late_zip_failed", bucket=bucket, key=key, error=repr(error))
    else:
        log.debug("simulator.late_zip_written", bucket=bucket, key=key)


async def deliver(state: SimulatorState, bucket: str, key: str, data: bytes) -> None:
    """Write the ZIP now, schedule it for later, or drop it, as the dice say."""
    fate = decide_zip_fate(state.knobs, state.rng)
    if fate is ZipFate.NOW:
        await _put_zip(state, bucket, key, data)
        return
    await ensure_bucket(state, bucket)
    state.stats.faults[fate.value] += 1
    if fate is ZipFate.LATE:
        task = asyncio.create_task(_put_zip_later(state, bucket, key, data))
        state.late_writes.add(task)
        task.add_done_callback(state.late_writes.discard)

"""`POST /v1.0/{project_id}/streaming/jobs/import`: reads exported ZIPs back and maps old to new IDs."""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from aiohttp import web
from botocore.exceptions import ClientError

from exporter.simulator.answers import DliFailure, bad_request, json_response
from exporter.simulator.bodies import json_object, obs_location
from exporter.simulator.jobs import JobCatalogue
from exporter.simulator.state import STATE, SimulatorState
from exporter.simulator.store import ensure_bucket, s3_client

__all__ = ["import_jobs"]

_IMPORT_MAX_ZIPS = 100
_ENTRY_ID = re.compile(r"flink_job_(\d+)\.json")


async def import_jobs(request: web.Request) -> web.Response:
    """POST /v1.0/{project_id}/streaming/jobs/import: reads the ZIP(s) and maps old to new job IDs.

    The catalogue does not change: with `is_cover` a job keeps its ID; without it a job whose name
    already exists maps to -1, as the docs describe.
    """
    state = request.app[STATE]
    payload = json_object(await request.read())
    bucket, key = obs_location(payload.get("zip_file"), "zip_file")
    is_cover = payload.get("is_cover", False)
    if not isinstance(is_cover, bool):
        raise bad_request("Parameter is_cover must be true or false.")
    job_ids = await _imported_job_ids(state, bucket, key)
    mapping = [_job_mapping(state.catalogue, job_id, is_cover=is_cover) for job_id in job_ids]
    return json_response(
        200,
        {
            "is_success": state.success_flag(),
            "message": "The job is successfully imported.",
            "job_mapping": mapping,
        },
    )


def _job_mapping(catalogue: JobCatalogue, job_id: int, *, is_cover: bool) -> dict[str, Any]:
    if job_id not in catalogue:
        return {"old_job_id": job_id, "new_job_id": job_id, "remark": "Job successfully created"}
    if is_cover:
        return {"old_job_id": job_id, "new_job_id": job_id, "remark": "Job successfully covered"}
    return {"old_job_id": job_id, "new_job_id": -1, "remark": "A job with the same name already exists"}


async def _imported_job_ids(state: SimulatorState, bucket: str, key: str) -> list[int]:
    """Job IDs named by the entries of the ZIP at `key`, or of every ZIP in the folder `key`."""
    keys = await _zip_keys(state, bucket, key)
    job_ids: list[int] = []
    for zip_key_ in keys:
        try:
            response = await s3_client(state).get_object(Bucket=bucket, Key=zip_key_)
            async with response["Body"] as stream:
                data = await stream.read()
        except ClientError as error:
            raise DliFailure(400, "DLI.0002", f"The file {bucket}/{zip_key_} does not exist.") from error
        job_ids.extend(_entry_job_ids(data, f"{bucket}/{zip_key_}"))
    return job_ids


async def _zip_keys(state: SimulatorState, bucket: str, key: str) -> list[str]:
    await ensure_bucket(state, bucket)
    if key.endswith(".zip"):
        return [key]
    prefix = f"{key}/" if key else ""
    listing = await s3_client(state).list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=_IMPORT_MAX_ZIPS)
    keys = [item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(".zip")]
    if not keys:
        raise DliFailure(400, "DLI.0002", f"There is no ZIP file in {bucket}/{key}.")
    return keys


def _entry_job_ids(data: bytes, where: str) -> list[int]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise bad_request(f"The file {where} is not a ZIP file.") from None
    return [int(match[1]) for name in names if (match := _ENTRY_ID.fullmatch(name))]

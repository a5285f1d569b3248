"""Where an import reads its jobs: one ZIP or a folder of ZIPs in OBS, checked like DLI checks them.

Why its own module: the awkward parts live here. `zip_file` may name a folder, which "can contain only
.zip files" (importing_a_flink_job.rst), so anything else in it is refused rather than skipped; a folder
of more than `IMPORT_MAX_ZIPS` is refused too instead of being cut silently. A region's DLI reads only the
buckets it may (`sim_readable_buckets`): a ZIP left in the source region's bucket answers 403 DLI.0011
("The file permission check fails", error_codes.rst), which is what a migration that forgot to copy its
ZIPs into the target region meets. A missing bucket or ZIP is 400 DLI.0002, as before.

Each entry `flink_job_<id>.json` is a job document (`job_fields.job_document`): a JSON object with at
least `job_id` and `name`; a broken one is 400 DLI.0001 naming the file and entry.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import zipfile
from typing import Any

from botocore.exceptions import ClientError

from exporter.simulator.answers import DliFailure, bad_request
from exporter.simulator.state import SimulatorState
from exporter.simulator.store import ensure_bucket, s3_client

__all__ = ["IMPORT_MAX_ZIPS", "check_readable", "read_documents"]

IMPORT_MAX_ZIPS = 100
_ENTRY = re.compile(r"flink_job_(\d+)\.json")
_INLINE_BYTES = 256 * 1024  # bigger ZIPs are unpacked in a thread so the server keeps answering
_NAME_MAX = 57


def check_readable(state: SimulatorState, bucket: str) -> None:
    """403 DLI.0011 when this region's DLI may not read the bucket (`sim_readable_buckets`)."""
    readable = state.settings.sim_readable_buckets
    if readable and bucket not in readable:
        raise DliFailure(
            403,
            "DLI.0011",
            f"The file permission check fails: DLI cannot read OBS bucket {bucket} in this region.",
        )


async def read_documents(state: SimulatorState, bucket: str, key: str) -> list[dict[str, Any]]:
    """The job documents of the ZIP at `key`, or of every ZIP in the folder `key`, in key order."""
    check_readable(state, bucket)
    documents: list[dict[str, Any]] = []
    for zip_key in await _zip_keys(state, bucket, key):
        try:
            response = await s3_client(state).get_object(Bucket=bucket, Key=zip_key)
            async with response["Body"] as stream:
                data = await stream.read()
        except ClientError as error:
            raise DliFailure(400, "DLI.0002", f"The file {bucket}/{zip_key} does not exist.") from error
        where = f"{bucket}/{zip_key}"
        if len(data) <= _INLINE_BYTES:
            documents.extend(_documents(data, where))
        else:
            documents.extend(await asyncio.to_thread(_documents, data, where))
    return documents


async def _zip_keys(state: SimulatorState, bucket: str, key: str) -> list[str]:
    await ensure_bucket(state, bucket)
    if key.endswith(".zip"):
        return [key]
    prefix = f"{key}/" if key else ""
    listing = await s3_client(state).list_objects_v2(
        Bucket=bucket, Prefix=prefix, MaxKeys=IMPORT_MAX_ZIPS + 1
    )
    keys = sorted(item["Key"] for item in listing.get("Contents", []) if not item["Key"].endswith("/"))
    if not keys:
        raise DliFailure(400, "DLI.0002", f"There is no ZIP file in {bucket}/{key}.")
    others = [name for name in keys if not name.endswith(".zip")]
    if others:
        raise bad_request(f"The folder {bucket}/{key} can contain only .zip files; found {others[0]}.")
    if len(keys) > IMPORT_MAX_ZIPS or listing.get("IsTruncated"):
        raise bad_request(f"The folder {bucket}/{key} holds more than {IMPORT_MAX_ZIPS} ZIP files.")
    return keys


def _documents(data: bytes, where: str) -> list[dict[str, Any]]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = [name for name in archive.namelist() if _ENTRY.fullmatch(name)]
            return [_document(archive.read(name), f"{where}:{name}") for name in entries]
    except zipfile.BadZipFile:
        raise bad_request(f"The file {where} is not a ZIP file.") from None


def _document(raw: bytes, where: str) -> dict[str, Any]:
    """One entry's job document, with `job_id` as an int; DLI.0001 when it is not a job."""
    try:
        document = json.loads(raw)
    except ValueError:
        raise bad_request(f"The job file {where} is not valid JSON.") from None
    if not isinstance(document, dict):
        raise bad_request(f"The job file {where} must hold a JSON object.")
    job_id, name = document.get("job_id"), document.get("name")
    if isinstance(job_id, str) and job_id.isdigit():
        job_id = int(job_id)
    if type(job_id) is not int or job_id <= 0:
        raise bad_request(f"The job file {where} has no valid job_id.")
    if not isinstance(name, str) or not 1 <= len(name) <= _NAME_MAX:
        raise bad_request(f"The job file {where} has no valid name (1 to {_NAME_MAX} characters).")
    return {**document, "job_id": job_id}

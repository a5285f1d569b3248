"""The promises every faulty campaign must keep, checked on its report and against the bucket itself.

Whatever went wrong on the way, a finished batch report must list every submitted ID exactly once, say
`verified` only for ZIPs that really are in the bucket with bytes in them, and give every failure a
code a person can act on: DLI's own (`DLI.0002`), an OBS one (`OBS.403`) or a verification reason
(`ZIP_MISSING`). These checks are shared by every row of the fault matrix.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aioboto3

__all__ = [
    "FAILURE_CODE",
    "Outcome",
    "bucket_objects",
    "check_report",
    "job_ids_of",
    "zip_key",
]

# A DLI / gateway code, an OBS code, or one of the pipeline's own verification reasons.
FAILURE_CODE = re.compile(
    r"(DLI|APIG|APIGW)\.\d{4}|OBS\.[A-Za-z0-9]+|ZIP_(MISSING|EMPTY|INVALID)|DLI_NO_ZIP|NOT_SUCCESS|HTTP_\d{3}"
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A finished campaign, summarised for the assertions and the reliability table."""

    verified: frozenset[int]
    failed_codes: Mapping[int, str]
    failure_counts: Mapping[str, int]
    state: str

    def describe(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "verified": len(self.verified),
            "failed": len(self.failed_codes),
            "failures": dict(self.failure_counts),
        }


def job_ids_of(rows: Iterable[Mapping[str, Any]]) -> list[int]:
    return [job_id for row in rows for job_id in row["job_ids"]]


def zip_key(path: str) -> str:
    """`bucket/key` as DLI reports it -> `key`."""
    return path.partition("/")[2]


async def bucket_objects(endpoint: str, bucket: str) -> dict[str, int]:
    """Every object of the bucket with its size, read straight from the S3 server (not through a relay)."""
    session = aioboto3.Session()
    sizes: dict[str, int] = {}
    async with session.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="inspector",
        aws_secret_access_key="inspector",
    ) as client:
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                sizes[item["Key"]] = int(item["Size"])
    return sizes


def check_report(report: Mapping[str, Any], submitted: Iterable[int], objects: Mapping[str, int]) -> Outcome:
    """Assert the invariants of every finished batch; return what it achieved for case-specific checks."""
    rows: list[Mapping[str, Any]] = report["chunks"]
    listed = job_ids_of(rows)
    assert sorted(listed) == sorted(submitted), "every submitted ID appears exactly once in the report"
    assert report["state"] in {"completed", "completed_with_failures"}, report["state"]
    verified: set[int] = set()
    failed: dict[int, str] = {}
    for row in rows:
        if row["state"] == "verified":
            _check_verified_row(row, objects)
            verified.update(row["job_ids"])
        else:
            assert row["state"] == "failed", f"a finished batch has only terminal rows, not {row['state']}"
            code = _check_failed_row(row)
            failed.update(dict.fromkeys(row["job_ids"], code))
    totals = report["totals"]
    assert totals["verified"] == len(verified) and totals["failed"] == len(failed)
    assert totals["jobs"] == len(listed)
    expected_state = "completed_with_failures" if failed else "completed"
    assert report["state"] == expected_state
    return Outcome(frozenset(verified), failed, Counter(failed.values()), report["state"])


def _check_verified_row(row: Mapping[str, Any], objects: Mapping[str, int]) -> None:
    assert row["error"] is None
    assert row["zip_files"], "a verified row names its ZIP"
    for record in row["zip_files"]:
        key = zip_key(record["path"])
        assert record["verified"] is True
        assert key in objects, f"{record['path']} is reported verified but is not in the bucket"
        assert record["size"] == objects[key] > 0, f"{record['path']}: size differs from the bucket's"


def _check_failed_row(row: Mapping[str, Any]) -> str:
    error = row["error"]
    assert error is not None, f"failed row {row['index']} carries no error"
    assert FAILURE_CODE.fullmatch(error["code"]), f"failure code {error['code']!r} is not one we know"
    assert error["message"], "a failure says what happened"
    assert not any(record["verified"] for record in row["zip_files"])
    code: str = error["code"]
    return code

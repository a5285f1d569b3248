"""Export ZIPs built in memory: one small JSON document per job, named like DLI names its exports.

DLI answers an export with `bucket/prefix/{name}_{epoch_ms}.zip` (`obs-test/aggregate_1582677879475.zip`
in the docs). Retries of the same chunk must not overwrite an earlier ZIP, so the milliseconds come from
`UniqueMillis`, which never hands out the same value twice in one process.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["UniqueMillis", "build_zip", "entry_name", "zip_key"]

# A fixed timestamp keeps the bytes of a ZIP a function of its jobs alone.
_ENTRY_DATE = (2024, 1, 1, 0, 0, 0)


def entry_name(job_id: int) -> str:
    """The name of a job's document inside the ZIP."""
    return f"flink_job_{job_id}.json"


def zip_key(prefix: str, name: str, epoch_ms: int) -> str:
    """The object key of an export: `{prefix}/{name}_{epoch_ms}.zip` (no prefix: at the bucket root)."""
    base = f"{name}_{epoch_ms}.zip"
    return f"{prefix.strip('/')}/{base}" if prefix.strip("/") else base


def build_zip(job_ids: Iterable[int], document: Callable[[int], dict[str, Any]]) -> bytes:
    """A deflated ZIP with one `flink_job_{id}.json` entry per job, in the order given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for job_id in job_ids:
            info = zipfile.ZipInfo(entry_name(job_id), date_time=_ENTRY_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            payload = json.dumps(document(job_id), ensure_ascii=False, separators=(",", ":"))
            archive.writestr(info, payload.encode())
    return buffer.getvalue()


class UniqueMillis:
    """Wall-clock milliseconds, bumped by one whenever a call would repeat the previous value."""

    __slots__ = ("_clock", "_last")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last = 0

    def __repr__(self) -> str:
        issued = datetime.fromtimestamp(self._last / 1000, tz=UTC).isoformat() if self._last else None
        return f"<UniqueMillis last={self._last} ({issued})>"

    def next(self) -> int:
        self._last = max(int(self._clock() * 1000), self._last + 1)
        return self._last

"""Pure rules shared by every entry point: identifiers, OBS paths, job-ID sets and how chunks are cut.

`exporter.models` re-exports them; they live apart so the models module holds only data shapes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal, overload

__all__ = [
    "MAX_JOB_ID",
    "ChunkPlan",
    "check_bucket",
    "check_obs_dir",
    "check_project_id",
    "check_rate_limit",
    "dedupe_job_ids",
    "plan_chunks",
    "split_obs_path",
]

MAX_JOB_ID = 2**63 - 1
_PROJECT_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_FORBIDDEN = re.compile(r"[\x00-\x1f\\]")


def check_project_id(value: str) -> str:
    """Return the project ID if it is 1-64 letters and digits (DLI's rule), else raise ValueError."""
    if not _PROJECT_ID.fullmatch(value):
        raise ValueError(f"project ID {value!r} must be 1 to 64 letters and digits")
    return value


def check_rate_limit(value: Any) -> float | Literal["auto"]:
    """A gateway limit in requests/s (0 < n ≤ 100000), or `auto` (learned); ValueError otherwise.

    The message never echoes the value: a misplaced secret in the wrong variable stays out of errors."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        raise ValueError("must be a number of requests/s, or auto") from None
    if not 0 < number <= 100_000:
        raise ValueError("must be greater than 0 and at most 100000 (requests/s), or auto")
    return number


def check_bucket(bucket: str) -> str:
    """Return the bucket name if it follows OBS naming rules, else raise ValueError saying which."""
    if not 3 <= len(bucket) <= 63:
        raise ValueError(f"bucket {bucket!r} must be 3 to 63 characters long")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(
            f"bucket {bucket!r} may hold only lowercase letters, digits, '-' and '.', "
            "and must start and end with a letter or digit"
        )
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        raise ValueError(f"bucket {bucket!r} must not contain '..', '.-' or '-.'")
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return bucket
    raise ValueError(f"bucket {bucket!r} must not be an IP address")


def split_obs_path(path: str) -> tuple[str, str]:
    """Split `bucket/key/parts` into (bucket, key); DLI returns ZIP paths in this form."""
    bucket, _, key = path.strip().lstrip("/").partition("/")
    return bucket, key


def check_obs_dir(obs_dir: str) -> str:
    """Normalise `BUCKET[/PREFIX]` (no scheme, no trailing slash) and validate bucket and prefix."""
    value = obs_dir.strip()
    if value.lower().startswith("obs://"):
        value = value[len("obs://") :]
    value = value.strip("/")
    bucket, prefix = split_obs_path(value)
    check_bucket(bucket)
    if prefix:
        if len(prefix.encode()) > 900:
            raise ValueError("OBS prefix must be at most 900 bytes")
        if _PREFIX_FORBIDDEN.search(prefix) or "//" in prefix:
            raise ValueError(f"OBS prefix {prefix!r} must not contain control characters, '\\' or '//'")
        if any(part in {".", ".."} for part in prefix.split("/")):
            raise ValueError(f"OBS prefix {prefix!r} must not contain '.' or '..' segments")
    return f"{bucket}/{prefix}" if prefix else bucket


def dedupe_job_ids(job_ids: Iterable[int]) -> tuple[list[int], int]:
    """Return the IDs in first-seen order without repeats, and how many repeats were dropped."""
    seen: set[int] = set()
    unique: list[int] = []
    total = 0
    for job_id in job_ids:
        total += 1
        if job_id not in seen:
            seen.add(job_id)
            unique.append(job_id)
    return unique, total - len(unique)


class ChunkPlan(Sequence[Sequence[int]]):
    """Consecutive chunks of a sequence of IDs, cut on demand (chunk i always holds the same IDs).

    Slicing lazily means a plan of a million IDs costs no second copy of them.
    """

    __slots__ = ("_job_ids", "_size")

    def __init__(self, job_ids: Sequence[int], chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError("chunk size must be at least 1")
        self._job_ids = job_ids
        self._size = chunk_size

    def __len__(self) -> int:
        return (len(self._job_ids) + self._size - 1) // self._size

    @overload
    def __getitem__(self, index: int) -> Sequence[int]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Sequence[int]]: ...

    def __getitem__(self, index: int | slice) -> Sequence[int] | Sequence[Sequence[int]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("chunk index out of range")
        start = index * self._size
        return self._job_ids[start : start + self._size]


def plan_chunks(job_ids: Sequence[int], chunk_size: int) -> ChunkPlan:
    """Cut the IDs into consecutive chunks of `chunk_size` (the last may be shorter)."""
    return ChunkPlan(job_ids, chunk_size)

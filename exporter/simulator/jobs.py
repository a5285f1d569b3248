"""The simulator's job catalogue: jobs 1..N, and the listing queries that page through it.

Nothing is stored per job: its attributes are arithmetic on the ID (see `job_fields`, whose names this
module re-exports), so a catalogue of a million jobs costs nothing until a filtered listing asks, and
tests can predict every answer. Filtered selections are computed once and kept (a small bounded cache),
so paging through them stays cheap under load.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exporter.simulator.job_fields import (
    JOB_TYPES,
    job_detail,
    job_document,
    job_name,
    job_queue,
    job_status,
    job_summary,
    job_tags,
    job_type,
    job_user,
)

__all__ = [
    "JOB_TYPES",
    "LIST_LIMIT_DEFAULT",
    "LIST_LIMIT_MAX",
    "QUERY_STATUSES",
    "JobCatalogue",
    "JobFilter",
    "ListQuery",
    "job_detail",
    "job_document",
    "job_name",
    "job_queue",
    "job_status",
    "job_summary",
    "job_tags",
    "job_type",
    "job_user",
    "parse_list_query",
]

# The statuses listing_jobs.rst accepts as a filter.
QUERY_STATUSES = frozenset(
    {
        "job_init",
        "job_submitting",
        "job_submit_fail",
        "job_running",
        "job_running_exception",
        "job_downloading",
        "job_idle",
        "job_canceling",
        "job_cancel_success",
        "job_cancel_fail",
        "job_savepointing",
        "job_finish",
        "job_arrearage_stopped",
        "job_arrearage_recovering",
    }
)
LIST_LIMIT_DEFAULT = 10  # listing_jobs.rst: "The default value is 10"
LIST_LIMIT_MAX = 100  # listing_jobs.rst: "The maximum value is 100"
NAME_MAX = 57  # listing_jobs.rst: names hold 0 to 57 characters
_CACHE_SIZE = 128


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The listing filters; None means "any". `name` matches a case-insensitive substring."""

    job_type: str | None = None
    status: str | None = None
    queue_name: str | None = None
    name: str | None = None
    user_name: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def is_empty(self) -> bool:
        return self == _NO_FILTER

    def matches(self, job_id: int) -> bool:
        """Whether the job passes every filter that is set (cheapest checks first)."""
        return (
            (self.job_type is None or job_type(job_id) == self.job_type)
            and (self.status is None or job_status(job_id) == self.status)
            and (self.queue_name is None or job_queue(job_id) == self.queue_name)
            and (self.user_name is None or job_user(job_id) == self.user_name)
            and (not self.tags or set(self.tags) <= set(job_tags(job_id)))
            and (self.name is None or self.name.lower() in job_name(job_id).lower())
        )


_NO_FILTER = JobFilter()


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A validated listing request."""

    filter: JobFilter
    offset: int = 0
    limit: int = LIST_LIMIT_DEFAULT
    descending: bool = True
    show_detail: bool = False


def _int_param(name: str, raw: str, low: int, high: int | None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"Parameter {name} must be an integer, got {raw!r}.") from None
    if value < low or (high is not None and value > high):
        bounds = f"{low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"Parameter {name} must be {bounds}, got {value}.")
    return value


def _bool_param(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered not in {"true", "false"}:
        raise ValueError(f"Parameter {name} must be true or false, got {raw!r}.")
    return lowered == "true"


def _choice_param(name: str, raw: str, allowed: Iterable[str]) -> str:
    if raw not in allowed:
        raise ValueError(f"Parameter {name} must be one of {', '.join(sorted(allowed))}, got {raw!r}.")
    return raw


def _tags_param(raw: str) -> tuple[tuple[str, str], ...]:
    """`k=v` or `k1=v1,k2=v2` (the SDK sends the string as given)."""
    pairs = []
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Parameter tags must look like key=value[,key=value], got {raw!r}.")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def parse_list_query(pairs: Iterable[tuple[str, str]]) -> ListQuery:
    """Validate the listing's query parameters like DLI would; ValueError says which one is wrong."""
    params = dict(pairs)
    name = params.get("name")
    if name is not None and len(name) > NAME_MAX:
        raise ValueError(f"Parameter name must be at most {NAME_MAX} characters.")
    job_filter = JobFilter(
        job_type=_choice_param("job_type", params["job_type"], JOB_TYPES) if "job_type" in params else None,
        status=_choice_param("status", params["status"], QUERY_STATUSES) if "status" in params else None,
        queue_name=params.get("queue_name") or None,
        name=name or None,
        user_name=params.get("user_name") or None,
        tags=_tags_param(params["tags"]) if params.get("tags") else (),
    )
    return ListQuery(
        filter=job_filter,
        offset=_int_param("offset", params["offset"], 0, None) if "offset" in params else 0,
        limit=(
            _int_param("limit", params["limit"], 0, LIST_LIMIT_MAX)
            if "limit" in params
            else LIST_LIMIT_DEFAULT
        ),
        descending=_choice_param("order", params.get("order", "desc"), ("asc", "desc")) == "desc",
        show_detail=_bool_param("show_detail", params["show_detail"]) if "show_detail" in params else False,
    )


class JobCatalogue:
    """Jobs 1..size except `missing`; answers existence, filtered selections and pages."""

    __slots__ = ("_cache", "missing", "size")

    def __init__(self, size: int, missing: Iterable[int] = ()) -> None:
        if size < 0:
            raise ValueError("the catalogue size must not be negative")
        self.size = size
        self.missing = frozenset(missing)
        outside = sorted(job_id for job_id in self.missing if not 1 <= job_id <= size)
        if outside:
            raise ValueError(f"missing IDs must lie in 1..{size}: {outside[:10]}")
        self._cache: dict[JobFilter, Sequence[int]] = {}

    def __repr__(self) -> str:
        return f"<JobCatalogue size={self.size} missing={len(self.missing)} cached={len(self._cache)}>"

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, int) and 1 <= job_id <= self.size and job_id not in self.missing

    def __len__(self) -> int:
        return self.size - len(self.missing)

    def unknown(self, job_ids: Iterable[int]) -> list[int]:
        """The IDs among `job_ids` that do not exist, sorted, without repeats."""
        return sorted({job_id for job_id in job_ids if job_id not in self})

    def select(self, job_filter: JobFilter) -> Sequence[int]:
        """Existing IDs passing the filter, ascending; computed once per distinct filter."""
        cached = self._cache.get(job_filter)
        if cached is not None:
            return cached
        everything = range(1, self.size + 1)
        if job_filter.is_empty and not self.missing:
            selected: Sequence[int] = everything
        else:
            selected = array(
                "q", (job_id for job_id in everything if job_id in self and job_filter.matches(job_id))
            )
        if len(self._cache) >= _CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        self._cache[job_filter] = selected
        return selected

    def page(self, query: ListQuery) -> tuple[int, list[int]]:
        """(total matching, the IDs of the requested page in the requested order)."""
        selected = self.select(query.filter)
        total = len(selected)
        if query.descending:
            end = max(0, total - query.offset)
            start = max(0, end - query.limit)
            return total, list(reversed(selected[start:end]))
        return total, list(selected[query.offset : query.offset + query.limit])

"""Target projects: DLI projects that start empty and change as imports create and cover jobs.

Why a store at all: the static catalogue (`jobs.py`) is arithmetic on the ID and never changes, which is
right for exports but cannot answer "which jobs did the migration create?". A target project holds real
records, by ID and by name, so import, listing, job detail and `/_sim/projects/{id}/jobs` agree, and a
test can compare the exporter's job map with what the target really holds.

Rules (importing_a_flink_job.rst): a name not in the project creates a job with a NEW ID from one counter
per simulator (from 1_000_001, so new IDs never look like the source's 1..N); a name that exists keeps its
ID when `is_cover` (its content overwritten) and maps to -1 otherwise. Names match exactly (case counts).
Imported jobs are drafts (`job_init`, never started): importing does not run a job. Seeded jobs
(`sim_existing_names`) are created the same way, before any import, to provoke name conflicts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from exporter.simulator.jobs import JobFilter, ListQuery

__all__ = ["FIRST_NEW_ID", "ImportKind", "ImportOutcome", "ProjectJobs", "StoredJob", "TargetProjects"]

FIRST_NEW_ID = 1_000_001
_EPOCH_MS = 1_700_000_000_000  # job_fields' epoch: "by time" order stays ID order
_IMPORTER = "importer"
# What a job document may not carry over into the target: the target decides these.
_TARGET_OWNED = frozenset({"job_id", "project_id", "tags", "user_name", "status", "status_desc"})


class ImportKind(StrEnum):
    CREATED = "created"
    COVERED = "covered"
    CONFLICT = "conflict"


_REMARKS = {
    ImportKind.CREATED: "Job successfully created",
    ImportKind.COVERED: "Job successfully covered",
    ImportKind.CONFLICT: "A job with the same name already exists",
}


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """One `job_mapping` entry before it is rendered: new_job_id is -1 for a conflict."""

    old_job_id: int
    new_job_id: int
    kind: ImportKind

    @property
    def remark(self) -> str:
        return _REMARKS[self.kind]


@dataclass(slots=True)
class StoredJob:
    """One job of a target project: its detail (the `job_detail` shape), owner and tags."""

    detail: dict[str, Any]
    user_name: str
    tags: tuple[tuple[str, str], ...]

    @property
    def job_id(self) -> int:
        return int(self.detail["job_id"])

    @property
    def name(self) -> str:
        return str(self.detail["name"])

    def summary(self) -> dict[str, Any]:
        """The listing entry with `show_detail=false`, keys in `job_fields.job_summary`'s order."""
        detail = self.detail
        return {
            "job_id": self.job_id,
            "name": self.name,
            "desc": detail.get("desc", ""),
            "user_name": self.user_name,
            "job_type": detail.get("job_type", "flink_sql_job"),
            "status": detail["status"],
            "status_desc": detail.get("status_desc", ""),
            "create_time": detail["create_time"],
            "start_time": detail.get("start_time", 0),
            "duration": 0,
            "root_id": -1,
            "graph_editor_enabled": False,
            "has_savepoint": False,
            "queue_name": detail.get("queue_name", ""),
            "edge_group_ids": [],
            "restart_times": 0,
            "savepoint_path": "",
        }

    def matches(self, job_filter: JobFilter) -> bool:
        """The listing filters, with the static catalogue's semantics (name: case-insensitive substring)."""
        detail = self.detail
        return (
            (job_filter.job_type is None or detail.get("job_type") == job_filter.job_type)
            and (job_filter.status is None or detail["status"] == job_filter.status)
            and (job_filter.queue_name is None or detail.get("queue_name") == job_filter.queue_name)
            and (job_filter.user_name is None or self.user_name == job_filter.user_name)
            and (not job_filter.tags or set(job_filter.tags) <= set(self.tags))
            and (job_filter.name is None or job_filter.name.lower() in self.name.lower())
        )


def _tags_of(document: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = document.get("tags")
    if not isinstance(raw, list):
        return ()
    return tuple(
        (str(tag["key"]), str(tag.get("value", ""))) for tag in raw if isinstance(tag, dict) and "key" in tag
    )


def _draft(job_id: int, project_id: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """The detail of a freshly created (imported or seeded) job: the document's content, as a draft."""
    created = _EPOCH_MS + job_id * 60_000
    detail: dict[str, Any] = {
        "job_id": job_id,
        "name": document["name"],
        "desc": "",
        "job_type": "flink_sql_job",
        "queue_name": "",
        "sql_body": "",
        "run_mode": "exclusive_cluster",
        "main_class": "",
        "entrypoint_args": "",
        "execution_graph": "",
        "job_config": {},
        **{key: value for key, value in document.items() if key not in _TARGET_OWNED},
    }
    detail.update(
        job_id=job_id,
        project_id=project_id,
        user_id=detail.get("user_id") or f"user{0:032d}",
        status="job_init",
        status_desc="",
        create_time=created,
        start_time=0,
        update_time=created,
    )
    return detail


class ProjectJobs:
    """One target project's jobs, by ID (ascending = creation order) and by exact name."""

    __slots__ = ("_by_id", "_by_name", "project_id")

    def __init__(self, project_id: str) -> None:
        self.project_id = project_id
        self._by_id: dict[int, StoredJob] = {}
        self._by_name: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<ProjectJobs project={self.project_id} jobs={len(self._by_id)}>"

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, job_id: int) -> StoredJob | None:
        return self._by_id.get(job_id)

    def job_id_of(self, name: str) -> int | None:
        return self._by_name.get(name)

    def names(self) -> dict[str, int]:
        """name -> job ID of every job, what `/_sim/projects/{id}/jobs` answers."""
        return dict(self._by_name)

    def jobs(self) -> list[StoredJob]:
        return list(self._by_id.values())  # insertion order is ID order: IDs only grow

    def unknown(self, job_ids: Iterable[int]) -> list[int]:
        """Like `JobCatalogue.unknown`: the IDs that do not exist here, sorted, without repeats."""
        return sorted({job_id for job_id in job_ids if job_id not in self._by_id})

    def document(self, job_id: int) -> dict[str, Any]:
        """What an export ZIP holds for the job: its detail plus its tags (`job_fields.job_document`)."""
        job = self._by_id[job_id]
        return {**job.detail, "tags": [{"key": key, "value": value} for key, value in job.tags]}

    def create(self, job_id: int, document: Mapping[str, Any]) -> StoredJob:
        job = StoredJob(_draft(job_id, self.project_id, document), _IMPORTER, _tags_of(document))
        self._by_id[job_id] = job
        self._by_name[job.name] = job_id
        return job

    def cover(self, job_id: int, document: Mapping[str, Any]) -> None:
        """Overwrite a job's content, keeping its ID and creation time (DLI's `is_cover`)."""
        old = self._by_id[job_id]
        job = StoredJob(_draft(job_id, self.project_id, document), old.user_name, _tags_of(document))
        job.detail["create_time"] = old.detail["create_time"]
        job.detail["update_time"] = max(int(time.time() * 1000), old.detail["update_time"] + 1)
        self._by_id[job_id] = job

    def page(self, query: ListQuery) -> tuple[int, list[StoredJob]]:
        """(total matching, the requested page in the requested order), like `JobCatalogue.page`."""
        selected = [job for job in self._by_id.values() if job.matches(query.filter)]
        if query.descending:
            selected.reverse()
        return len(selected), selected[query.offset : query.offset + query.limit]


class TargetProjects:
    """Every target project of this simulator and the one counter their new job IDs come from."""

    __slots__ = ("_existing", "_next_id", "_projects")

    def __init__(self, project_ids: Iterable[str], existing_names: Mapping[str, Sequence[str]]) -> None:
        self._projects = {project_id: ProjectJobs(project_id) for project_id in sorted(project_ids)}
        self._existing = {project: tuple(names) for project, names in existing_names.items()}
        self._next_id = FIRST_NEW_ID
        self.reset()

    def __repr__(self) -> str:
        return f"<TargetProjects {list(self._projects.values())!r} next_id={self._next_id}>"

    def __contains__(self, project_id: object) -> bool:
        return project_id in self._projects

    def get(self, project_id: str) -> ProjectJobs | None:
        return self._projects.get(project_id)

    def reset(self) -> None:
        """Back to the start: empty projects, the seeded names again, the counter at FIRST_NEW_ID."""
        self._next_id = FIRST_NEW_ID
        for project_id in list(self._projects):
            project = self._projects[project_id] = ProjectJobs(project_id)
            for name in self._existing.get(project_id, ()):
                project.create(self._new_id(), {"name": name, "desc": "seeded by sim_existing_names"})

    def import_document(
        self, project_id: str, document: Mapping[str, Any], *, is_cover: bool
    ) -> ImportOutcome:
        """Apply one job document of an import; `document` has an int `job_id` and a str `name`."""
        project = self._projects[project_id]
        old_job_id = int(document["job_id"])
        existing = project.job_id_of(str(document["name"]))
        if existing is None:
            job = project.create(self._new_id(), document)
            return ImportOutcome(old_job_id, job.job_id, ImportKind.CREATED)
        if is_cover:
            project.cover(existing, document)
            return ImportOutcome(old_job_id, existing, ImportKind.COVERED)
        return ImportOutcome(old_job_id, -1, ImportKind.CONFLICT)

    def _new_id(self) -> int:
        job_id, self._next_id = self._next_id, self._next_id + 1
        return job_id

"""What a simulated job looks like: every attribute and document follows from the job ID alone.

Nothing is stored per job: type, status, queue, owner, tags and name are arithmetic on the ID, and the
listing entries and export documents are built from them in DLI's shapes (listing_jobs.rst).

The rules (IDs count from 1):
- `job_type`: `flink_jar_job` when ID % 4 == 0, else `flink_sql_job`
- `status`: `STATUS_CYCLE[ID % 11]` (mostly `job_running`)
- `queue_name`: `queue_1`, `queue_2`, `queue_3` by ID % 3
- `user_name`: `USERS[ID % 5]`
- tags: `team=data` (even ID) or `team=ops` (odd), `env=test` when ID % 7 == 0 else `env=prod`
- `name`: `{WORDS[ID % 7]}_{ID}`, e.g. `aggregate_100`
- `create_time`: 2023-11-14T22:13:20Z plus one minute per ID, so "by time" order is ID order
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "JOB_TYPES",
    "job_detail",
    "job_document",
    "job_name",
    "job_queue",
    "job_status",
    "job_summary",
    "job_tags",
    "job_type",
    "job_user",
]

JOB_TYPES = ("flink_sql_job", "flink_jar_job")
STATUS_CYCLE = (
    "job_running",
    "job_running",
    "job_running",
    "job_init",
    "job_cancel_success",
    "job_running_exception",
    "job_submit_fail",
    "job_finish",
    "job_idle",
    "job_savepointing",
    "job_canceling",
)
QUEUES = ("queue_1", "queue_2", "queue_3")
USERS = ("alice", "bob", "carol", "dave", "erin")
WORDS = ("aggregate", "clickstream", "orders", "payments", "inventory", "sessions", "alerts")
_EPOCH_MS = 1_700_000_000_000


def job_type(job_id: int) -> str:
    return JOB_TYPES[1] if job_id % 4 == 0 else JOB_TYPES[0]


def job_status(job_id: int) -> str:
    return STATUS_CYCLE[job_id % len(STATUS_CYCLE)]


def job_queue(job_id: int) -> str:
    return QUEUES[job_id % len(QUEUES)]


def job_user(job_id: int) -> str:
    return USERS[job_id % len(USERS)]


def job_tags(job_id: int) -> tuple[tuple[str, str], ...]:
    return (("team", "data" if job_id % 2 == 0 else "ops"), ("env", "test" if job_id % 7 == 0 else "prod"))


def job_name(job_id: int) -> str:
    return f"{WORDS[job_id % len(WORDS)]}_{job_id}"


def _create_time(job_id: int) -> int:
    return _EPOCH_MS + job_id * 60_000


def job_summary(job_id: int) -> dict[str, Any]:
    """One entry of the listing with `show_detail=false` (Table 5 of listing_jobs.rst)."""
    status = job_status(job_id)
    created = _create_time(job_id)
    started = created + 5_000 if status != "job_init" else 0
    return {
        "job_id": job_id,
        "name": job_name(job_id),
        "desc": f"simulated {job_type(job_id)} {job_id}",
        "user_name": job_user(job_id),
        "job_type": job_type(job_id),
        "status": status,
        "status_desc": "",
        "create_time": created,
        "start_time": started,
        "duration": 3_600_000 if started else 0,
        "root_id": -1,
        "graph_editor_enabled": False,
        "has_savepoint": status == "job_savepointing",
        "queue_name": job_queue(job_id),
        "edge_group_ids": [],
        "restart_times": 0,
        "savepoint_path": "",
    }


def job_detail(job_id: int, project_id: str) -> dict[str, Any]:
    """One entry of the listing with `show_detail=true`: the summary without the summary-only fields,
    plus the detail-only ones."""
    entry = job_summary(job_id)
    for summary_only in ("user_name", "duration", "root_id"):
        del entry[summary_only]
    is_jar = job_type(job_id) == JOB_TYPES[1]
    entry.update(
        user_id=f"user{job_id % len(USERS):032d}",
        project_id=project_id,
        sql_body="" if is_jar else f"INSERT INTO sink_{job_id} SELECT * FROM source_{job_id};",  # noqa: S608
        run_mode="exclusive_cluster",
        main_class=f"com.example.Job{job_id}" if is_jar else "",
        entrypoint_args="",
        execution_graph="",
        update_time=entry["create_time"] + 60_000,
        job_config={
            "checkpoint_enabled": False,
            "checkpoint_mode": "exactly_once",
            "checkpoint_interval": 10,
            "log_enabled": False,
            "root_id": -1,
            "manager_cu_number": 1,
            "cu_number": 2,
            "parallel_number": 1,
            "restart_when_exception": False,
            "dirty_data_strategy": "0",
            "executor_number": 1,
            "executor_cu_number": 1,
            "resume_checkpoint": False,
            "graph_editor_enabled": False,
            "resume_max_num": -1,
        },
    )
    return entry


def job_document(job_id: int, project_id: str) -> dict[str, Any]:
    """What the export ZIP holds for one job: its detail plus its tags."""
    document = job_detail(job_id, project_id)
    document["tags"] = [{"key": key, "value": value} for key, value in job_tags(job_id)]
    return document

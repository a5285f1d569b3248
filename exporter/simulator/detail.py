"""`GET /v1.0/{project_id}/streaming/jobs/{job_id}`: one job's details, as DLI's "Querying Job Details".

The answer (dli_02_0235): `{"is_success": "true", "message": "...", "job_detail": {...}}`, `is_success` a
string as in the page's examples, and `job_detail` the listing's `show_detail=true` entry (job_id, name,
desc, job_type, status, status_desc, create_time, start_time, user_id, queue_name, project_id, sql_body,
run_mode, job_config, main_class, entrypoint_args, execution_graph, update_time, ...).

An unknown job is NOT a 404: DLI answers 400 with error code DLI.16001 (the Huawei Terraform provider
turns exactly that code into "gone" when it reads a Flink job), which is why a client must treat it as
"does not exist" rather than as a bad request. Static projects answer from the catalogue; target projects
(`projects.py`) from what imports and seeds stored there.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from exporter.simulator.answers import DliFailure, json_response
from exporter.simulator.job_fields import job_detail
from exporter.simulator.state import STATE, SimulatorState

__all__ = ["UNKNOWN_JOB_CODE", "show_job"]

UNKNOWN_JOB_CODE = "DLI.16001"


async def show_job(request: web.Request) -> web.Response:
    """GET /v1.0/{project_id}/streaming/jobs/{job_id} (the route admits digits only)."""
    state = request.app[STATE]
    project_id = request.match_info["project_id"]
    job_id = int(request.match_info["job_id"])
    detail = _detail(state, project_id, job_id)
    if detail is None:
        raise DliFailure(400, UNKNOWN_JOB_CODE, f"The job does not exist: {job_id}.")
    return json_response(
        200, {"is_success": "true", "message": "Job detail query succeeds.", "job_detail": detail}
    )


def _detail(state: SimulatorState, project_id: str, job_id: int) -> dict[str, Any] | None:
    target = state.targets.get(project_id)
    if target is None:
        return job_detail(job_id, project_id) if job_id in state.catalogue else None
    stored = target.get(job_id)
    return dict(stored.detail) if stored is not None else None

"""`GET /v1.0/{project_id}/streaming/jobs`: the catalogue, paged and filtered like listing_jobs.rst."""

from __future__ import annotations

from aiohttp import web

from exporter.simulator.answers import DliFailure, bad_request, json_response
from exporter.simulator.job_fields import job_detail, job_summary
from exporter.simulator.jobs import parse_list_query
from exporter.simulator.state import STATE

__all__ = ["list_jobs"]


async def list_jobs(request: web.Request) -> web.Response:
    """GET /v1.0/{project_id}/streaming/jobs: paged, filtered; `is_success` is the string the docs show.

    With the `list_error` knob set, every call answers that error instead (before the query is checked).
    """
    state = request.app[STATE]
    fixed = state.knobs.list_failure
    if fixed is not None:
        state.stats.faults["list_error"] += 1
        raise DliFailure(*fixed, is_success=state.failure_flag(listing=True))
    try:
        query = parse_list_query(request.query.items())
    except ValueError as error:
        raise bad_request(str(error)) from None
    total, job_ids = state.catalogue.page(query)
    project_id = request.match_info["project_id"]  # every served project has the same catalogue
    jobs = (
        [job_detail(job_id, project_id) for job_id in job_ids]
        if query.show_detail
        else [job_summary(job_id) for job_id in job_ids]
    )
    return json_response(
        200,
        {
            "is_success": "true",
            "message": "Querying of the job list succeeds.",
            "job_list": {"total_count": total, "jobs": jobs},
        },
    )

"""`GET /v1.0/{project_id}/streaming/jobs`: the jobs, paged and filtered like listing_jobs.rst.

Static projects list the catalogue; target projects (`projects.py`) what imports and seeds put there, with
the same filters (`name` a case-insensitive substring: `orders_1` also finds `orders_10`, so a client
looking for one name must compare names itself) and the same paging and order (by creation time).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from exporter.simulator.answers import DliFailure, bad_request, json_response
from exporter.simulator.job_fields import job_detail, job_summary
from exporter.simulator.jobs import ListQuery, parse_list_query
from exporter.simulator.state import STATE, SimulatorState

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
    total, jobs = _page(state, request.match_info["project_id"], query)
    return json_response(
        200,
        {
            "is_success": "true",
            "message": "Querying of the job list succeeds.",
            "job_list": {"total_count": total, "jobs": jobs},
        },
    )


def _page(state: SimulatorState, project_id: str, query: ListQuery) -> tuple[int, list[dict[str, Any]]]:
    """(total, entries of the page): every static project has the same catalogue; targets their own."""
    target = state.targets.get(project_id)
    if target is not None:
        total, stored = target.page(query)
        return total, [dict(job.detail) if query.show_detail else job.summary() for job in stored]
    total, job_ids = state.catalogue.page(query)
    if query.show_detail:
        return total, [job_detail(job_id, project_id) for job_id in job_ids]
    return total, [job_summary(job_id) for job_id in job_ids]

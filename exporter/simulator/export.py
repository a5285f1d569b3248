"""`POST /v1.0/{project_id}/streaming/jobs/export`: one real ZIP per call, written into the S3 server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from exporter.simulator.answers import DliFailure, bad_request, json_response
from exporter.simulator.bodies import json_object, obs_location
from exporter.simulator.job_fields import job_document, job_name
from exporter.simulator.jobs import JobFilter
from exporter.simulator.state import STATE, SimulatorState
from exporter.simulator.store import deliver
from exporter.simulator.zips import build_zip, zip_key

__all__ = ["export_jobs"]

_MISSING_IDS_NAMED = 100
_INLINE_ZIP_JOBS = 1000


async def export_jobs(request: web.Request) -> web.Response:
    """POST /v1.0/{project_id}/streaming/jobs/export: one ZIP per call, `bucket/key` in `zip_file`.

    With the `export_error` knob set, every call answers that error instead (before reading the body).
    Every static project has the same catalogue; the job documents name the project of the path. A
    target project exports the jobs imports and seeds stored there (`projects.py`).
    """
    state = request.app[STATE]
    fixed = state.knobs.export_failure
    if fixed is not None:
        state.stats.faults["export_error"] += 1
        raise DliFailure(*fixed, is_success=state.failure_flag(listing=False))
    payload = json_object(await request.read())
    bucket, prefix = obs_location(payload.get("obs_dir"), "obs_dir")
    project_id = request.match_info["project_id"]  # the gateway let only served projects through
    source = _source(state, project_id)
    job_ids = _job_ids(source, payload)
    with state.stats.exporting(project_id, job_ids):
        data = await _zip_of(job_ids, source.document)
        key = zip_key(prefix, source.name(job_ids[0]), state.millis.next())
        await deliver(state, bucket, key, data)
    state.stats.record_export(project_id, job_ids)
    return json_response(
        200,
        {
            "is_success": state.success_flag(),
            "message": "The job is exported successfully.",
            "zip_file": [f"{bucket}/{key}"],
        },
    )


@dataclass(frozen=True, slots=True)
class _Source:
    """Where an export's jobs come from: the static catalogue or a target project's store."""

    every: Callable[[], list[int]]
    unknown: Callable[[list[int]], list[int]]
    document: Callable[[int], dict[str, Any]]
    name: Callable[[int], str]


def _source(state: SimulatorState, project_id: str) -> _Source:
    target = state.targets.get(project_id)
    if target is not None:
        return _Source(
            lambda: [job.job_id for job in target.jobs()],
            target.unknown,
            target.document,
            lambda job_id: str(target.document(job_id)["name"]),
        )
    catalogue = state.catalogue
    return _Source(
        lambda: list(catalogue.select(JobFilter())),
        catalogue.unknown,
        lambda job_id: job_document(job_id, project_id),
        job_name,
    )


def _job_ids(source: _Source, payload: dict[str, Any]) -> list[int]:
    """The selected IDs (all known), or every job when `is_selected` is false."""
    selected = _selected_ids(payload)
    if selected is None:
        job_ids = source.every()
        if not job_ids:
            raise DliFailure(400, "DLI.0002", "There are no jobs to export.")
        return job_ids
    _refuse_unknown(source, selected)
    return selected


def _selected_ids(payload: dict[str, Any]) -> list[int] | None:
    """The IDs to export, first-seen order without repeats; None when `is_selected` is false."""
    is_selected = payload.get("is_selected")
    if not isinstance(is_selected, bool):
        raise bad_request("Parameter is_selected is required and must be true or false.")
    if not is_selected:
        return None
    selected = payload.get("job_selected")
    if not isinstance(selected, list) or not selected:
        raise bad_request("Parameter job_selected is mandatory when is_selected is true.")
    if not all(type(job_id) is int and job_id > 0 for job_id in selected):
        raise bad_request("Parameter job_selected must hold job IDs (positive integers).")
    return list(dict.fromkeys(selected))


def _refuse_unknown(source: _Source, job_ids: list[int]) -> None:
    unknown = source.unknown(job_ids)
    if unknown:
        named = ", ".join(str(job_id) for job_id in unknown[:_MISSING_IDS_NAMED])
        more = f" and {len(unknown) - _MISSING_IDS_NAMED} more" if len(unknown) > _MISSING_IDS_NAMED else ""
        raise DliFailure(400, "DLI.0002", f"The following jobs do not exist: {named}{more}.")


async def _zip_of(job_ids: list[int], document: Callable[[int], dict[str, Any]]) -> bytes:
    """Small ZIPs are built in line (cheapest); big ones in a thread so the server keeps answering."""
    if len(job_ids) <= _INLINE_ZIP_JOBS:
        return build_zip(job_ids, document)
    return await asyncio.to_thread(build_zip, job_ids, document)

"""`POST /v1.0/{project_id}/streaming/jobs/import`: reads exported ZIPs back and maps old to new IDs.

Into a TARGET project (`sim_target_projects`) the import is real (`projects.py`): a new name creates a
job with a new ID ("Job successfully created"), an existing name keeps its ID with `is_cover` ("Job
successfully covered") and maps to -1 without it ("A job with the same name already exists"). The IDs
of `job_mapping` are strings, as the API page's example shows, unless `import_ids_as_strings` is off.
Every document is read and checked before the first is applied, so a refused import changes nothing.

Into a STATIC project the catalogue cannot change, so the answer is what it always was: the mapping as
if applied (an ID in the catalogue maps to itself or -1, any other "created" with its own ID), numbers
as IDs, nothing stored.

Faults, and whether the work happened (see `gateway`): throttling, 401, 404 and the before-work faults
(500, 503, HTML 502, `p_reset`, `is_success: false`) answer before anything is read or applied; so does
`import_error`, after authentication. A `timeout` sleeps and then APPLIES the import (the client has
usually given up); `malformed` applies it and truncates the answer; `p_import_lost` applies it and then
resets the connection instead of answering: the exporter must find out what happened by listing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from exporter.simulator.answers import DliFailure, bad_request, json_response, reset_connection
from exporter.simulator.bodies import json_object, obs_location
from exporter.simulator.import_source import read_documents
from exporter.simulator.jobs import JobCatalogue
from exporter.simulator.projects import ImportOutcome
from exporter.simulator.state import STATE, SimulatorState

__all__ = ["import_jobs"]


async def import_jobs(request: web.Request) -> web.Response:
    """POST /v1.0/{project_id}/streaming/jobs/import: apply the ZIP(s), answer the job mapping."""
    state = request.app[STATE]
    fixed = state.knobs.import_failure
    if fixed is not None:
        state.stats.faults["import_error"] += 1
        raise DliFailure(*fixed, is_success=state.failure_flag(listing=False))
    payload = json_object(await request.read())
    bucket, key = obs_location(payload.get("zip_file"), "zip_file")
    is_cover = payload.get("is_cover", False)
    if not isinstance(is_cover, bool):
        raise bad_request("Parameter is_cover must be true or false.")
    documents = await read_documents(state, bucket, key)
    mapping = _apply(state, request.match_info["project_id"], documents, is_cover=is_cover)
    if _answer_lost(state):
        state.stats.imports_lost += 1
        state.stats.faults["import_lost"] += 1
        return reset_connection(request)
    return json_response(
        200,
        {
            "is_success": state.success_flag(),
            "message": "The job is successfully imported.",
            "job_mapping": mapping,
        },
    )


def _apply(
    state: SimulatorState, project_id: str, documents: list[dict[str, Any]], *, is_cover: bool
) -> list[dict[str, Any]]:
    """Import the documents into the project; the `job_mapping` entries, in document order."""
    if project_id not in state.targets:
        state.stats.record_import([])
        return [_static_mapping(state.catalogue, doc["job_id"], is_cover=is_cover) for doc in documents]
    outcomes = [state.targets.import_document(project_id, doc, is_cover=is_cover) for doc in documents]
    state.stats.record_import(outcomes)
    as_strings = state.knobs.import_ids_as_strings
    return [_mapping(outcome, as_strings=as_strings) for outcome in outcomes]


def _mapping(outcome: ImportOutcome, *, as_strings: bool) -> dict[str, Any]:
    old, new = outcome.old_job_id, outcome.new_job_id
    return {
        "old_job_id": str(old) if as_strings else old,
        "new_job_id": str(new) if as_strings else new,
        "remark": outcome.remark,
    }


def _static_mapping(catalogue: JobCatalogue, job_id: int, *, is_cover: bool) -> dict[str, Any]:
    if job_id not in catalogue:
        return {"old_job_id": job_id, "new_job_id": job_id, "remark": "Job successfully created"}
    if is_cover:
        return {"old_job_id": job_id, "new_job_id": job_id, "remark": "Job successfully covered"}
    return {"old_job_id": job_id, "new_job_id": -1, "remark": "A job with the same name already exists"}


def _answer_lost(state: SimulatorState) -> bool:
    """One roll of `p_import_lost` for an import that was applied (no roll while it is 0)."""
    probability = state.knobs.p_import_lost
    return probability > 0 and state.rng.random() < probability

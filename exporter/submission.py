"""Accepting a validated batch: shared by `submit`, `POST /batches`, the demo and the tests.

Explicit job IDs are planned here, in the submitting process, through the pipeline's one planning
function, and written to the ledger before the message is queued; the message then carries no IDs
(`planned: true`). A million-ID batch therefore never passes through the daemon's memory as one list,
and the plan cannot drift between deliveries. `--all` selections are planned by the worker, which can page
through DLI's listing.

The batch ID is an idempotency key: the same content again is a quiet success (`False`, nothing queued);
other content under an ID accepted before is refused with `Conflict`, saying what differs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import structlog

from exporter import metrics
from exporter.clock import SystemClock
from exporter.errors import Conflict
from exporter.models import BatchInfo, BatchRequest
from exporter.pipeline import record_plan
from exporter.ports import BatchQueue, Clock, Ledger

__all__ = ["request_identity", "submit_batch"]

log = structlog.get_logger("exporter.submission")


async def submit_batch(
    queue: BatchQueue, request: BatchRequest, ledger: Ledger | None = None, clock: Clock | None = None
) -> bool:
    """Plan (when given a ledger and explicit IDs) and queue a request; False when already accepted.

    The plan is written first and is idempotent, so a submitter that dies between the two steps is
    simply run again with the same batch ID. `Conflict` when the ID was accepted with other content.
    """
    identity = request_identity(request)
    message = request
    if ledger is not None and request.job_ids:
        now = (clock or SystemClock()).time()
        if not await record_plan(ledger, request, request.job_ids, now):
            _check_plan(request, await ledger.get_batch(request.batch_id))
        message = request.model_copy(update={"job_ids": None, "planned": True, "jobs": len(request.job_ids)})
    put = await queue.put(request.batch_id, message.model_dump_json(exclude_none=True), _dump(identity))
    if not put.accepted:
        _check_identity(request.batch_id, identity, put.identity)
    elif request.duplicates_dropped:
        metrics.DUPLICATE_IDS.inc(request.duplicates_dropped)
    log.info(
        "batch.submitted" if put.accepted else "batch.submit.duplicate",
        batch_id=request.batch_id,
        jobs=len(request.job_ids or ()),
        duplicates_dropped=request.duplicates_dropped,
        planned=message.planned,
    )
    return put.accepted


def request_identity(request: BatchRequest) -> dict[str, Any]:
    """What makes two submissions of one batch ID the same batch: compared on a repeated submit.

    Explicit IDs are compared by count and a digest, so a million-ID selection costs 64 bytes to keep.
    """
    selection: dict[str, Any]
    if request.select_all:
        filters = request.filters.model_dump(exclude_none=True) if request.filters else {}
        selection = {"select_all": True, "filters": filters}
    else:
        ids = request.job_ids or []
        digest = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()
        selection = {"job_ids": len(ids), "job_ids_sha256": digest}
    identity: dict[str, Any] = {
        "project_id": request.project_id,
        "obs_dir": request.obs_dir,
        "chunk_size": request.chunk_size,
        **selection,
    }
    if request.region is not None:  # only when set: identities recorded before regions stay equal
        identity["region"] = request.region.model_dump(mode="json")
    if request.migration is not None:
        identity["migration"] = request.migration.model_dump(mode="json")
    return identity


def _dump(identity: dict[str, Any]) -> str:
    return json.dumps(identity, sort_keys=True, separators=(",", ":"))


def _check_identity(batch_id: str, identity: dict[str, Any], earlier: str | None) -> None:
    """Refuse a reused batch ID whose recorded identity differs (records from before identities pass)."""
    if not earlier:
        return
    differences = describe_differences(json.loads(earlier), identity)
    if differences:
        raise Conflict(_conflict_text(batch_id, differences))


def _check_plan(request: BatchRequest, existing: BatchInfo | None) -> None:
    """The ledger holds a plan for this ID already (a submit that died before queueing): same content?"""
    if existing is None:
        return
    before: dict[str, Any] = {"project_id": existing.project_id, "obs_dir": existing.obs_dir}
    before |= {"chunk_size": existing.chunk_size, "job_ids": existing.totals.jobs}
    now: dict[str, Any] = {"project_id": request.project_id, "obs_dir": request.obs_dir}
    now |= {"chunk_size": request.chunk_size, "job_ids": len(request.job_ids or ())}
    differences = describe_differences(before, now)
    if differences:
        raise Conflict(_conflict_text(request.batch_id, differences))


def describe_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: old → new` for each key whose value changed (digests are named, not shown)."""
    out = []
    for key in sorted(before.keys() | now.keys()):
        old, new = before.get(key), now.get(key)
        if old == new:
            continue
        if key.endswith("sha256"):
            out.append("the job IDs differ")
        else:
            out.append(f"{key}: {_show(old)} before, {_show(new)} now")
    return out


def _show(value: Any) -> str:
    return "none" if value is None else json.dumps(value, sort_keys=True)


def _conflict_text(batch_id: str, differences: list[str]) -> str:
    return (
        f"batch ID {batch_id!r} was accepted before with other content ({'; '.join(differences)}); "
        "submit the same content again, or choose a new --batch-id"
    )

"""Expanding a validated campaign into one BatchRequest per (region, project).

Pure apart from reading the targets' ID files: the same file (and the same discovered projects) always
gives the same plan with the same batch IDs, which is what makes submitting a campaign twice harmless.
Every problem of every target is collected and raised as one CampaignError: a plan is all or nothing, so
a campaign never starts half-submitted because one of forty targets had a typo.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.campaign.destinations import campaign_routes, plan_destination, regions_in_use
from exporter.campaign.profiles import check_profiles, with_profile
from exporter.campaign.spec import (
    OBS_PLACEHOLDERS,
    CampaignError,
    CampaignSpec,
    Problems,
    TargetSpec,
    placeholders,
    read_ids_file,
    render,
)
from exporter.errors import InvalidInput
from exporter.intake import FILTER_FLAGS, build_request, parse_tags
from exporter.models import BatchRequest, ListFilters
from exporter.routes import RegionRoute, check_region_name
from exporter.rules import check_obs_dir, check_project_id

__all__ = ["CAMPAIGN_ID", "OBS_PLACEHOLDERS", "CampaignPlan", "PlanDefaults", "plan_campaign"]

CAMPAIGN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_MAX_BATCH_ID = 128
_STAND_IN_ID = "campaign"  # lets the targets be checked while the campaign ID itself is the problem


@dataclass(frozen=True)
class PlanDefaults:
    """The settings a campaign falls back on (EXPORTER_CHUNK_SIZE, the endpoint templates, ...)."""

    chunk_size: int
    dli_endpoint_template: str
    obs_endpoint_template: str
    max_jobs: int
    profiles: frozenset[str] | None = None  # the credential profiles routes may name; None: not checked


@dataclass(frozen=True)
class CampaignPlan:
    """The batches of a campaign, in the file's order (discovered projects last), and their routes."""

    campaign_id: str
    requests: list[BatchRequest]
    regions: dict[str, RegionRoute]


@dataclass(frozen=True)
class _Context:
    campaign_id: str
    spec: CampaignSpec
    routes: Mapping[str, RegionRoute | None]  # None: its endpoints could not be derived (reported once)
    base_dir: Path | None
    defaults: PlanDefaults


def _choose_id(given: str | None, in_file: str | None, digest_of: str | None) -> str | None:
    """The argument, else the file's ID, else one derived from the file's bytes (stable across runs)."""
    if given is not None:
        return given
    if in_file is not None:
        return in_file
    return f"c-{digest_of[:12].lower()}" if digest_of else None


def _campaign_id(candidate: str | None, problems: Problems) -> str:
    if candidate is None:
        problems.add("", "campaign_id missing: set campaign_id in the campaign or pass --campaign-id")
        return _STAND_IN_ID
    if not CAMPAIGN_ID.fullmatch(candidate):
        rule = "1 to 64 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
        problems.add("campaign_id", f"{candidate!r} must be {rule}")
        return _STAND_IN_ID
    return candidate


def _targets(spec: CampaignSpec, discovered: Sequence[tuple[str, str]]) -> list[tuple[str, TargetSpec]]:
    """The file's targets, then each discovered project the file has no target for (the file's wins)."""
    labelled = [(f"targets[{index}]", target) for index, target in enumerate(spec.targets)]
    seen = {(target.region, target.project_id) for target in spec.targets}
    for index, (region, project_id) in enumerate(discovered):
        if (region, project_id) not in seen:
            seen.add((region, project_id))
            labelled.append(
                (f"discovered[{index}]", TargetSpec(region=region, project_id=project_id, all=True))
            )
    return labelled


def _listing(label: str, target: TargetSpec, problems: Problems) -> dict[str, Any] | None:
    """`all = true`: the listing filters, with tags in the `k=v,k2=v2` form `--tag` flags make."""
    try:
        tags = parse_tags(target.tags or ())
    except InvalidInput as error:
        problems.add(f"{label}.tags", str(error))
        return None
    filters = ListFilters(tags=tags, **{key: getattr(target, key) for key in FILTER_FLAGS})
    return {"job_ids": None, "select_all": True, "filters": filters.model_dump()}


def _explicit_ids(label: str, target: TargetSpec, ctx: _Context, problems: Problems) -> dict[str, Any] | None:
    """`job_ids` or `job_ids_file`: non-empty and within the per-batch limit."""
    if target.job_ids is not None:
        where, ids = f"{label}.job_ids", list(target.job_ids)
    else:
        where = f"{label}.job_ids_file"
        try:
            ids = read_ids_file(ctx.base_dir, target.job_ids_file or "")
        except ValueError as error:
            problems.add(where, str(error))
            return None
    if not ids:
        problems.add(where, "job_ids is empty: give at least one job ID")
    elif (count := len(set(ids))) > ctx.defaults.max_jobs:
        limit = f"the limit of {ctx.defaults.max_jobs} per batch (EXPORTER_MAX_JOBS_PER_BATCH)"
        problems.add(where, f"{count} job IDs, more than {limit}")
    else:
        return {"job_ids": ids, "select_all": False, "filters": None}
    return None


def _selection(label: str, target: TargetSpec, ctx: _Context, problems: Problems) -> dict[str, Any] | None:
    given = {"job_ids": target.job_ids is not None, "job_ids_file": target.job_ids_file is not None}
    chosen = [name for name, present in given.items() if present] + (["all = true"] if target.all else [])
    if not chosen:
        problems.add(label, "no selection: give job_ids, job_ids_file or all = true")
        return None
    if len(chosen) > 1:
        count = "two" if len(chosen) == 2 else "three"
        problems.add(label, f"{count} selections: {', '.join(chosen)}; give only one")
        return None
    filters = target.filters_given()
    if filters and not target.all:
        problems.add(label, f"{', '.join(filters)} apply only with all = true")
        return None
    return _listing(label, target, problems) if target.all else _explicit_ids(label, target, ctx, problems)


def _obs_dir(label: str, target: TargetSpec, ctx: _Context, problems: Problems) -> str | None:
    """The target's obs_dir, else the campaign's, with its placeholders filled in and checked."""
    where = f"{label}.obs_dir"
    template = target.obs_dir if target.obs_dir is not None else ctx.spec.obs_dir
    if template is None:
        problems.add(where, "no obs_dir: give this target one, or set obs_dir for the whole campaign")
        return None
    try:
        names = placeholders(template, OBS_PLACEHOLDERS, "obs_dir")
    except ValueError as error:  # the campaign's own obs_dir is reported once, under its own key
        problems.add(where if target.obs_dir is not None else "obs_dir", str(error))
        return None
    if "region" in names and target.region is None:
        problems.add(
            where,
            f"{template!r} uses {{region}} but this target has no region: give the target a region "
            "or its own obs_dir",
        )
        return None
    values = {"region": target.region or "", "project_id": target.project_id, "campaign_id": ctx.campaign_id}
    rendered = render(template, values)
    try:
        return check_obs_dir(rendered)
    except ValueError as error:
        problems.add(where, f"{error} (from {template!r})" if names else str(error))
        return None


def _identity(label: str, target: TargetSpec, problems: Problems) -> bool:
    """Whether the project ID and the region name are valid (each bad one is a problem)."""
    ok = True
    for key, check in (("project_id", check_project_id), ("region", check_region_name)):
        value = getattr(target, key)
        try:
            if value is not None:
                check(value)
        except ValueError as error:
            problems.add(f"{label}.{key}", str(error))
            ok = False
    return ok


def _plan_target(label: str, target: TargetSpec, ctx: _Context, problems: Problems) -> BatchRequest | None:
    valid = _identity(label, target, problems)
    route = ctx.routes.get(target.region) if target.region is not None else None
    selection = _selection(label, target, ctx, problems)
    obs_dir = _obs_dir(label, target, ctx, problems) if valid else None
    migration = plan_destination(label, target, ctx.campaign_id, ctx.routes, problems)
    if selection is None or obs_dir is None or (target.import_to is not None and migration is None):
        return None
    if target.region is not None and route is None:
        return None  # a region without a route was reported under regions.NAME
    batch_id = f"{ctx.campaign_id}.{target.region or 'default'}.{target.project_id}"
    if len(batch_id) > _MAX_BATCH_ID:
        problems.add(
            label, f"batch ID {batch_id!r} is longer than {_MAX_BATCH_ID}; use a shorter campaign_id"
        )
        return None
    sizes = (target.chunk_size, ctx.spec.chunk_size, ctx.defaults.chunk_size)
    data = {"batch_id": batch_id, "project_id": target.project_id, "obs_dir": obs_dir, **selection}
    data |= {
        "chunk_size": next(s for s in sizes if s is not None),
        "campaign": ctx.campaign_id,
        "region": with_profile(route, target.credentials),
        "migration": migration,
    }
    try:
        return build_request(data, max_jobs=ctx.defaults.max_jobs)
    except InvalidInput as error:
        problems.add(label, str(error))
        return None


def _plan_targets(
    labelled: Sequence[tuple[str, TargetSpec]], ctx: _Context, problems: Problems
) -> list[BatchRequest]:
    """Every target's request, refusing two targets (or two batch IDs) for one region and project."""
    pairs: dict[tuple[str | None, str], str] = {}
    batch_ids: dict[str, str] = {}
    requests = []
    for label, target in labelled:
        first = pairs.setdefault((target.region, target.project_id), label)
        if first != label:
            where = f"region {target.region}" if target.region is not None else "no region"
            problems.add(
                label, f"two targets for {where} and project {target.project_id} ({first} and {label})"
            )
        request = _plan_target(label, target, ctx, problems)
        if request is None:
            continue
        other = batch_ids.setdefault(request.batch_id, label)
        if other != label and first == label:
            problems.add(label, f"batch ID {request.batch_id} is also the batch ID of {other}")
        requests.append(request)
    return requests


def plan_campaign(
    spec: CampaignSpec,
    *,
    source: str,
    base_dir: Path | None,
    defaults: PlanDefaults,
    campaign_id: str | None = None,
    discovered: Sequence[tuple[str, str]] = (),
    digest_of: str | None = None,
) -> CampaignPlan:
    """The campaign's batch requests, or one CampaignError listing every problem of every target.

    `base_dir` is where `job_ids_file` paths are relative to (None refuses them: a JSON body has no
    directory); `discovered` are (region, project_id) pairs to export whole; `digest_of` (the sha256 of
    the file) names a campaign that has no ID of its own, so the same file always gets the same ID.
    """
    problems = Problems(source)
    cid = _campaign_id(_choose_id(campaign_id, spec.campaign_id, digest_of), problems)
    labelled = _targets(spec, discovered)
    if not labelled:
        problems.add("targets", "no targets: add a [[targets]] table, or discover projects")
    routes = campaign_routes(spec, labelled, defaults, problems)
    check_profiles(spec, labelled, defaults.profiles, problems)
    ctx = _Context(cid, spec, routes, base_dir, defaults)
    requests = _plan_targets(labelled, ctx, problems)
    if problems.items:
        raise CampaignError(problems.items)
    return CampaignPlan(campaign_id=cid, requests=requests, regions=regions_in_use(requests))

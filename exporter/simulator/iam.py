"""`GET /v3/projects`: IAM's project listing (KeystoneListProjects), so campaigns can discover projects.

Why the DLI simulator serves it: a campaign across regions asks IAM which projects the account has (one
per region, named after it, plus sub-projects named `region_name`) and exports each; with the listing
here, that discovery runs against this machine too. The answer has Huawei IAM's shape, links included,
and the global pseudo-project `MOS` (not a region) is listed like the real account lists it, so clients
must skip it. Query: `name`, `enabled`, and `page` (from 1) with `per_page` (1..5000), which IAM only
accepts together; without them every project is answered.

Authentication is the DLI APIs' (`auth.py`, answering IAM's 401 code); a request scoped to a project
(X-Project-Id) is refused 403, as IAM refuses a project-scoped caller its global APIs. IAM is a global
service, so this route is neither throttled by the region's gateway window nor faulted by the dice; only
the `iam_error` knob makes it fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from yarl import URL

from exporter.simulator.answers import DliFailure, json_response
from exporter.simulator.auth import authenticate
from exporter.simulator.settings import SimIamProject, SimulatorSettings
from exporter.simulator.state import STATE

__all__ = ["DOMAIN_ID", "IAM_ROUTE", "MOS_NAME", "account_projects", "iam_entries", "list_iam_projects"]

IAM_ROUTE = "iam_projects"
MOS_NAME = "MOS"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://iam.simulator.invalid/")
DOMAIN_ID = uuid.uuid5(_NAMESPACE, "domain").hex  # the simulated account's ID, stable across runs
_MOS_ID = uuid.uuid5(_NAMESPACE, MOS_NAME).hex
_MAX_PER_PAGE = 5000
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


@dataclass(frozen=True, slots=True)
class _ProjectQuery:
    name: str | None
    enabled: bool | None
    page: int | None
    per_page: int | None


def iam_entries(region: str, project_ids: Sequence[str]) -> list[SimIamProject]:
    """A region's projects as IAM names them: the first after the region, the others `region_sub{n}`."""
    return [
        SimIamProject(id=project_id, name=region if index == 0 else f"{region}_sub{index}")
        for index, project_id in enumerate(project_ids)
    ]


def account_projects(settings: SimulatorSettings) -> list[SimIamProject]:
    """What the listing holds: `sim_iam_projects`, or else the projects served here; plus MOS."""
    projects = list(settings.sim_iam_projects)
    if not projects:
        extra = sorted(settings.sim_projects - {settings.project_id})
        projects = iam_entries(settings.sim_region or settings.obs_region, [settings.project_id, *extra])
    if settings.sim_iam_mos and all(project.name != MOS_NAME for project in projects):
        projects.append(SimIamProject(id=_MOS_ID, name=MOS_NAME))
    return projects


async def list_iam_projects(request: web.Request) -> web.Response:
    """GET /v3/projects: authenticate, refuse project scope, then the (filtered, paged) projects."""
    state = request.app[STATE]
    authenticate(request, state, await request.read(), code="IAM.0001")
    if request.headers.get("X-Project-Id"):
        raise DliFailure(403, "IAM.0002", "You are not authorized to perform the requested action.")
    fixed = state.knobs.iam_failure
    if fixed is not None:
        state.stats.faults["iam_error"] += 1
        raise DliFailure(*fixed)
    query = _parse_query(request.query)
    everything = account_projects(state.settings)
    chosen = [project for project in everything if _matches(project, query)]
    start, stop = _page_bounds(query, len(chosen))
    origin = request.url.origin()
    parents = {project.name: project.id for project in everything}
    return json_response(
        200,
        {
            "links": _links(request.url, query, more=stop < len(chosen)),
            "projects": [_entry(project, origin, parents) for project in chosen[start:stop]],
        },
    )


def _parse_query(query: Mapping[str, str]) -> _ProjectQuery:
    """The filters and paging IAM documents; 400 IAM.0007 for a value it would not accept."""
    enabled_text = query.get("enabled")
    enabled = None if enabled_text is None else _parse_bool(enabled_text, "enabled")
    page_text, per_page_text = query.get("page"), query.get("per_page")
    if (page_text is None) != (per_page_text is None):
        raise _invalid("page", "page and per_page must be used together")
    page = None if page_text is None else _parse_int(page_text, "page", 1, None)
    per_page = None if per_page_text is None else _parse_int(per_page_text, "per_page", 1, _MAX_PER_PAGE)
    return _ProjectQuery(name=query.get("name"), enabled=enabled, page=page, per_page=per_page)


def _parse_bool(text: str, key: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    raise _invalid(key, "must be true or false")


def _parse_int(text: str, key: str, low: int, high: int | None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _invalid(key, "must be an integer") from None
    if value < low or (high is not None and value > high):
        raise _invalid(key, f"must be at least {low}" + (f" and at most {high}" if high else ""))
    return value


def _invalid(key: str, detail: str) -> DliFailure:
    return DliFailure(400, "IAM.0007", f"Request parameter {key} is invalid: {detail}.")


def _matches(project: SimIamProject, query: _ProjectQuery) -> bool:
    if query.name is not None and project.name != query.name:
        return False
    return query.enabled is None or project.enabled == query.enabled


def _page_bounds(query: _ProjectQuery, total: int) -> tuple[int, int]:
    """The slice of the matching projects one page covers; all of them when not paged."""
    if query.page is None or query.per_page is None:
        return 0, total
    start = (query.page - 1) * query.per_page
    return start, start + query.per_page


def _links(url: URL, query: _ProjectQuery, *, more: bool) -> dict[str, str | None]:
    """`self` is the request; `previous` and `next` point at the neighbouring pages when there are any."""
    page = query.page
    previous = str(url.update_query(page=page - 1)) if page is not None and page > 1 else None
    following = str(url.update_query(page=page + 1)) if page is not None and more else None
    return {"self": str(url), "previous": previous, "next": following}


def _entry(project: SimIamProject, origin: URL, parents: Mapping[str, str]) -> dict[str, Any]:
    """One project as IAM shows it; a sub-project's parent is its region's project, else the account."""
    region, _, sub = project.name.partition("_")
    parent = parents.get(region, DOMAIN_ID) if sub else DOMAIN_ID
    return {
        "id": project.id,
        "name": project.name,
        "domain_id": DOMAIN_ID,
        "parent_id": parent,
        "enabled": project.enabled,
        "is_domain": False,
        "description": "",
        "links": {"self": str(origin.with_path(f"/v3/projects/{project.id}"))},
    }

"""Where a campaign's batches go: the routes of its regions and the `[targets.import_to]` destinations.

A destination's region is resolved exactly like a target's, through `[regions.NAME]` or the endpoint
templates, so a region only a destination names is checked (and routed, and given its slots) like any
other: the import side calls that region's DLI, and a wrong endpoint found only when the first import runs
would leave a migration half done. A destination without a region is in its target's region, never at the
default endpoints: omitting a key must not move a migration to another region.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from exporter.campaign.profiles import with_profile
from exporter.campaign.spec import (
    OBS_PLACEHOLDERS,
    CampaignSpec,
    ImportToSpec,
    Problems,
    RegionSpec,
    TargetSpec,
    placeholders,
    region_route,
    render,
)
from exporter.models import BatchRequest
from exporter.routes import REGION_NAME, Destination, RegionRoute, check_region_name
from exporter.rules import check_obs_dir, check_project_id

if TYPE_CHECKING:
    from exporter.campaign.plan import PlanDefaults

__all__ = ["campaign_routes", "plan_destination", "regions_in_use"]

Routes = Mapping[str, RegionRoute | None]  # None: its endpoints could not be derived (reported once)


def _region_names(labelled: Iterable[tuple[str, TargetSpec]]) -> list[str]:
    """The valid region names targets and destinations use; a bad one is its target's problem."""
    names: list[str | None] = []
    for _, target in labelled:
        names += [target.region, target.import_to.region if target.import_to else None]
    return [name for name in names if name is not None and REGION_NAME.fullmatch(name)]


def campaign_routes(
    spec: CampaignSpec, labelled: Iterable[tuple[str, TargetSpec]], defaults: PlanDefaults, problems: Problems
) -> dict[str, RegionRoute | None]:
    """A route for every declared region and every valid region name a target or a destination uses."""
    routes: dict[str, RegionRoute | None] = {}
    for name in [*spec.regions, *_region_names(labelled)]:
        if name in routes:
            continue
        try:
            check_region_name(name)
        except ValueError as error:
            problems.add(f"regions.{name}", str(error))
            continue
        templates = {
            "dli_endpoint": defaults.dli_endpoint_template,
            "obs_endpoint": defaults.obs_endpoint_template,
        }
        region = spec.regions.get(name, RegionSpec())
        routes[name] = with_profile(region_route(name, region, templates, problems), region.credentials)
    return routes


def regions_in_use(requests: Sequence[BatchRequest]) -> dict[str, RegionRoute]:
    """The routes the batches export from or import into: a replica needs clients and slots for each."""
    in_use: dict[str, RegionRoute] = {}
    for request in requests:
        destination = request.migration.region if request.migration is not None else None
        for route in (request.region, destination):
            if route is not None:
                in_use.setdefault(route.name, route)
    return in_use


def _route(where: str, spec: ImportToSpec, target: TargetSpec, routes: Routes, problems: Problems) -> bool:
    """Whether the destination's region (its own, else its target's) is valid and has endpoints."""
    if spec.region is None:  # the target's region: a missing route is reported for the target
        return target.region is None or routes.get(target.region) is not None
    try:
        check_region_name(spec.region)
    except ValueError as error:
        problems.add(f"{where}.region", str(error))
        return False
    if routes.get(spec.region) is None:
        problems.add(
            f"{where}.region",
            f"cannot derive endpoints for region {spec.region!r} (see regions.{spec.region})",
        )
        return False
    return True


def _obs_dir(
    where: str, spec: ImportToSpec, region: str | None, campaign_id: str, problems: Problems
) -> tuple[bool, str | None]:
    """Whether the destination's obs_dir is usable, and it rendered with the destination's values."""
    template = spec.obs_dir
    if template is None:
        return True, None  # the target reads the ZIPs where they were exported
    try:
        names = placeholders(template, OBS_PLACEHOLDERS, "obs_dir")
    except ValueError as error:
        problems.add(f"{where}.obs_dir", str(error))
        return False, None
    if "region" in names and region is None:
        message = f"{template!r} uses {{region}} but this destination has no region: give import_to a region"
        problems.add(f"{where}.obs_dir", message)
        return False, None
    values = {"region": region or "", "project_id": spec.project_id, "campaign_id": campaign_id}
    try:
        return True, check_obs_dir(render(template, values))
    except ValueError as error:
        problems.add(f"{where}.obs_dir", f"{error} (from {template!r})" if names else str(error))
        return False, None


def _distinct(where: str, spec: ImportToSpec, target: TargetSpec, problems: Problems) -> bool:
    """Whether the destination is another project or region: importing into the source only makes
    conflicts (every job's name is already there) or, overwriting, rewrites jobs with themselves."""
    region = spec.region if spec.region is not None else target.region
    if (region, spec.project_id) != (target.region, target.project_id):
        return True
    at = f"region {region}" if region is not None else "the default endpoints"
    problems.add(where, f"imports into the project it exports from ({spec.project_id} in {at})")
    return False


def plan_destination(
    label: str, target: TargetSpec, campaign_id: str, routes: Routes, problems: Problems
) -> Destination | None:
    """The target's `import_to` as a Destination; None without one, or when it is wrong (each problem
    named `targets[i].import_to.FIELD`, so the caller can tell the two apart by `target.import_to`)."""
    spec = target.import_to
    if spec is None:
        return None
    where = f"{label}.import_to"
    region = spec.region if spec.region is not None else target.region
    try:
        check_project_id(spec.project_id)
        project_ok = True
    except ValueError as error:
        problems.add(f"{where}.project_id", str(error))
        project_ok = False
    route_ok = _route(where, spec, target, routes, problems)
    obs_ok, obs_dir = _obs_dir(where, spec, region, campaign_id, problems)
    if not (project_ok and route_ok and obs_ok and _distinct(where, spec, target, problems)):
        return None
    route = with_profile(routes.get(region) if region is not None else None, spec.credentials)
    try:
        return Destination(
            project_id=spec.project_id, region=route, obs_dir=obs_dir, on_conflict=spec.on_conflict
        )
    except ValueError as error:
        problems.add(where, str(error))
        return None

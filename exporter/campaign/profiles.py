"""Which credential profile signs a campaign's calls: `credentials = "NAME"` on a region, a target or an
`import_to` destination, the most specific one winning (a destination takes its own, else its region's;
never its source target's: a migration to another account signs there with that account's keys).

The file names profiles, the daemon holds them (`[credentials.NAME]` in its settings). When the submitter
has profiles of its own (`PlanDefaults.profiles`), a name it lacks is a problem of the file, reported
like any other; otherwise the daemon checks, and fails a batch naming a profile it does not have. A
target (or destination) without a region runs at the default endpoints, with the default profile: a
profile there is a problem too, so that it is never silently ignored.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from exporter.campaign.spec import CampaignSpec, Problems, TargetSpec
from exporter.credentials.spec import check_profile_name
from exporter.routes import RegionRoute

__all__ = ["check_profiles", "profile_problem", "with_profile"]


def with_profile(route: RegionRoute | None, name: str | None) -> RegionRoute | None:
    """The route signed with profile `name` (as it is for None, or a name already reported invalid)."""
    if route is None or name is None:
        return route
    try:
        return RegionRoute.model_validate({**route.model_dump(), "credentials": name})
    except ValueError:
        return route


def profile_problem(name: str, known: Collection[str] | None, hint: str = "") -> str | None:
    """Why a submission may not name profile `name` (an invalid name, or one `known` lacks), or None.
    `hint` ends the list of known profiles (where they are defined)."""
    try:
        check_profile_name(name)
    except ValueError as error:
        return str(error)
    if known is not None and name not in known:
        return f"unknown credential profile {name!r} (known: {', '.join(sorted(known))}{hint})"
    return None


def _check(where: str, name: str | None, known: Collection[str] | None, problems: Problems) -> None:
    problem = None if name is None else profile_problem(name, known, "; see [credentials.NAME]")
    if problem is not None:
        problems.add(where, problem)


def _check_target(label: str, target: TargetSpec, known: Collection[str] | None, problems: Problems) -> None:
    _check(f"{label}.credentials", target.credentials, known, problems)
    if target.credentials is not None and target.region is None:
        problems.add(f"{label}.credentials", "needs a region: without one the default profile signs")
    destination = target.import_to
    if destination is None or destination.credentials is None:
        return
    where = f"{label}.import_to.credentials"
    _check(where, destination.credentials, known, problems)
    if destination.region is None and target.region is None:
        problems.add(where, "needs a region (its own or its target's): without one the default profile signs")


def check_profiles(
    spec: CampaignSpec,
    labelled: Iterable[tuple[str, TargetSpec]],
    known: Collection[str] | None,
    problems: Problems,
) -> None:
    """Every profile the campaign names: a valid name, known when `known` is given, and with a region."""
    for name, region in spec.regions.items():
        _check(f"regions.{name}.credentials", region.credentials, known, problems)
    for label, target in labelled:
        _check_target(label, target, known, problems)

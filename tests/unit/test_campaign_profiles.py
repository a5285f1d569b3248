"""Campaign files naming credential profiles: the names travel on the routes (never a key), the most
specific wins, and a name the submitter does not have (when it has profiles) is a problem of the file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from textwrap import dedent

import pytest

from exporter.campaign import CampaignError, CampaignPlan, PlanDefaults, load_campaign_file, plan_campaign
from exporter.submission import request_identity

SOURCE, TARGET = "5a" * 16, "7b" * 16
DEFAULTS = PlanDefaults(
    chunk_size=100,
    dli_endpoint_template="https://dli.{region}.myhuaweicloud.com",
    obs_endpoint_template="https://obs.{region}.myhuaweicloud.com",
    max_jobs=1000,
)
WITH_PROFILES = replace(DEFAULTS, profiles=frozenset({"default", "source-account", "target-account"}))


def plan(tmp_path: Path, text: str, defaults: PlanDefaults = WITH_PROFILES) -> CampaignPlan:
    path = tmp_path / "campaign.toml"
    path.write_text(dedent(text))
    return plan_campaign(load_campaign_file(path), source="c.toml", base_dir=tmp_path, defaults=defaults)


def problems(tmp_path: Path, text: str, defaults: PlanDefaults = WITH_PROFILES) -> list[str]:
    with pytest.raises(CampaignError) as caught:
        plan(tmp_path, text, defaults)
    return [line.removeprefix("c.toml: ") for line in caught.value.problems]


MOVE = """\
    campaign_id = "move"
    obs_dir = "bucket/{region}/{project_id}"
    [regions.eu-west-101]
    credentials = "source-account"
    [regions.ap-southeast-1]
    credentials = "target-account"
    [[targets]]
    region = "eu-west-101"
    project_id = "SOURCE"
    all = true
    [targets.import_to]
    region = "ap-southeast-1"
    project_id = "TARGET"
""".replace("SOURCE", SOURCE).replace("TARGET", TARGET)


def test_a_region_profile_reaches_its_targets_and_destinations(tmp_path: Path) -> None:
    """Each side signs with its region's profile; the batch carries the names, in its route."""
    (request,) = plan(tmp_path, MOVE).requests
    assert request.region is not None and request.region.credentials == "source-account"
    assert request.migration is not None and request.migration.region is not None
    assert request.migration.region.credentials == "target-account"
    assert "credentials" in request.model_dump_json() and "ak" not in request.model_dump()["region"]


def test_the_most_specific_profile_wins_and_a_destination_never_takes_its_targets(tmp_path: Path) -> None:
    """A target's own profile beats its region's; its destination keeps the destination region's."""
    text = MOVE.replace("all = true\n", 'all = true\n    credentials = "target-account"\n', 1)
    (request,) = plan(tmp_path, text).requests
    assert request.region is not None and request.region.credentials == "target-account"
    text = MOVE.replace('[regions.ap-southeast-1]\n    credentials = "target-account"\n', "")
    (request,) = plan(tmp_path, text).requests
    assert request.migration is not None and request.migration.region is not None
    assert request.migration.region.credentials is None  # not the source target's: another account
    text = MOVE + '    credentials = "source-account"\n'
    (request,) = plan(tmp_path, text).requests
    assert request.migration is not None and request.migration.region is not None
    assert request.migration.region.credentials == "source-account"


def test_default_names_the_default_profile_and_changes_no_identity(tmp_path: Path) -> None:
    """`credentials = "default"` is the same route as none at all, so resubmitting stays idempotent."""
    plain = MOVE.replace('    credentials = "source-account"\n', "")
    named = MOVE.replace('credentials = "source-account"', 'credentials = "default"')
    (first,), (second,) = plan(tmp_path, plain).requests, plan(tmp_path, named).requests
    assert first.region is not None and first.region.credentials is None
    assert request_identity(first) == request_identity(second)


def test_unknown_misspelt_and_regionless_profiles_are_problems(tmp_path: Path) -> None:
    """A name the submitter lacks (the known ones listed), a bad name, a profile with no region to use it."""
    text = MOVE.replace('"target-account"', '"tagret-account"') + (
        f'    [[targets]]\n    project_id = "{SOURCE}"\n    all = true\n    credentials = "bad name"\n'
    )
    found = problems(tmp_path, text)
    assert (
        "regions.ap-southeast-1.credentials: unknown credential profile 'tagret-account' "
        "(known: default, source-account, target-account; see [credentials.NAME])"
    ) in found
    assert any(p.startswith("targets[1].credentials: credential profile 'bad name' must be") for p in found)
    assert "targets[1].credentials: needs a region: without one the default profile signs" in found


def test_without_profiles_of_its_own_the_submitter_leaves_the_check_to_the_daemon(tmp_path: Path) -> None:
    """No profiles in the submitter's settings: any well-formed name is planned (the daemon decides)."""
    (request,) = plan(tmp_path, MOVE.replace('"target-account"', '"elsewhere"'), DEFAULTS).requests
    assert request.migration is not None and request.migration.region is not None
    assert request.migration.region.credentials == "elsewhere"

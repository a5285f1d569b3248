"""Campaign targets with `[targets.import_to]`: a migration's destination, planned like a target's region.

Each bad destination is refused naming the file, `targets[i].import_to` and the field, together with every
other problem of the campaign, so nothing of a migration campaign is queued while a destination is wrong.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest
from campaign_files import DEFAULTS, plan_file, problems_of, write

from exporter.campaign import CampaignError, PlanDefaults, load_campaign_file
from exporter.routes import Destination, OnConflict, RegionRoute
from exporter.submission import request_identity

PROJECT = "0123456789abcdef0123456789abcdef"
TARGET_PROJECT = "fedcba9876543210fedcba9876543210"
HEAD = 'campaign_id = "c1"\nobs_dir = "bucket/{region}/{project_id}"\n'
ASIA = RegionRoute(
    name="ap-southeast-1",
    dli_endpoint="https://dli.ap-southeast-1.myhuaweicloud.com",
    obs_endpoint="https://obs.ap-southeast-1.myhuaweicloud.com",
)


def migration(
    import_to: str, *, region: str = '"ap-southeast-1"', project: str = PROJECT, head: str = HEAD
) -> str:
    """A campaign of one target (all jobs) with `[targets.import_to]` holding `import_to` (TOML lines)."""
    target = f'[[targets]]\nregion = {region}\nproject_id = "{project}"\nall = true\n'
    return f"{head}{target}[targets.import_to]\n{dedent(import_to)}"


# --- good files ----------------------------------------------------------------------------------------


def test_import_across_regions(tmp_path: Path) -> None:
    """The destination's route comes from [regions.X] (or the templates), its obs_dir is rendered with
    the destination's region and project, and the destination's region is one the plan routes."""
    head = HEAD + '[regions.eu-west-101]\ndli_endpoint = "https://dli.eu.example.com"\nrate_limit = 7\n'
    text = migration(
        f"""
        region = "eu-west-101"
        project_id = "{TARGET_PROJECT}"
        obs_dir = "target-bucket/{{campaign_id}}/{{region}}/{{project_id}}"
        on_conflict = "overwrite"
        """,
        head=head,
    )
    plan = plan_file(write(tmp_path, text))
    (request,) = plan.requests
    europe = RegionRoute(
        name="eu-west-101",
        dli_endpoint="https://dli.eu.example.com",
        obs_endpoint="https://obs.eu-west-101.myhuaweicloud.com",
        rate_limit=7,
    )
    assert request.batch_id == f"c1.ap-southeast-1.{PROJECT}"
    assert request.obs_dir == f"bucket/ap-southeast-1/{PROJECT}"
    assert request.region == ASIA
    assert request.migration == Destination(
        project_id=TARGET_PROJECT,
        region=europe,
        obs_dir=f"target-bucket/c1/eu-west-101/{TARGET_PROJECT}",
        on_conflict=OnConflict.OVERWRITE,
    )
    assert plan.regions == {"ap-southeast-1": ASIA, "eu-west-101": europe}


def test_defaults_skip_the_target_region_and_the_export_directory(tmp_path: Path) -> None:
    """Without on_conflict, region or obs_dir: skip, the target's own region, the ZIPs where exported."""
    plan = plan_file(write(tmp_path, migration(f'project_id = "{TARGET_PROJECT}"\n')))
    (request,) = plan.requests
    assert request.migration == Destination(project_id=TARGET_PROJECT, region=ASIA, obs_dir=None)
    assert request.migration.on_conflict is OnConflict.SKIP
    assert plan.regions == {"ap-southeast-1": ASIA}


def test_a_region_only_a_destination_names_comes_from_the_templates(tmp_path: Path) -> None:
    text = migration(f'region = "cn-north-4"\nproject_id = "{TARGET_PROJECT}"\n', region='"ap-southeast-1"')
    plan = plan_file(write(tmp_path, text))
    assert plan.requests[0].migration is not None
    assert plan.requests[0].migration.region == plan.regions["cn-north-4"]
    assert plan.regions["cn-north-4"].dli_endpoint == "https://dli.cn-north-4.myhuaweicloud.com"


def test_without_regions_anywhere_the_default_endpoints_import(tmp_path: Path) -> None:
    head = 'campaign_id = "c1"\nobs_dir = "bucket/{project_id}"\n'
    text = f'{head}[[targets]]\nproject_id = "p1"\njob_ids = [1]\nimport_to = {{project_id = "p2"}}\n'
    plan = plan_file(write(tmp_path, text))
    assert plan.requests[0].migration == Destination(project_id="p2")
    assert plan.regions == {}


def test_only_the_destination_differs_so_the_identity_differs(tmp_path: Path) -> None:
    """Same batch ID, another destination: resubmitting the changed file is a conflict, not a no-op."""
    first = plan_file(write(tmp_path, migration('project_id = "p2"\n'))).requests[0]
    second = plan_file(write(tmp_path, migration('project_id = "p3"\n'))).requests[0]
    third = plan_file(write(tmp_path, migration('project_id = "p2"\non_conflict = "fail"\n'))).requests[0]
    assert first.batch_id == second.batch_id == third.batch_id
    identities = [request_identity(r) for r in (first, second, third)]
    assert identities[0] != identities[1] and identities[0] != identities[2]
    assert identities[0]["migration"]["project_id"] == "p2"


# --- bad destinations ----------------------------------------------------------------------------------


def load_problems(tmp_path: Path, text: str) -> list[str]:
    """The problems of reading the file, whole: each starts with the file's path."""
    with pytest.raises(CampaignError) as caught:
        load_campaign_file(write(tmp_path, text))
    return caught.value.problems


def test_missing_project_id_and_unknown_keys(tmp_path: Path) -> None:
    source = tmp_path / "campaign.toml"
    assert load_problems(tmp_path, migration('region = "eu-west-101"\nproject = "p2"\n')) == [
        f"{source}: targets[0].import_to.project_id: Field required",
        f"{source}: targets[0].import_to.project: unknown key "
        "(known: credentials, region, project_id, obs_dir, on_conflict)",
    ]


@pytest.mark.parametrize("value", ['"replace"', '"SKIP"', "1", "true"])
def test_bad_on_conflict(tmp_path: Path, value: str) -> None:
    (line,) = load_problems(tmp_path, migration(f'project_id = "p2"\non_conflict = {value}\n'))
    expected = "targets[0].import_to.on_conflict: Input should be 'skip', 'overwrite' or 'fail'"
    assert line == f"{tmp_path / 'campaign.toml'}: {expected}"


@pytest.mark.parametrize(
    ("obs_dir", "message"),
    [
        (
            '"b/{zone}"',
            "unknown placeholder {zone} in obs_dir (known: {campaign_id}, {project_id}, {region})",
        ),
        ('"b/{region.x}"', "unknown placeholder {region.x} in obs_dir"),
        ('"bucket/{"', "malformed placeholder in obs_dir 'bucket/{'"),
        ('"B_ad/{project_id}"', "bucket 'B_ad' may hold only lowercase letters"),
        ('"ok-bucket/../x"', "OBS prefix '../x' must not contain '.' or '..' segments"),
    ],
)
def test_bad_obs_dir(tmp_path: Path, obs_dir: str, message: str) -> None:
    (line,) = problems_of(write(tmp_path, migration(f'project_id = "p2"\nobs_dir = {obs_dir}\n')))
    assert line.startswith(f"targets[0].import_to.obs_dir: {message}")


def test_region_placeholder_needs_a_region(tmp_path: Path) -> None:
    head = 'campaign_id = "c1"\nobs_dir = "bucket"\n'
    text = f'{head}[[targets]]\nproject_id = "p1"\nall = true\n[targets.import_to]\nproject_id = "p2"\n'
    text += 'obs_dir = "b2/{region}"\n'
    assert problems_of(write(tmp_path, text)) == [
        "targets[0].import_to.obs_dir: 'b2/{region}' uses {region} but this destination has no region: "
        "give import_to a region"
    ]


def test_bad_project_and_region_names(tmp_path: Path) -> None:
    text = migration('region = "EU_West"\nproject_id = "p-2"\n')
    assert problems_of(write(tmp_path, text)) == [
        "targets[0].import_to.project_id: project ID 'p-2' must be 1 to 64 letters and digits",
        "targets[0].import_to.region: region 'EU_West' must be 1 to 63 lowercase letters, digits and '-', "
        "e.g. ap-southeast-1",
    ]


def test_destination_region_whose_endpoints_cannot_be_derived(tmp_path: Path) -> None:
    """A region only the destination uses is resolved and checked like a target's, and the destination
    says which region it could not route to."""
    head = HEAD + '[regions.eu-west-101]\nobs_endpoint = "obs.eu.example.com"\n'
    text = migration('region = "eu-west-101"\nproject_id = "p2"\n', head=head)
    assert problems_of(write(tmp_path, text)) == [
        "regions.eu-west-101.obs_endpoint: endpoint 'obs.eu.example.com' must be an http:// or https:// URL "
        "with a host",
        "targets[0].import_to.region: cannot derive endpoints for region 'eu-west-101' "
        "(see regions.eu-west-101)",
    ]
    defaults = PlanDefaults(100, "https://dli.{zone}.example.com", DEFAULTS.obs_endpoint_template, 10)
    text = migration('region = "eu-west-101"\nproject_id = "p2"\n')
    assert "targets[0].import_to.region: cannot derive endpoints for region 'eu-west-101' " + (
        "(see regions.eu-west-101)"
    ) in problems_of(write(tmp_path, text), defaults=defaults)


@pytest.mark.parametrize(
    ("import_to", "where"),
    [
        (f'region = "ap-southeast-1"\nproject_id = "{PROJECT}"\n', "region ap-southeast-1"),
        (f'project_id = "{PROJECT}"\n', "region ap-southeast-1"),  # no region: the target's own
    ],
)
def test_importing_into_the_source_is_refused(tmp_path: Path, import_to: str, where: str) -> None:
    assert problems_of(write(tmp_path, migration(import_to))) == [
        f"targets[0].import_to: imports into the project it exports from ({PROJECT} in {where})"
    ]


def test_same_project_in_another_region_is_a_migration(tmp_path: Path) -> None:
    text = migration(f'region = "cn-north-4"\nproject_id = "{PROJECT}"\n')
    (request,) = plan_file(write(tmp_path, text)).requests
    assert request.migration is not None and request.migration.project_id == PROJECT


def test_source_without_region_into_itself(tmp_path: Path) -> None:
    head = 'campaign_id = "c1"\nobs_dir = "bucket"\n'
    text = f'{head}[[targets]]\nproject_id = "p1"\njob_ids = [1]\nimport_to = {{project_id = "p1"}}\n'
    assert problems_of(write(tmp_path, text)) == [
        "targets[0].import_to: imports into the project it exports from (p1 in the default endpoints)"
    ]


def test_destination_problems_are_reported_with_the_rest(tmp_path: Path) -> None:
    """A bad destination does not hide the target's own problems, nor another target's."""
    text = migration('project_id = "p-2"\nobs_dir = "b/{nope}"\n', region='"cn-north-4"')
    text += '[[targets]]\nregion = "cn-north-4"\nproject_id = "p3"\n'
    problems = problems_of(write(tmp_path, text))
    assert problems == [
        "targets[0].import_to.project_id: project ID 'p-2' must be 1 to 64 letters and digits",
        "targets[0].import_to.obs_dir: unknown placeholder {nope} in obs_dir "
        "(known: {campaign_id}, {project_id}, {region})",
        "targets[1]: no selection: give job_ids, job_ids_file or all = true",
    ]

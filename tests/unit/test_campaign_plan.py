"""Campaign files: reading them, expanding them into batches, and every way a file can be wrong.

Each bad input is refused with the words a person reads: the file, the target's index and the field.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from campaign_files import DEFAULTS, plan_file, problems_of, write

from exporter.campaign import (
    CampaignError,
    PlanDefaults,
    campaign_from_json,
    load_campaign_file,
    plan_campaign,
)
from exporter.routes import RegionRoute

PROJECT = "0123456789abcdef0123456789abcdef"

GOOD = f"""
campaign_id = "tenant-2026-12"
obs_dir = "backup-bucket/{{region}}/{{project_id}}"
chunk_size = 200

[regions.ap-southeast-1]
dli_endpoint = "https://dli.example.com/"
rate_limit = 20

[[targets]]
region = "ap-southeast-1"
project_id = "{PROJECT}"
job_ids = [1001, 1002, 1001]
chunk_size = 50

[[targets]]
region = "cn-north-4"
project_id = "p2"
all = true
status = "RUNNING"
job_type = "flink_sql_job"
tags = {{env = "prod", team = "data"}}

[[targets]]
project_id = "p3"
job_ids_file = "ids.txt"
obs_dir = "other-bucket/{{campaign_id}}/x"
"""


def load_problems(path: Path) -> list[str]:
    with pytest.raises(CampaignError) as caught:
        load_campaign_file(path)
    return [line.removeprefix(f"{path}: ") for line in caught.value.problems]


def target(**fields: str) -> str:
    """A `[[targets]]` table in a file with a default obs_dir (values are TOML as written)."""
    body = "\n".join(f"{key} = {value}" for key, value in fields.items())
    return f"[[targets]]\n{body}\n"


def campaign(*targets: str, head: str = 'campaign_id = "c1"\nobs_dir = "bucket/{project_id}"\n') -> str:
    return head + "\n".join(targets)


# --- a good file ---------------------------------------------------------------------------------------


def test_good_file_expands_into_one_batch_per_target(tmp_path: Path) -> None:
    """Batch IDs, routes, rendered obs_dirs, chunk sizes and filters all follow the file."""
    (tmp_path / "ids.txt").write_text("# exported first\n7\n\n8 # eight\n", encoding="utf-8")
    plan = plan_file(write(tmp_path, GOOD))
    assert plan.campaign_id == "tenant-2026-12"
    first, second, third = plan.requests
    assert [r.batch_id for r in plan.requests] == [
        f"tenant-2026-12.ap-southeast-1.{PROJECT}",
        "tenant-2026-12.cn-north-4.p2",
        "tenant-2026-12.default.p3",
    ]
    assert first.obs_dir == f"backup-bucket/ap-southeast-1/{PROJECT}"
    assert first.job_ids == [1001, 1002] and first.duplicates_dropped == 1
    assert (first.chunk_size, second.chunk_size, third.chunk_size) == (50, 200, 200)
    assert first.region == RegionRoute(
        name="ap-southeast-1",
        dli_endpoint="https://dli.example.com",
        obs_endpoint="https://obs.ap-southeast-1.myhuaweicloud.com",
        rate_limit=20,
    )
    assert second.region == RegionRoute(
        name="cn-north-4",
        dli_endpoint="https://dli.cn-north-4.myhuaweicloud.com",
        obs_endpoint="https://obs.cn-north-4.myhuaweicloud.com",
    )
    assert second.select_all and second.job_ids is None and second.filters is not None
    assert second.filters.query() == [
        ("job_type", "flink_sql_job"),
        ("status", "RUNNING"),
        ("tags", "env=prod,team=data"),
    ]
    assert third.region is None and third.job_ids == [7, 8]
    assert third.obs_dir == "other-bucket/tenant-2026-12/x"
    assert {r.campaign for r in plan.requests} == {"tenant-2026-12"}
    assert plan.regions == {"ap-southeast-1": first.region, "cn-north-4": second.region}


def test_tags_as_a_list_and_the_default_chunk_size(tmp_path: Path) -> None:
    """`tags = ["k=v"]` gives the same filter form as a table; without chunk sizes the default applies."""
    text = campaign(target(project_id='"p1"', all="true", tags='["env = prod", "team=data"]'))
    (request,) = plan_file(write(tmp_path, text)).requests
    assert request.filters is not None and request.filters.tags == "env=prod,team=data"
    assert request.chunk_size == DEFAULTS.chunk_size


def test_same_file_twice_gives_the_same_plan(tmp_path: Path) -> None:
    """Planning is pure: a re-run submits the same batch IDs (the idempotency keys)."""
    (tmp_path / "ids.txt").write_text("7\n", encoding="utf-8")
    path = write(tmp_path, GOOD)
    assert plan_file(path) == plan_file(path)


def test_campaign_id_from_the_file_digest(tmp_path: Path) -> None:
    """Without campaign_id the same bytes always give the same `c-` ID; the argument wins over both."""
    path = write(tmp_path, campaign(target(project_id='"p1"', job_ids="[1]"), head='obs_dir = "bucket"\n'))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    plan = plan_file(path)
    assert plan.campaign_id == f"c-{digest[:12]}" and plan == plan_file(path)
    assert plan.requests[0].batch_id == f"c-{digest[:12]}.default.p1"
    assert plan_file(path, campaign_id="override").campaign_id == "override"
    assert problems_of(path, digest_of=None) == [
        "campaign_id missing: set campaign_id in the campaign or pass --campaign-id"
    ]


def test_campaign_id_argument_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, campaign(target(project_id='"p1"', job_ids="[1]")))
    assert plan_file(path).campaign_id == "c1"
    assert plan_file(path, campaign_id="c2").requests[0].batch_id == "c2.default.p1"


@pytest.mark.parametrize("bad", ["", "-x", "a b", "x" * 65, "a/b"])
def test_campaign_id_pattern(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path, campaign(target(project_id='"p1"', job_ids="[1]")))
    assert problems_of(path, campaign_id=bad) == [
        f"campaign_id: {bad!r} must be 1 to 64 letters, digits, '.', '_', ':' or '-', "
        "starting with a letter or digit"
    ]


def test_discovered_projects_are_merged_and_the_file_wins(tmp_path: Path) -> None:
    """Each discovered (region, project) becomes an `all` target unless the file already has one."""
    text = campaign(target(region='"ap-southeast-1"', project_id='"p1"', job_ids="[5]"))
    discovered = [
        ("ap-southeast-1", "p1"),
        ("cn-north-4", "p2"),
        ("cn-north-4", "p2"),
        ("ap-southeast-1", "p3"),
    ]
    plan = plan_file(write(tmp_path, text), discovered=discovered)
    assert [(r.batch_id, r.job_ids, r.select_all) for r in plan.requests] == [
        ("c1.ap-southeast-1.p1", [5], False),
        ("c1.cn-north-4.p2", None, True),
        ("c1.ap-southeast-1.p3", None, True),
    ]
    assert sorted(plan.regions) == ["ap-southeast-1", "cn-north-4"]


def test_a_json_campaign_plans_without_a_directory() -> None:
    """`POST /campaigns` sends JSON: the same models, explicit IDs, no files."""
    data = {"campaign_id": "c1", "obs_dir": "bucket", "targets": [{"project_id": "p1", "job_ids": [1, 2]}]}
    plan = plan_campaign(campaign_from_json(data), source="campaign", base_dir=None, defaults=DEFAULTS)
    assert [r.batch_id for r in plan.requests] == ["c1.default.p1"] and plan.regions == {}


# --- placeholders and regions --------------------------------------------------------------------------


def test_unknown_placeholder_in_the_campaign_obs_dir_is_reported_once(tmp_path: Path) -> None:
    head = 'campaign_id = "c1"\nobs_dir = "bucket/{tenant}"\n'
    text = campaign(
        target(project_id='"p1"', job_ids="[1]"), target(project_id='"p2"', job_ids="[1]"), head=head
    )
    assert problems_of(write(tmp_path, text)) == [
        "obs_dir: unknown placeholder {tenant} in obs_dir (known: {campaign_id}, {project_id}, {region})"
    ]


@pytest.mark.parametrize(
    ("obs_dir", "message"),
    [
        ("bucket/{foo}", "unknown placeholder {foo} in obs_dir"),
        ("bucket/{region.upper}", "unknown placeholder {region.upper} in obs_dir"),
        ("bucket/{region!r}", "unknown placeholder {region!r} in obs_dir"),
        ("bucket/{}", "unknown placeholder {} in obs_dir"),
        (
            "bucket/{region",
            "malformed placeholder in obs_dir 'bucket/{region': expected '}' before end of string",
        ),
    ],
)
def test_unknown_placeholder_in_a_target_obs_dir(tmp_path: Path, obs_dir: str, message: str) -> None:
    text = campaign(target(region='"cn-north-4"', project_id='"p1"', job_ids="[1]", obs_dir=f'"{obs_dir}"'))
    assert problems_of(write(tmp_path, text)) == [
        f"targets[0].obs_dir: {message} (known: {{campaign_id}}, {{project_id}}, {{region}})"
    ]


def test_escaped_braces_are_literal(tmp_path: Path) -> None:
    """`{{` in obs_dir is a literal brace, not a placeholder (str.format's escaping)."""
    text = campaign(target(project_id='"p1"', job_ids="[1]", obs_dir='"bucket/{{x}}/{project_id}"'))
    assert plan_file(write(tmp_path, text)).requests[0].obs_dir == "bucket/{x}/p1"


def test_region_placeholder_needs_a_region(tmp_path: Path) -> None:
    head = 'campaign_id = "c1"\nobs_dir = "bucket/{region}"\n'
    text = campaign(target(project_id='"p1"', job_ids="[1]"), head=head)
    assert problems_of(write(tmp_path, text)) == [
        "targets[0].obs_dir: 'bucket/{region}' uses {region} but this target has no region: "
        "give the target a region or its own obs_dir"
    ]


def test_rendered_obs_dir_must_pass_the_obs_rules(tmp_path: Path) -> None:
    text = campaign(target(project_id='"P1"', job_ids="[1]", obs_dir='"{project_id}-bucket"'))
    assert problems_of(write(tmp_path, text)) == [
        "targets[0].obs_dir: bucket 'P1-bucket' may hold only lowercase letters, digits, '-' and '.', "
        "and must start and end with a letter or digit (from '{project_id}-bucket')"
    ]


def test_no_obs_dir_anywhere(tmp_path: Path) -> None:
    text = campaign(target(project_id='"p1"', job_ids="[1]"), head='campaign_id = "c1"\n')
    assert problems_of(write(tmp_path, text)) == [
        "targets[0].obs_dir: no obs_dir: give this target one, or set obs_dir for the whole campaign"
    ]


def test_region_whose_endpoints_cannot_be_derived(tmp_path: Path) -> None:
    """A template that cannot be rendered, or renders no URL, is reported under the region."""
    text = campaign(target(region='"cn-north-4"', project_id='"p1"', job_ids="[1]"))
    defaults = PlanDefaults(
        chunk_size=100,
        dli_endpoint_template="https://dli.{zone}.example.com",
        obs_endpoint_template="obs.{region}.example.com",
        max_jobs=10,
    )
    assert problems_of(write(tmp_path, text), defaults=defaults) == [
        "regions.cn-north-4: cannot derive endpoints: unknown placeholder {zone} in the endpoint template "
        "(known: {region})",
        "regions.cn-north-4: cannot derive endpoints: endpoint 'obs.cn-north-4.example.com' must be an "
        "http:// or https:// URL with a host",
    ]


def test_bad_region_names_and_endpoints(tmp_path: Path) -> None:
    """An invalid `[regions.X]` name or endpoint is a problem even when no target uses it."""
    text = campaign(
        target(region='"Bad_Region"', project_id='"p1"', job_ids="[1]"),
        head='campaign_id = "c1"\nobs_dir = "bucket"\n[regions.AP_1]\n[regions.eu-west-1]\n'
        'obs_endpoint = "https://obs.example.com/?x=1"\n',
    )
    rule = "must be 1 to 63 lowercase letters, digits and '-', e.g. ap-southeast-1"
    assert problems_of(write(tmp_path, text)) == [
        f"regions.AP_1: region 'AP_1' {rule}",
        "regions.eu-west-1.obs_endpoint: endpoint 'https://obs.example.com/?x=1' must not carry a query "
        "or a fragment",
        f"targets[0].region: region 'Bad_Region' {rule}",
    ]


def test_a_region_may_learn_its_rate_limit(tmp_path: Path) -> None:
    """`rate_limit = "auto"` travels with the batch (in any case), so the daemon learns that region's."""
    head = 'campaign_id = "c1"\nobs_dir = "bucket"\n[regions.eu-west-1]\nrate_limit = "AUTO"\n'
    text = campaign(target(region='"eu-west-1"', project_id='"p1"', job_ids="[1]"), head=head)
    (request,) = plan_file(write(tmp_path, text)).requests
    assert request.region is not None and request.region.rate_limit == "auto"
    assert RegionRoute.model_validate_json(request.region.model_dump_json()).rate_limit == "auto"
    bad = head.replace('"AUTO"', '"fast"')
    assert problems_of(
        write(tmp_path, campaign(target(region='"eu-west-1"', project_id='"p1"', job_ids="[1]"), head=bad))
    ) == ["regions.eu-west-1.rate_limit: must be a number of requests/s, or auto"]


def test_unused_declared_regions_are_not_in_the_plan(tmp_path: Path) -> None:
    head = 'campaign_id = "c1"\nobs_dir = "bucket"\n[regions.eu-west-1]\nrate_limit = 5\n'
    plan = plan_file(write(tmp_path, campaign(target(project_id='"p1"', job_ids="[1]"), head=head)))
    assert plan.regions == {}


# --- targets ---------------------------------------------------------------------------------------------


def test_two_targets_for_one_region_and_project(tmp_path: Path) -> None:
    text = campaign(
        target(region='"ap-southeast-1"', project_id=f'"{PROJECT}"', job_ids="[1]"),
        target(region='"cn-north-4"', project_id=f'"{PROJECT}"', job_ids="[1]"),
        target(region='"ap-southeast-1"', project_id=f'"{PROJECT}"', all="true"),
        target(project_id='"p1"', job_ids="[1]"),
        target(project_id='"p1"', job_ids="[2]"),
    )
    assert problems_of(write(tmp_path, text)) == [
        f"targets[2]: two targets for region ap-southeast-1 and project {PROJECT} "
        "(targets[0] and targets[2])",
        "targets[4]: two targets for no region and project p1 (targets[3] and targets[4])",
    ]


def test_region_named_default_cannot_share_a_batch_id(tmp_path: Path) -> None:
    text = campaign(
        target(project_id='"p1"', job_ids="[1]"), target(region='"default"', project_id='"p1"', all="true")
    )
    assert problems_of(write(tmp_path, text)) == [
        "targets[1]: batch ID c1.default.p1 is also the batch ID of targets[0]"
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "targets[0]: no selection: give job_ids, job_ids_file or all = true"),
        ({"all": "false"}, "targets[0]: no selection: give job_ids, job_ids_file or all = true"),
        ({"job_ids": "[1]", "all": "true"}, "targets[0]: two selections: job_ids, all = true; give only one"),
        (
            {"job_ids": "[1]", "job_ids_file": '"ids.txt"', "all": "true"},
            "targets[0]: three selections: job_ids, job_ids_file, all = true; give only one",
        ),
        (
            {"job_ids": "[1]", "status": '"RUNNING"', "tags": "[]"},
            "targets[0]: status, tags apply only with all = true",
        ),
        ({"job_ids": "[]"}, "targets[0].job_ids: job_ids is empty: give at least one job ID"),
        ({"all": "true", "tags": '["env"]'}, "targets[0].tags: tag 'env' must look like KEY=VALUE"),
        (
            {"job_ids": "[1, 2, 3, 4]"},
            "targets[0].job_ids: 4 job IDs, more than the limit of 3 per batch (EXPORTER_MAX_JOBS_PER_BATCH)",
        ),
        (
            {"project_id": '"has space"', "job_ids": "[1]"},
            "targets[0].project_id: project ID 'has space' must be 1 to 64 letters and digits",
        ),
    ],
)
def test_selection_rules(tmp_path: Path, fields: dict[str, str], message: str) -> None:
    defaults = PlanDefaults(100, DEFAULTS.dli_endpoint_template, DEFAULTS.obs_endpoint_template, max_jobs=3)
    text = campaign(target(**{"project_id": '"p1"', **fields}))
    assert problems_of(write(tmp_path, text), defaults=defaults) == [message]


def test_ids_file_problems_name_the_file(tmp_path: Path) -> None:
    """A missing file, a bad line, an empty file and a non-UTF-8 file each say what is wrong where."""
    (tmp_path / "bad.txt").write_text("1\n2\nx7\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n", encoding="utf-8")
    (tmp_path / "latin.txt").write_bytes(b"1\n\xff\n")
    files = ["ids.txt", "bad.txt", "empty.txt", "latin.txt"]
    text = campaign(*(target(project_id=f'"p{n}"', job_ids_file=f'"{name}"') for n, name in enumerate(files)))
    assert problems_of(write(tmp_path, text)) == [
        "targets[0].job_ids_file: cannot read ids.txt: [Errno 2] No such file or directory",
        "targets[1].job_ids_file: bad.txt line 3: 'x7' is not a job ID (a positive whole number)",
        "targets[2].job_ids_file: empty.txt holds no job IDs (only blank lines or comments)",
        "targets[3].job_ids_file: cannot read latin.txt: not UTF-8 text",
    ]


def test_ids_file_is_relative_to_the_campaign_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ids.txt").write_text("3\n", encoding="utf-8")
    path = write(tmp_path / "sub", campaign(target(project_id='"p1"', job_ids_file='"ids.txt"')))
    assert plan_file(path).requests[0].job_ids == [3]


def test_job_ids_file_is_refused_over_json() -> None:
    data = {
        "campaign_id": "c1",
        "obs_dir": "bucket",
        "targets": [{"project_id": "p1", "job_ids_file": "ids.txt"}],
    }
    with pytest.raises(CampaignError) as caught:
        plan_campaign(campaign_from_json(data), source="campaign", base_dir=None, defaults=DEFAULTS)
    assert caught.value.problems == [
        "campaign: targets[0].job_ids_file: job_ids_file is not accepted here; send job_ids"
    ]


def test_the_models_own_validation_applies(tmp_path: Path) -> None:
    """Each request goes through build_request, so a default the models refuse is that target's problem."""
    defaults = PlanDefaults(0, DEFAULTS.dli_endpoint_template, DEFAULTS.obs_endpoint_template, max_jobs=10)
    text = campaign(target(project_id='"p1"', job_ids="[1]"))
    assert problems_of(write(tmp_path, text), defaults=defaults) == [
        "targets[0]: chunk_size: Input should be greater than or equal to 1"
    ]


def test_batch_id_must_fit(tmp_path: Path) -> None:
    text = campaign(target(region=f'"{"r" * 63}"', project_id=f'"{"p" * 64}"', job_ids="[1]"))
    (problem,) = problems_of(write(tmp_path, text), campaign_id="c" * 10)
    assert problem.startswith("targets[0]: batch ID 'cccccccccc.rrr") and problem.endswith(
        "' is longer than 128; use a shorter campaign_id"
    )


def test_no_targets(tmp_path: Path) -> None:
    assert problems_of(write(tmp_path, campaign())) == [
        "targets: no targets: add a [[targets]] table, or discover projects"
    ]


def test_every_problem_of_every_target_is_reported_together(tmp_path: Path) -> None:
    """One run shows all that is wrong, in the file's order, and returns no partial plan."""
    text = campaign(
        target(project_id='"p0"', job_ids="[1]"),
        target(project_id='"p1"'),
        target(region='"cn-north-4"', project_id='"p2"', job_ids_file='"missing.txt"', obs_dir='"b/{x}"'),
        target(project_id='"p3"', job_ids="[1]", all="true", obs_dir='"bucket/{region}"'),
        target(project_id='"p0"', all="true"),
    )
    assert problems_of(write(tmp_path, text)) == [
        "targets[1]: no selection: give job_ids, job_ids_file or all = true",
        "targets[2].job_ids_file: cannot read missing.txt: [Errno 2] No such file or directory",
        "targets[2].obs_dir: unknown placeholder {x} in obs_dir "
        "(known: {campaign_id}, {project_id}, {region})",
        "targets[3]: two selections: job_ids, all = true; give only one",
        "targets[3].obs_dir: 'bucket/{region}' uses {region} but this target has no region: "
        "give the target a region or its own obs_dir",
        "targets[4]: two targets for no region and project p0 (targets[0] and targets[4])",
    ]


def test_a_long_list_of_problems_is_cut_in_the_message() -> None:
    error = CampaignError([f"campaign: targets[{n}]: bad" for n in range(150)])
    lines = str(error).splitlines()
    assert len(error.problems) == 150 and len(lines) == 101 and lines[-1] == "... and 50 more problems"
    assert error.field == "campaign"


# --- reading the file ------------------------------------------------------------------------------------


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'campaign_id = "c1"\nobs_dir = \n')
    assert load_problems(path) == ["is not valid TOML: Invalid value (at line 2, column 11)"]


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    assert load_problems(tmp_path / "nope.toml") == ["cannot read: [Errno 2] No such file or directory"]
    path = tmp_path / "latin.toml"
    path.write_bytes(b'campaign_id = "c1"\nobs_dir = "caf\xe9"\n')
    assert load_problems(path) == ["is not UTF-8 text (line 2)"]


def test_unknown_keys_and_wrong_types_are_all_reported(tmp_path: Path) -> None:
    """Pydantic's locations become `targets[1].job_ids[0]`; an unknown key lists the known ones."""
    text = """
    campaing_id = "c1"
    chunk_size = 5000
    [regions.ap-southeast-1]
    rate_limit = 0
    dli = "x"
    [[targets]]
    project_id = "p1"
    job_id = [1]
    [[targets]]
    project_id = "p2"
    job_ids = [0, "2", 3]
    all = "yes"
    tags = {env = 1}
    [[targets]]
    """
    problems = load_problems(write(tmp_path, text))
    target_keys = (
        "credentials, region, project_id, job_ids, job_ids_file, all, status, job_type, queue_name, name, "
        "user_name, "
        "tags, obs_dir, chunk_size, import_to"
    )
    assert problems == [
        "chunk_size: Input should be less than or equal to 1000",
        "regions.ap-southeast-1.rate_limit: must be greater than 0 and at most 100000 (requests/s), or auto",
        "regions.ap-southeast-1.dli: unknown key "
        "(known: credentials, dli_endpoint, obs_endpoint, rate_limit)",
        f"targets[0].job_id: unknown key (known: {target_keys})",
        "targets[1].job_ids[0]: Input should be greater than or equal to 1",
        "targets[1].job_ids[1]: Input should be a valid integer",
        "targets[1].all: Input should be a valid boolean",
        'targets[1].tags: tag values must be strings, e.g. tags = {env = "prod"}',
        "targets[2].project_id: Field required",
        "campaing_id: unknown key (known: campaign_id, obs_dir, chunk_size, regions, targets)",
    ]


def test_json_that_is_not_an_object() -> None:
    with pytest.raises(CampaignError) as caught:
        campaign_from_json([1, 2])
    assert caught.value.problems == ["campaign: must be an object of campaign keys, not list"]
    with pytest.raises(CampaignError) as caught:
        campaign_from_json({"targets": {"project_id": "p1"}}, source="body")
    assert caught.value.problems == ["body: targets: Input should be a valid list"]

"""The simulator's migration side over real sockets: imports into target projects that start empty, job
detail, target listings, the import faults and the control endpoint a migration's job map is checked with.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from exporter.devstack import (
    DEV_AK,
    DEV_PROJECT,
    DEV_SK,
    LocalStack,
    RegionSim,
    create_bucket,
    dev_s3_client,
    local_regions,
)
from exporter.dli.signer import Credentials, canonical_query_string, sign_request
from exporter.errors import ConfigError
from exporter.simulator import SimulatorHandle, load_simulator_settings
from exporter.simulator.job_fields import job_name

TARGET = "7a000000000000000000000000000001"
DEV = Credentials(DEV_AK, DEV_SK)
FIRST = 1_000_001
CREATED, COVERED = "Job successfully created", "Job successfully covered"
CONFLICT = "A job with the same name already exists"

StackFactory = Callable[..., AbstractAsyncContextManager[LocalStack]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def target_stack(stack: StackFactory) -> StackFactory:
    """The conftest stack with 20 static jobs and TARGET as an (empty) target project."""

    def open_stack(**kwargs: Any) -> AbstractAsyncContextManager[LocalStack]:
        kwargs.setdefault("target_projects", (TARGET,))
        return stack(jobs=20, **kwargs)

    return open_stack


async def call(
    http: aiohttp.ClientSession,
    sim: SimulatorHandle,
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    """One AK/SK-signed request; the status and the JSON answer (raw bytes when it is not JSON)."""
    raw = json.dumps(body).encode() if body is not None else None
    query = query or []
    headers, _ = sign_request(
        method, f"127.0.0.1:{sim.port}", path, query, {"Content-Type": "application/json"}, raw, DEV
    )
    url = f"{sim.url}{path}" + (f"?{canonical_query_string(query)}" if query else "")
    async with http.request(method, URL(url, encoded=True), data=raw, headers=headers) as response:
        data = await response.read()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data


def jobs_path(project_id: str, suffix: str = "") -> str:
    return f"/v1.0/{project_id}/streaming/jobs{suffix}"


async def export(
    http: aiohttp.ClientSession, sim: SimulatorHandle, obs_dir: str, *job_ids: int, project: str = DEV_PROJECT
) -> str:
    """Export the jobs of `project` into `obs_dir`; the ZIP's `bucket/key`."""
    body = {"obs_dir": obs_dir, "is_selected": True, "job_selected": list(job_ids)}
    status, answer = await call(http, sim, "POST", jobs_path(project, "/export"), body=body)
    assert status == 200, answer
    zip_file: str = answer["zip_file"][0]
    return zip_file


async def import_zip(
    http: aiohttp.ClientSession, sim: SimulatorHandle, zip_file: str, *, is_cover: bool = False
) -> tuple[int, Any]:
    body = {"zip_file": zip_file, "is_cover": is_cover}
    return await call(http, sim, "POST", jobs_path(TARGET, "/import"), body=body)


def mapping(answer: dict[str, Any]) -> list[tuple[Any, Any, str]]:
    return [(m["old_job_id"], m["new_job_id"], m["remark"]) for m in answer["job_mapping"]]


async def target_jobs(http: aiohttp.ClientSession, sim: SimulatorHandle) -> dict[str, int]:
    async with http.get(f"{sim.url}/_sim/projects/{TARGET}/jobs") as response:
        assert response.status == 200
        jobs: dict[str, int] = (await response.json())["jobs"]
        return jobs


# --- import ----------------------------------------------------------------------------------------------


async def test_export_then_import_into_an_empty_target(
    target_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    """The target starts empty; an import creates each job under a new ID, answered as strings."""
    async with target_stack() as stack:
        sim = stack.simulator
        status, before = await call(http, sim, "GET", jobs_path(TARGET))
        assert (status, before["job_list"]["total_count"]) == (200, 0)
        zip_file = await export(http, sim, f"{stack.bucket}/runs/one", 4, 6)

        status, answer = await import_zip(http, sim, zip_file)

        assert status == 200
        assert (answer["is_success"], answer["message"]) == (True, "The job is successfully imported.")
        assert mapping(answer) == [("4", str(FIRST), CREATED), ("6", str(FIRST + 1), CREATED)]
        assert await target_jobs(http, sim) == {job_name(4): FIRST, job_name(6): FIRST + 1}
        _, listed = await call(http, sim, "GET", jobs_path(TARGET), query=[("order", "asc")])
        assert [(j["job_id"], j["name"], j["status"]) for j in listed["job_list"]["jobs"]] == [
            (FIRST, job_name(4), "job_init"),
            (FIRST + 1, job_name(6), "job_init"),
        ]
        stats = sim.stats()
        assert (stats["imports"], stats["jobs_created"], stats["imports_lost"]) == (1, 2, 0)
        status, static = await call(http, sim, "GET", jobs_path(DEV_PROJECT), query=[("limit", "1")])
        assert static["job_list"]["total_count"] == 20  # the static catalogue did not change


async def test_reimport_conflicts_without_cover_and_keeps_ids_with_cover(
    target_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    async with target_stack() as stack:
        sim = stack.simulator
        zip_file = await export(http, sim, f"{stack.bucket}/runs/one", 4, 6)
        await import_zip(http, sim, zip_file)

        _, again = await import_zip(http, sim, zip_file)
        _, covered = await import_zip(http, sim, zip_file, is_cover=True)

        assert mapping(again) == [("4", "-1", CONFLICT), ("6", "-1", CONFLICT)]
        assert mapping(covered) == [("4", str(FIRST), COVERED), ("6", str(FIRST + 1), COVERED)]
        assert await target_jobs(http, sim) == {job_name(4): FIRST, job_name(6): FIRST + 1}
        stats = sim.stats()
        assert (stats["imports"], stats["jobs_created"], stats["jobs_covered"]) == (3, 2, 2)
        assert stats["import_conflicts"] == 2


async def test_seeded_names_conflict_and_take_the_first_new_ids(
    target_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    """`existing_names` jobs exist before any import (IDs from the same counter)."""
    async with target_stack(existing_names={TARGET: [job_name(4), "unrelated"]}) as stack:
        sim = stack.simulator
        assert await target_jobs(http, sim) == {job_name(4): FIRST, "unrelated": FIRST + 1}
        zip_file = await export(http, sim, f"{stack.bucket}/runs/one", 4, 6)

        _, answer = await import_zip(http, sim, zip_file)

        assert mapping(answer) == [("4", "-1", CONFLICT), ("6", str(FIRST + 2), CREATED)]


async def test_a_folder_imports_every_zip_in_it_and_only_zips(
    target_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    async with target_stack() as stack:
        sim = stack.simulator
        folder = f"{stack.bucket}/runs/folder"
        await export(http, sim, folder, 1, 2)
        await export(http, sim, folder, 3)

        status, answer = await import_zip(http, sim, folder)

        assert status == 200
        assert sorted(old for old, _, _ in mapping(answer)) == ["1", "2", "3"]
        assert len(await target_jobs(http, sim)) == 3
        async with dev_s3_client(stack.s3_endpoint) as s3:
            await s3.put_object(Bucket=stack.bucket, Key="runs/folder/manifest.json", Body=b"{}")
        status, refused = await import_zip(http, sim, folder, is_cover=True)
        assert (status, refused["error_code"]) == (400, "DLI.0001")
        assert "only .zip" in refused["error_msg"]


async def test_a_target_region_reads_only_its_own_buckets(
    target_stack: StackFactory, http: aiohttp.ClientSession, s3_server: str
) -> None:
    own = f"t-{uuid.uuid4().hex[:12]}"
    async with target_stack(readable_buckets=(own,)) as stack:
        sim = stack.simulator
        zip_file = await export(http, sim, f"{stack.bucket}/runs/one", 5)

        status, refused = await import_zip(http, sim, zip_file)
        assert (status, refused["error_code"]) == (403, "DLI.0011")
        assert stack.bucket in refused["error_msg"]
        assert await target_jobs(http, sim) == {}

        await create_bucket(s3_server, own)
        key = zip_file.partition("/")[2]
        async with dev_s3_client(s3_server) as s3:
            await s3.copy_object(Bucket=own, Key=key, CopySource={"Bucket": stack.bucket, "Key": key})
        status, answer = await import_zip(http, sim, f"{own}/{key}")
        assert (status, mapping(answer)) == (200, [("5", str(FIRST), CREATED)])


async def test_a_lost_import_answer_still_applied_the_import(
    target_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    """p_import_lost=1: the connection is reset, yet listing, detail and control see the new jobs."""
    async with target_stack(faults={"p_import_lost": 1.0}) as stack:
        sim = stack.simulator
        zip_file = await export(http, sim, f"{stack.bucket}/runs/one", 8, 9)

        with pytest.raises(aiohttp.ClientError):
            await import_zip(http, sim, zip_file)

        assert await target_jobs(http, sim) == {job_name(8): FIRST, job_name(9): FIRST + 1}
        _, found = await call(http, sim, "GET", jobs_path(TARGET), query=[("name", job_name(8))])
        assert [job["job_id"] for job in found["job_list"]["jobs"]] == [FIRST]
        status, detail = await call(http, sim, "GET", jobs_path(TARGET, f"/{FIRST + 1}"))
        assert (status, detail["job_detail"]["name"]) == (200, job_name(9))
        stats = sim.stats()
        assert (stats["imports"], stats["imports_lost"], stats["jobs_created"]) == (1, 1, 2)
        assert stats["requests"]["import_jobs"] == {"reset": 1}


async def test_gateway_faults_before_the_work_apply_nothing_and_after_it_apply_the_import(
    target_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    """503 and import_error answer before the work; a (zero-length) timeout and malformed after it."""
    async with target_stack() as stack:
        sim = stack.simulator
        zip_file = await export(http, sim, f"{stack.bucket}/runs/one", 1)
        sim.set_faults(p_503=1.0)
        assert (await import_zip(http, sim, zip_file))[0] == 503
        sim.set_faults(p_503=0.0, import_error="403:DLI.0003")
        status, refused = await import_zip(http, sim, zip_file)
        assert (status, refused["error_code"]) == (403, "DLI.0003")
        assert await target_jobs(http, sim) == {}

        sim.set_faults(import_error=None, p_timeout=1.0, timeout_seconds=0)
        status, answer = await import_zip(http, sim, zip_file)
        assert (status, mapping(answer)) == (200, [("1", str(FIRST), CREATED)])
        sim.set_faults(p_timeout=0.0, p_malformed=1.0)
        status, truncated = await import_zip(http, sim, zip_file, is_cover=True)
        assert status == 200
        assert isinstance(truncated, bytes)
        assert sim.stats()["jobs_covered"] == 1
        assert sim.stats()["faults"] == {"503": 1, "import_error": 1, "timeout": 1, "malformed": 1}


async def test_ids_as_numbers_and_reset_empties_the_targets(
    target_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    async with target_stack(existing_names={TARGET: ["seeded"]}) as stack:
        sim = stack.simulator
        zip_file = await export(http, sim, f"{stack.bucket}/runs/one", 2)
        sim.set_faults(import_ids_as_strings=False)
        _, answer = await import_zip(http, sim, zip_file)
        assert mapping(answer) == [(2, FIRST + 1, CREATED)]

        async with http.post(f"{sim.url}/_sim/reset") as response:
            assert response.status == 200

        assert await target_jobs(http, sim) == {"seeded": FIRST}
        _, again = await import_zip(http, sim, zip_file)
        assert mapping(again) == [(2, FIRST + 1, CREATED)]  # the counter started over too
        async with http.get(f"{sim.url}/_sim/projects/{DEV_PROJECT}/jobs") as response:
            assert response.status == 404  # a static project is not a target


# --- job detail and listing ------------------------------------------------------------------------------


async def test_job_detail_in_the_real_shape_and_unknown_jobs(
    target_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    """Found: `is_success` "true", a message and `job_detail`; unknown: 400 DLI.16001, as DLI answers."""
    async with target_stack() as stack:
        sim = stack.simulator
        status, answer = await call(http, sim, "GET", jobs_path(DEV_PROJECT, "/4"))
        assert status == 200
        assert (answer["is_success"], answer["message"]) == ("true", "Job detail query succeeds.")
        detail = answer["job_detail"]
        assert (detail["job_id"], detail["name"], detail["project_id"]) == (4, job_name(4), DEV_PROJECT)
        assert {"status", "job_type", "queue_name", "job_config", "create_time", "update_time"} <= set(detail)

        for project, job_id in [(DEV_PROJECT, 21), (DEV_PROJECT, 0), (TARGET, FIRST)]:
            status, unknown = await call(http, sim, "GET", jobs_path(project, f"/{job_id}"))
            assert (status, unknown["error_code"]) == (400, "DLI.16001")
            assert str(job_id) in unknown["error_msg"]
        status, other = await call(http, sim, "GET", jobs_path("f" * 32, "/4"))
        assert (status, other["error_code"]) == (404, "DLI.0023")


async def test_a_target_listing_filters_by_name_substring_and_pages(
    target_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    names = ["orders_1", "payments_2", "orders_10", "Orders_3"]
    async with target_stack(existing_names={TARGET: names}) as stack:
        sim = stack.simulator

        async def listed(*query: tuple[str, str]) -> tuple[int, list[str]]:
            status, answer = await call(http, sim, "GET", jobs_path(TARGET), query=list(query))
            assert status == 200
            return answer["job_list"]["total_count"], [job["name"] for job in answer["job_list"]["jobs"]]

        assert await listed(("name", "orders_1")) == (2, ["orders_10", "orders_1"])
        assert await listed(("name", "ORDERS"), ("order", "asc")) == (
            3,
            ["orders_1", "orders_10", "Orders_3"],
        )
        assert await listed(("limit", "1"), ("offset", "1")) == (4, ["orders_10"])
        assert await listed(("name", "nothing")) == (0, [])
        _, detailed = await call(http, sim, "GET", jobs_path(TARGET), query=[("show_detail", "true")])
        assert {job["project_id"] for job in detailed["job_list"]["jobs"]} == {TARGET}


async def test_a_target_project_exports_what_it_holds(
    target_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    async with target_stack(existing_names={TARGET: ["seeded"]}) as stack:
        sim = stack.simulator
        zip_file = await export(http, sim, f"{stack.bucket}/back", FIRST, project=TARGET)
        assert zip_file.split("/")[-1].startswith("seeded_")
        body = {"obs_dir": f"{stack.bucket}/back", "is_selected": True, "job_selected": [7]}
        status, refused = await call(http, sim, "POST", jobs_path(TARGET, "/export"), body=body)
        assert (status, refused["error_code"]) == (400, "DLI.0002")


# --- regions and settings --------------------------------------------------------------------------------


async def test_a_region_of_local_regions_can_hold_a_target_project(
    s3_server: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    layout = {
        "cn-north-4": RegionSim(projects=(DEV_PROJECT,)),
        "ap-southeast-1": RegionSim(
            projects=("a" * 32,), target_projects=(TARGET,), existing_names={TARGET: ["seeded"]}
        ),
    }
    async with local_regions(
        workdir=tmp_path, regions=layout, s3_endpoint=s3_server, bucket=bucket, jobs=5
    ) as regions:
        target_sim = regions.simulators["ap-southeast-1"]
        assert target_sim.stats()["target_projects"] == [TARGET]
        assert await target_jobs(http, target_sim) == {"seeded": FIRST}
        status, _ = await call(http, regions.simulators["cn-north-4"], "GET", jobs_path(TARGET))
        assert status == 404  # a target project lives in its own region only


def test_migration_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORTER_PROJECT_ID", DEV_PROJECT)
    monkeypatch.setenv("EXPORTER_AK", DEV_AK)
    monkeypatch.setenv("EXPORTER_SK", DEV_SK)
    monkeypatch.setenv("EXPORTER_SIM_TARGET_PROJECTS", f"{TARGET}, b0000000000000000000000000000002")
    monkeypatch.setenv("EXPORTER_SIM_EXISTING_NAMES", json.dumps({TARGET: ["a", "b"]}))
    monkeypatch.setenv("EXPORTER_SIM_READABLE_BUCKETS", "own-bucket,other-bucket")
    monkeypatch.setenv("EXPORTER_SIM_P_IMPORT_LOST", "0.25")

    settings = load_simulator_settings()

    assert settings.sim_target_projects == {TARGET, "b0000000000000000000000000000002"}
    assert settings.served_projects == settings.sim_target_projects | {DEV_PROJECT}
    assert settings.sim_existing_names == {TARGET: ["a", "b"]}
    assert settings.sim_readable_buckets == {"own-bucket", "other-bucket"}
    assert (settings.fault_knobs().p_import_lost, settings.fault_knobs().import_ids_as_strings) == (
        0.25,
        True,
    )


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"sim_target_projects": DEV_PROJECT}, "SIM_TARGET_PROJECTS"),
        ({"sim_existing_names": {TARGET: ["a"]}}, "SIM_EXISTING_NAMES"),
        ({"sim_target_projects": TARGET, "sim_existing_names": {TARGET: ["a", "a"]}}, "SIM_EXISTING_NAMES"),
        ({"sim_import_error": "teapot"}, "SIM_IMPORT_ERROR"),
    ],
)
def test_invalid_migration_settings_fail_at_start_up(overrides: dict[str, Any], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_simulator_settings(project_id=DEV_PROJECT, ak=DEV_AK, sk=DEV_SK, **overrides)

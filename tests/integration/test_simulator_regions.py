"""Several simulated regions at once (devstack.local_regions), projects beside `project_id`, and IAM's
project listing, all over real sockets: the exporter's DLI and IAM clients against the simulators."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import TEST_AK, TEST_SK
from yarl import URL

from exporter.devstack import DEV_AK, DEV_SK, RegionSim, RegionsStack, dev_s3_client, local_regions
from exporter.dli.client import DliClient
from exporter.dli.retry import RetryPolicy
from exporter.dli.signer import Credentials, canonical_query_string, sign_request
from exporter.errors import AuthError, ConfigError, Permanent, Transient
from exporter.iam import discovered_targets, list_projects
from exporter.simulator import SimulatorHandle, load_simulator_settings
from exporter.simulator.iam import DOMAIN_ID, MOS_NAME, account_projects

ASIA = "ap-southeast-1"
CHINA = "cn-north-4"
P_ASIA = "a0000000000000000000000000000001"
P_CHINA = "c0000000000000000000000000000001"
P_CHINA_2 = "c0000000000000000000000000000002"
P_CHINA_3 = "c0000000000000000000000000000003"
UNKNOWN = "f0000000000000000000000000000000"
DEV = Credentials(DEV_AK, DEV_SK)
LONG_WINDOW = {"rate_window_seconds": 60}  # a window no test outlasts, so 429s do not depend on timing

StackFactory = Callable[..., AbstractAsyncContextManager[RegionsStack]]


class _NoLimit:
    """The exporter-side limiter, out of the way: these tests are about the simulators' limits."""

    async def acquire(self) -> float:
        return 0.0

    async def pause(self, seconds: float, message: str = "") -> None:
        return None


@pytest.fixture
def regions_stack(s3_server: str, tmp_path: Path) -> StackFactory:
    def open_stack(regions: dict[str, RegionSim] | None = None, **kwargs: Any) -> Any:
        layout = regions or {
            ASIA: RegionSim(projects=(P_ASIA,)),
            CHINA: RegionSim(projects=(P_CHINA, P_CHINA_2, P_CHINA_3)),
        }
        bucket = f"t-{uuid.uuid4().hex[:12]}"
        return local_regions(
            workdir=tmp_path, regions=layout, s3_endpoint=s3_server, bucket=bucket, jobs=20, **kwargs
        )

    return open_stack


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def dli(http: aiohttp.ClientSession, sim: SimulatorHandle) -> DliClient:
    return DliClient(http, sim.url, DEV, _NoLimit(), RetryPolicy(max_attempts=1))


async def signed_get(
    http: aiohttp.ClientSession,
    sim: SimulatorHandle,
    path: str,
    query: list[tuple[str, str]] | None = None,
    credentials: Credentials = DEV,
) -> tuple[int, dict[str, Any]]:
    """One AK/SK-signed GET, the answer's status and JSON body."""
    query = query or []
    headers, _ = sign_request("GET", f"127.0.0.1:{sim.port}", path, query, {}, None, credentials)
    url = f"{sim.url}{path}" + (f"?{canonical_query_string(query)}" if query else "")
    async with http.get(URL(url, encoded=True), headers=headers) as response:
        return response.status, json.loads(await response.read())


def jobs_path(project_id: str) -> str:
    return f"/v1.0/{project_id}/streaming/jobs"


# --- regions and projects ------------------------------------------------------------------------------


async def test_two_regions_run_at_once_each_with_its_own_limit(
    regions_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    """Each region has its own port and window; the projects of one region share its window."""
    layout = {
        ASIA: RegionSim(projects=(P_ASIA,), rate_limit=2 / 60, faults=LONG_WINDOW),
        CHINA: RegionSim(projects=(P_CHINA, P_CHINA_2), rate_limit=6 / 60, faults=LONG_WINDOW),
    }
    async with regions_stack(layout) as stack:
        asia, china = stack.simulators[ASIA], stack.simulators[CHINA]
        assert asia.port != china.port
        assert (asia.stats()["region"], china.stats()["region"]) == (ASIA, CHINA)
        assert china.stats()["projects"] == sorted([P_CHINA, P_CHINA_2])

        asia_statuses = [(await signed_get(http, asia, jobs_path(P_ASIA)))[0] for _ in range(4)]
        china_statuses = [
            (await signed_get(http, china, jobs_path(project)))[0] for project in [P_CHINA, P_CHINA_2] * 3
        ]
        one_more, _ = await signed_get(http, china, jobs_path(P_CHINA_2))

    assert asia_statuses == [200, 200, 429, 429]
    assert china_statuses == [200] * 6
    assert one_more == 429
    assert (asia.stats()["throttled"], china.stats()["throttled"]) == (2, 1)


async def test_an_export_to_a_second_project_lands_in_obs(
    regions_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    """Every project has jobs 1..N; the ZIP's documents name the project; the counters keep them apart."""
    async with regions_stack() as stack:
        china = stack.simulators[CHINA]
        client = dli(http, china)
        first = await client.export_jobs(P_CHINA, f"{stack.bucket}/first", [1, 2])
        second = await client.export_jobs(P_CHINA_2, f"{stack.bucket}/second", [1, 2, 3])
        [path] = second.zip_files
        bucket, _, key = path.partition("/")
        async with dev_s3_client(stack.s3_endpoint) as s3:
            response = await s3.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                archive = zipfile.ZipFile(io.BytesIO(await stream.read()))
        listed = [job.job_id async for job in client.list_jobs(P_CHINA_3)]
        stats = china.stats()

    assert first.zip_files and path.startswith(f"{stack.bucket}/second/")
    assert archive.namelist() == ["flink_job_1.json", "flink_job_2.json", "flink_job_3.json"]
    assert json.loads(archive.read("flink_job_2.json"))["project_id"] == P_CHINA_2
    assert sorted(listed) == list(range(1, 21))  # the same catalogue in every project
    assert stats["jobs_exported_by_project"] == {P_CHINA: 2, P_CHINA_2: 3}
    assert (stats["exports"], stats["jobs_exported"], stats["job_exports_total"]) == (2, 5, 5)
    assert stats["job_ids_exported_more_than_once"] == 0  # job 1 of one project is not job 1 of another
    assert stats["overlapping_exports"] == 0


async def test_repeats_are_counted_per_project(
    regions_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    async with regions_stack() as stack:
        china = stack.simulators[CHINA]
        client = dli(http, china)
        for project in (P_CHINA, P_CHINA_2, P_CHINA_2):
            await client.export_jobs(project, stack.bucket, [4, 5])
        stats = china.stats()

    assert stats["job_ids_exported_more_than_once"] == 2
    assert stats["repeated_job_ids"] == [4, 5]
    assert stats["repeated_job_ids_by_project"] == {P_CHINA_2: [4, 5]}


async def test_an_unknown_project_is_404_dli_0023(
    regions_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    """A project that exists nowhere, or only in another region, is not found."""
    async with regions_stack() as stack:
        china = stack.simulators[CHINA]
        outcomes = []
        for project in (UNKNOWN, P_ASIA):
            with pytest.raises(Permanent) as caught:
                await dli(http, china).export_jobs(project, stack.bucket, [1])
            outcomes.append((caught.value.status, caught.value.code))

    assert outcomes == [(404, "DLI.0023"), (404, "DLI.0023")]


async def test_stack_settings_point_at_the_first_region(regions_stack: StackFactory) -> None:
    async with regions_stack(report_dir=Path("/tmp/unused-reports")) as stack:  # noqa: S108 - never written
        asia = stack.simulators[ASIA]
        settings = stack.settings

    assert stack.iam_endpoint == asia.url == settings.iam_endpoint == settings.dli_endpoint
    assert settings.project_id == P_ASIA
    assert settings.obs_endpoint == stack.s3_endpoint
    assert settings.report_dir == Path("/tmp/unused-reports")  # noqa: S108


async def test_local_regions_refuses_a_project_in_two_regions(tmp_path: Path) -> None:
    """Checked before anything starts (the S3 endpoint here is never contacted)."""
    layout = {ASIA: RegionSim(projects=(P_ASIA,)), CHINA: RegionSim(projects=(P_CHINA, P_ASIA))}
    with pytest.raises(ValueError, match=P_ASIA):
        async with local_regions(workdir=tmp_path, regions=layout, s3_endpoint="http://127.0.0.1:9"):
            pass
    with pytest.raises(ValueError, match="at least one project"):
        RegionSim(projects=())


# --- IAM's project listing ------------------------------------------------------------------------------


async def test_iam_listing_pages_through_every_project_and_discovery_skips_mos(
    regions_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    """Five projects (four regional ones and MOS) at two a page: three pages, every project once."""
    async with regions_stack() as stack:
        scoped = Credentials(DEV_AK, DEV_SK, project_id=P_CHINA)  # the client drops the scope itself
        projects = await list_projects(http, stack.iam_endpoint, scoped, per_page=2)
        from_china = await list_projects(http, stack.simulators[CHINA].url, DEV)
        iam_requests = stack.simulators[ASIA].stats()["requests"]["iam_projects"]

    names = {project.id: project.name for project in projects}
    assert names == {
        P_ASIA: ASIA,
        P_CHINA: CHINA,
        P_CHINA_2: f"{CHINA}_sub1",
        P_CHINA_3: f"{CHINA}_sub2",
        **{project.id: MOS_NAME for project in projects if project.name == MOS_NAME},
    }
    assert len(projects) == 5
    assert iam_requests == {"200": 3}
    assert sorted(from_china, key=lambda p: p.id) == sorted(projects, key=lambda p: p.id)
    assert discovered_targets(projects, None) == [
        (ASIA, P_ASIA),
        (CHINA, P_CHINA),
        (CHINA, P_CHINA_2),
        (CHINA, P_CHINA_3),
    ]
    assert discovered_targets(projects, [ASIA]) == [(ASIA, P_ASIA)]


async def test_iam_answers_in_keystone_shape_with_filters_and_links(
    regions_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    async with regions_stack() as stack:
        iam = stack.simulators[ASIA]
        _, by_name = await signed_get(http, iam, "/v3/projects", [("name", f"{CHINA}_sub1")])
        _, disabled = await signed_get(http, iam, "/v3/projects", [("enabled", "false")])
        _, page_two = await signed_get(http, iam, "/v3/projects", [("page", "2"), ("per_page", "2")])
        half, refused = await signed_get(http, iam, "/v3/projects", [("page", "1")])
        too_big, _ = await signed_get(http, iam, "/v3/projects", [("page", "1"), ("per_page", "5001")])

    [entry] = by_name["projects"]
    assert entry == {
        "id": P_CHINA_2,
        "name": f"{CHINA}_sub1",
        "domain_id": DOMAIN_ID,
        "parent_id": P_CHINA,  # a sub-project's parent is its region's project
        "enabled": True,
        "is_domain": False,
        "description": "",
        "links": {"self": f"{iam.url}/v3/projects/{P_CHINA_2}"},
    }
    assert by_name["links"]["self"].startswith(f"{iam.url}/v3/projects?name=")
    assert (by_name["links"]["previous"], by_name["links"]["next"]) == (None, None)
    assert disabled["projects"] == []
    assert [item["name"] for item in page_two["projects"]] == [f"{CHINA}_sub1", f"{CHINA}_sub2"]
    assert "page=1" in page_two["links"]["previous"] and "page=3" in page_two["links"]["next"]
    assert (half, refused["error_code"], too_big) == (400, "IAM.0007", 400)


async def test_iam_refuses_a_bad_signature_and_a_project_scope(
    regions_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    async with regions_stack() as stack:
        iam = stack.simulators[ASIA]
        with pytest.raises(AuthError) as caught:
            await list_projects(http, stack.iam_endpoint, Credentials(DEV_AK, "not-the-secret-key"))
        scoped = Credentials(DEV_AK, DEV_SK, project_id=P_ASIA)
        status, answer = await signed_get(http, iam, "/v3/projects", credentials=scoped)
        stranger, _ = await signed_get(http, iam, "/v3/projects", credentials=Credentials(TEST_AK, TEST_SK))
        auth_failures = iam.stats()["auth_failures"]

    assert (caught.value.status, caught.value.code) == (401, "IAM.0001")
    assert (status, answer["error_code"]) == (403, "IAM.0002")
    assert stranger == 401
    assert auth_failures == 2


async def test_iam_error_knob_fails_every_listing(
    regions_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    async with regions_stack() as stack:
        iam = stack.simulators[ASIA]
        iam.set_faults(iam_error="403:IAM.0002")
        with pytest.raises(Permanent) as forbidden:
            await list_projects(http, stack.iam_endpoint, DEV)
        iam.set_faults(iam_error="503:IAM.0006:IAM is down for maintenance")
        with pytest.raises(Transient) as down:
            await list_projects(http, stack.iam_endpoint, DEV)
        iam.set_faults(iam_error="")
        projects = await list_projects(http, stack.iam_endpoint, DEV)
        faults = iam.stats()["faults"]

    assert (forbidden.value.status, forbidden.value.code) == (403, "IAM.0002")
    assert "not authorized" in forbidden.value.message
    assert (down.value.status, down.value.reason) == (503, "server_error")
    assert "maintenance" in down.value.message
    assert len(projects) == 5
    assert faults == {"iam_error": 2}


async def test_iam_is_neither_throttled_nor_faulted_by_the_dli_dice(
    regions_stack: StackFactory, http: aiohttp.ClientSession
) -> None:
    """With the region's window spent and every DLI answer a 500, IAM still answers."""
    layout = {ASIA: RegionSim(projects=(P_ASIA,), rate_limit=1 / 60, faults={**LONG_WINDOW, "p_500": 1.0})}
    async with regions_stack(layout) as stack:
        iam = stack.simulators[ASIA]
        first, _ = await signed_get(http, iam, jobs_path(P_ASIA))
        second, _ = await signed_get(http, iam, jobs_path(P_ASIA))
        projects = [await list_projects(http, stack.iam_endpoint, DEV) for _ in range(3)]
        stats = iam.stats()

    assert (first, second) == (500, 429)
    assert all(len(listing) == 2 for listing in projects)  # the one region's project and MOS
    assert stats["throttled"] == 1
    assert stats["faults"] == {"500": 1}
    assert stats["max_in_window"] == 1


# --- settings -----------------------------------------------------------------------------------------


def test_region_projects_and_iam_listing_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPORTER_PROJECT_ID", P_CHINA)
    monkeypatch.setenv("EXPORTER_AK", DEV_AK)
    monkeypatch.setenv("EXPORTER_SK", DEV_SK)
    monkeypatch.setenv("EXPORTER_SIM_REGION", CHINA)
    monkeypatch.setenv("EXPORTER_SIM_PROJECTS", f"{P_CHINA_2}, {P_CHINA_3}")
    listing = [{"id": P_ASIA, "name": ASIA}, {"id": P_CHINA, "name": CHINA, "enabled": False}]
    monkeypatch.setenv("EXPORTER_SIM_IAM_PROJECTS", json.dumps(listing))

    settings = load_simulator_settings()

    assert settings.sim_region == CHINA
    assert settings.served_projects == {P_CHINA, P_CHINA_2, P_CHINA_3}
    assert [(p.name, p.enabled) for p in account_projects(settings)] == [
        (ASIA, True),
        (CHINA, False),
        (MOS_NAME, True),
    ]


def test_without_an_iam_listing_the_served_projects_are_listed() -> None:
    settings = load_simulator_settings(
        project_id=P_CHINA,
        ak=DEV_AK,
        sk=DEV_SK,
        sim_region=CHINA,
        sim_projects="c0000000000000000000000000000009",
    )
    names = [project.name for project in account_projects(settings)]
    assert names == [CHINA, f"{CHINA}_sub1", MOS_NAME]
    assert [p.name for p in account_projects(settings.model_copy(update={"sim_iam_mos": False}))] == names[:2]


@pytest.mark.parametrize(
    ("name", "value"),
    [("sim_region", "Not A Region"), ("sim_projects", "ok1,not-ok!"), ("sim_iam_projects", [{"id": "x"}])],
)
def test_invalid_region_settings_fail_at_start_up(name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=name.upper()):
        load_simulator_settings(project_id=P_CHINA, ak=DEV_AK, sk=DEV_SK, **{name: value})

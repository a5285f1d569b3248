"""Huawei's official Python SDK against the simulator: it signs, the simulator accepts, and the SDK parses.

This is the proof that the simulator checks signatures the way DLI does (the SDK is the reference client)
and that its answers have the shape the SDK's models expect. The SDK is synchronous, so each call runs in
a thread while the simulator serves on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support import TEST_AK, TEST_BUCKET, TEST_PROJECT, TEST_SK

from exporter.devstack import create_bucket
from exporter.simulator import SimulatorHandle, SimulatorSettings, running_simulator

SECURITY_TOKEN = "gQpjbi1ub3J0aC00EXAMPLEtemporaryTOKEN+/=tail"


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, ModuleType]:
    """The SDK modules, imported with HOME in a temporary folder (importing it writes ~/.huaweicloud)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    import huaweicloudsdkdli.v1 as dli
    from huaweicloudsdkcore.auth import credentials
    from huaweicloudsdkcore.exceptions import exceptions
    from huaweicloudsdkcore.http import http_config

    return {"credentials": credentials, "exceptions": exceptions, "http_config": http_config, "dli": dli}


@pytest.fixture
async def bucket(s3_server: str) -> str:
    await create_bucket(s3_server, TEST_BUCKET)
    return TEST_BUCKET


@pytest.fixture
async def sim(s3_server: str, bucket: str) -> AsyncIterator[SimulatorHandle]:
    settings = SimulatorSettings(
        project_id=TEST_PROJECT,
        ak=TEST_AK,
        sk=TEST_SK,
        obs_endpoint=s3_server,
        obs_region="us-east-1",
        sim_jobs=150,
        sim_missing_ids={77},
        sim_seed=3,
    )
    async with running_simulator(settings) as handle:
        yield handle


def _client(
    sdk: dict[str, ModuleType], sim: SimulatorHandle, *, sk: str = TEST_SK, token: str | None = None
) -> Any:
    """A DliClient set up like the wire captures: BasicCredentials, local endpoint, default HttpConfig."""
    credentials = sdk["credentials"].BasicCredentials(TEST_AK, sk, TEST_PROJECT)
    if token is not None:
        credentials = credentials.with_security_token(token)
    config = sdk["http_config"].HttpConfig.get_default_config()
    config.timeout = (5, 30)
    return (
        sdk["dli"]
        .DliClient.new_builder()
        .with_http_config(config)
        .with_credentials(credentials)
        .with_endpoints([sim.url])
        .build()
    )


async def _in_thread(call: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(call)


async def test_sdk_export_is_accepted_and_parsed(sdk: dict[str, ModuleType], sim: SimulatorHandle) -> None:
    """The SDK's export_flink_jobs is signed acceptably and its response model gets the ZIP path."""
    dli = sdk["dli"]
    client = _client(sdk, sim)
    body = dli.ExportFlinkJobsRequestBody(
        obs_dir=f"{TEST_BUCKET}/sdk", is_selected=True, job_selected=[100, 101]
    )

    response = await _in_thread(lambda: client.export_flink_jobs(dli.ExportFlinkJobsRequest(body=body)))

    assert response.status_code == 200
    assert response.is_success == "True"  # the SDK models is_success as str
    [path] = response.zip_file
    assert path.startswith(f"{TEST_BUCKET}/sdk/")
    stats = sim.stats()
    assert (stats["auth_failures"], stats["zips_written"], stats["jobs_exported"]) == (0, 1, 2)


async def test_sdk_listing_with_every_filter_is_accepted_and_parsed(
    sdk: dict[str, ModuleType], sim: SimulatorHandle
) -> None:
    """list_flink_jobs with every documented parameter (a name needing encoding) verifies and parses."""
    dli = sdk["dli"]
    client = _client(sdk, sim)
    request = dli.ListFlinkJobsRequest(
        job_type="flink_sql_job",
        limit=100,
        name="my job/ü~x",
        offset=0,
        order="desc",
        queue_name="queue_1",
        show_detail=True,
        status="job_running",
        tags="k1=v1",
        user_name="alice",
    )

    response = await _in_thread(lambda: client.list_flink_jobs(request))

    assert response.status_code == 200
    assert response.is_success == "true"
    assert response.job_list.total_count == 0
    assert sim.stats()["auth_failures"] == 0


async def test_sdk_pages_through_the_whole_catalogue(
    sdk: dict[str, ModuleType], sim: SimulatorHandle
) -> None:
    """Paging with the SDK's models yields every existing job once, details parsed into its job models."""
    dli = sdk["dli"]
    client = _client(sdk, sim)
    seen: list[int] = []
    pages = []
    for offset in range(0, 300, 100):
        request = dli.ListFlinkJobsRequest(offset=offset, limit=100, show_detail=True)
        response = await _in_thread(functools.partial(client.list_flink_jobs, request))
        pages.append(response)
        seen.extend(job.job_id for job in response.job_list.jobs)

    assert {page.job_list.total_count for page in pages} == {149}
    assert sorted(seen) == [job_id for job_id in range(1, 151) if job_id != 77]
    assert len(seen) == len(set(seen))
    assert pages[0].job_list.jobs[0].job_config.cu_number == 2


async def test_sdk_temporary_credentials_are_accepted(
    sdk: dict[str, ModuleType], sim: SimulatorHandle
) -> None:
    """With a security token the SDK signs X-Security-Token too, and the simulator still verifies it."""
    dli = sdk["dli"]
    client = _client(sdk, sim, token=SECURITY_TOKEN)

    response = await _in_thread(lambda: client.list_flink_jobs(dli.ListFlinkJobsRequest(limit=5)))

    assert [job.job_id for job in response.job_list.jobs] == [150, 149, 148, 147, 146]


async def test_sdk_reads_the_simulators_errors(sdk: dict[str, ModuleType], sim: SimulatorHandle) -> None:
    """Wrong SK, unknown ID and throttling reach the SDK as its exceptions with our codes and request IDs."""
    dli = sdk["dli"]
    client_request_exception = sdk["exceptions"].ClientRequestException

    def export(client: Any, *job_ids: int) -> Any:
        body = dli.ExportFlinkJobsRequestBody(
            obs_dir=TEST_BUCKET, is_selected=True, job_selected=list(job_ids)
        )
        return client.export_flink_jobs(dli.ExportFlinkJobsRequest(body=body))

    with pytest.raises(client_request_exception) as refused:
        await _in_thread(lambda: export(_client(sdk, sim, sk="not-the-secret-key"), 1))
    assert (refused.value.status_code, refused.value.error_code) == (401, "DLI.0013")
    assert refused.value.request_id

    client = _client(sdk, sim)
    with pytest.raises(client_request_exception) as unknown:
        await _in_thread(lambda: export(client, 1, 77))
    assert (unknown.value.status_code, unknown.value.error_code) == (400, "DLI.0002")
    assert "77" in unknown.value.error_msg

    # One request per 50 s window, and the two calls above are already in it.
    sim.set_faults(rate_limit=0.02, rate_window_seconds=50)
    with pytest.raises(client_request_exception) as throttled:
        await _in_thread(lambda: export(client, 3))
    assert (throttled.value.status_code, throttled.value.error_code) == (429, "APIG.0308")

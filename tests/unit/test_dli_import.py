"""DliClient's import side (aioresponses): importing a ZIP and one job's detail, through the export's
transport, limiter and retries; IDs as numbers or strings, and "no such job" as an answer, not an error."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl
from aioresponses import aioresponses
from fakes import ManualClock
from support import TEST_AK, TEST_PROJECT, TEST_SK

from exporter import metrics
from exporter.adapters.limiter import LocalRateLimiter
from exporter.dli.client import DliClient
from exporter.dli.import_responses import parse_job_id
from exporter.dli.responses import NOT_SUCCESS_CODE
from exporter.dli.retry import RetryPolicy
from exporter.dli.signer import Credentials
from exporter.errors import AuthError, Permanent, Transient
from exporter.migration.ports import DliImporter, ImportedJob, JobDetail
from exporter.ports import DliApi

ENDPOINT = "http://127.0.0.1:18767"
IMPORT_URL = yarl.URL(f"{ENDPOINT}/v1.0/{TEST_PROJECT}/streaming/jobs/import")
JOB_URL = yarl.URL(f"{ENDPOINT}/v1.0/{TEST_PROJECT}/streaming/jobs/104")
DOC_EXAMPLE: dict[str, Any] = {  # the import page's own example: IDs as strings
    "is_success": True,
    "message": "The job is successfully imported.",
    "job_mapping": [{"old_job_id": "100", "new_job_id": "200", "remark": "Job successfully created"}],
}
DETAIL: dict[str, Any] = {  # the detail page's example, shortened: is_success as a string, job_id as a number
    "is_success": "true",
    "message": "Job detail query succeeds.",
    "job_detail": {"job_id": 104, "name": "jptest", "status": "job_init", "job_type": "flink_jar_job"},
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(clock: ManualClock) -> AsyncIterator[DliClient]:
    async with aiohttp.ClientSession() as session:
        yield DliClient(
            session,
            ENDPOINT,
            Credentials(TEST_AK, TEST_SK),
            LocalRateLimiter(rate=1000, burst=100, clock=clock),
            RetryPolicy(max_attempts=3, initial_backoff=0.5, max_backoff=30, deadline=300),
            clock=clock,
        )


def requests_to(mocked: aioresponses, method: str, url: yarl.URL) -> list[Any]:
    return list(mocked.requests.get((method, url), []))


def requests_counted(operation: str, outcome: str) -> float:
    labels = {"operation": operation, "outcome": outcome}
    return metrics.REGISTRY.get_sample_value("exporter_dli_requests_total", labels) or 0.0


def test_the_client_is_both_an_exporter_and_an_importer(client: DliClient) -> None:
    """mypy checks these assignments: DliClient satisfies both Protocols."""
    api: DliApi = client
    importer: DliImporter = client
    assert api is client
    assert importer is client


# --- import ------------------------------------------------------------------------------------------------


async def test_import_sends_the_documented_body_and_reads_string_ids(
    client: DliClient, mocked: aioresponses
) -> None:
    """The request body is `zip_file` + `is_cover`; the page's own example (string IDs) parses to ints."""
    mocked.post(IMPORT_URL, payload=DOC_EXAMPLE, headers={"X-Request-Id": "req-import"})
    counted = requests_counted("import", "ok")

    result = await client.import_jobs(TEST_PROJECT, "target-bucket/dir/a.zip", is_cover=True)

    assert result.job_mapping == [
        ImportedJob(old_job_id=100, new_job_id=200, remark="Job successfully created")
    ]
    assert result.message == "The job is successfully imported."
    assert result.request_id == "req-import"
    (call,) = requests_to(mocked, "POST", IMPORT_URL)
    assert call.kwargs["data"] == b'{"zip_file":"target-bucket/dir/a.zip","is_cover":true}'
    assert call.kwargs["headers"]["Authorization"].startswith("SDK-HMAC-SHA256 ")
    assert requests_counted("import", "ok") == counted + 1


async def test_import_reads_numeric_ids_and_keeps_minus_one(client: DliClient, mocked: aioresponses) -> None:
    """Numbers work as well as strings; -1 (a job of that name existed, not overwritten) is passed on."""
    mapping = [
        {"old_job_id": 7, "new_job_id": 70},
        {"old_job_id": "8", "new_job_id": -1, "remark": "job name exists"},
    ]
    mocked.post(IMPORT_URL, payload={"is_success": "true", "job_mapping": mapping})

    result = await client.import_jobs(TEST_PROJECT, "b/a.zip", is_cover=False)

    assert [(job.old_job_id, job.new_job_id) for job in result.job_mapping] == [(7, 70), (8, -1)]
    assert result.job_mapping[1].remark == "job name exists"
    body = json.loads(requests_to(mocked, "POST", IMPORT_URL)[0].kwargs["data"])
    assert body == {"zip_file": "b/a.zip", "is_cover": False}


@pytest.mark.parametrize("is_success", [False, "false", "FALSE"])
async def test_import_is_success_false_is_the_usual_not_success_error(
    client: DliClient, mocked: aioresponses, is_success: object
) -> None:
    """A message saying the input is wrong is Permanent NOT_SUCCESS, carrying DLI's message."""
    mocked.post(IMPORT_URL, payload={"is_success": is_success, "message": "Invalid zip file b/a.zip"})
    with pytest.raises(Permanent) as caught:
        await client.import_jobs(TEST_PROJECT, "b/a.zip", is_cover=True)
    assert caught.value.code == NOT_SUCCESS_CODE
    assert "Invalid zip file b/a.zip" in caught.value.message
    assert len(requests_to(mocked, "POST", IMPORT_URL)) == 1


async def test_import_is_success_false_for_a_passing_reason_is_retried(
    client: DliClient, mocked: aioresponses
) -> None:
    mocked.post(IMPORT_URL, payload={"is_success": "false", "message": "DLI is busy"})
    mocked.post(IMPORT_URL, payload=DOC_EXAMPLE)
    result = await client.import_jobs(TEST_PROJECT, "b/a.zip", is_cover=True)
    assert result.job_mapping[0].new_job_id == 200
    assert len(requests_to(mocked, "POST", IMPORT_URL)) == 2


@pytest.mark.parametrize(
    "bad_id", ["12a", "", " ", "1.5", 1.5, True, None, {"id": 1}, [1], "99999999999999999999"]
)
async def test_import_with_malformed_ids_is_a_malformed_answer(
    client: DliClient, mocked: aioresponses, bad_id: object
) -> None:
    """Anything but an integer or a string of digits is malformed (retried, then given up), never a 0."""
    answer = {"is_success": True, "job_mapping": [{"old_job_id": 1, "new_job_id": bad_id}]}
    for _ in range(3):
        mocked.post(IMPORT_URL, payload=answer)
    with pytest.raises(Transient) as caught:
        await client.import_jobs(TEST_PROJECT, "b/a.zip", is_cover=True)
    assert caught.value.reason == "malformed"
    assert "new_job_id" in caught.value.message
    assert len(requests_to(mocked, "POST", IMPORT_URL)) == 3


async def test_import_after_a_5xx_is_retried_then_succeeds(
    client: DliClient, mocked: aioresponses, clock: ManualClock
) -> None:
    """A lost or failed answer is retried with backoff, like an export (the caller reconciles repeats)."""
    mocked.post(IMPORT_URL, status=503, body="<html>Service Unavailable</html>")
    mocked.post(IMPORT_URL, status=500, payload={"error_code": "DLI.0999", "error_msg": "oops"})
    mocked.post(IMPORT_URL, payload=DOC_EXAMPLE)
    retried = requests_counted("import", "server_error")

    result = await client.import_jobs(TEST_PROJECT, "b/a.zip", is_cover=True)

    assert result.job_mapping[0].old_job_id == 100
    assert len(requests_to(mocked, "POST", IMPORT_URL)) == 3
    assert len([s for s in clock.slept if s > 0]) == 2
    assert requests_counted("import", "server_error") == retried + 2


@pytest.mark.parametrize("zip_file", ["", "bucket-only", "/bucket/", "  "])
async def test_import_refuses_a_zip_path_without_bucket_and_key(client: DliClient, zip_file: str) -> None:
    with pytest.raises(ValueError, match="bucket/key"):
        await client.import_jobs(TEST_PROJECT, zip_file, is_cover=True)


# --- job detail -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", [104, "104"])
async def test_get_job_reads_the_detail(client: DliClient, mocked: aioresponses, job_id: object) -> None:
    mocked.get(JOB_URL, payload={**DETAIL, "job_detail": {**DETAIL["job_detail"], "job_id": job_id}})
    counted = requests_counted("job_detail", "ok")

    detail = await client.get_job(TEST_PROJECT, 104)

    assert detail == JobDetail(job_id=104, name="jptest", status="job_init")
    (call,) = requests_to(mocked, "GET", JOB_URL)
    assert call.kwargs["data"] is None
    assert requests_counted("job_detail", "ok") == counted + 1


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (400, {"error_code": "DLI.16001", "error_msg": "The job does not exist: 104."}),
        (400, {"error_code": "DLI.0002", "error_msg": "The object does not exist."}),
        (404, {"error_code": "DLI.0023", "error_msg": "No related resources were found."}),
        (200, {"is_success": "false", "message": "The job 104 does not exist."}),
        (200, {"is_success": False, "message": "Job not found"}),
    ],
)
async def test_get_job_of_an_unknown_job_is_none(
    client: DliClient, mocked: aioresponses, status: int, answer: dict[str, Any]
) -> None:
    mocked.get(JOB_URL, status=status, payload=answer)
    assert await client.get_job(TEST_PROJECT, 104) is None
    assert len(requests_to(mocked, "GET", JOB_URL)) == 1


async def test_get_job_401_twice_is_an_auth_error(client: DliClient, mocked: aioresponses) -> None:
    """The first 401 re-signs once; the second surfaces, as for every call."""
    refused = {"error_code": "DLI.0013", "error_msg": "User authentication errors occur."}
    mocked.get(JOB_URL, status=401, payload=refused)
    mocked.get(JOB_URL, status=401, payload=refused)
    with pytest.raises(AuthError) as caught:
        await client.get_job(TEST_PROJECT, 104)
    assert caught.value.status == 401
    assert len(requests_to(mocked, "GET", JOB_URL)) == 2


@pytest.mark.parametrize(
    ("status", "answer", "code"),
    [
        (400, {"error_code": "DLI.0001", "error_msg": "job_id is invalid"}, "DLI.0001"),
        (404, {"error_code": "APIG.0101", "error_msg": "The API does not exist"}, "APIG.0101"),
        (200, {"is_success": "false", "message": "Permission denied for job 104"}, NOT_SUCCESS_CODE),
    ],
)
async def test_get_job_other_refusals_stay_errors(
    client: DliClient, mocked: aioresponses, status: int, answer: dict[str, Any], code: str
) -> None:
    """Only DLI's "no such object" means no such job; a gateway's 404 (no such API) is no answer."""
    mocked.get(JOB_URL, status=status, payload=answer)
    with pytest.raises(Permanent) as caught:
        await client.get_job(TEST_PROJECT, 104)
    assert caught.value.code == code


async def test_bare_successes(client: DliClient, mocked: aioresponses) -> None:
    """A success without `job_mapping` imported nothing; one without `job_detail` is unreadable."""
    mocked.post(IMPORT_URL, payload={"is_success": True, "job_mapping": None})
    assert (await client.import_jobs(TEST_PROJECT, "b/a.zip", is_cover=True)).job_mapping == []
    for _ in range(3):  # the policy's attempts
        mocked.get(JOB_URL, payload={"is_success": "true", "message": "ok"})
    with pytest.raises(Transient, match="job_detail"):
        await client.get_job(TEST_PROJECT, 104)


@pytest.mark.parametrize("job_id", [0, -1, True, 2**63])
async def test_get_job_refuses_ids_dli_cannot_have(client: DliClient, job_id: int) -> None:
    with pytest.raises(ValueError, match="job_id"):
        await client.get_job(TEST_PROJECT, job_id)


# --- the ID rule on its own -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(5, 5), ("5", 5), (" 42 ", 42), ("-1", -1), (-1, -1), (2**63 - 1, 2**63 - 1)]
)
def test_parse_job_id_accepts_integers_and_digit_strings(value: object, expected: int) -> None:
    assert parse_job_id(value) == expected


@pytest.mark.parametrize("value", ["0x10", "1e3", "+5", "٣", 2.0, False, None, 2**63, str(-(2**63) - 1)])
def test_parse_job_id_refuses_everything_else(value: object) -> None:
    with pytest.raises(ValueError, match="job ID"):
        parse_job_id(value)

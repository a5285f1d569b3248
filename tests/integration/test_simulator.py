"""The DLI simulator over real sockets: signed calls with plain aiohttp, ZIPs read back from real S3."""

from __future__ import annotations

import asyncio
import io
import json
import random
import re
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError
from multidict import CIMultiDict
from support import TEST_AK, TEST_BUCKET, TEST_PROJECT, TEST_SK, free_port
from yarl import URL

from exporter.devstack import create_bucket, dev_s3_client
from exporter.dli.signer import Credentials, canonical_query_string, sign_request
from exporter.errors import ConfigError
from exporter.simulator import (
    SimulatorHandle,
    SimulatorSettings,
    load_simulator_settings,
    running_simulator,
    serve_simulator,
)
from exporter.simulator.faults import FaultKind, FaultKnobs, SlidingWindow, decide_fault, merge_knobs
from exporter.simulator.jobs import JobCatalogue, job_queue, job_type, parse_list_query

AUTH_TOKEN = "iam-token-for-tests"
EXPORT_PATH = f"/v1.0/{TEST_PROJECT}/streaming/jobs/export"
LIST_PATH = f"/v1.0/{TEST_PROJECT}/streaming/jobs"
IMPORT_PATH = f"/v1.0/{TEST_PROJECT}/streaming/jobs/import"
CREDENTIALS = Credentials(TEST_AK, TEST_SK, project_id=TEST_PROJECT)


# --- fixtures and helpers -----------------------------------------------------------------------------


@pytest.fixture
async def s3(s3_server: str) -> AsyncIterator[Any]:
    """An S3 client on the test server, with the test bucket in place."""
    await create_bucket(s3_server, TEST_BUCKET)
    async with dev_s3_client(s3_server) as client:
        yield client


@pytest.fixture
def make_settings(s3_server: str) -> Callable[..., SimulatorSettings]:
    def make(**overrides: Any) -> SimulatorSettings:
        values: dict[str, Any] = {
            "project_id": TEST_PROJECT,
            "ak": TEST_AK,
            "sk": TEST_SK,
            "auth_token": AUTH_TOKEN,
            "obs_endpoint": s3_server,
            "obs_region": "us-east-1",
            "sim_jobs": 50,
            "sim_seed": 7,
        }
        values.update(overrides)
        return SimulatorSettings(**values)

    return make


@pytest.fixture
async def sim(make_settings: Callable[..., SimulatorSettings], s3: Any) -> AsyncIterator[SimulatorHandle]:
    async with running_simulator(make_settings(sim_missing_ids={5})) as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    sim: SimulatorHandle,
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: dict[str, Any] | bytes | None = None,
    credentials: Credentials | None = CREDENTIALS,
    headers: dict[str, str] | None = None,
    read_timeout: float | None = None,
) -> tuple[int, CIMultiDict[str], bytes]:
    """One request, AK/SK-signed like the SDK signs it unless `credentials` is None."""
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    query = query or []
    send = {"Content-Type": "application/json", **(headers or {})}
    if credentials is not None:
        send, _ = sign_request(method, f"127.0.0.1:{sim.port}", path, query, send, raw, credentials)
    url = f"{sim.url}{path}" + (f"?{canonical_query_string(query)}" if query else "")
    client_timeout = aiohttp.ClientTimeout(total=read_timeout) if read_timeout else None
    async with http.request(
        method,
        URL(url, encoded=True),
        data=raw,
        headers=send,
        timeout=client_timeout,
    ) as response:
        return response.status, CIMultiDict(response.headers), await response.read()


def export_body(*job_ids: int, obs_dir: str = f"{TEST_BUCKET}/runs/one") -> dict[str, Any]:
    return {"obs_dir": obs_dir, "is_selected": True, "job_selected": list(job_ids)}


async def read_zip(s3: Any, path: str) -> zipfile.ZipFile:
    bucket, _, key = path.partition("/")
    response = await s3.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as stream:
        return zipfile.ZipFile(io.BytesIO(await stream.read()))


async def object_exists(s3: Any, path: str) -> bool:
    bucket, _, key = path.partition("/")
    try:
        await s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response["Error"]["Code"] in {"404", "NoSuchKey"}:
            return False
        raise
    return True


# --- export ---------------------------------------------------------------------------------------------


async def test_export_writes_a_real_zip_with_one_entry_per_job(
    sim: SimulatorHandle, http: aiohttp.ClientSession, s3: Any
) -> None:
    """An export answers like DLI, names the ZIP bucket/prefix/name_epochms.zip, one JSON per job inside."""
    status, headers, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(3, 1, 2, 3))

    assert status == 200
    assert headers["X-Request-Id"]
    answer = json.loads(raw)
    assert answer["is_success"] is True
    assert answer["message"]
    [path] = answer["zip_file"]
    assert re.fullmatch(rf"{TEST_BUCKET}/runs/one/payments_3_\d{{13,}}\.zip", path)
    archive = await read_zip(s3, path)
    assert archive.namelist() == ["flink_job_3.json", "flink_job_1.json", "flink_job_2.json"]
    document = json.loads(archive.read("flink_job_1.json"))
    assert document["job_id"] == 1
    assert document["project_id"] == TEST_PROJECT
    stats = sim.stats()
    assert (stats["zips_written"], stats["jobs_exported"], stats["job_exports_total"]) == (1, 3, 3)


async def test_every_export_gets_its_own_zip(
    sim: SimulatorHandle, http: aiohttp.ClientSession, s3: Any
) -> None:
    """Repeating an export never overwrites the first ZIP, and the stats count the repeated job IDs."""
    paths = set()
    for _ in range(3):
        _, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(7, 8))
        paths.update(json.loads(raw)["zip_file"])

    assert len(paths) == 3
    for path in paths:
        assert await object_exists(s3, path)
    stats = sim.stats()
    assert stats["job_ids_exported_more_than_once"] == 2
    assert stats["repeated_job_ids"] == [7, 8]
    assert stats["job_exports_total"] == 6


async def test_export_of_all_jobs_when_nothing_is_selected(
    sim: SimulatorHandle, http: aiohttp.ClientSession, s3: Any
) -> None:
    """`is_selected: false` exports every existing job (50 minus the missing ID 5) into one ZIP."""
    body = {"obs_dir": TEST_BUCKET, "is_selected": False}
    status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=body)

    assert status == 200
    [path] = json.loads(raw)["zip_file"]
    assert path.count("/") == 1  # no prefix: the ZIP sits at the bucket root
    names = (await read_zip(s3, path)).namelist()
    assert names == [f"flink_job_{job_id}.json" for job_id in range(1, 51) if job_id != 5]


async def test_unknown_job_ids_are_refused_by_name(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """IDs that do not exist (past N, or listed as missing) give 400 DLI.0002 naming them, and no ZIP."""
    status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1, 999, 5))

    assert status == 400
    answer = json.loads(raw)
    assert answer["error_code"] == "DLI.0002"
    assert "5" in answer["error_msg"]
    assert "999" in answer["error_msg"]
    assert sim.stats()["zips_written"] == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        {"is_selected": True, "job_selected": [1]},
        {"obs_dir": "", "is_selected": True, "job_selected": [1]},
        {"obs_dir": "Bad_Bucket!", "is_selected": True, "job_selected": [1]},
        {"obs_dir": TEST_BUCKET, "job_selected": [1]},
        {"obs_dir": TEST_BUCKET, "is_selected": "true", "job_selected": [1]},
        {"obs_dir": TEST_BUCKET, "is_selected": True},
        {"obs_dir": TEST_BUCKET, "is_selected": True, "job_selected": []},
        {"obs_dir": TEST_BUCKET, "is_selected": True, "job_selected": ["1"]},
        {"obs_dir": TEST_BUCKET, "is_selected": True, "job_selected": [0]},
        {"obs_dir": TEST_BUCKET, "is_selected": True, "job_selected": [True]},
    ],
)
async def test_bad_export_parameters_give_dli_0001(
    sim: SimulatorHandle, http: aiohttp.ClientSession, body: dict[str, Any] | bytes
) -> None:
    """Every malformed export request is refused with 400 DLI.0001, as DLI's parameter check does."""
    status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=body)

    assert status == 400
    assert json.loads(raw)["error_code"] == "DLI.0001"


async def test_export_into_a_missing_bucket_is_refused(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    """A bucket that does not exist in the object store gives 400 DLI.0002 saying so."""
    status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1, obs_dir="no-such-bucket"))

    assert status == 400
    answer = json.loads(raw)
    assert answer["error_code"] == "DLI.0002"
    assert "no-such-bucket" in answer["error_msg"]


# --- authentication and routing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "headers"),
    [
        (Credentials(TEST_AK, "wrong-secret-key", project_id=TEST_PROJECT), None),
        (Credentials("AKUNKNOWN00000000000", TEST_SK, project_id=TEST_PROJECT), None),
        (None, None),
        (None, {"X-Auth-Token": "not-the-token"}),
    ],
    ids=["wrong-sk", "unknown-ak", "no-auth", "wrong-token"],
)
async def test_bad_credentials_give_401_dli_0013(
    sim: SimulatorHandle,
    http: aiohttp.ClientSession,
    credentials: Credentials | None,
    headers: dict[str, str] | None,
) -> None:
    """A wrong signature, an unknown AK, no authentication or a wrong token: 401 DLI.0013, counted."""
    status, _, raw = await call(
        http, sim, "POST", EXPORT_PATH, body=export_body(1), credentials=credentials, headers=headers
    )

    assert status == 401
    assert json.loads(raw)["error_code"] == "DLI.0013"
    assert sim.stats()["auth_failures"] == 1


async def test_a_tampered_body_breaks_the_signature(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    """The body is covered by the signature: changing it after signing gives 401."""
    raw = json.dumps(export_body(1)).encode()
    headers, _ = sign_request(
        "POST",
        f"127.0.0.1:{sim.port}",
        EXPORT_PATH,
        [],
        {"Content-Type": "application/json"},
        raw,
        CREDENTIALS,
    )
    async with http.post(f"{sim.url}{EXPORT_PATH}", data=raw.replace(b"1]", b"2]"), headers=headers) as resp:
        assert resp.status == 401


async def test_the_iam_token_is_accepted(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """The configured X-Auth-Token authenticates without a signature."""
    status, _, raw = await call(
        http, sim, "GET", LIST_PATH, credentials=None, headers={"X-Auth-Token": AUTH_TOKEN}
    )

    assert status == 200
    assert json.loads(raw)["job_list"]["total_count"] == 49


async def test_another_project_is_not_found(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """A project other than the configured one answers 404 DLI.0023 (no related resources)."""
    path = "/v1.0/ffffffffffffffffffffffffffffffff/streaming/jobs"
    status, _, raw = await call(http, sim, "GET", path)

    assert status == 404
    assert json.loads(raw)["error_code"] == "DLI.0023"


async def test_unknown_paths_answer_404_with_a_request_id(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    """Paths and methods the API does not have get the gateway's 404 APIG.0101, with X-Request-Id."""
    for method, path in [("GET", "/v2/nothing"), ("GET", EXPORT_PATH)]:
        status, headers, raw = await call(http, sim, method, path)
        assert status == 404
        assert json.loads(raw)["error_code"] == "APIG.0101"
        assert headers["X-Request-Id"]


# --- listing --------------------------------------------------------------------------------------------


async def _all_pages(
    http: aiohttp.ClientSession, sim: SimulatorHandle, extra: list[tuple[str, str]]
) -> tuple[list[int], set[int]]:
    job_ids: list[int] = []
    totals: set[int] = set()
    for offset in range(0, 1000, 100):
        query = [("offset", str(offset)), ("limit", "100"), *extra]
        status, _, raw = await call(http, sim, "GET", LIST_PATH, query=query)
        assert status == 200
        answer = json.loads(raw)
        assert answer["is_success"] == "true"
        totals.add(answer["job_list"]["total_count"])
        page = [job["job_id"] for job in answer["job_list"]["jobs"]]
        if not page:
            break
        job_ids.extend(page)
    return job_ids, totals


async def test_listing_pages_add_up_to_every_job_once(
    make_settings: Callable[..., SimulatorSettings], http: aiohttp.ClientSession, s3: Any
) -> None:
    """Paging with offset/limit yields each existing job exactly once, newest first by default."""
    settings = make_settings(sim_jobs=237, sim_missing_ids={10, 200})
    async with running_simulator(settings) as sim:
        job_ids, totals = await _all_pages(http, sim, [])
        ascending, _ = await _all_pages(http, sim, [("order", "asc")])

    expected = [job_id for job_id in range(237, 0, -1) if job_id not in {10, 200}]
    assert job_ids == expected
    assert ascending == expected[::-1]
    assert totals == {235}


async def test_listing_filters_select_matching_jobs(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    """Filters combine, and every filtered page holds only jobs that match, with a matching total."""
    extra = [("queue_name", "queue_2"), ("job_type", "flink_jar_job")]
    job_ids, totals = await _all_pages(http, sim, extra)

    expected = sorted(
        (i for i in range(1, 51) if i != 5 and job_queue(i) == "queue_2" and job_type(i) == "flink_jar_job"),
        reverse=True,
    )
    assert job_ids == expected
    assert totals == {len(expected)}
    named, _ = await _all_pages(http, sim, [("name", "ORDERS_")])
    assert named and all(job_id % 7 == 2 for job_id in named)
    tagged, _ = await _all_pages(http, sim, [("tags", "env=test")])
    assert tagged == [49, 42, 35, 28, 21, 14, 7]


async def test_listing_defaults_and_details(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """Without limit a page holds 10 jobs; show_detail=true adds the detail fields (job_config...)."""
    _, _, raw = await call(http, sim, "GET", LIST_PATH)
    assert len(json.loads(raw)["job_list"]["jobs"]) == 10

    _, _, raw = await call(http, sim, "GET", LIST_PATH, query=[("show_detail", "true"), ("limit", "1")])
    [job] = json.loads(raw)["job_list"]["jobs"]
    assert job["job_config"]["cu_number"] == 2
    assert job["project_id"] == TEST_PROJECT
    assert "user_name" not in job


@pytest.mark.parametrize(
    "query",
    [
        [("limit", "101")],
        [("limit", "ten")],
        [("offset", "-1")],
        [("order", "sideways")],
        [("show_detail", "maybe")],
        [("job_type", "spark_job")],
        [("status", "job_sleeping")],
        [("tags", "novalue")],
    ],
)
async def test_bad_listing_parameters_give_dli_0001(
    sim: SimulatorHandle, http: aiohttp.ClientSession, query: list[tuple[str, str]]
) -> None:
    """Out-of-range or unknown listing parameters give 400 DLI.0001."""
    status, _, raw = await call(http, sim, "GET", LIST_PATH, query=query)

    assert status == 400
    assert json.loads(raw)["error_code"] == "DLI.0001"


# --- import ---------------------------------------------------------------------------------------------


async def test_import_reads_the_exported_zip(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """Importing an exported ZIP maps each job; without is_cover existing names map to -1."""
    _, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(4, 6))
    [path] = json.loads(raw)["zip_file"]

    status, _, raw = await call(http, sim, "POST", IMPORT_PATH, body={"zip_file": path, "is_cover": True})
    assert status == 200
    answer = json.loads(raw)
    assert [(m["old_job_id"], m["new_job_id"]) for m in answer["job_mapping"]] == [(4, 4), (6, 6)]

    _, _, raw = await call(http, sim, "POST", IMPORT_PATH, body={"zip_file": path})
    assert [m["new_job_id"] for m in json.loads(raw)["job_mapping"]] == [-1, -1]

    status, _, raw = await call(
        http, sim, "POST", IMPORT_PATH, body={"zip_file": f"{TEST_BUCKET}/nothing-here/x.zip"}
    )
    assert (status, json.loads(raw)["error_code"]) == (400, "DLI.0002")


# --- faults ---------------------------------------------------------------------------------------------


async def test_500_fault(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """p_500=1 answers every call with 500 DLI.0999 and writes nothing."""
    sim.set_faults(p_500=1.0)
    status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1))

    assert (status, json.loads(raw)["error_code"]) == (500, "DLI.0999")
    assert sim.stats()["faults"] == {"500": 1}
    assert sim.stats()["zips_written"] == 0


async def test_503_fault(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """p_503=1 answers 503."""
    sim.set_faults(p_503=1.0)
    status, _, _ = await call(http, sim, "GET", LIST_PATH)

    assert status == 503
    assert sim.stats()["faults"] == {"503": 1}


async def test_html_fault(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """p_html=1 answers a gateway's 502 HTML page, not JSON."""
    sim.set_faults(p_html=1.0)
    status, headers, raw = await call(http, sim, "GET", LIST_PATH)

    assert status == 502
    assert headers["Content-Type"].startswith("text/html")
    assert raw.startswith(b"<html>")


async def test_not_success_fault(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """p_not_success=1 answers 200 with is_success false and a message, and exports nothing."""
    sim.set_faults(p_not_success=1.0)
    status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1))

    answer = json.loads(raw)
    assert status == 200
    assert answer["is_success"] is False
    assert answer["message"]
    assert sim.stats()["jobs_exported"] == 0


async def test_malformed_fault(sim: SimulatorHandle, http: aiohttp.ClientSession, s3: Any) -> None:
    """p_malformed=1 does the export but answers 200 with JSON cut short."""
    sim.set_faults(p_malformed=1.0)
    status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1))

    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert sim.stats()["zips_written"] == 1


async def test_reset_fault(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """p_reset=1 drops the connection without an answer (POST, so aiohttp does not retry it)."""
    sim.set_faults(p_reset=1.0)
    with pytest.raises(aiohttp.ClientError):
        await call(http, sim, "POST", EXPORT_PATH, body=export_body(1))

    stats = sim.stats()
    assert stats["requests"]["export_jobs"] == {"reset": 1}
    assert stats["faults"] == {"reset": 1}


async def test_timeout_fault(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """p_timeout=1 holds the answer for timeout_seconds, so a client with a shorter timeout gives up."""
    sim.set_faults(p_timeout=1.0, timeout_seconds=5.0)
    with pytest.raises(asyncio.TimeoutError):
        await call(http, sim, "GET", LIST_PATH, read_timeout=0.3)

    assert sim.stats()["faults"] == {"timeout": 1}


async def test_never_fault(sim: SimulatorHandle, http: aiohttp.ClientSession, s3: Any) -> None:
    """p_never=1 answers success with a ZIP path but never writes the object."""
    sim.set_faults(p_never=1.0)
    status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1))

    assert status == 200
    [path] = json.loads(raw)["zip_file"]
    assert not await object_exists(s3, path)
    assert sim.stats()["faults"] == {"never": 1}
    assert sim.stats()["zips_written"] == 0


async def test_late_zip_appears_only_after_the_delay(
    sim: SimulatorHandle, http: aiohttp.ClientSession, s3: Any
) -> None:
    """p_late=1 answers at once but the ZIP shows up in S3 no earlier than late_seconds later."""
    late_seconds = 0.5
    sim.set_faults(p_late=1.0, late_seconds=late_seconds)
    sent_at = time.monotonic()
    status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1, 2))
    [path] = json.loads(raw)["zip_file"]

    assert status == 200
    for _ in range(100):
        if await object_exists(s3, path):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the late ZIP never appeared")
    assert time.monotonic() - sent_at >= late_seconds
    assert len((await read_zip(s3, path)).namelist()) == 2
    assert sim.stats()["faults"] == {"late": 1}


async def test_is_success_as_string(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """is_success_as_string answers the export with the string "true", as the listing docs show."""
    sim.set_faults(is_success_as_string=True)
    _, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1))

    assert json.loads(raw)["is_success"] == "true"


async def test_list_error_fails_every_listing_with_a_fixed_error(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    """list_error=403:DLI.0003 (set by POST /_sim/faults) fails every signed listing; exports still work."""
    async with http.post(f"{sim.url}/_sim/faults", json={"sim_list_error": "403:DLI.0003"}) as response:
        assert (await response.json())["list_error"] == "403:DLI.0003"
    for _ in range(2):
        status, headers, raw = await call(http, sim, "GET", LIST_PATH, query=[("limit", "5")])
        answer = json.loads(raw)
        assert status == 403
        assert headers["Content-Type"].startswith("application/json")
        assert (answer["is_success"], answer["error_code"]) == ("false", "DLI.0003")
        assert "permission" in answer["error_msg"]
    status, _, _ = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1))
    assert status == 200
    assert sim.stats()["faults"] == {"list_error": 2}

    async with http.post(f"{sim.url}/_sim/faults", json={"list_error": "DLI.0003"}) as response:
        assert response.status == 400
        assert "list_error" in (await response.json())["error"]
    sim.set_faults(list_error="")  # off again
    status, _, _ = await call(http, sim, "GET", LIST_PATH)
    assert status == 200


async def test_export_error_comes_after_authentication_and_writes_nothing(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    """export_error answers its status, code and message to signed exports; unsigned ones still get 401."""
    sim.set_faults(export_error="400:DLI.0003:No permission to export jobs.")
    status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1))
    assert (status, json.loads(raw)) == (
        400,
        {"is_success": False, "error_code": "DLI.0003", "error_msg": "No permission to export jobs."},
    )
    status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1), credentials=None)
    assert (status, json.loads(raw)["error_code"]) == (401, "DLI.0013")
    assert sim.stats()["faults"] == {"export_error": 1}
    assert sim.stats()["zips_written"] == 0


async def test_latency_delays_answers(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    """latency_ms holds every answer at least that long."""
    sim.set_faults(latency_ms=200)
    started = time.monotonic()
    status, _, _ = await call(http, sim, "GET", LIST_PATH)

    assert status == 200
    assert time.monotonic() - started >= 0.2


# --- throttling -----------------------------------------------------------------------------------------


async def test_rate_limit_throttles_with_retry_after(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    """Over the limit answers 429 APIG.0308 with Retry-After >= 1 s; the window never admits more."""
    sim.set_faults(rate_limit=5)
    results = await asyncio.gather(*(call(http, sim, "GET", LIST_PATH) for _ in range(20)))

    statuses = [status for status, _, _ in results]
    throttled = [(headers, raw) for status, headers, raw in results if status == 429]
    assert statuses.count(200) >= 5
    assert throttled
    for headers, raw in throttled:
        assert int(headers["Retry-After"]) >= 1
        assert json.loads(raw)["error_code"] == "APIG.0308"
    stats = sim.stats()
    assert 1 <= stats["max_in_window"] <= 5
    assert stats["throttled"] == len(throttled)


async def test_refused_requests_do_not_fill_the_window(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    """A client hammering through its 429s is admitted once the window slides, so refusals don't count."""
    sim.set_faults(rate_limit=10, rate_window_seconds=0.2)  # 2 per 0.2 s
    for _ in range(3):
        await call(http, sim, "GET", LIST_PATH)
    admitted_after_refusal = False
    for _ in range(200):
        status, _, _ = await call(http, sim, "GET", LIST_PATH)
        if status == 200 and sim.stats()["throttled"] > 0:
            admitted_after_refusal = True
            break
        await asyncio.sleep(0.01)

    assert admitted_after_refusal
    assert sim.stats()["max_in_window"] <= 2


# --- control endpoints ----------------------------------------------------------------------------------


async def test_control_endpoints_change_faults_and_reset_counters(
    sim: SimulatorHandle, http: aiohttp.ClientSession
) -> None:
    """POST /_sim/faults validates and applies knobs; GET /_sim/stats counts; POST /_sim/reset zeroes."""
    async with http.post(f"{sim.url}/_sim/faults", json={"sim_p_500": 2}) as response:
        assert response.status == 400
    async with http.post(f"{sim.url}/_sim/faults", json={"bogus": 1}) as response:
        assert response.status == 400
        assert "bogus" in (await response.json())["error"]
    async with http.post(f"{sim.url}/_sim/faults", json={"sim_p_503": 1.0}) as response:
        assert (await response.json())["p_503"] == 1.0
    await call(http, sim, "GET", LIST_PATH)
    async with http.get(f"{sim.url}/_sim/stats") as response:
        stats = await response.json()
    assert stats["requests"]["list_jobs"] == {"503": 1}
    assert stats["max_in_window"] == 1

    async with http.post(f"{sim.url}/_sim/reset") as response:
        assert response.status == 200
    assert sim.stats()["requests"] == {"sim_reset": {"200": 1}}
    assert sim.stats()["max_in_window"] == 0


# --- pure parts -----------------------------------------------------------------------------------------


def test_sliding_window_counts_only_admitted_requests() -> None:
    """The window admits `capacity` per window, says how long to wait, and ignores refusals."""
    window = SlidingWindow(1.0, 2)
    assert window.admit(0.0) is None
    assert window.admit(0.1) is None
    assert window.admit(0.5) == pytest.approx(0.5)
    assert window.admit(0.9) == pytest.approx(0.1)
    assert window.admit(1.0) is None  # the first admission left; the refusals never entered
    assert window.max_in_window == 2


def test_fault_dice_follow_the_probabilities() -> None:
    """A knob at 1.0 always fires; knobs at 0 never do; a seeded roll repeats."""
    rng = random.Random(1)
    assert {decide_fault(FaultKnobs(p_html=1.0), rng) for _ in range(100)} == {FaultKind.HTML}
    assert {decide_fault(FaultKnobs(), rng) for _ in range(100)} == {None}
    mixed = FaultKnobs(p_500=0.3, p_reset=0.3)
    first, second = random.Random(5), random.Random(5)
    rolls = [decide_fault(mixed, first) for _ in range(60)]
    assert rolls == [decide_fault(mixed, second) for _ in range(60)]
    assert set(rolls) == {FaultKind.SERVER_ERROR, FaultKind.RESET, None}


def test_knobs_refuse_impossible_values() -> None:
    """Probabilities that add up past 1, unknown knobs and out-of-range values are refused clearly."""
    with pytest.raises(ValueError, match="at most 1"):
        merge_knobs(FaultKnobs(), {"p_500": 0.6, "sim_p_503": 0.6})
    with pytest.raises(ValueError, match="unknown fault knob"):
        merge_knobs(FaultKnobs(), {"p_teapot": 1})
    with pytest.raises(ValueError, match="p_late"):
        merge_knobs(FaultKnobs(), {"p_late": -0.1})


def test_settings_are_validated_with_clear_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from EXPORTER_* variables and bad ones name the variable."""
    monkeypatch.setenv("EXPORTER_PROJECT_ID", TEST_PROJECT)
    monkeypatch.setenv("EXPORTER_AK", TEST_AK)
    monkeypatch.setenv("EXPORTER_SK", TEST_SK)
    monkeypatch.setenv("EXPORTER_SIM_JOBS", "10")
    monkeypatch.setenv("EXPORTER_SIM_MISSING_IDS", "2,3")
    settings = load_simulator_settings()
    assert settings.sim_missing_ids == {2, 3}
    assert settings.obs_ak is not None
    assert settings.obs_ak.get_secret_value() == TEST_AK

    monkeypatch.setenv("EXPORTER_SIM_P_500", "1.5")
    with pytest.raises(ConfigError, match="EXPORTER_SIM_P_500"):
        load_simulator_settings()
    monkeypatch.setenv("EXPORTER_SIM_P_500", "0")
    monkeypatch.setenv("EXPORTER_SIM_MISSING_IDS", "11")
    with pytest.raises(ConfigError, match="EXPORTER_SIM_MISSING_IDS"):
        load_simulator_settings()
    monkeypatch.delenv("EXPORTER_SK")
    monkeypatch.delenv("EXPORTER_SIM_MISSING_IDS")
    with pytest.raises(ConfigError, match="EXPORTER_AK"):
        load_simulator_settings()


def test_catalogue_queries_are_validated_and_paged() -> None:
    """The catalogue pages in either order and refuses bad listing parameters."""
    catalogue = JobCatalogue(12, missing={4})
    total, page = catalogue.page(parse_list_query([("limit", "3"), ("offset", "2")]))
    assert (total, page) == (11, [10, 9, 8])
    total, page = catalogue.page(parse_list_query([("order", "asc"), ("offset", "9")]))
    assert (total, page) == (11, [11, 12])
    assert catalogue.unknown([4, 13, 1, 4]) == [4, 13]
    with pytest.raises(ValueError, match="limit"):
        parse_list_query([("limit", "500")])


async def test_an_unreachable_object_store_is_a_server_error(
    make_settings: Callable[..., SimulatorSettings], http: aiohttp.ClientSession
) -> None:
    """When the S3 server cannot be reached the export answers 500 DLI.0999 (worth retrying), not 400."""
    settings = make_settings(obs_endpoint=f"http://127.0.0.1:{free_port()}")
    async with running_simulator(settings) as sim:
        status, _, raw = await call(http, sim, "POST", EXPORT_PATH, body=export_body(1))

    assert (status, json.loads(raw)["error_code"]) == (500, "DLI.0999")


async def test_serve_simulator_runs_until_cancelled(make_settings: Callable[..., SimulatorSettings]) -> None:
    """serve_simulator (the CLI's `simulate`) answers on its port until its task is cancelled."""
    port = free_port()
    task = asyncio.create_task(serve_simulator(make_settings(), "127.0.0.1", port))
    stats: dict[str, Any] | None = None
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(f"http://127.0.0.1:{port}/_sim/stats") as response:
                    stats = await response.json()
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert stats is not None
    assert stats["requests_total"] == 0

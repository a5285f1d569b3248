"""The IAM client (exporter.iam) over aiohttp mocked with aioresponses: signing, paging, error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl
from aioresponses import aioresponses
from support import TEST_AK, TEST_PROJECT, TEST_SK

from exporter.dli.signer import Credentials, verify_request
from exporter.errors import AuthError, Permanent, Transient
from exporter.iam import IamProject, discovered_targets, list_projects

ENDPOINT = "http://127.0.0.1:18766"
HOST = "127.0.0.1:18766"
CREDENTIALS = Credentials(TEST_AK, TEST_SK, project_id=TEST_PROJECT)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def page_url(page: int, per_page: int) -> yarl.URL:
    return yarl.URL(f"{ENDPOINT}/v3/projects?page={page}&per_page={per_page}")


def project(project_id: str, name: str, *, enabled: bool = True) -> dict[str, Any]:
    return {"id": project_id, "name": name, "enabled": enabled, "domain_id": "d0", "links": {"self": "x"}}


def body(*projects: dict[str, Any], next_link: str | None = None) -> dict[str, Any]:
    return {"links": {"self": "x", "previous": None, "next": next_link}, "projects": list(projects)}


def calls(mocked: aioresponses, url: yarl.URL) -> list[Any]:
    return list(mocked.requests.get(("GET", url), []))


# --- the request on the wire ------------------------------------------------------------------------------


async def test_request_is_signed_without_project_scope(
    session: aiohttp.ClientSession, mocked: aioresponses
) -> None:
    """AK/SK-signed like DLI calls, but with no X-Project-Id even when the credentials name a project."""
    mocked.get(page_url(1, 100), payload=body(project("p1", "cn-north-4")))

    projects = await list_projects(session, ENDPOINT, CREDENTIALS)

    assert projects == [IamProject(id="p1", name="cn-north-4", enabled=True)]
    (call,) = calls(mocked, page_url(1, 100))
    headers = call.kwargs["headers"]
    assert "X-Project-Id" not in headers
    assert "x-project-id" not in headers["Authorization"]
    query = [("page", "1"), ("per_page", "100")]
    secrets = {TEST_AK: TEST_SK}
    assert verify_request("GET", HOST, "/v3/projects", query, headers, None, secrets.get) == TEST_AK
    assert call.kwargs["allow_redirects"] is False


async def test_temporary_credentials_keep_their_security_token(
    session: aiohttp.ClientSession, mocked: aioresponses
) -> None:
    mocked.get(page_url(1, 100), payload=body())
    credentials = Credentials(TEST_AK, TEST_SK, project_id=TEST_PROJECT, security_token="temporary-token")

    assert await list_projects(session, ENDPOINT, credentials) == []
    headers = calls(mocked, page_url(1, 100))[0].kwargs["headers"]
    assert headers["X-Security-Token"] == "temporary-token"


# --- paging -----------------------------------------------------------------------------------------------


async def test_pages_until_a_short_page(session: aiohttp.ClientSession, mocked: aioresponses) -> None:
    """per_page=2 over five projects: pages 1, 2 and 3 (short), each project once and in order."""
    mocked.get(page_url(1, 2), payload=body(project("a", "r-1"), project("b", "r-2")))
    mocked.get(page_url(2, 2), payload=body(project("c", "r-3"), project("d", "MOS")))
    mocked.get(page_url(3, 2), payload=body(project("e", "r-1_sub1")))

    projects = await list_projects(session, ENDPOINT, CREDENTIALS, per_page=2)

    assert [item.id for item in projects] == ["a", "b", "c", "d", "e"]
    assert [len(calls(mocked, page_url(page, 2))) for page in (1, 2, 3)] == [1, 1, 1]


async def test_a_full_page_asks_for_the_next_even_when_links_next_is_null(
    session: aiohttp.ClientSession, mocked: aioresponses
) -> None:
    """A null `links.next` on a full page is no proof of the end; the empty next page is."""
    mocked.get(page_url(1, 2), payload=body(project("a", "r-1"), project("b", "r-2")))
    mocked.get(page_url(2, 2), payload=body())

    projects = await list_projects(session, ENDPOINT, CREDENTIALS, per_page=2)

    assert [item.id for item in projects] == ["a", "b"]
    assert len(calls(mocked, page_url(2, 2))) == 1


async def test_a_server_ignoring_the_paging_cannot_keep_us_asking(
    session: aiohttp.ClientSession, mocked: aioresponses
) -> None:
    """Every page the same full page: the second brings nothing new, so the listing ends there."""
    same = body(project("a", "r-1"), project("b", "r-2"))
    mocked.get(page_url(1, 2), payload=same)
    mocked.get(page_url(2, 2), payload=same)

    projects = await list_projects(session, ENDPOINT, CREDENTIALS, per_page=2)

    assert [item.id for item in projects] == ["a", "b"]


@pytest.mark.parametrize("per_page", [0, 5001])
async def test_per_page_outside_iam_limits_is_refused(session: aiohttp.ClientSession, per_page: int) -> None:
    with pytest.raises(ValueError, match="per_page"):
        await list_projects(session, ENDPOINT, CREDENTIALS, per_page=per_page)


async def test_an_endpoint_that_is_no_url_is_refused(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError, match="IAM endpoint"):
        await list_projects(session, "iam.example.com", CREDENTIALS)


# --- errors -----------------------------------------------------------------------------------------------


async def test_401_is_an_auth_error_with_iams_code_and_message(
    session: aiohttp.ClientSession, mocked: aioresponses
) -> None:
    answer = {"error_code": "IAM.0001", "error_msg": "The request you have made requires authentication."}
    mocked.get(page_url(1, 100), status=401, payload=answer, headers={"X-Request-Id": "r401"})

    with pytest.raises(AuthError) as caught:
        await list_projects(session, ENDPOINT, CREDENTIALS)

    error = caught.value
    assert (error.status, error.code, error.request_id) == (401, "IAM.0001", "r401")
    assert error.message.startswith("IAM answered HTTP 401")
    assert "requires authentication" in error.message


async def test_keystone_shaped_401_keeps_its_message(
    session: aiohttp.ClientSession, mocked: aioresponses
) -> None:
    answer = {"error": {"code": 401, "message": "The request you have made requires authentication."}}
    mocked.get(page_url(1, 100), status=401, payload=answer)

    with pytest.raises(AuthError, match="requires authentication"):
        await list_projects(session, ENDPOINT, CREDENTIALS)


async def test_403_is_permanent_with_iams_code(session: aiohttp.ClientSession, mocked: aioresponses) -> None:
    answer = {"error_code": "IAM.0002", "error_msg": "You are not authorized to perform the action."}
    mocked.get(page_url(1, 100), status=403, payload=answer)

    with pytest.raises(Permanent) as caught:
        await list_projects(session, ENDPOINT, CREDENTIALS)

    assert (caught.value.status, caught.value.code) == (403, "IAM.0002")
    assert "not authorized" in caught.value.message


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_transient(session: aiohttp.ClientSession, mocked: aioresponses, status: int) -> None:
    mocked.get(page_url(1, 100), status=status, body="<html>busy</html>", headers={"Retry-After": "3"})

    with pytest.raises(Transient) as caught:
        await list_projects(session, ENDPOINT, CREDENTIALS)

    error = caught.value
    assert (error.reason, error.status, error.retry_after) == ("server_error", status, 3.0)
    assert error.message.startswith("IAM")


@pytest.mark.parametrize(
    ("failure", "reason"),
    [(aiohttp.ClientConnectionError("refused"), "connection"), (TimeoutError(), "timeout")],
)
async def test_network_failures_are_transient(
    session: aiohttp.ClientSession, mocked: aioresponses, failure: Exception, reason: str
) -> None:
    mocked.get(page_url(1, 100), exception=failure)

    with pytest.raises(Transient) as caught:
        await list_projects(session, ENDPOINT, CREDENTIALS)

    assert caught.value.reason == reason
    assert caught.value.message.startswith("IAM")


@pytest.mark.parametrize("answer", [b"not json", b'{"projects": [{"name": "no id"}]}', b'{"links": {}}'])
async def test_an_unreadable_200_is_transient_malformed(
    session: aiohttp.ClientSession, mocked: aioresponses, answer: bytes
) -> None:
    mocked.get(page_url(1, 100), body=answer, content_type="application/json")

    with pytest.raises(Transient) as caught:
        await list_projects(session, ENDPOINT, CREDENTIALS)

    assert caught.value.reason == "malformed"


# --- projects and targets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "region", "is_region"),
    [
        ("ap-southeast-1", "ap-southeast-1", True),
        ("cn-north-4_analytics", "cn-north-4", True),
        ("cn-north-4_a_b", "cn-north-4", True),
        ("MOS", "MOS", False),
        ("_odd", "", False),
    ],
)
def test_region_of_a_project_name(name: str, region: str, is_region: bool) -> None:
    item = IamProject(id="p", name=name, enabled=True)
    assert (item.region, item.is_region) == (region, is_region)


def test_discovered_targets_skip_pseudo_projects_and_disabled_ones() -> None:
    projects = [
        IamProject("p3", "cn-north-4_sub1", enabled=True),
        IamProject("p1", "cn-north-4", enabled=True),
        IamProject("mos", "MOS", enabled=True),
        IamProject("p2", "ap-southeast-1", enabled=True),
        IamProject("p4", "ap-southeast-1_old", enabled=False),
        IamProject("p1", "cn-north-4", enabled=True),
    ]

    assert discovered_targets(projects, None) == [
        ("ap-southeast-1", "p2"),
        ("cn-north-4", "p1"),
        ("cn-north-4", "p3"),
    ]
    assert discovered_targets(projects, {"cn-north-4"}) == [("cn-north-4", "p1"), ("cn-north-4", "p3")]
    assert discovered_targets(projects, []) == []

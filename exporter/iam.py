"""The exporter's IAM client: which projects the account has, so a campaign can cover every region.

IAM names a region's main project after the region (`ap-southeast-1`) and its sub-projects
`region_name`; it also lists pseudo-projects that are no region (the global `MOS`), which are skipped.
The request is AK/SK-signed with the DLI client's signer and its answers are mapped to the same error
types (`exporter.dli.responses`), so callers handle IAM failures like DLI ones: 401 `AuthError`, other
4xx `Permanent`, 5xx and network failures `Transient`. It carries no X-Project-Id: listing projects is a
global (account-level) call, which IAM refuses to a project-scoped caller. No retries here: discovery
runs once, at campaign start, and the caller decides whether to try again.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace

import aiohttp
import structlog
import yarl
from pydantic import BaseModel, ConfigDict, ValidationError

from exporter.dli.responses import REQUEST_ID_HEADER, error_from_exception, error_from_status
from exporter.dli.signer import Credentials, canonical_query_string, sign_request
from exporter.errors import AuthError, DliError, Permanent, Transient
from exporter.routes import REGION_NAME

__all__ = ["MAX_PER_PAGE", "PROJECTS_PATH", "IamProject", "discovered_targets", "list_projects"]

log = structlog.get_logger(__name__)

PROJECTS_PATH = "/v3/projects"
MAX_PER_PAGE = 5000  # IAM's documented maximum `per_page`


@dataclass(frozen=True, slots=True)
class IamProject:
    """One project of the account as IAM lists it."""

    id: str
    name: str
    enabled: bool

    @property
    def region(self) -> str:
        """The region part of the name: sub-projects are named `region_name`."""
        return self.name.partition("_")[0]

    @property
    def is_region(self) -> bool:
        """Whether the name starts with a region name; False for pseudo-projects such as `MOS`."""
        return REGION_NAME.fullmatch(self.region) is not None


class _Project(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    enabled: bool = True


class _ProjectsBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    projects: list[_Project]


async def list_projects(
    session: aiohttp.ClientSession,
    iam_endpoint: str,
    credentials: Credentials,
    *,
    per_page: int = 100,
) -> list[IamProject]:
    """Every project of the account, page by page (`page` from 1, `per_page`) until a short page.

    A full page always asks for the next one, even when `links.next` is null: IAM's paging is an
    extension of Keystone's, and a null link is not proof that nothing follows, whereas a short (or
    empty) page is. A page that brings nothing new ends the listing too, so a server that ignores the
    paging parameters cannot keep us asking.
    """
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be 1 to {MAX_PER_PAGE} (IAM's limit), not {per_page}")
    unscoped = replace(credentials, project_id=None)  # a global call: no X-Project-Id
    found: dict[str, IamProject] = {}
    page = 1
    while True:
        batch = await _fetch_page(session, iam_endpoint, unscoped, page, per_page)
        fresh = [project for project in batch if project.id not in found]
        found.update((project.id, project) for project in fresh)
        if len(batch) < per_page or not fresh:
            break
        page += 1
    log.info("iam.projects_listed", endpoint=iam_endpoint, projects=len(found), pages=page)
    return list(found.values())


def discovered_targets(
    projects: Iterable[IamProject], regions: Collection[str] | None
) -> list[tuple[str, str]]:
    """(region, project_id) of each enabled region project, in `regions` when given; sorted, no repeats."""
    return sorted(
        {
            (project.region, project.id)
            for project in projects
            if project.enabled and project.is_region and (regions is None or project.region in regions)
        }
    )


async def _fetch_page(
    session: aiohttp.ClientSession, endpoint: str, credentials: Credentials, page: int, per_page: int
) -> list[IamProject]:
    """One signed GET of the listing; the typed error of a failed answer."""
    query = (("page", str(page)), ("per_page", str(per_page)))
    url, headers = _signed(endpoint, query, credentials)
    try:
        async with session.get(url, headers=headers, allow_redirects=False) as response:
            status, response_headers, body = response.status, response.headers, await response.read()
    except (TimeoutError, aiohttp.ClientError) as failure:
        error = error_from_exception(failure)
        if error is None:
            raise
        raise _as_iam(error) from failure
    failed = error_from_status(status, response_headers, body, time.time())
    if failed is not None:
        raise _as_iam(failed)
    return _parse_projects(status, response_headers, body)


def _signed(
    endpoint: str, query: tuple[tuple[str, str], ...], credentials: Credentials
) -> tuple[yarl.URL, dict[str, str]]:
    """The URL exactly as signed (already encoded, so aiohttp must not touch it) and the headers."""
    base = yarl.URL(endpoint)
    if base.scheme not in {"http", "https"} or not base.host:
        raise ValueError(f"IAM endpoint {endpoint!r} must be an http:// or https:// URL with a host")
    host = base.host_port_subcomponent or base.host
    path = base.raw_path.rstrip("/") + PROJECTS_PATH
    url = yarl.URL(f"{base.origin()}{path}?{canonical_query_string(query)}", encoded=True)
    unsigned = {"Content-Type": "application/json;charset=utf8"}  # what IAM's documentation asks for
    headers, _parts = sign_request("GET", host, path, query, unsigned, None, credentials)
    return url, headers


def _parse_projects(status: int, headers: Mapping[str, str], body: bytes) -> list[IamProject]:
    try:
        parsed = _ProjectsBody.model_validate_json(body)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        raise Transient(
            f"IAM answered HTTP {status} with an unreadable body ({where}: {problem['msg']})",
            reason="malformed",
            status=status,
            request_id=headers.get(REQUEST_ID_HEADER),
        ) from None
    return [IamProject(id=item.id, name=item.name, enabled=item.enabled) for item in parsed.projects]


def _as_iam(error: DliError) -> DliError:
    """The same error type, status, code and request ID, with a message naming IAM instead of DLI."""
    message = "IAM" + error.message[3:] if error.message.startswith("DLI") else f"IAM: {error.message}"
    status, code, request_id = error.status, error.code, error.request_id
    if isinstance(error, Transient):
        return Transient(
            message,
            reason=error.reason,
            retry_after=error.retry_after,
            status=status,
            code=code,
            request_id=request_id,
        )
    if isinstance(error, Permanent):
        return Permanent(message, code=error.code, status=status, request_id=request_id)
    if isinstance(error, AuthError):
        return AuthError(message, status=status, code=code, request_id=request_id)
    return DliError(message, status=status, code=code, request_id=request_id)

"""One HTTP exchange with a credential service (metadata, IAM): bounded in time, its failures typed.

The answers of these services hold secrets, so nothing here logs a body or a header, and an error
message says what failed (the service, the status, a code), never what was sent or answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import aiohttp

from exporter.errors import AuthError, DliError, Permanent, Transient

__all__ = ["Answer", "exchange", "failure", "parse_expiry"]

Answer = tuple[int, Mapping[str, str], bytes]


async def exchange(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    service: str,
    headers: Mapping[str, str],
    data: bytes | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - a per-request budget, passed to aiohttp
) -> Answer:
    """Status, headers and body; a timeout or a connection failure is Transient naming the service."""
    try:
        async with session.request(
            method,
            url,
            headers=dict(headers),
            data=data,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            return response.status, response.headers, await response.read()
    except (TimeoutError, aiohttp.ClientError) as error:
        raise Transient(f"{service} unreachable: {type(error).__name__}", reason="connection") from None


def failure(service: str, status: int, *, code: str | None = None) -> DliError:
    """The typed error of a refusal: 401/403 AuthError, other 4xx Permanent, 429 and 5xx Transient."""
    message = f"{service} answered HTTP {status}" + (f" ({code})" if code else "")
    if status in (401, 403):
        return AuthError(message, status=status, code=code)
    if status == 429 or status >= 500:
        return Transient(message, reason="server_error", status=status, code=code)
    return Permanent(message, code=code or f"HTTP_{status}", status=status)


def parse_expiry(text: object, service: str) -> float:
    """An ISO 8601 expiry (`2025-01-01T00:00:00.000000Z`, as IAM and the metadata service write it) as
    epoch seconds; a time without a zone is UTC. Transient (a malformed answer) when it is not one."""
    if not isinstance(text, str):
        raise Transient(f"{service} answered without an expiry time", reason="malformed")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Transient(f"{service} answered an unreadable expiry time", reason="malformed") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC).timestamp()
    return moment.timestamp()

"""How the matrix makes DLI, OBS and the store misbehave beyond the simulator's own fault knobs.

Relay rules (see relay.py) decide per request whether OBS refuses (403), is unavailable (503), or a
successful DLI answer is rewritten into malformed JSON after the work was done. Disturbances run
alongside a campaign: S3 going away and coming back, the SQLite file hitting a full disk.
"""

from __future__ import annotations

import random
import zlib

from faults.campaign import Run, exports_at_least, wait_until
from faults.relay import Action, Answer, Forward, RelayRequest, Rule

__all__ = [
    "fill_disk",
    "forbidden_key",
    "malformed_answers",
    "obs_forbidden",
    "obs_unavailable",
    "restart_s3",
    "throttle_first_export_until_9999",
]

S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>relay</RequestId></Error>"
)


def forbidden_key(key: str) -> bool:
    """The OBS 403 row refuses a fixed fifth of the ZIP keys (by CRC), so the outcome is predictable."""
    return zlib.crc32(key.encode()) % 5 == 0


# --- relay rules ------------------------------------------------------------------------------------------


def _is_export(request: RelayRequest) -> bool:
    return request.method == "POST" and request.path_qs.endswith("/streaming/jobs/export")


_MALFORMED_BODIES = (
    b'{"is_success": true, "message": "ok", "zip_file": "not-a-list"}',
    b'{"is_success": "perhaps", "zip_file": []}',
    b'["is_success", true]',
    b'{"is_success": true, "zip_file": [42]}',
    b"\xff\xfe\x00garbage",
    b"",
    b"null",
)


def malformed_answers() -> Rule:
    """After DLI did the work, replace 15% of successful export answers with wrong-shape JSON."""
    dice = random.Random(5)

    def rewrite(status: int, body: bytes) -> bytes:
        return dice.choice(_MALFORMED_BODIES) if status == 200 else body

    def rule(request: RelayRequest) -> Action:
        if _is_export(request) and dice.random() < 0.15:
            return Forward(rewrite=rewrite, label="rewritten")
        return Forward()

    return rule


def obs_forbidden() -> Rule:
    """OBS answers 403 AccessDenied for the keys `forbidden_key` picks."""

    def rule(request: RelayRequest) -> Action:
        key = request.path_qs.split("?", 1)[0].partition("/")[2].partition("/")[2]
        if request.method in {"HEAD", "GET"} and key and forbidden_key(key):
            body = S3_ERROR.format(code="AccessDenied", message="Access Denied").encode()
            return Answer(403, b"" if request.method == "HEAD" else body, label="403")
        return Forward()

    return rule


def obs_unavailable() -> Rule:
    """OBS answers 503 to 30% of HEADs and ranged GETs."""
    dice = random.Random(3)

    def rule(request: RelayRequest) -> Action:
        if request.method in {"HEAD", "GET"} and "/exports/" in request.path_qs and dice.random() < 0.3:
            body = S3_ERROR.format(code="ServiceUnavailable", message="Please reduce your rate").encode()
            return Answer(503, b"" if request.method == "HEAD" else body, label="503")
        return Forward()

    return rule


def throttle_first_export_until_9999() -> Rule:
    """The gateway's first export answer is a 429 asking to come back in the year 9999."""
    answered: list[bool] = []

    def rule(request: RelayRequest) -> Action:
        if _is_export(request) and not answered:
            answered.append(True)
            body = b'{"error_code": "APIG.0308", "error_msg": "The throttling threshold has been reached"}'
            headers = {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT", "Content-Type": "application/json"}
            return Answer(429, body, headers, label="429")
        return Forward()

    return rule


# --- disturbances ---------------------------------------------------------------------------------------


async def restart_s3(run: Run) -> str:
    """After 5 exports S3 goes away (for DLI too), and comes back once DLI has failed 3 ZIP writes."""
    relay = run.relays["s3"]
    await wait_until(exports_at_least(run, 5), "the first exports")
    await relay.go_down()

    def dli_failed_writes() -> bool:
        failed: int = run.simulator.stats()["requests"].get("export_jobs", {}).get("500", 0)
        return failed >= 3

    await wait_until(dli_failed_writes, "DLI failing to write into the stopped S3")
    await relay.come_back()
    return "s3 down until DLI answered 500 three times"


_NO_LIMIT = 1_073_741_823  # SQLite's largest max_page_count


async def fill_disk(run: Run) -> str:
    """Mid-campaign, the SQLite file may not grow (SQLITE_FULL) until many operations have failed."""
    await wait_until(exports_at_least(run, 5), "the first exports")
    database = run.databases[-1]
    pages = await database.write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    await database.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {int(pages)}"))
    await wait_until(lambda: database.stats.failed_operations >= 20, "writes failing on the full disk")
    await database.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {_NO_LIMIT}"))
    return f"disk full at {pages} pages for {database.stats.failed_operations} failed operations"

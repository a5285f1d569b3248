"""The floor for benchmark 2: export calls over one aiohttp session, nothing else.

Same endpoint, bodies, credentials and concurrency as the exporter, but no ledger, no logs, no limiter,
no retries, and every request signed before the clock starts. Prints one JSON line with its own figures.

Usage: `python -m bench.procs.raw_export URL OBS_DIR COUNT CONCURRENCY`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator

import aiohttp
import yarl

from bench.procs.timing import timed_workers
from exporter.devstack import DEV_AK, DEV_PROJECT, DEV_SK
from exporter.dli.signer import Credentials, sdk_date, sign_request

_POOL_SIZE = 100  # the exporter's default EXPORTER_POOL_SIZE


def signed_requests(url: str, obs_dir: str, count: int) -> list[tuple[bytes, dict[str, str]]]:
    """One export body per job ID 1..count, as the exporter sends them with chunk size 1, signed now."""
    host = yarl.URL(url).host_port_subcomponent or ""
    path = f"/v1.0/{DEV_PROJECT}/streaming/jobs/export"
    credentials = Credentials(ak=DEV_AK, sk=DEV_SK, project_id=DEV_PROJECT)
    date = sdk_date()
    requests = []
    for job_id in range(1, count + 1):
        payload = {"obs_dir": obs_dir, "is_selected": True, "job_selected": [job_id]}
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers, _ = sign_request(
            "POST", host, path, (), {"Content-Type": "application/json"}, body, credentials, date
        )
        requests.append((body, headers))
    return requests


async def _worker(
    session: aiohttp.ClientSession, url: str, pending: Iterator[tuple[bytes, dict[str, str]]]
) -> int:
    answered = 0
    for body, headers in pending:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            answered += response.status == 200
    return answered


async def run(url: str, obs_dir: str, count: int, concurrency: int) -> dict[str, float]:
    requests = signed_requests(url, obs_dir, count)
    endpoint = f"{url}/v1.0/{DEV_PROJECT}/streaming/jobs/export"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=_POOL_SIZE)) as session:
        pending = iter(requests)
        return await timed_workers(count, concurrency, lambda: _worker(session, endpoint, pending))


def main(argv: list[str]) -> int:
    url, obs_dir, count, concurrency = argv[0], argv[1], int(argv[2]), int(argv[3])
    print(json.dumps(asyncio.run(run(url, obs_dir, count, concurrency))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

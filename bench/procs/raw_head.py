"""The floor for benchmark 5: `head_object` on one aioboto3 client, CONCURRENCY at a time, nothing else.

Client settings as the exporter's object store makes them (path addressing, the same pool size). Prints one
JSON line with its figures.

Usage: `python -m bench.procs.raw_head ENDPOINT BUCKET PREFIX COUNT CONCURRENCY`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from typing import Any

from aiobotocore.config import AioConfig

from bench.procs.timing import timed_workers
from exporter.devstack import dev_s3_client


async def _worker(client: Any, bucket: str, keys: Iterator[str]) -> int:
    found = 0
    for key in keys:
        response = await client.head_object(Bucket=bucket, Key=key)
        found += int(response["ContentLength"]) > 0
    return found


async def run(endpoint: str, bucket: str, prefix: str, count: int, concurrency: int) -> dict[str, float]:
    config = AioConfig(
        s3={"addressing_style": "path"},
        max_pool_connections=concurrency + 4,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    async with dev_s3_client(endpoint, config=config) as client:
        keys = iter([f"{prefix}/{index}.zip" for index in range(count)])
        return await timed_workers(count, concurrency, lambda: _worker(client, bucket, keys))


def main(argv: list[str]) -> int:
    endpoint, bucket, prefix = argv[0], argv[1], argv[2]
    count, concurrency = int(argv[3]), int(argv[4])
    print(json.dumps(asyncio.run(run(endpoint, bucket, prefix, count, concurrency))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

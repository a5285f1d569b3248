"""What users would write instead of the exporter: the official `huaweicloudsdkdli` client in a loop.

Sequential (`THREADS` = 1) or on a thread pool with one SDK client per thread (each with its own
connection pool), exporting job IDs FIRST..FIRST+COUNT-1 one per call. Prints one JSON line with its figures.
The SDK writes `~/.huaweicloud` on import, so the caller points HOME at a scratch folder.

Usage: `python -m bench.procs.sdk_export URL OBS_DIR FIRST COUNT THREADS`.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import huaweicloudsdkdli.v1 as dli
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig

from exporter.devstack import DEV_AK, DEV_PROJECT, DEV_SK


def _client(url: str) -> Any:
    config = HttpConfig.get_default_config()
    config.timeout = (5, 30)
    return (
        dli.DliClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(DEV_AK, DEV_SK, DEV_PROJECT))
        .with_endpoints([url])
        .build()
    )


class _PerThreadClients(threading.local):
    """One SDK client per worker thread, built on first use."""

    client: Any = None


def run(url: str, obs_dir: str, first: int, count: int, threads: int) -> dict[str, float]:
    clients = _PerThreadClients()

    def export(job_id: int) -> bool:
        if clients.client is None:
            clients.client = _client(url)
        body = dli.ExportFlinkJobsRequestBody(obs_dir=obs_dir, is_selected=True, job_selected=[job_id])
        response = clients.client.export_flink_jobs(dli.ExportFlinkJobsRequest(body=body))
        return bool(response.status_code == 200)

    ids = range(first, first + count)
    started = time.perf_counter()
    if threads == 1:
        answered = [export(job_id) for job_id in ids]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            answered = list(pool.map(export, ids))
    seconds = time.perf_counter() - started
    return {"requests": count, "ok": sum(answered), "seconds": seconds, "rate": count / seconds}


def main(argv: list[str]) -> int:
    url, obs_dir = argv[0], argv[1]
    first, count, threads = int(argv[2]), int(argv[3]), int(argv[4])
    print(json.dumps(run(url, obs_dir, first, count, threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The exporter's own command line, optionally with OBS verification answered in-process.

Usage: `python -m bench.procs.exporter [--instant-verify] <dli-exporter arguments>`.

`--instant-verify` swaps one adapter at the composition root: the object store says every ZIP exists. The
overhead benchmark uses it to time the export path alone (signing, pacing, ledger writes, logs) against a
raw HTTP loop; with the real adapter, a local S3 server's HEAD rate would cap both stages at the same
few hundred per second and hide what the exporter itself costs. The verify stage is benchmarked on its own.

At exit the process logs its own peak RSS (`VmHWM`, event `bench.peak_rss`). `wait4`'s `ru_maxrss` cannot
serve: Linux carries the parent's high-water mark into a child across fork and exec, so a worker started
by a benchmark driver that holds a million IDs would be charged the driver's memory.
"""

from __future__ import annotations

import atexit
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from exporter import region_clients
from exporter.adapters.s3 import S3Options
from exporter.cli import main as exporter_main
from exporter.models import ObjectInfo

INSTANT_VERIFY_FLAG = "--instant-verify"
PEAK_RSS_EVENT = "bench.peak_rss"


class InstantObjectStore:
    """The ObjectStore port answering at once: every object exists and has one byte."""

    __slots__ = ()

    async def head(self, bucket: str, key: str) -> ObjectInfo | None:
        return ObjectInfo(size=1, etag=None)

    async def read_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        raise NotImplementedError("deep ZIP checks need the real object store")

    async def put(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        return None


@asynccontextmanager
async def open_instant_object_store(options: S3Options) -> AsyncIterator[InstantObjectStore]:
    yield InstantObjectStore()


def peak_rss_kib() -> int | None:
    """This process's own peak resident set (`VmHWM`), in KiB; None where /proc has no such line."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def log_peak_rss() -> None:
    """One JSON line on stderr, beside the exporter's own log lines, that the benchmark reads back."""
    sys.stderr.write(json.dumps({"event": PEAK_RSS_EVENT, "vmhwm_kib": peak_rss_kib()}) + "\n")
    sys.stderr.flush()


def main(argv: list[str]) -> None:
    atexit.register(log_peak_rss)
    if argv and argv[0] == INSTANT_VERIFY_FLAG:
        # The composition root looks the factory up in its own namespace when it builds the runtime.
        region_clients.open_object_store = open_instant_object_store  # type: ignore[attr-defined,assignment]
        argv = argv[1:]
    exporter_main(args=argv, prog_name="dli-exporter")


if __name__ == "__main__":
    main(sys.argv[1:])

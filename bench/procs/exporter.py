"""The exporter's own command line, optionally with OBS verification answered in-process.

Usage: `python -m bench.procs.exporter [--instant-verify] <dli-exporter arguments>`.

`--instant-verify` swaps one adapter at the composition root: the object store says every ZIP exists. The
overhead benchmark uses it to time the export path alone (signing, pacing, ledger writes, logs) against a
raw HTTP loop; with the real adapter, a local S3 server's HEAD rate would cap both stages at the same
few hundred per second and hide what the exporter itself costs. The verify stage is benchmarked on its own.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from exporter import app
from exporter.cli import main as exporter_main
from exporter.models import ObjectInfo
from exporter.settings import Settings

INSTANT_VERIFY_FLAG = "--instant-verify"


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
async def open_instant_object_store(settings: Settings) -> AsyncIterator[InstantObjectStore]:
    yield InstantObjectStore()


def main(argv: list[str]) -> None:
    if argv and argv[0] == INSTANT_VERIFY_FLAG:
        # The composition root looks the factory up in its own namespace when it builds the runtime.
        app.open_object_store = open_instant_object_store  # type: ignore[attr-defined,assignment]
        argv = argv[1:]
    exporter_main(args=argv, prog_name="dli-exporter")


if __name__ == "__main__":
    main(sys.argv[1:])

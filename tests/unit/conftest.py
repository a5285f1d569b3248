"""Fixtures of the unit tests of the HTTP clients: aioresponses, with the shim aiohttp 3.14 needs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import yarl
from aioresponses import aioresponses


class _UploadDone:
    """Stands in for the request's stream writer: the mocked request was 'sent' in full."""

    output_size = 0


class _ResponseWithStreamWriter(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the `stream_writer` aiohttp 3.14 requires
    (pnuckowski/aioresponses#289); supply one until a fixed release is pinned."""

    def __init__(self, method: str, url: yarl.URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _UploadDone())
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    monkeypatch.setattr("aioresponses.core.ClientResponse", _ResponseWithStreamWriter)
    with aioresponses() as mock:
        yield mock

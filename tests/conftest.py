"""Fixtures shared by every test: a clean environment and a real S3 HTTP server on 127.0.0.1."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from support import TEST_AK, TEST_BUCKET, TEST_PROJECT, TEST_SK, free_port

__all__ = ["TEST_AK", "TEST_BUCKET", "TEST_PROJECT", "TEST_SK", "free_port"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Strip EXPORTER_* and AWS_* variables and ~/.aws so nothing from the developer's shell leaks in."""
    for name in list(os.environ):
        if name.startswith(("EXPORTER_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """A test that configures logging (the CLI does) must not change what later tests capture."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 HTTP server (moto's server mode) on a free 127.0.0.1 port; yields its endpoint URL."""
    from exporter.devstack import s3_server as start_s3_server

    with start_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def stack(s3_server: str, tmp_path: Path) -> Any:
    """Factory for a simulator + bucket + exporter settings on the shared S3 server (real sockets)."""
    from exporter.devstack import local_stack

    def open_stack(**kwargs: Any) -> Any:
        kwargs.setdefault("bucket", f"t-{uuid.uuid4().hex[:12]}")
        return local_stack(workdir=tmp_path, s3_endpoint=s3_server, **kwargs)

    return open_stack

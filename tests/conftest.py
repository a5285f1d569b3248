"""Fixtures shared by every test: a clean environment and a real S3 HTTP server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_AK = "AKTESTEXAMPLE0000001"
TEST_SK = "SKtestExampleSecretKey0000000000000000001"
TEST_PROJECT = "0123456789abcdef0123456789abcdef"
TEST_BUCKET = "dli-exports"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Strip EXPORTER_* and AWS_* variables and ~/.aws so nothing from the developer's shell leaks in."""
    for name in list(os.environ):
        if name.startswith(("EXPORTER_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 HTTP server (moto's server mode) on a free 127.0.0.1 port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()

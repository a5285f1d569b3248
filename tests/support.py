"""Constants and helpers shared by tests (importable as `support`; conftest modules are not)."""

from __future__ import annotations

import socket

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

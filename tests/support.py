"""Constants and helpers shared by tests (importable as `support`; conftest modules are not)."""

from __future__ import annotations

from exporter.devstack import free_port

TEST_AK = "AKTESTEXAMPLE0000001"
TEST_SK = "SKtestExampleSecretKey0000000000000000001"
TEST_PROJECT = "0123456789abcdef0123456789abcdef"
TEST_BUCKET = "dli-exports"

__all__ = ["TEST_AK", "TEST_BUCKET", "TEST_PROJECT", "TEST_SK", "free_port"]

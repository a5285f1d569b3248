"""Fixtures of the security tests: structlog put back after a test reconfigures it, and no secret
registered for redaction by an earlier test (so each test decides what the redactor knows)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from exporter import logs


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Start with an empty set of registered secrets; restore structlog's configuration afterwards."""
    monkeypatch.setattr(logs, "_known_secrets", set())
    config = structlog.get_config()
    yield
    structlog.configure(**config)

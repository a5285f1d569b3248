"""Settings: clear errors naming the variable, secrets hidden, file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from exporter.errors import ConfigError
from exporter.settings import load_settings


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("EXPORTER_RATE_LIMIT", "0", "greater than 0"),
        ("EXPORTER_CONCURRENCY", "-3", "greater than or equal to 1"),
        ("EXPORTER_CHUNK_SIZE", "abc", "valid integer"),
        ("EXPORTER_PROJECT_ID", "not valid!", "letters and digits"),
        ("EXPORTER_DLI_ENDPOINT", "ftp://x", "http:// or https://"),
        ("EXPORTER_QUEUE_URL", "mysql://x", "sqlite:///"),
        ("EXPORTER_LOG_FORMAT", "xml", "json"),
        ("EXPORTER_OBS_ADDRESSING_STYLE", "sideways", "virtual"),
        ("EXPORTER_CA_BUNDLE", "/nonexistent/ca.pem", "not a readable file"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    """Each invalid value fails with the variable's name and what is allowed."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert variable in str(caught.value) and message in str(caught.value)


def test_secret_values_never_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """AK/SK/tokens stay out of repr and out of validation errors."""
    monkeypatch.setenv("EXPORTER_SK", "SUPERSECRETSK123")
    monkeypatch.setenv("EXPORTER_AUTH_TOKEN", "TOKENVALUE987")
    settings = load_settings(ak="MYAKVALUE")
    assert "SUPERSECRETSK123" not in repr(settings) and "MYAKVALUE" not in repr(settings)
    monkeypatch.setenv("EXPORTER_RATE_LIMIT", "SUPERSECRETSK123")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "SUPERSECRETSK123" not in str(caught.value)


def test_precedence_file_then_environment_then_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The TOML file is overridden by the environment, which is overridden by flags."""
    config = tmp_path / "exporter.toml"
    config.write_text("rate_limit = 3.0\nconcurrency = 7\nchunk_size = 9\n")
    monkeypatch.setenv("EXPORTER_CONFIG_FILE", str(config))
    monkeypatch.setenv("EXPORTER_CONCURRENCY", "8")
    settings = load_settings(chunk_size=11)
    assert (settings.rate_limit, settings.concurrency, settings.chunk_size) == (3.0, 8, 11)


def test_missing_config_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A config file that does not exist is named in the error."""
    monkeypatch.setenv("EXPORTER_CONFIG_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="EXPORTER_CONFIG_FILE"):
        load_settings()


def test_credentials_required_for_dli() -> None:
    """Without AK/SK or a token, commands that call DLI refuse to start with the variable names."""
    with pytest.raises(ConfigError, match="EXPORTER_AK and EXPORTER_SK"):
        load_settings().require_credentials()


def test_secret_not_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging a settings object or its secret shows only the mask."""
    settings = load_settings(ak="AKVISIBLE0001", sk="SKHIDDEN0000001")
    with structlog.testing.capture_logs() as logs:
        structlog.get_logger().info("settings", settings=repr(settings), sk=settings.sk)
    assert "SKHIDDEN0000001" not in str(logs)

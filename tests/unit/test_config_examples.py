"""The example settings files in config/ are ones the exporter really reads, documented key by key.

The settings model ignores unknown keys (so that one file can serve several versions), which means a
misspelt key in an example would be dropped without a word: these tests are what catches it.
"""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from exporter.settings import Settings, load_settings

CONFIG = Path(__file__).resolve().parents[2] / "config"
EXAMPLES = ("local.toml", "embedded.toml", "redis.toml")

SECRET_FIELDS = frozenset(
    name
    for name, info in Settings.model_fields.items()
    if info.annotation is SecretStr or SecretStr in typing.get_args(info.annotation)
)
KEY_LINE = re.compile(r"^(#\s*)?([a-z_]+)\s*=")


def unknown_keys(data: dict[str, Any]) -> list[str]:
    """Keys the settings model does not have (tables count as unknown: the model is flat)."""
    return sorted(key for key in data if key not in Settings.model_fields)


def undocumented_keys(text: str) -> list[str]:
    """Active keys with no comment on the line just above them (a blank line in between breaks the link)."""
    lines = text.splitlines()
    return [
        match.group(2)
        for previous, line in zip(["", *lines], lines, strict=False)
        if (match := KEY_LINE.match(line)) and not match.group(1) and not previous.startswith("#")
    ]


def mentioned_keys(text: str) -> set[str]:
    """Keys set in the file or shown commented out (`# ca_bundle = ...`, for settings unset by default)."""
    return {match.group(2) for line in text.splitlines() if (match := KEY_LINE.match(line))}


def read(name: str) -> tuple[str, dict[str, Any]]:
    text = (CONFIG / name).read_text()
    return text, tomllib.loads(text)


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("EXPORTER_CONFIG_FILE", str(CONFIG / name))
    return load_settings()


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_key_is_a_setting(name: str) -> None:
    """Every key, set or commented out, is the name of a real setting."""
    text, data = read(name)
    assert unknown_keys(data) == []
    assert sorted(mentioned_keys(text) - Settings.model_fields.keys()) == []


@pytest.mark.parametrize("name", EXAMPLES)
def test_no_secret_in_a_file(name: str) -> None:
    """Secrets (AK/SK, tokens, passwords) come from the environment, never from an example file."""
    _, data = read(name)
    assert sorted(SECRET_FIELDS & data.keys()) == []
    assert "@" not in str(data.get("queue_url", "")), "a password in the queue URL belongs in the environment"


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_key_is_documented(name: str) -> None:
    """Each setting in a file has a comment right above it saying what it does."""
    text, _ = read(name)
    assert undocumented_keys(text) == []


@pytest.mark.parametrize("name", EXAMPLES)
def test_file_is_valid_and_honoured(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded through EXPORTER_CONFIG_FILE, the file validates and its values are the ones in effect."""
    _, data = read(name)
    expected, defaults = Settings(**data).model_dump(), Settings().model_dump()
    loaded = load_example(name, monkeypatch).model_dump()
    assert loaded == expected
    assert loaded != defaults, f"{name} changes nothing"


def test_environment_beats_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A variable overrides the file, as the files' headers promise."""
    monkeypatch.setenv("EXPORTER_LOG_FORMAT", "json")
    assert load_example("local.toml", monkeypatch).log_format == "json"


def test_embedded_example_mentions_every_setting() -> None:
    """embedded.toml is the complete reference: every non-secret setting is set or shown commented out."""
    text, _ = read("embedded.toml")
    assert sorted(Settings.model_fields.keys() - SECRET_FIELDS - mentioned_keys(text)) == []


def test_examples_are_the_modes_they_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    """local: loopback servers and SQLite; embedded: an absolute SQLite path; redis: Redis and OBS reports."""
    local = load_example("local.toml", monkeypatch)
    embedded = load_example("embedded.toml", monkeypatch)
    redis = load_example("redis.toml", monkeypatch)
    assert not local.uses_redis
    assert (local.dli_endpoint or "").startswith("http://127.0.0.1:")
    assert (local.obs_endpoint or "").startswith("http://127.0.0.1:")
    assert local.obs_addressing_style == "path"
    assert not embedded.uses_redis
    assert embedded.queue_url.startswith("sqlite:////")
    assert redis.uses_redis
    assert redis.upload_manifest


def test_checkers_report_bad_files() -> None:
    """The key and documentation checkers flag a misspelt key and a key without a comment."""
    assert unknown_keys({"rate_limt": 5, "rate_limit": 5}) == ["rate_limt"]
    assert undocumented_keys("# the rate\nrate_limit = 5\n\nconcurrency = 4\n") == ["concurrency"]
    assert mentioned_keys("# ca_bundle = 'x'\nrate_limit = 1\n") == {"ca_bundle", "rate_limit"}


def test_campaign_example_plans_as_its_comments_say() -> None:
    """config/campaign.toml is valid: three targets, two regions with their own limits, templates filled."""
    from exporter.campaign import load_campaign_file, plan_campaign
    from exporter.wiring import plan_defaults

    path = CONFIG / "campaign.toml"
    plan = plan_campaign(
        load_campaign_file(path), source=str(path), base_dir=path.parent, defaults=plan_defaults(Settings())
    )
    assert plan.campaign_id == "tenant-2026-12" and len(plan.requests) == 3
    assert {name: route.rate_limit for name, route in plan.regions.items()} == {
        "ap-southeast-1": 20,
        "cn-north-4": 40,
    }
    assert plan.regions["cn-north-4"].dli_endpoint == "https://dli.cn-north-4.myhuaweicloud.com"
    assert sum(request.select_all for request in plan.requests) == 1

"""Campaign files for the planning tests: write one, plan it the way the CLI does, collect its problems."""

from __future__ import annotations

import hashlib
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from exporter.campaign import CampaignError, CampaignPlan, PlanDefaults, load_campaign_file, plan_campaign

DEFAULTS = PlanDefaults(
    chunk_size=100,
    dli_endpoint_template="https://dli.{region}.myhuaweicloud.com",
    obs_endpoint_template="https://obs.{region}.myhuaweicloud.com",
    max_jobs=1000,
)


def write(tmp_path: Path, text: str, name: str = "campaign.toml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text), encoding="utf-8")
    return path


def plan_file(path: Path, **kwargs: Any) -> CampaignPlan:
    """Load and plan a file the way the CLI does: IDs files next to it, its sha256 for the ID."""
    options: dict[str, Any] = {
        "digest_of": hashlib.sha256(path.read_bytes()).hexdigest(),
        "defaults": DEFAULTS,
    }
    options.update(kwargs)
    return plan_campaign(load_campaign_file(path), source=str(path), base_dir=path.parent, **options)


def problems_of(path: Path, **kwargs: Any) -> list[str]:
    """The problems planning the file raises, without the file's name in front."""
    with pytest.raises(CampaignError) as caught:
        plan_file(path, **kwargs)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return [line.removeprefix(f"{path}: ") for line in caught.value.problems]

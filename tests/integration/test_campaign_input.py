"""Bad campaigns are refused whole: exit 2 (HTTP 400/409), every problem with its target's index, nothing
queued. Over the command line (subprocesses) and the daemon's HTTP routes, on a SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter.adapters.sqlite import SqliteBackend, open_sqlite
from exporter.http import create_http_app
from exporter.http_campaigns import add_campaign_routes
from exporter.paces import campaign_paces
from exporter.settings import Settings
from exporter.wiring import plan_defaults

CLI = (sys.executable, "-m", "exporter.cli")
P1, P2 = "a" * 32, "b" * 32
HEAD = (
    'campaign_id = "c1"\nobs_dir = "bucket/{region}/{project_id}"\n'
    '[regions.ap-southeast-1]\ndli_endpoint = "http://127.0.0.1:1"\nobs_endpoint = "http://127.0.0.1:2"\n'
)
GOOD = HEAD + f'[[targets]]\nregion = "ap-southeast-1"\nproject_id = "{P1}"\njob_ids = [1, 2, 3]\n'


async def cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "EXPORTER_QUEUE_URL": f"sqlite:///{tmp_path / 'q.db'}", "EXPORTER_AK": "ak"}
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env={**env, "EXPORTER_SK": "sk"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def submit(tmp_path: Path, text: str, *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "campaign.toml"
    path.write_text(text)
    return await cli(tmp_path, "campaign", "submit", str(path), *extra)


async def nothing_queued(tmp_path: Path) -> None:
    async with open_sqlite(tmp_path / "q.db") as backend:
        assert await backend.queue.depth() == 0
        assert await backend.campaigns.list_campaigns() == []


BAD = {
    "unknown placeholder": (
        GOOD.replace("{project_id}", "{project}"),
        "obs_dir: unknown placeholder {project}",
    ),
    "endpoints cannot be derived": (
        GOOD.replace('region = "ap-southeast-1"', 'region = "AP_1"'),
        "targets[0].region",
    ),
    "two targets for one project": (
        GOOD + f'[[targets]]\nregion = "ap-southeast-1"\nproject_id = "{P1}"\nall = true\n',
        "targets[1]: two targets for region ap-southeast-1 and project",
    ),
    "no selection": (
        HEAD + f'[[targets]]\nregion = "ap-southeast-1"\nproject_id = "{P1}"\n',
        "targets[0]: no selection",
    ),
    "two selections": (
        GOOD.replace("job_ids = [1, 2, 3]", "job_ids = [1]\nall = true"),
        "targets[0]: two selections",
    ),
    "unreadable IDs file": (
        GOOD.replace("job_ids = [1, 2, 3]", 'job_ids_file = "missing.txt"'),
        "targets[0].job_ids_file: cannot read missing.txt",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_campaign_is_refused_whole_with_the_targets_index(tmp_path: Path, case: str) -> None:
    text, expected = BAD[case]
    code, _, err = await submit(tmp_path, text)
    assert code == 2, err
    assert expected in err and "campaign.toml" in err
    await nothing_queued(tmp_path)


async def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = (
        HEAD
        + f'[[targets]]\nregion = "ap-southeast-1"\nproject_id = "{P1}"\n'
        + f'[[targets]]\nregion = "ap-southeast-1"\nproject_id = "{P2}"\njob_ids_file = "nope.txt"\n'
    )
    code, _, err = await submit(tmp_path, text)
    assert code == 2 and "targets[0]: no selection" in err and "targets[1].job_ids_file" in err
    await nothing_queued(tmp_path)


async def test_same_campaign_twice_queues_once_and_other_content_is_refused(tmp_path: Path) -> None:
    code, out, err = await submit(tmp_path, GOOD, "--json")
    assert code == 0, err
    first = json.loads(out)
    assert first == {
        "campaign_id": "c1",
        "batch_ids": [f"c1.ap-southeast-1.{P1}"],
        "queued": first["batch_ids"],
    }
    code, out, _ = await submit(tmp_path, GOOD, "--json")
    assert code == 0 and json.loads(out)["queued"] == []
    code, _, err = await submit(tmp_path, GOOD.replace("[1, 2, 3]", "[1, 2, 4]"))
    assert code == 2 and "campaign ID 'c1' was accepted before with other content" in err
    async with open_sqlite(tmp_path / "q.db") as backend:
        assert await backend.queue.depth() == 1


async def test_unknown_campaign_is_a_clear_error(tmp_path: Path) -> None:
    code, _, err = await cli(tmp_path, "campaign", "status", "nope")
    assert code == 2 and "no campaign 'nope'" in err


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[tuple[TestClient, SqliteBackend]]:  # type: ignore[type-arg]
    async with open_sqlite(tmp_path / "h.db") as backend:
        settings = Settings()
        app = create_http_app(backend.queue, backend.ledger, _Ready(), settings)
        add_campaign_routes(
            app,
            backend.campaigns,
            backend.queue,
            backend.ledger,
            defaults=plan_defaults(settings),
            report_dir="r",
            paces=partial(campaign_paces, backend.rates, settings),
        )
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield client, backend


class _Ready:
    ready = True


def as_json(targets: list[dict[str, object]], campaign_id: str = "h1") -> dict[str, object]:
    region = {"dli_endpoint": "http://127.0.0.1:1", "obs_endpoint": "http://127.0.0.1:2"}
    return {
        "campaign_id": campaign_id,
        "obs_dir": "bucket/{project_id}",
        "regions": {"eu-west-101": region},
        "targets": targets,
    }


async def test_http_campaigns_202_then_200_then_409_and_400(
    http: tuple[TestClient, SqliteBackend],  # type: ignore[type-arg]
) -> None:
    client, backend = http
    body = as_json([{"region": "eu-west-101", "project_id": P1, "job_ids": [5, 6]}])
    first = await client.post("/campaigns", json=body)
    assert first.status == 202 and (await first.json())["batch_ids"] == [f"h1.eu-west-101.{P1}"]
    again = await client.post("/campaigns", json=body)
    assert again.status == 200 and (await again.json())["queued"] == []
    other = await client.post(
        "/campaigns", json=as_json([{"region": "eu-west-101", "project_id": P2, "all": True}])
    )
    assert other.status == 409
    bad = await client.post("/campaigns", json=as_json([{"project_id": P2, "job_ids_file": "x"}], "h2"))
    assert bad.status == 400 and "job_ids_file is not accepted here" in (await bad.json())["error"]
    shown = await client.get("/campaigns/h1")
    report = await shown.json()
    assert shown.status == 200 and report["state"] == "pending" and report["totals"]["jobs"] == 2
    # each region's DLI pace: nothing learned yet at its gateway, so EXPORTER_RATE_START (auto)
    assert report["paces"]["eu-west-101"] == {
        "endpoint": "127.0.0.1:1",
        "rate_per_second": 5.0,
        "source": "learning",
        "stated_limit_per_second": None,
    }
    assert (await client.get("/campaigns/none")).status == 404
    assert await backend.queue.depth() == 1

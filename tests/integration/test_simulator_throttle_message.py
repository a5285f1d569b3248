"""The simulator's 429 message over a real socket: the limit and window as APIG prints them, the policy,
or no numbers at all (`throttle_states_limit` off), so clients cannot rely on reading the limit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from support import TEST_AK, TEST_PROJECT, TEST_SK

from exporter.dli.signer import Credentials, sign_request
from exporter.simulator import SimulatorHandle, SimulatorSettings, load_simulator_settings, running_simulator

LIST_PATH = f"/v1.0/{TEST_PROJECT}/streaming/jobs"
CREDENTIALS = Credentials(TEST_AK, TEST_SK, project_id=TEST_PROJECT)
PREFIX = "The throttling threshold has been reached"


def _settings(s3_server: str) -> dict[str, Any]:
    return {
        "project_id": TEST_PROJECT,
        "ak": TEST_AK,
        "sk": TEST_SK,
        "obs_endpoint": s3_server,
        "obs_region": "us-east-1",
        "sim_jobs": 5,
        "sim_seed": 7,
    }


@pytest.fixture
async def sim(s3_server: str) -> AsyncIterator[SimulatorHandle]:
    async with running_simulator(SimulatorSettings(**_settings(s3_server))) as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def _first_429(http: aiohttp.ClientSession, sim: SimulatorHandle, calls: int = 10) -> str:
    """Signed listings one after another until one is throttled; its APIG.0308 message."""
    for _ in range(calls):
        headers, _ = sign_request("GET", f"127.0.0.1:{sim.port}", LIST_PATH, [], {}, None, CREDENTIALS)
        async with http.get(f"{sim.url}{LIST_PATH}", headers=headers) as response:
            if response.status == 429:
                answer = json.loads(await response.read())
                assert answer["error_code"] == "APIG.0308"
                return str(answer["error_msg"])
    raise AssertionError(f"no 429 in {calls} calls")


@pytest.mark.parametrize(
    ("rate_limit", "window", "stated"),
    [
        (2, 1, "limit:2,time:1 second"),
        (0.05, 60, "limit:3,time:1 minute"),
        (0.025, 120, "limit:3,time:2 minutes"),
        (0.1, 30, "limit:3,time:30 seconds"),
    ],
)
async def test_message_states_limit_and_window(
    sim: SimulatorHandle, http: aiohttp.ClientSession, rate_limit: float, window: float, stated: str
) -> None:
    """Whole minutes read `N minute(s)` as Huawei's gateway prints them, not `60 seconds`."""
    sim.set_faults(rate_limit=rate_limit, rate_window_seconds=window)

    assert await _first_429(http, sim) == f"{PREFIX}: policy user over ratelimit,{stated}"


async def test_ip_policy_set_at_runtime(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim.url}/_sim/faults", json={"sim_throttle_policy": "ip"}) as response:
        assert (await response.json())["throttle_policy"] == "ip"
    sim.set_faults(rate_limit=0.05, rate_window_seconds=60)

    assert await _first_429(http, sim) == f"{PREFIX}: policy ip over ratelimit,limit:3,time:1 minute"

    async with http.post(f"{sim.url}/_sim/faults", json={"throttle_policy": "global"}) as response:
        assert response.status == 400


async def test_message_without_numbers_at_runtime(sim: SimulatorHandle, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim.url}/_sim/faults", json={"throttle_states_limit": False}) as response:
        assert (await response.json())["throttle_states_limit"] is False
    sim.set_faults(rate_limit=0.05, rate_window_seconds=60)

    assert await _first_429(http, sim) == f"{PREFIX}."


async def test_message_without_numbers_from_the_environment(
    s3_server: str, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPORTER_SIM_THROTTLE_STATES_LIMIT", "false")
    monkeypatch.setenv("EXPORTER_SIM_RATE_LIMIT", "1")
    monkeypatch.setenv("EXPORTER_SIM_RATE_WINDOW_SECONDS", "60")
    settings = load_simulator_settings(**_settings(s3_server))
    assert settings.fault_knobs().throttle_states_limit is False

    async with running_simulator(settings) as sim:
        message = await _first_429(http, sim, calls=70)

    assert message == f"{PREFIX}."
    assert not any(character.isdigit() for character in message)

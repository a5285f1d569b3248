"""Credentials that change while the daemon works, over real sockets: `dli-exporter work` as a process
against the simulator, whose gateway accepts only the keys and tokens valid at that moment.

- keys rotated in a Secret volume mid-batch (the kubelet's atomic swap), the old key disabled seconds
  later: picked up by polling; or, with polling off, by the 401's re-read;
- agency keys from the metadata service that expire every few seconds during a campaign;
- an IAM token that expires, and one revoked, mid-batch;
- a migration whose target region signs with another profile, and a profile the daemon lacks.

No job may fail in any of them: that is what "credentials that last for months" means.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from secret_volume import SecretVolume
from support import CLI, eventually, run_cli

from exporter.credentials.spec import ProfileSpec
from exporter.devstack import DEV_AK, DEV_PROJECT, DEV_SK, RegionSim, local_regions, settings_env
from exporter.settings import Settings
from exporter.simulator import SimulatorHandle
from exporter.simulator.state import STATE

pytestmark = [pytest.mark.slow]

NEW_AK, NEW_SK = "AKROTATED00000000002", "skRotated-Secret-Key-0000000000000002"
TARGET_AK, TARGET_SK = "AKTARGETACCOUNT00003", "skTarget-Account-Key-00000000000003"
FAST = {
    "poll_interval": 0.05,
    "verify_grace_seconds": 5,
    "retry_initial_backoff": 0.02,
    "lease_seconds": 3,
    "rate_limit": 10,  # so that a batch of 40 exports lasts some 4 s: long enough for keys to change
}
IAM = {"iam_domain": "acct-e2e", "iam_user": "exporter", "iam_password": "pw-E2e-Horse-0001"}


async def wait_for(condition: Callable[[], bool], what: str, limit_s: float = 30) -> float:
    """Poll `condition` until it holds (bounded); the seconds it took."""
    started = asyncio.get_running_loop().time()
    await eventually(condition, what, limit_s=limit_s, interval=0.02)
    return asyncio.get_running_loop().time() - started


@dataclass
class Work:
    """`work --until-empty` running, its log in a file (read when it fails)."""

    process: asyncio.subprocess.Process
    log: Path


async def start_work(env: dict[str, str], log: Path) -> Work:
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *CLI, "work", "--until-empty", env={**os.environ, **env}, stdout=sink, stderr=sink
        )
    return Work(process, log)


async def finished(work: Work, limit_s: float = 90) -> None:
    try:
        await asyncio.wait_for(work.process.wait(), limit_s)
    except TimeoutError:
        work.process.kill()
        await work.process.wait()
    assert work.process.returncode == 0, work.log.read_text()[-4000:]


async def submit(env: dict[str, str], bucket: str, batch_id: str, jobs: int) -> None:
    ids = ",".join(map(str, range(1, jobs + 1)))
    args = (
        "--obs-dir",
        f"{bucket}/{batch_id}",
        "--job-ids",
        ids,
        "--chunk-size",
        "1",
        "--batch-id",
        batch_id,
    )
    submitted = await run_cli(env, "submit", *args)
    assert submitted.code == 0, submitted.err


async def report(env: dict[str, str], batch_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = (await run_cli(env, "report", batch_id, "--json")).json()
    return answer


def no_keys(settings: Settings, **update: Any) -> Settings:
    """The stack's settings without its fixed AK/SK, and with `update` (where the keys come from now)."""
    return settings.model_copy(update={"ak": None, "sk": None, **update})


def assert_no_secret_logged(sim: SimulatorHandle, log: Path) -> None:
    """No key, security token or IAM token the simulator handed out is in the daemon's (debug) log."""
    ring = sim.app[STATE].keys
    secrets = [value for key in ring.keys.values() for value in (key.sk, key.security_token) if value]
    secrets += list(ring.tokens)
    text = log.read_text()
    assert secrets and not [secret[:6] for secret in secrets if secret in text]


def assert_all_verified(done: dict[str, Any], jobs: int) -> None:
    assert done["state"] == "completed", done.get("error")
    assert (done["totals"]["verified"], done["totals"]["failed"]) == (jobs, 0)


@pytest.mark.parametrize("poll", [0.2, 3600.0], ids=["polled", "reread-on-401"])
async def test_keys_rotated_in_a_secret_volume_mid_batch(stack: Any, tmp_path: Path, poll: float) -> None:
    """The new key is added, the volume swapped, the old key disabled: polled, the daemon signs with the
    new key within seconds, before the old one goes; without polling, the first 401 re-reads the files
    and the refused request is sent again. Either way every job is verified."""
    volume = SecretVolume(tmp_path / "secret", {"EXPORTER_AK": DEV_AK, "EXPORTER_SK": DEV_SK})
    async with stack(jobs=40, **FAST) as local:
        sim = local.simulator
        paths = {"ak_file": volume.path("EXPORTER_AK"), "sk_file": volume.path("EXPORTER_SK")}
        env = settings_env(no_keys(local.settings, credentials_poll_interval=poll, **paths))
        await submit(env, local.bucket, "rot", 40)
        work = await start_work(env, tmp_path / "work.log")
        await wait_for(lambda: sim.stats()["exports"] >= 8, "the batch under way")
        sim.add_key(NEW_AK, NEW_SK, label="rotated")
        volume.update({"EXPORTER_AK": NEW_AK, "EXPORTER_SK": NEW_SK})
        if poll < 60:
            took = await wait_for(lambda: sim.keys_used().get("rotated", 0) > 0, "the new key in use", 10)
            assert took < 5
        sim.disable_key("initial")
        with_old = sim.keys_used()["initial"]
        await finished(work)
        assert sim.stats()["exports"] < 40 + 5, "the batch was over before the rotation tested anything"
        assert_all_verified(await report(env, "rot"), 40)
        assert sim.keys_used()["initial"] == with_old and sim.keys_used()["rotated"] > 0
        if poll > 60:
            assert sim.stats()["auth_failures"] >= 1  # the 401 that made it re-read


async def test_agency_keys_expiring_every_few_seconds_during_a_campaign(stack: Any, tmp_path: Path) -> None:
    """`EXPORTER_CREDENTIALS=metadata` with keys that live 2 s (an hour on ECS; the same code path): two
    projects, 60 exports over some 6 s, keys renewed at two thirds of their life, never refused."""
    other = "0f" * 16
    async with stack(jobs=30, faults={"metadata_ttl_seconds": 2, "projects": other}, **FAST) as local:
        sim = local.simulator
        env = settings_env(
            no_keys(local.settings, credentials="metadata", metadata_url=sim.url, log_level="debug")
        )
        campaign = tmp_path / "campaign.toml"
        targets = "".join(
            f'[[targets]]\nproject_id = "{project}"\njob_ids = {list(range(1, 31))}\n'
            for project in (DEV_PROJECT, other)
        )
        campaign.write_text(
            f'campaign_id = "meta"\nobs_dir = "{local.bucket}/{{project_id}}"\nchunk_size = 1\n{targets}'
        )
        assert (await run_cli(env, "campaign", "submit", str(campaign))).code == 0
        await finished(await start_work(env, tmp_path / "work.log"))
        summary = (await run_cli(env, "campaign", "report", "meta", "--json")).json()
        used = sim.keys_used()
        assert_no_secret_logged(sim, tmp_path / "work.log")
    assert summary["state"] == "completed" and summary["totals"]["verified"] == 60
    assert summary["totals"]["failed"] == 0
    assert len([label for label in used if label.startswith("metadata-")]) >= 3, used
    assert "initial" not in used and sim.stats()["auth_failures"] == 0  # renewed before they expired


async def test_an_iam_token_that_expires_and_one_revoked_mid_batch(stack: Any, tmp_path: Path) -> None:
    """`EXPORTER_CREDENTIALS=iam-token`: tokens living 3 s are renewed before expiry, and when every token
    is revoked at once the 401 renews and retries; no job fails."""
    password = tmp_path / "iam-password"
    password.write_text(IAM["iam_password"] + "\n")
    async with stack(jobs=40, faults={**IAM, "token_ttl_seconds": 3}, **FAST) as local:
        sim = local.simulator
        settings = no_keys(
            local.settings,
            credentials="iam-token",
            iam_endpoint=sim.url,
            iam_domain=IAM["iam_domain"],
            iam_user=IAM["iam_user"],
            iam_password_file=password,
            obs_ak=DEV_AK,  # an IAM token signs DLI only: OBS takes keys of its own
            obs_sk=DEV_SK,
            log_level="debug",
        )
        env = settings_env(settings)
        await submit(env, local.bucket, "tok", 40)
        work = await start_work(env, tmp_path / "work.log")
        await wait_for(lambda: sim.stats()["exports"] >= 10, "the batch under way")
        assert sim.expire_tokens() >= 1
        await finished(work)
        assert_all_verified(await report(env, "tok"), 40)
        issued = sim.stats()["requests"]["iam_tokens"]["201"]
        assert issued >= 3 and sim.keys_used()["token"] >= 40
        assert sim.stats()["auth_failures"] >= 1  # the revoked token's 401, renewed and retried
        assert_no_secret_logged(sim, tmp_path / "work.log")


def two_region_campaign(stack: Any, path: Path, *, target: str | None, import_to: str | None) -> Path:
    """region-a's project exported, imported into region-b's target project; `credentials` as given."""
    lines = [f'campaign_id = "c-{uuid.uuid4().hex[:6]}"', f'obs_dir = "{stack.bucket}/{{campaign_id}}"']
    for name, sim in stack.simulators.items():
        lines += [f"[regions.{name}]", f'dli_endpoint = "{sim.url}"', f'obs_endpoint = "{stack.s3_endpoint}"']
    lines += [
        "[[targets]]",
        'region = "region-a"',
        f'project_id = "{"5a" * 16}"',
        "job_ids = [1, 2, 3, 4, 5, 6]",
    ]
    lines += [f'credentials = "{target}"'] if target else []
    lines += ["[targets.import_to]", 'region = "region-b"', f'project_id = "{"7b" * 16}"']
    lines += [f'credentials = "{import_to}"'] if import_to else []
    path.write_text("\n".join(lines) + "\n")
    return path


MIGRATION_REGIONS = {
    "region-a": RegionSim(projects=("5a" * 16,)),
    "region-b": RegionSim(projects=("5b" * 16,), target_projects=("7b" * 16,)),
}


async def test_a_migration_signs_its_target_side_with_the_target_profile(
    s3_server: str, tmp_path: Path
) -> None:
    """region-b accepts only the target account's keys (a profile from files); region-a the default
    keys: the export signs with the default, every import with `target`, and all six jobs arrive."""
    volume = SecretVolume(tmp_path / "target-secret", {"ak": TARGET_AK, "sk": TARGET_SK})
    profile = ProfileSpec(source="files", ak_file=volume.path("ak"), sk_file=volume.path("sk"))
    async with local_regions(
        workdir=tmp_path,
        regions=MIGRATION_REGIONS,
        s3_endpoint=s3_server,
        bucket=f"m-{uuid.uuid4().hex[:8]}",
        **FAST,
    ) as stack:
        region_b = stack.simulators["region-b"]
        region_b.add_key(TARGET_AK, TARGET_SK, label="target")
        region_b.disable_key("initial")
        env = settings_env(stack.settings.model_copy(update={"credential_profiles": {"target": profile}}))
        campaign = two_region_campaign(stack, tmp_path / "move.toml", target=None, import_to="target")
        batch_ids = (await run_cli(env, "campaign", "submit", str(campaign), "--json")).json()["batch_ids"]
        await finished(await start_work(env, tmp_path / "work.log"))
        done = await report(env, batch_ids[0])
        used_a, used_b = stack.simulators["region-a"].keys_used(), region_b.keys_used()
    assert done["state"] == "completed" and done["totals"]["imported"] == 6
    assert set(used_a) == {"initial"} and set(used_b) == {"target"}  # names listed, jobs imported


async def test_a_profile_the_daemon_lacks_fails_the_batch_saying_so(s3_server: str, tmp_path: Path) -> None:
    """Submitted from a machine without profiles (nothing to check against), run by a daemon without
    `ghost`: the batch ends failed, naming the profile; submitted where profiles exist, it is refused."""
    async with local_regions(
        workdir=tmp_path,
        regions=MIGRATION_REGIONS,
        s3_endpoint=s3_server,
        bucket=f"g-{uuid.uuid4().hex[:8]}",
        **FAST,
    ) as stack:
        env = settings_env(stack.settings)
        campaign = two_region_campaign(stack, tmp_path / "ghost.toml", target="ghost", import_to=None)
        batch_ids = (await run_cli(env, "campaign", "submit", str(campaign), "--json")).json()["batch_ids"]
        await finished(await start_work(env, tmp_path / "work.log"))
        done = await report(env, batch_ids[0])
        assert stack.simulators["region-a"].stats()["exports"] == 0
        profile = ProfileSpec(ak="AKOTHER0000000000001", sk="skOther-0000000000000000000000001")
        with_profiles = settings_env(
            stack.settings.model_copy(update={"credential_profiles": {"other": profile}})
        )
        again = two_region_campaign(stack, tmp_path / "ghost2.toml", target="ghost", import_to=None)
        refused = await run_cli(with_profiles, "campaign", "submit", str(again))
    assert done["state"] == "failed" and "'ghost' is not defined" in done["error"]["message"]
    assert refused.code == 2 and "unknown credential profile 'ghost' (known: default, other" in refused.err

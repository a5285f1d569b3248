"""`migrate` refuses bad input with exit 2 and a message naming the flag; nothing is queued."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import run_cli

from exporter.adapters.sqlite import open_sqlite
from exporter.intake import parse_batch_message

P, Q = "a" * 32, "b" * 32


def env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {"EXPORTER_QUEUE_URL": f"sqlite:///{tmp_path / 'q.db'}", **more}


# A submitter with a profile of its own checks the names a flag gives against its profiles.
WITH_PROFILES = {
    "EXPORTER_CREDENTIAL_PROFILES": '{"other": {"ak": "AKOTHER0000000000001", "sk": "sk-other-1"}}'
}


BASE = ("migrate", "--from-project", P, "--obs-dir", "bucket/x", "--job-ids", "1,2")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--to-project", "not a project!"), "destination: project_id: project ID 'not a project!' must be"),
        (("--to-project", Q, "--to-region", "AP_1"), "region 'AP_1' must be 1 to 63 lowercase"),
        (("--to-project", Q, "--on-conflict", "merge"), "'merge' is not one of 'skip', 'overwrite', 'fail'"),
        (("--to-project", Q, "--to-obs-dir", "Bad_Bucket"), "destination: obs_dir: bucket 'Bad_Bucket'"),
        (("--to-project", Q, "--to-credentials", "other"), "--to-credentials needs --to-region: without a"),
        (("--to-project", Q, "--from-credentials", "other"), "--from-credentials needs --from-region"),
        (
            ("--to-project", Q, "--to-region", "ap-southeast-1", "--to-credentials", "Bad Name"),
            "--to-credentials: ",
        ),
    ],
)
async def test_bad_migration_is_refused(tmp_path: Path, extra: tuple[str, ...], expected: str) -> None:
    ran = await run_cli(env(tmp_path), *BASE, *extra)
    assert ran.code == 2 and expected in ran.err, ran.err
    async with open_sqlite(tmp_path / "q.db") as backend:
        assert await backend.queue.depth() == 0


async def test_same_migration_twice_queues_once_and_another_destination_is_refused(tmp_path: Path) -> None:
    first = await run_cli(env(tmp_path), *BASE, "--to-project", Q, "--batch-id", "m1", "--json")
    assert first.json()["accepted"] is True and first.json()["on_conflict"] == "skip"
    again = await run_cli(env(tmp_path), *BASE, "--to-project", Q, "--batch-id", "m1", "--json")
    assert again.json()["accepted"] is False
    other = await run_cli(
        env(tmp_path), *BASE, "--to-project", Q, "--on-conflict", "overwrite", "--batch-id", "m1"
    )
    assert other.code == 2 and "was accepted before with other content" in other.err


async def test_profiles_by_flag_sign_each_side_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    """`--from-credentials` / `--to-credentials` put the profile on each side's route (the daemon signs
    with it); where the submitter has profiles, a name it lacks is refused listing the known ones."""
    regions = ("--from-region", "cn-north-4", "--to-region", "ap-southeast-1", "--to-project", Q)
    unknown = await run_cli(env(tmp_path, **WITH_PROFILES), *BASE, *regions, "--to-credentials", "ghost")
    assert (
        unknown.code == 2
        and "--to-credentials: unknown credential profile 'ghost' (known: default, other)" in (unknown.err)
    )
    signed = ("--from-credentials", "other", "--to-credentials", "other", "--batch-id", "m2", "--json")
    accepted = await run_cli(env(tmp_path, **WITH_PROFILES), *BASE, *regions, *signed)
    assert accepted.code == 0 and accepted.json()["accepted"] is True, accepted.err
    async with open_sqlite(tmp_path / "q.db") as backend:
        claim = await backend.queue.claim("test", 30)
    assert claim is not None
    request = parse_batch_message(claim.body)
    assert request.region is not None and request.region.credentials == "other"
    assert request.migration is not None and request.migration.region is not None
    assert (request.migration.region.name, request.migration.region.credentials) == (
        "ap-southeast-1",
        "other",
    )

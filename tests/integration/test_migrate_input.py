"""`migrate` refuses bad input with exit 2 and a message naming the flag; nothing is queued."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import run_cli

from exporter.adapters.sqlite import open_sqlite

P, Q = "a" * 32, "b" * 32


def env(tmp_path: Path) -> dict[str, str]:
    return {"EXPORTER_QUEUE_URL": f"sqlite:///{tmp_path / 'q.db'}"}


BASE = ("migrate", "--from-project", P, "--obs-dir", "bucket/x", "--job-ids", "1,2")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--to-project", "not a project!"), "destination: project_id: project ID 'not a project!' must be"),
        (("--to-project", Q, "--to-region", "AP_1"), "region 'AP_1' must be 1 to 63 lowercase"),
        (("--to-project", Q, "--on-conflict", "merge"), "'merge' is not one of 'skip', 'overwrite', 'fail'"),
        (("--to-project", Q, "--to-obs-dir", "Bad_Bucket"), "destination: obs_dir: bucket 'Bad_Bucket'"),
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

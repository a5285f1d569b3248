"""The command line against a real SQLite file: exit codes and messages a person relies on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from exporter.cli import main

Invoke = Callable[..., Result]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.setenv("EXPORTER_QUEUE_URL", f"sqlite:///{tmp_path / 'q.db'}")
    monkeypatch.setenv("EXPORTER_PROJECT_ID", "p1")
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_submit_queues_once_per_batch_id(run: Invoke) -> None:
    """The same --batch-id submitted twice is queued once; the second run says so."""
    first = run("submit", "--obs-dir", "bucket/x", "--job-ids", "1,2,2,3", "--batch-id", "b1")
    assert first.exit_code == 0 and "queued batch b1: 3 jobs (1 duplicate IDs dropped)" in first.output
    second = run("submit", "--obs-dir", "bucket/x", "--job-ids", "1,2,3", "--batch-id", "b1", "--json")
    assert json.loads(second.output)["accepted"] is False


def test_ids_file_error_names_the_line(run: Invoke, tmp_path: Path) -> None:
    """A bad line in --job-ids-file exits 2 with the file's line number; nothing is queued."""
    ids = tmp_path / "ids.txt"
    ids.write_text("# header\n10\n\n11\neleven\n")
    result = run("submit", "--obs-dir", "bucket", "--job-ids-file", str(ids))
    assert result.exit_code == 2
    assert "line 5: 'eleven' is not a job ID" in result.output
    assert "no dead letters" in run("dead-letters").output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--obs-dir", "Bad_Bucket", "--job-ids", "1"), "lowercase"),
        (("--obs-dir", "bucket", "--job-ids", "0"), "out of range"),
        (("--obs-dir", "bucket", "--job-ids", "1", "--project-id", "x y"), "letters and digits"),
        (("--obs-dir", "bucket", "--job-ids", "1", "--chunk-size", "5000"), "chunk_size"),
    ],
)
def test_invalid_submissions_exit_2_with_reason(run: Invoke, args: tuple[str, ...], message: str) -> None:
    """Invalid input is refused before anything is queued, with a specific reason and exit code 2."""
    result = run("submit", *args)
    assert result.exit_code == 2 and message in result.output


def test_selection_flags_are_exclusive(run: Invoke) -> None:
    """Giving both --job-ids and --all is a usage error."""
    result = run("submit", "--obs-dir", "bucket", "--job-ids", "1", "--all")
    assert result.exit_code == 2 and "exactly one of" in result.output


def test_status_of_unknown_batch_and_requeue_of_unknown_letter(run: Invoke) -> None:
    """Asking about things that do not exist is a clear error, not a traceback."""
    assert run("status", "nope").exit_code == 2
    result = run("requeue", "42")
    assert result.exit_code == 2 and "no dead letter '42'" in result.output


def test_invalid_setting_names_the_variable(run: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad environment value stops the command with the variable's name."""
    monkeypatch.setenv("EXPORTER_CONCURRENCY", "lots")
    result = run("dead-letters")
    assert result.exit_code == 2 and "EXPORTER_CONCURRENCY" in result.output

"""The command line against a real SQLite file: exit codes and messages a person relies on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from exporter.cli import main
from exporter.commands import submit as cli_submit
from exporter.errors import Conflict
from exporter.models import BatchInfo
from exporter.progress import print_batches

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


@pytest.mark.parametrize("text", ["", " ", " , ,"])
def test_empty_job_ids_flag_says_it_is_empty(run: Invoke, text: str) -> None:
    """`--job-ids ''` was given, so the answer names that flag as empty (not "give one of"), exit 2."""
    result = run("submit", "--obs-dir", "bucket", "--job-ids", text)
    assert result.exit_code == 2, result.output
    assert "error: --job-ids is empty: give at least one job ID" in result.output
    assert "exactly one of" not in result.output


def test_ids_file_without_ids_says_so(run: Invoke, tmp_path: Path) -> None:
    """An IDs file holding only blank lines and comments is refused by name, exit 2; nothing is queued."""
    ids = tmp_path / "empty.txt"
    ids.write_text("# nothing yet\n\n   \n")
    result = run("submit", "--obs-dir", "bucket", "--job-ids-file", str(ids))
    assert result.exit_code == 2
    assert f"--job-ids-file {ids} holds no job IDs" in result.output
    assert json.loads(run("status", "--json").output) == []


def test_explicit_zero_chunk_size_is_refused_not_replaced(run: Invoke) -> None:
    """`--chunk-size 0` is an error naming chunk_size, not a silent fallback to the default."""
    result = run("submit", "--obs-dir", "bucket", "--job-ids", "1", "--chunk-size", "0")
    assert result.exit_code == 2 and "chunk_size" in result.output


def test_conflict_from_submission_is_exit_2_with_its_message(
    run: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever Conflict the submission raises, the CLI prints `error: <message>` and exits 2."""

    async def conflicting(*_: object, **__: object) -> bool:
        raise Conflict("batch ID 'b1' was accepted before with other content (obs_dir: a before, b now)")

    monkeypatch.setattr(cli_submit, "submit_batch", conflicting)
    result = run("submit", "--obs-dir", "bucket", "--job-ids", "1", "--batch-id", "b1")
    assert result.exit_code == 2
    assert "error: batch ID 'b1' was accepted before with other content (obs_dir: a before, b now)" in (
        result.output
    )


def test_reused_batch_id_with_other_ids_is_refused(run: Invoke) -> None:
    """The same --batch-id with other job IDs exits 2 saying what differs; the same IDs again exit 0."""
    assert run("submit", "--obs-dir", "bucket/x", "--job-ids", "1,2,3", "--batch-id", "b1").exit_code == 0
    other = run("submit", "--obs-dir", "bucket/x", "--job-ids", "1,2,4", "--batch-id", "b1")
    assert other.exit_code == 2, other.output
    assert other.output.startswith("error: ") and "'b1'" in other.output and "differ" in other.output
    moved = run("submit", "--obs-dir", "bucket/y", "--job-ids", "1,2,3", "--batch-id", "b1")
    assert moved.exit_code == 2 and "obs_dir" in moved.output
    same = run("submit", "--obs-dir", "bucket/x", "--job-ids", "1,2,3", "--batch-id", "b1", "--json")
    assert same.exit_code == 0 and json.loads(same.output)["accepted"] is False


LONG_IDS = ("nightly-export-2026-11-29-payments-eu-0001", "nightly-export-2026-11-29-payments-eu-0002")
LONG_CAMPAIGN = "migration-wave-2026-payments-to-cn-north-4"


def _submit_long_batches(run: Invoke) -> None:
    for number, batch_id in enumerate(LONG_IDS, start=1):
        ids = ",".join(str(n) for n in range(1, 10 * number + 1))
        args = ("--job-ids", ids, "--batch-id", batch_id, "--campaign", LONG_CAMPAIGN, "--chunk-size", "4")
        assert run("submit", "--obs-dir", "bucket/x", *args).exit_code == 0


def test_status_table_through_a_pipe_keeps_identifiers_whole(
    run: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off a terminal (and narrow), `status` prints every batch ID and campaign whole, one row per batch."""
    monkeypatch.setenv("COLUMNS", "50")
    _submit_long_batches(run)
    for args in (("status",), ("status", "--campaign", LONG_CAMPAIGN)):
        output = run(*args).output
        assert "…" not in output and "..." not in output
        rows = {line.split()[0]: line.split() for line in output.splitlines() if line.startswith("nightly")}
        assert sorted(rows) == sorted(LONG_IDS), output
        assert all(row[1] == LONG_CAMPAIGN and row[2] == "pending" for row in rows.values())
        assert rows[LONG_IDS[1]][3:5] == ["0/20", "(0%)"]
        total = next(line for line in output.splitlines() if line.startswith("total"))
        assert total.split()[1:5] == ["2", "batches", "0/30", "(0%)"]
    assert output.splitlines()[0] == f"campaign {LONG_CAMPAIGN}"


def test_status_table_is_rich_only_on_a_terminal_wide_enough() -> None:
    """A wide terminal gets the rich table, a narrow one the plain table: the IDs are whole in both."""
    infos = [
        BatchInfo(
            batch_id=b,
            project_id="p1",
            obs_dir="bucket",
            campaign=LONG_CAMPAIGN,
            chunk_size=4,
            created_at=0,
            updated_at=0,
        )
        for b in LONG_IDS
    ]
    for width, boxed in ((200, True), (60, False)):
        console = Console(width=width, force_terminal=True, color_system=None, record=True)
        print_batches(console, infos, 1.0, title="campaign x")
        text = console.export_text()
        assert ("┃" in text) is boxed, text
        assert all(b in text for b in LONG_IDS) and LONG_CAMPAIGN in text and "…" not in text


def test_status_of_one_batch_for_people_and_as_json(run: Invoke) -> None:
    """`status BATCH` says state, progress, project, obs_dir and campaign; --json has the ledger's fields."""
    args = ("--job-ids", "1,2,2,3,4,5", "--batch-id", "s1", "--campaign", "wave-1", "--chunk-size", "2")
    assert run("submit", "--obs-dir", "obs://bucket/x/", *args).exit_code == 0
    human = run("status", "s1")
    assert human.exit_code == 0
    assert human.output.splitlines() == [
        "s1: pending, 0/5 jobs done (0 verified, 0 failed), 0/3 chunks",
        "  project: p1",
        "  obs_dir: bucket/x",
        "  campaign: wave-1",
        "  duplicate IDs dropped: 1",
    ]
    info = json.loads(run("status", "s1", "--json").output)
    assert {k: info[k] for k in ("batch_id", "project_id", "obs_dir", "campaign", "chunk_size", "state")} == {
        "batch_id": "s1",
        "project_id": "p1",
        "obs_dir": "bucket/x",
        "campaign": "wave-1",
        "chunk_size": 2,
        "state": "pending",
    }
    assert info["totals"]["jobs"] == 5 and info["totals"]["chunks"] == 3 and info["totals"]["verified"] == 0
    assert info["duplicates_dropped"] == 1 and info["created_at"] > 0 and info["finished_at"] is None

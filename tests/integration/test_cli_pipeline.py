"""The command line over real sockets: `dli-exporter` processes against the simulator, the S3 server, SQLite.

Every command runs as `python -m exporter.cli` (what the console script runs), so each test crosses the
whole way a person's commands do: submit → `work --until-empty` → status / report / dead letters.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import struct
import termios
from collections.abc import Callable
from typing import Any

import pytest
from support import CLI, Ran, run_cli

from exporter.adapters.sqlite import open_sqlite, sqlite_path_from_url
from exporter.devstack import local_stack, settings_env
from exporter.simulator.jobs import job_name, job_queue, job_status, job_tags, job_type, job_user

FAST = {"poll_interval": 0.05, "verify_grace_seconds": 5, "retry_initial_backoff": 0.02}
ROW_FIELDS = {"index", "part", "job_ids", "state", "zip_files", "attempts", "error", "request_id"}


async def cli(env: dict[str, str], *args: str) -> Ran:
    return await run_cli(env, *args, limit_s=90)


async def submit_and_work(env: dict[str, str], *submit_args: str) -> None:
    """`submit ARGS` then `work --until-empty`, both exit 0."""
    submitted = await cli(env, "submit", *submit_args)
    assert submitted.code == 0, submitted.err
    worked = await cli(env, "work", "--until-empty")
    assert worked.code == 0, worked.err


def stack_env(stack: Any) -> dict[str, str]:
    return settings_env(stack.settings)


# --- one finished batch, read in several ways ---------------------------------------------------------------
UNKNOWN = 9999
SUBMITTED = [*range(1, 13), UNKNOWN]


@pytest.fixture(scope="module")
def finished(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Settings of a SQLite file holding batch `fin`, run: 13 IDs in chunks of 5, one unknown to DLI."""
    workdir = tmp_path_factory.mktemp("finished")

    async def run() -> dict[str, str]:
        async with local_stack(
            workdir=workdir, jobs=40, bucket="cli-finished", s3_endpoint=s3_server, **FAST
        ) as stack:
            env = stack_env(stack)
            ids = ",".join(map(str, SUBMITTED))
            args = ("--obs-dir", f"{stack.bucket}/exports", "--job-ids", ids, "--chunk-size", "5")
            await submit_and_work(env, *args, "--batch-id", "fin", "--campaign", "wave-1")
        return env

    return asyncio.run(run())


async def test_status_of_a_finished_batch(finished: dict[str, str]) -> None:
    """`status fin` says completed with failures, 12 verified and 1 failed; --json carries the same."""
    human = await cli(finished, "status", "fin")
    assert human.code == 0, human.err
    lines = human.out.splitlines()
    assert lines[0].startswith("fin: completed_with_failures, 13/13 jobs done (12 verified, 1 failed), ")
    assert (
        "  project: 0123456789abcdef0123456789abcdef" in lines and "  obs_dir: cli-finished/exports" in lines
    )
    assert "  campaign: wave-1" in lines and not any(line.startswith("ETA") for line in lines)
    info = (await cli(finished, "status", "fin", "--json")).json()
    assert (info["batch_id"], info["state"], info["campaign"]) == ("fin", "completed_with_failures", "wave-1")
    assert info["obs_dir"] == "cli-finished/exports" and info["chunk_size"] == 5
    totals = info["totals"]
    assert (totals["jobs"], totals["chunks"], totals["verified"], totals["failed"]) == (13, 3, 12, 1)
    assert totals["pending"] == 0 and info["finished_at"] >= info["created_at"] > 0


async def test_report_json_holds_every_chunk_with_its_zips(finished: dict[str, str]) -> None:
    """`report --json`: header, totals and one row per chunk part with ZIPs, attempts and DLI's error code."""
    report = (await cli(finished, "report", "fin", "--json")).json()
    assert (report["batch_id"], report["project_id"]) == ("fin", "0123456789abcdef0123456789abcdef")
    assert (report["obs_dir"], report["state"]) == ("cli-finished/exports", "completed_with_failures")
    totals = report["totals"]
    assert (totals["jobs"], totals["chunks"], totals["verified"], totals["failed"]) == (13, 3, 12, 1)
    rows = report["chunks"]
    assert all(set(row) >= ROW_FIELDS for row in rows)
    assert sorted(j for row in rows for j in row["job_ids"]) == sorted(SUBMITTED)
    assert [row["index"] for row in rows] == sorted(row["index"] for row in rows)
    assert {row["index"] for row in rows} == {0, 1, 2}
    failed = [row for row in rows if row["state"] == "failed"]
    assert [row["job_ids"] for row in failed] == [[UNKNOWN]]
    assert failed[0]["error"]["code"] == "DLI.0002" and str(UNKNOWN) in failed[0]["error"]["message"]
    assert failed[0]["index"] == 2 and failed[0]["part"] is not None and failed[0]["zip_files"] == []
    for row in (row for row in rows if row["state"] == "verified"):
        assert row["error"] is None and row["attempts"] >= 1 and row["request_id"]
        assert row["zip_files"], row
        for zip_file in row["zip_files"]:
            assert set(zip_file) == {"path", "size", "etag", "verified"}
            assert zip_file["path"].startswith("cli-finished/exports/") and zip_file["path"].endswith(".zip")
            assert zip_file["size"] > 0 and zip_file["etag"] and zip_file["verified"] is True


async def test_report_jsonl_is_one_line_per_report_row(finished: dict[str, str]) -> None:
    """`report --jsonl` prints exactly the report's rows, one JSON object per line, in the same order."""
    lines = await cli(finished, "report", "fin", "--jsonl")
    assert lines.code == 0, lines.err
    rows = [json.loads(line) for line in lines.out.splitlines()]
    assert rows == (await cli(finished, "report", "fin")).json()["chunks"]
    assert len(rows) >= 3 and all(set(row) >= ROW_FIELDS for row in rows)


# --- filters of --all ---------------------------------------------------------------------------------------
JOBS = 60


@pytest.mark.parametrize(
    ("flags", "wanted"),
    [
        (
            ("--status", "job_running", "--job-type", "flink_sql_job"),
            lambda j: job_status(j) == "job_running" and job_type(j) == "flink_sql_job",
        ),
        (
            ("--queue-name", "queue_2", "--tags", "team=data", "--tags", "env=prod"),
            lambda j: job_queue(j) == "queue_2" and set(job_tags(j)) >= {("team", "data"), ("env", "prod")},
        ),
        (
            ("--user-name", "bob", "--name", "ORDERS"),
            lambda j: job_user(j) == "bob" and "orders" in job_name(j),
        ),
    ],
    ids=["status-and-type", "queue-and-tags", "user-and-name"],
)
async def test_all_with_filters_exports_exactly_the_matching_jobs(
    stack: Any, flags: tuple[str, ...], wanted: Callable[[int], bool]
) -> None:
    """`submit --all` with filters reaches DLI's listing: the report holds exactly the matching job IDs."""
    expected = [job_id for job_id in range(1, JOBS + 1) if wanted(job_id)]
    assert 0 < len(expected) < JOBS / 2, "the filter selects a proper subset"
    async with stack(jobs=JOBS, **FAST) as s:
        env = stack_env(s)
        await submit_and_work(
            env, "--obs-dir", s.bucket, "--all", *flags, "--batch-id", "f", "--chunk-size", "4"
        )
        report = (await cli(env, "report", "f")).json()
    exported = [job_id for row in report["chunks"] for job_id in row["job_ids"]]
    assert sorted(exported) == expected
    assert report["state"] == "completed" and report["totals"]["verified"] == len(expected)


# --- dead letters -------------------------------------------------------------------------------------------
async def test_requeued_dead_letter_is_processed(stack: Any) -> None:
    """A message parked for being over the batch limit, requeued once the limit is raised, is exported."""
    async with stack(jobs=30, **FAST) as s:
        env = stack_env(s)
        message = {
            "batch_id": "big",
            "project_id": s.settings.project_id,
            "obs_dir": s.bucket,
            "chunk_size": 4,
        }
        async with open_sqlite(sqlite_path_from_url(s.settings.queue_url)) as backend:
            await backend.queue.put_raw(json.dumps({**message, "job_ids": list(range(1, 13))}))
        assert (await cli({**env, "EXPORTER_MAX_JOBS_PER_BATCH": "10"}, "work", "--until-empty")).code == 0
        parked = (await cli(env, "dead-letters", "--json")).json()
        assert len(parked) == 1 and "EXPORTER_MAX_JOBS_PER_BATCH" in parked[0]["reason"], parked
        letter = str(parked[0]["id"])
        requeued = await cli(env, "requeue", letter)
        assert requeued.code == 0 and requeued.out.strip() == f"requeued {letter}", requeued.err
        assert (await cli(env, "dead-letters")).out.strip() == "no dead letters"
        assert (await cli(env, "work", "--until-empty")).code == 0
        report = (await cli(env, "report", "big")).json()
        assert (await cli(env, "dead-letters", "--json")).json() == []
    assert report["state"] == "completed" and report["totals"]["verified"] == 12


# --- status --watch in a terminal -------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]")


class Terminal:
    """The master side of a pseudo-terminal: collects what the program shows, until it closes."""

    def __init__(self, columns: int = 160, rows: int = 40) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.raw = b""
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every process holding the slave side has exited
            data = b""
        if data:
            self.raw += data
        else:
            asyncio.get_running_loop().remove_reader(self.master)
            self.closed.set()
        self._changed.set()

    @property
    def text(self) -> str:
        """What was shown, escape sequences removed; each redraw of the bar on a line of its own."""
        return _ANSI.sub("", self.raw.decode("utf-8", "replace")).replace("\r\n", "\n").replace("\r", "\n")

    async def wait_for(self, predicate: Callable[[str], bool], limit_s: float = 60) -> None:
        """Until `predicate(text)` holds; fails if the program ends first (no sleeping: woken by output)."""
        async with asyncio.timeout(limit_s):
            while not predicate(self.text):
                assert not self.closed.is_set(), f"ended before expected output:\n{self.text}"
                self._changed.clear()
                await self._changed.wait()

    def close(self) -> None:
        if not self.closed.is_set():
            asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)


async def test_status_watch_follows_a_batch_to_its_end_in_a_terminal(stack: Any) -> None:
    """`status --watch` in a pty shows the bar at 0/20, then 20/20 100% with the verified count; exit 0."""
    async with stack(jobs=40, rate_limit=20, **FAST) as s:
        env = stack_env(s)
        ids = ",".join(str(n) for n in range(1, 21))
        args = ("--obs-dir", s.bucket, "--job-ids", ids, "--batch-id", "watched", "--chunk-size", "2")
        assert (await cli(env, "submit", *args)).code == 0
        terminal = Terminal()
        watch_env = {**os.environ, **env, "TERM": "xterm-256color", "COLUMNS": "", "LINES": ""}
        try:
            watcher = await asyncio.create_subprocess_exec(
                *CLI, "status", "watched", "--watch", "--timeout", "90",
                env={k: v for k, v in watch_env.items() if v}, stdin=terminal.slave, stdout=terminal.slave,
                stderr=terminal.slave, start_new_session=True,
            )  # fmt: skip
            os.close(terminal.slave)
            await terminal.wait_for(lambda text: "0/20" in text)
            worked = await cli(env, "work", "--until-empty")
            assert worked.code == 0, worked.err
            await asyncio.wait_for(terminal.closed.wait(), 60)
            assert await asyncio.wait_for(watcher.wait(), 10) == 0, terminal.text
        finally:
            terminal.close()
    shown = [line for line in terminal.text.splitlines() if line.strip()]
    bar = [line for line in shown if line.startswith("watched ") and "verified" in line][-1]
    assert "20/20" in bar and "100%" in bar and "verified 20 failed 0" in bar, terminal.text
    assert "watched: completed, 20/20 jobs done (20 verified, 0 failed), 10/10 chunks" in shown

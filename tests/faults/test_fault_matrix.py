"""The fault matrix: one campaign of 1,005 IDs per fault, through the simulator and a real S3 server.

Every row submits jobs 1..1000 plus five IDs DLI does not know, injects one fault, runs the campaign to
its end and then holds the report to the same promises (`invariants.check_report`): each submitted ID
exactly once, `verified` only for ZIPs really in the bucket, every failure with a code. Then it checks
what this fault must (and must not) change, and that the fault really happened.

The campaign and its plumbing live in campaign.py, the ways of breaking things in injections.py and
relay.py. In-process rows run the real runtime (`open_runtime` + `worker.run(until_empty=True)`); the
two kill -9 rows run `dli-exporter work` as a process. Set FAULT_MATRIX_RESULTS=/path/file.jsonl to
collect each row's measured outcome (the table in docs/reliability.md comes from it).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faults.campaign import (
    CAMPAIGN_LIMIT_S,
    CHUNK,
    GOOD,
    SUBMITTED,
    UNKNOWN,
    Case,
    Run,
    Totals,
    batch_request,
    captured_logs,
    case_stack,
    ledger_totals,
    read_report,
    record,
    run_in_process,
    start_worker,
    wait_for_ledger,
)
from faults.injections import (
    fill_disk,
    forbidden_key,
    malformed_answers,
    obs_forbidden,
    obs_unavailable,
    restart_s3,
    throttle_first_export_until_9999,
)
from faults.invariants import bucket_objects, check_report, zip_key

from exporter.adapters import sqlite as sqlite_adapter
from exporter.adapters.limiter import LocalRateLimiter
from exporter.adapters.sqlite_db import SqliteDatabase
from exporter.app import open_stores
from exporter.devstack import DEV_AK, DEV_PROJECT, DEV_SK, settings_env
from exporter.dli.client import DliClient
from exporter.dli.retry import RetryPolicy
from exporter.dli.session import create_session
from exporter.dli.signer import Credentials
from exporter.errors import Transient
from exporter.submission import submit_batch
from exporter.wiring import session_options

# --- expectations ---------------------------------------------------------------------------------------


def expect_all_good_verified(run: Run) -> None:
    """The default: faults only delayed the work; every good ID verified, only unknown IDs failed."""
    assert run.outcome is not None
    assert run.outcome.verified == set(GOOD)
    assert dict(run.outcome.failed_codes) == dict.fromkeys(UNKNOWN, "DLI.0002")
    unknown_rows = [row for row in run.report["chunks"] if set(row["job_ids"]) & set(UNKNOWN)]
    assert all(len(row["job_ids"]) == 1 for row in unknown_rows), "bisection isolates each unknown ID"


def expect_missing_zips_reported(run: Run) -> None:
    """ZIPs DLI claimed but never wrote fail with ZIP_MISSING (and really are absent); the rest verify."""
    assert run.outcome is not None
    missing_rows = [row for row in run.report["chunks"] if (row["error"] or {}).get("code") == "ZIP_MISSING"]
    assert missing_rows, "some ZIPs never appeared"
    for row in missing_rows:
        assert all(zip_key(z["path"]) not in run.objects for z in row["zip_files"])
    missing_ids = {job_id for row in missing_rows for job_id in row["job_ids"]}
    assert run.outcome.verified == set(GOOD) - missing_ids
    assert {i for i, code in run.outcome.failed_codes.items() if code == "DLI.0002"} == set(UNKNOWN)
    assert len(missing_rows) == run.stats["faults"]["never"], "one missing row per ZIP never written"


def expect_forbidden_zips_failed(run: Run) -> None:
    """A ZIP OBS refuses to show (403) fails with an OBS code, never verified; every other ZIP verifies."""
    assert run.outcome is not None
    refused = 0
    for row in run.report["chunks"]:
        keys = [zip_key(z["path"]) for z in row["zip_files"]]
        if any(forbidden_key(key) for key in keys):
            refused += 1
            assert row["state"] == "failed" and row["error"]["code"].startswith("OBS."), row
        elif set(row["job_ids"]) <= set(UNKNOWN):
            assert row["error"]["code"] == "DLI.0002"
        else:
            assert row["state"] == "verified", row
    assert refused > 0, "the 403 rule hit some ZIPs"


def disk_full_was_clear_and_harmless(run: Run) -> None:
    """The failure is logged in SQLite's words, the file passes integrity_check, and all is verified."""
    expect_all_good_verified(run)
    failed_events = {"sqlite.operations_failed", "sqlite.transaction_failed"}
    failures = [e for e in run.logs if e["event"] in failed_events]
    assert failures and all("full" in e["error"] for e in failures), failures[:3]
    with sqlite3.connect(run.sqlite_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --- the matrix ------------------------------------------------------------------------------------------


def _faults(run: Run, kind: str) -> int:
    count: int = run.stats["faults"].get(kind, 0)
    return count


CASES = [
    Case(
        "429-storm-retry-after",
        faults={"rate_limit": 20},
        settings={"rate_burst": 16, "retry_max_attempts": 50, "retry_deadline": 120},
        evidence=lambda run: int(run.stats["throttled"]),
    ),
    Case("503-30pct", faults={"p_503": 0.3}, evidence=lambda run: _faults(run, "503")),
    Case(
        "read-timeout",
        faults={"p_timeout": 0.1, "timeout_seconds": 0.6},
        settings={"read_timeout": 0.3},
        evidence=lambda run: _faults(run, "timeout"),
        repeats_allowed=True,  # DLI did the work, the answer came too late: exported again
    ),
    Case("connection-reset", faults={"p_reset": 0.3}, evidence=lambda run: _faults(run, "reset")),
    Case(
        "truncated-and-malformed-json",
        faults={"p_malformed": 0.15},
        dli_rule=malformed_answers,
        evidence=lambda run: _faults(run, "malformed") + run.relays["dli"].counts["rewritten"],
        repeats_allowed=True,  # the work was done before the answer broke
    ),
    Case("is-success-false", faults={"p_not_success": 0.3}, evidence=lambda run: _faults(run, "not_success")),
    Case("html-gateway-page", faults={"p_html": 0.3}, evidence=lambda run: _faults(run, "html")),
    Case(
        "zip-appears-late",
        faults={"p_late": 0.5, "late_seconds": 1.0},
        evidence=lambda run: _faults(run, "late"),
    ),
    Case(
        "zip-never-appears",
        faults={"p_never": 0.1},
        settings={"verify_grace_seconds": 0.5},
        expect=expect_missing_zips_reported,
        evidence=lambda run: _faults(run, "never"),
    ),
    Case(
        "obs-403",
        settings={"verify_zip": True},
        obs_rule=obs_forbidden,
        expect=expect_forbidden_zips_failed,
        evidence=lambda run: run.relays["obs"].counts["403"],
    ),
    Case(
        "obs-503",
        settings={"verify_zip": True},
        obs_rule=obs_unavailable,
        evidence=lambda run: run.relays["obs"].counts["503"],
    ),
    Case(
        "s3-restarted",
        s3_behind_relay=True,
        disturbance=restart_s3,
        evidence=lambda run: int(run.stats["requests"]["export_jobs"].get("500", 0)),
        repeats_allowed=True,  # DLI's own ZIP writes outlast the client's timeout while S3 is away
    ),
    Case(
        "sqlite-disk-full",
        disturbance=fill_disk,
        expect=disk_full_was_clear_and_harmless,
        evidence=lambda run: run.databases[-1].stats.failed_operations,
        repeats_allowed=True,  # an export whose outcome could not be saved is done again
    ),
]


@pytest.fixture
def databases(monkeypatch: pytest.MonkeyPatch) -> list[SqliteDatabase]:
    """Every SQLite database the runtime opens, so a row can reach the one the worker writes to."""
    opened: list[SqliteDatabase] = []

    class RecordingDatabase(SqliteDatabase):
        __slots__ = ()

        def __init__(self, path: Path, *, busy_timeout: float = 10.0) -> None:
            super().__init__(path, busy_timeout=busy_timeout)
            opened.append(self)

    monkeypatch.setattr(sqlite_adapter, "SqliteDatabase", RecordingDatabase)
    return opened


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_campaign_survives_fault(
    case: Case,
    s3_server: str,
    tmp_path: Path,
    databases: list[SqliteDatabase],
    record_property: Callable[[str, object], None],
) -> None:
    """Under this fault the campaign still ends with each ID reported once, verified or failed with a code."""
    async with case_stack(case, s3_server, tmp_path) as run:
        run.databases = databases
        started = time.monotonic()
        with captured_logs() as logs:
            note = await run_in_process(run, case.disturbance)
        run.seconds = time.monotonic() - started
        run.logs = logs
        run.stats = run.simulator.stats()
        run.report = read_report(run.stack.settings)
        run.objects = await bucket_objects(s3_server, run.stack.bucket)
        run.outcome = check_report(run.report, SUBMITTED, run.objects)
        (case.expect or expect_all_good_verified)(run)
        injected = case.evidence(run)
        assert injected > 0, "the fault really was injected"
        if not case.repeats_allowed:
            repeated = run.stats["job_ids_exported_more_than_once"]
            assert repeated == 0, "a fault that strikes before DLI does the work repeats nothing"
        record(record_property, case.name, run, injected=injected, note=note)


# --- kill -9 ---------------------------------------------------------------------------------------------

KILL_CONCURRENCY = 8


def _mid_export(totals: Totals) -> bool:
    return totals["chunks"] - totals["pending"] >= 15 and totals["pending"] > 0


def _mid_verification(totals: Totals) -> bool:
    return totals["pending"] == 0 and totals["exported"] > 0


KILL_CASES: dict[str, tuple[dict[str, Any], Callable[[Totals], bool]]] = {
    # Slow answers keep exports in flight; kill once 15 of the 51 chunks were saved as exported or done.
    "export": ({"latency_ms": 15, "latency_jitter_ms": 10}, _mid_export),
    # Every ZIP shows up 4 s late: every chunk is saved as exported, then sits in verification when killed.
    "verification": ({"p_late": 1.0, "late_seconds": 4.0}, _mid_verification),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(KILL_CASES))
async def test_worker_killed_mid_stage(
    stage: str, s3_server: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """`work` SIGKILLed mid-export or mid-verification: a restart finishes, repeats bounded by concurrency."""
    faults, kill_when = KILL_CASES[stage]
    case = Case(f"kill9-during-{stage}", faults=faults, settings={"verify_grace_seconds": 30})
    async with case_stack(case, s3_server, tmp_path) as run:
        settings = run.stack.settings
        env = settings_env(settings, concurrency=KILL_CONCURRENCY, log_format="json")
        async with open_stores(settings) as stores:
            await submit_batch(stores.queue, batch_request(run))
        stderr = tmp_path / "worker.stderr"
        started = time.monotonic()
        worker = await start_worker(env, stderr)
        try:
            await wait_for_ledger(settings, kill_when, f"the {stage} stage")
        finally:
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
        assert worker.returncode == -signal.SIGKILL
        at_kill = await ledger_totals(settings)
        exports_at_kill = run.simulator.stats()["exports"]
        restarted = await start_worker(env, stderr)
        assert await asyncio.wait_for(restarted.wait(), CAMPAIGN_LIMIT_S) == 0, stderr.read_text()[-3000:]
        run.seconds = time.monotonic() - started
        run.stats = run.simulator.stats()
        run.report = read_report(settings)
        run.objects = await bucket_objects(s3_server, run.stack.bucket)
        run.outcome = check_report(run.report, SUBMITTED, run.objects)
    expect_all_good_verified(run)
    if stage == "export":
        assert at_kill["pending"] > 0, "the kill landed while chunks were still to export"
    else:
        assert at_kill["exported"] > 0 and at_kill["pending"] == 0, "the kill landed during verification"
    repeated_chunks = -(-run.stats["job_ids_exported_more_than_once"] // CHUNK)
    assert repeated_chunks <= KILL_CONCURRENCY, "at most the chunks in flight are exported again"
    assert "Traceback" not in stderr.read_text()
    record(
        record_property,
        case.name,
        run,
        injected=1,
        note=f"killed with {at_kill['pending']} chunks pending, {at_kill['exported']} awaiting verification",
        export_calls_after_restart=run.stats["exports"] - exports_at_kill,
    )


# --- a 429 whose Retry-After is absurd -------------------------------------------------------------------


async def test_absurd_retry_after_does_not_freeze_every_request(s3_server: str, tmp_path: Path) -> None:
    """One 429 with a Retry-After in the year 9999 fails that call, but later calls still go out."""
    case = Case("absurd-retry-after", dli_rule=throttle_first_export_until_9999)
    async with case_stack(case, s3_server, tmp_path) as run:
        settings = run.stack.settings
        assert settings.dli_endpoint is not None
        async with create_session(session_options(settings)) as session:
            client = DliClient(
                session,
                settings.dli_endpoint,
                Credentials(DEV_AK, DEV_SK, DEV_PROJECT),
                LocalRateLimiter(100),
                RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.5, deadline=2),
            )
            obs_dir = f"{run.stack.bucket}/exports"
            with pytest.raises(Transient) as throttled:
                await client.export_jobs(DEV_PROJECT, obs_dir, [1])
            assert throttled.value.reason == "throttled"
            result = await asyncio.wait_for(client.export_jobs(DEV_PROJECT, obs_dir, [2]), 4)
    assert result.zip_files
    assert run.relays["dli"].counts["429"] == 1

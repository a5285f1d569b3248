"""Secrets stay secret: a whole campaign at debug level with canary credentials, then a search for them.

The AK, SK and security token are long, unmistakable canaries. A campaign with faults (so retries,
warnings and error paths log too) runs twice: in-process with structlog rendering JSON at debug level
into a buffer, and as `dli-exporter serve` / `submit` / `report` / `status` processes whose output is
kept. Every place a secret could leak is then searched: log lines, the report and manifest (local and
uploaded), the ledger file, /metrics and the other HTTP answers, exception text and tracebacks, and
the repr of settings, credentials, clients and errors.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import traceback
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aioboto3
import aiohttp
import pytest
from prometheus_client import generate_latest
from security.private_redis import needs_redis_server, private_redis
from support import free_port, start_cli

from exporter import metrics
from exporter.adapters.limiter import LocalRateLimiter
from exporter.app import open_runtime
from exporter.devstack import DEV_PROJECT, LocalStack, local_stack, settings_env
from exporter.dli.client import DliClient
from exporter.dli.retry import RetryPolicy
from exporter.dli.session import create_session
from exporter.dli.signer import Credentials, SignatureError, sign_request
from exporter.errors import AuthError, ConfigError
from exporter.logs import configure_logging
from exporter.models import BatchRequest
from exporter.settings import Settings, load_settings
from exporter.submission import submit_batch
from exporter.wiring import session_options

CANARY_AK = "AKCANARYQ7W3E9R1T5Y8"
CANARY_SK = "skCanary-Zq93nVx1Lm0Pw7Rt4Ys2Hd6Kb8Jf5Gc"
CANARY_TOKEN = "tokCanary-Session-Hx28Vn41Qp73Lm95Rt06Yw18Ks52Jd97"
CANARY_AUTH_TOKEN = "iamCanary-MIIXfakeTokenBody-Pq82Lx"
CANARY_REDIS_PASSWORD = "redisCanary-Pw-Tg63Bn"
SECRETS = (CANARY_AK, CANARY_SK, CANARY_TOKEN)
ALL_SECRETS = (*SECRETS, CANARY_AUTH_TOKEN, CANARY_REDIS_PASSWORD)
JOBS = 300
FAULTS: dict[str, Any] = {
    "seed": 3,
    "p_503": 0.08,
    "p_not_success": 0.05,
    "p_reset": 0.05,
    "p_malformed": 0.05,
    "p_never": 0.02,
}
FAST: dict[str, Any] = {
    "retry_initial_backoff": 0.02,
    "retry_max_backoff": 0.3,
    "retry_max_attempts": 12,
    "read_timeout": 1.0,
    "verify_grace_seconds": 0.5,
    "poll_interval": 0.05,
    "rate_limit": 300,
    "concurrency": 8,
    "lease_seconds": 2,
}


def assert_secret_free(text: str, where: str, secrets: Iterable[str] = SECRETS) -> None:
    """Fail naming the place (and which canary) if any secret occurs in `text`."""
    found = [secret[:6] + "..." for secret in secrets if secret in text]
    assert not found, f"{where} contains {found}"


@asynccontextmanager
async def canary_stack(s3_server: str, workdir: Path, bucket: str) -> AsyncIterator[LocalStack]:
    """The simulator demanding the canary AK/SK and security token; exporter settings that carry them."""
    async with local_stack(
        workdir=workdir,
        jobs=JOBS,
        faults=FAULTS,
        bucket=bucket,
        s3_endpoint=s3_server,
        ak=CANARY_AK,
        sk=CANARY_SK,
        security_token=CANARY_TOKEN,
        upload_manifest=True,
        log_level="debug",
        **FAST,
    ) as stack:
        yield stack


def batch(stack: LocalStack, batch_id: str) -> BatchRequest:
    return BatchRequest(
        batch_id=batch_id,
        project_id=DEV_PROJECT,
        obs_dir=f"{stack.bucket}/exports",
        job_ids=[*range(1, JOBS + 1), 999_999],
        chunk_size=25,
    )


async def uploaded_objects(stack: LocalStack) -> dict[str, bytes]:
    """The report and manifest the exporter uploaded next to the exports."""
    session = aioboto3.Session()
    found: dict[str, bytes] = {}
    async with session.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="inspector",
        aws_secret_access_key="inspector",
    ) as client:
        listing = await client.list_objects_v2(Bucket=stack.bucket, Prefix="exports/_reports/")
        for item in listing.get("Contents", []):
            response = await client.get_object(Bucket=stack.bucket, Key=item["Key"])
            async with response["Body"] as body:
                found[item["Key"]] = await body.read()
    return found


def files_under(directory: Path) -> dict[str, str]:
    """Every file below `directory` as text (bytes decoded leniently: SQLite pages are binary)."""
    return {
        str(path): path.read_bytes().decode("utf-8", "replace")
        for path in directory.rglob("*")
        if path.is_file()
    }


async def test_in_process_campaign_leaks_no_secret(
    s3_server: str, tmp_path: Path, restore_logging: None
) -> None:
    """Debug logs, reports, manifests, ledger, metrics and reprs of a faulty campaign hold no secret."""
    buffer = io.StringIO()
    configure_logging("json", "debug", stream=buffer)  # no secrets registered: nothing may need masking
    async with canary_stack(s3_server, tmp_path, "secrets-in-process") as stack:
        async with open_runtime(stack.settings, consumer="canary") as runtime:
            await submit_batch(runtime.stores.queue, batch(stack, "canary"))
            await asyncio.wait_for(runtime.worker.run(until_empty=True), 60)
            reprs = [repr(runtime), str(runtime.settings), repr(runtime.pipeline), repr(runtime.stores)]
        assert stack.simulator.stats()["auth_failures"] == 0, "the canary credentials were really used"
        assert sum(stack.simulator.stats()["faults"].values()) > 0, "error paths were logged too"
        uploaded = await uploaded_objects(stack)
    logged = buffer.getvalue()
    assert sum(1 for line in logged.splitlines() if '"level":"debug"' in line) > 10, "debug lines captured"
    assert_secret_free(logged, "the debug log")
    report = json.loads((tmp_path / "reports" / "canary.json").read_text())
    assert report["totals"]["jobs"] == JOBS + 1
    assert len(uploaded) == 2, "report and manifest uploaded"
    for key, body in uploaded.items():
        assert_secret_free(body.decode(), f"uploaded {key}")
    for name, text in files_under(tmp_path).items():
        assert_secret_free(text, name)
    assert_secret_free(generate_latest(metrics.REGISTRY).decode(), "/metrics")
    for text in reprs:
        assert_secret_free(text, "a repr")


async def _wait_finished(port: int, batch_id: str, limit_s: float = 60) -> dict[str, Any]:
    """Poll the daemon's /batches/{id} (bounded) until the batch is finished."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/batches/{batch_id}") as response:
                    if response.status == 200:
                        info: dict[str, Any] = await response.json()
                        if info["state"].startswith("completed"):
                            return info
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not finish within {limit_s}s")


async def _http_answers(port: int, batch_id: str) -> dict[str, str]:
    answers: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        for path in ("/metrics", "/healthz", "/readyz", "/batches", f"/batches/{batch_id}"):
            async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                answers[path] = await response.text()
    return answers


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run `dli-exporter ARGS`; its exit code and everything it printed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter.cli",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


def _answer_lines(output: str, prefix: str) -> list[Any]:
    """The lines of a command's answer (those starting with `prefix`) parsed; its debug log lines are not."""
    return [json.loads(line) for line in output.splitlines() if line.startswith(prefix)]


def _assert_cli_answers(submitted: str, answers: dict[str, tuple[int, str]]) -> None:
    """Each command succeeded and printed its answer: nothing passes for being empty."""
    assert "queued batch daemon: 301 jobs" in submitted, submitted
    assert all(code == 0 for code, _ in answers.values()), answers
    [report] = _answer_lines(answers["report"][1], '{"batch_id":"daemon"')
    assert report["totals"]["jobs"] == JOBS + 1 and report["totals"]["verified"] == JOBS
    assert report["chunks"] and all(row["job_ids"] for row in report["chunks"])
    [status] = _answer_lines(answers["status"][1], '{"batch_id":"daemon"')
    assert status["state"] == "completed_with_failures" and status["totals"] == report["totals"]
    assert _answer_lines(answers["manifest"][1], '{"index":') == report["chunks"]


@pytest.mark.slow
async def test_daemon_process_leaks_no_secret(s3_server: str, tmp_path: Path) -> None:
    """`serve` at debug level: stderr, HTTP answers and the CLI answers (checked non-empty) hold no secret."""
    async with canary_stack(s3_server, tmp_path, "secrets-daemon") as stack:
        port = free_port()
        env = settings_env(stack.settings, http_port=port, http_host="127.0.0.1", drain_seconds=2)
        ids = ",".join(str(job_id) for job_id in batch(stack, "x").job_ids or ())
        code, submitted = await _cli(
            env,
            "submit",
            "--obs-dir",
            f"{stack.bucket}/exports",
            "--job-ids",
            ids,
            "--batch-id",
            "daemon",
            "--chunk-size",
            "25",
        )
        assert code == 0, submitted
        daemon = await start_cli(env, "serve")
        try:
            await _wait_finished(port, "daemon")
            answers = await _http_answers(port, "daemon")
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(daemon.communicate(), 20)
        commands = {"report": ["report", "daemon"], "status": ["status", "daemon", "--json"]}
        commands["manifest"] = ["report", "daemon", "--jsonl"]
        cli_answers = {name: await _cli(env, *args) for name, args in commands.items()}
    _assert_cli_answers(submitted, cli_answers)
    outputs = [submitted, *(text for _, text in cli_answers.values())]
    logged = stderr.decode()
    assert '"level":"debug"' in logged, "debug lines captured"
    assert_secret_free(logged, "the daemon's stderr")
    for path, text in answers.items():
        assert_secret_free(text, f"GET {path}")
    for text in outputs:
        assert_secret_free(text, "CLI output")
    for name, text in files_under(tmp_path).items():
        assert_secret_free(text, name)


# --- repr and exception text ---------------------------------------------------------------------------


def every_secret_settings() -> Settings:
    return Settings(
        ak=CANARY_AK,
        sk=CANARY_SK,
        security_token=CANARY_TOKEN,
        auth_token=CANARY_AUTH_TOKEN,
        redis_password=CANARY_REDIS_PASSWORD,
        obs_ak=CANARY_AK,
        obs_sk=CANARY_SK,
    )


def test_settings_and_credentials_never_show_secrets() -> None:
    """repr, str and JSON dumps of settings, and repr of credentials and clients, mask every secret."""
    settings = every_secret_settings()
    credentials = Credentials(CANARY_AK, CANARY_SK, DEV_PROJECT, CANARY_TOKEN)
    texts = [repr(settings), str(settings), settings.model_dump_json(), repr(credentials), str(credentials)]
    for text in texts:
        assert_secret_free(text, "a repr", ALL_SECRETS)


async def test_dli_client_repr_hides_its_credentials() -> None:
    """A DliClient says which kind of auth it holds, never the values."""
    async with aiohttp.ClientSession() as session:
        for auth in (Credentials(CANARY_AK, CANARY_SK, DEV_PROJECT, CANARY_TOKEN), CANARY_AUTH_TOKEN):
            client = DliClient(session, "https://dli.example.com", auth, LocalRateLimiter(1), RetryPolicy())
            assert_secret_free(repr(client), "repr(DliClient)", ALL_SECRETS)


def test_invalid_settings_error_does_not_echo_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad setting next to (or instead of) secrets: the ConfigError names variables, never values."""
    monkeypatch.setenv("EXPORTER_AK", CANARY_AK)
    monkeypatch.setenv("EXPORTER_SK", CANARY_SK)
    monkeypatch.setenv("EXPORTER_SECURITY_TOKEN", CANARY_TOKEN)
    monkeypatch.setenv("EXPORTER_RATE_LIMIT", "-1")
    monkeypatch.setenv("EXPORTER_DLI_ENDPOINT", CANARY_AUTH_TOKEN)  # a token pasted into the wrong variable
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "EXPORTER_RATE_LIMIT" in str(caught.value) and "EXPORTER_DLI_ENDPOINT" in str(caught.value)
    assert_secret_free(str(caught.value), "the ConfigError", ALL_SECRETS)


def test_signer_errors_never_quote_header_values() -> None:
    """Refusing to sign a header value (a control character after a secret) does not quote the value."""
    credentials = Credentials(CANARY_AK, CANARY_SK, DEV_PROJECT, CANARY_TOKEN)
    with pytest.raises(SignatureError) as caught:
        sign_request("POST", "h", "/", [], {"X-Extra": CANARY_TOKEN + "\x01"}, b"{}", credentials)
    assert_secret_free(str(caught.value) + repr(caught.value), "the SignatureError")


async def test_refused_credentials_error_and_traceback_hold_no_secret(s3_server: str, tmp_path: Path) -> None:
    """A 401 (wrong security token): the AuthError's text, repr and whole traceback hold no secret."""
    async with canary_stack(s3_server, tmp_path, "secrets-refused") as stack:
        wrong = Credentials(CANARY_AK, CANARY_SK, DEV_PROJECT, CANARY_TOKEN[::-1])
        async with create_session(session_options(stack.settings)) as session:
            client = DliClient(session, stack.simulator.url, wrong, LocalRateLimiter(100), RetryPolicy())
            with pytest.raises(AuthError) as caught:
                await client.export_jobs(DEV_PROJECT, f"{stack.bucket}/exports", [1])
    error = caught.value
    assert error.status == 401
    text = "".join(traceback.format_exception(error)) + repr(error)
    assert_secret_free(text, "the AuthError", (*SECRETS, CANARY_TOKEN[::-1]))


def test_queue_url_password_is_masked_in_settings_repr() -> None:
    """A Redis password written into the queue URL is masked in repr/str of the settings."""
    settings = Settings(queue_url=f"redis://:{CANARY_REDIS_PASSWORD}@127.0.0.1:6379/0")
    for text in (repr(settings), str(settings)):
        assert_secret_free(text, "repr(Settings)", ALL_SECRETS)


@needs_redis_server
async def test_cli_error_does_not_print_queue_url_password(tmp_path: Path) -> None:
    """Asking a password-protected Redis queue for an unknown batch: the error does not print the password."""
    async with private_redis(tmp_path, password=CANARY_REDIS_PASSWORD) as port:
        env = {"EXPORTER_QUEUE_URL": f"redis://:{CANARY_REDIS_PASSWORD}@127.0.0.1:{port}/0"}
        code, output = await _cli(env, "report", "no-such-batch")
    assert code != 0 and "no-such-batch" in output, output
    assert_secret_free(output, "the CLI error", ALL_SECRETS)

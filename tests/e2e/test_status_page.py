"""The status page of a running daemon, as a person sees it in a real browser (Debian's chromium).

`serve` runs as a process against the simulator and the S3 server; one batch loses a job DLI does not
know, then the simulator refuses every export with a message holding HTML and every listing with
another, so a second batch fails job by job and a third as a whole (and is parked in dead letters).
The page must show the figures, and DLI's words literally: `<script>` as text, no element injected,
no dialog opened.
"""

from __future__ import annotations

import asyncio
import signal
from functools import partial
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Dialog, Page, async_playwright
from support import eventually, free_port, start_cli

from exporter.devstack import DEV_AK, DEV_SK, settings_env

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"  # Debian's; .ci/run installs it, nothing is downloaded
EXPORT_MESSAGE = "<script>alert(1)</script><b>bold</b> &amp; more"
LIST_MESSAGE = '<img src=x onerror="alert(2)">listing refused'
NOT_YET = (aiohttp.ClientError,)  # the daemon still starting


class Daemon:
    """The daemon's HTTP endpoints, from the test."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def submit(self, body: dict[str, Any]) -> None:
        async with self.session.post(f"{self.base}/batches", json=body) as response:
            assert response.status == 202, await response.text()

    async def finished(self, batch_id: str) -> dict[str, Any] | None:
        async with self.session.get(f"{self.base}/batches/{batch_id}") as response:
            info: dict[str, Any] = await response.json() if response.status == 200 else {}
        return info if info.get("finished_at") else None

    async def page_text(self) -> str:
        async with self.session.get(f"{self.base}/") as response:
            return await response.text()


async def _run_batches(daemon: Daemon, simulator: Any, bucket: str) -> None:
    """One batch with an unknown job, then one refused job by job and one refused whole."""
    await daemon.submit({"batch_id": "nightly-ok", "obs_dir": f"{bucket}/ok", "job_ids": list(range(1, 41))})
    await eventually(lambda: daemon.finished("nightly-ok"), "nightly-ok finished", ignore=NOT_YET)
    simulator.set_faults(
        export_error=f"400:DLI.0001:{EXPORT_MESSAGE}", list_error=f"403:DLI.0003:{LIST_MESSAGE}"
    )
    await daemon.submit({"batch_id": "html-refusal", "obs_dir": f"{bucket}/refused", "job_ids": [41, 42]})
    await daemon.submit({"batch_id": "listing-refused", "obs_dir": f"{bucket}/all", "select_all": True})
    for batch_id in ("html-refusal", "listing-refused"):
        await eventually(partial(daemon.finished, batch_id), f"{batch_id} finished", ignore=NOT_YET)

    async def parked() -> bool:
        return "No dead letters." not in await daemon.page_text()

    await eventually(parked, "the refused listing parked in dead letters", ignore=NOT_YET)


async def _cells(page: Page, section: str, has_text: str) -> list[list[str]]:
    rows = page.locator(f"#{section} tbody tr", has_text=has_text)
    return [await rows.nth(n).locator("td").all_inner_texts() for n in range(await rows.count())]


async def _look(base: str) -> dict[str, Any]:
    """Open the page in headless chromium and read what a person sees."""
    dialogs: list[str] = []

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = await browser.new_page()
            page.on("dialog", on_dialog)
            response = await page.goto(f"{base}/")
            assert response is not None and response.status == 200
            seen = {
                "text": await page.inner_text("body"),
                "html": await page.content(),
                "dom": await page.evaluate(
                    "() => ({scripts: document.scripts.length, bold: document.querySelectorAll('b').length,"
                    " images: document.images.length, refresh: !!document.querySelector("
                    "'meta[http-equiv=refresh]')})"
                ),
                "ok_row": await _cells(page, "batches", "nightly-ok"),
                "refused_row": await _cells(page, "batches", "html-refusal"),
                "failures": await _cells(page, "failures", "html-refusal"),
                "unknown_job": await _cells(page, "failures", "nightly-ok"),
                "letters": await _cells(page, "dead-letters", "DLI.0003"),
                "rates": await page.locator("#rates tbody tr").all_inner_texts(),
            }
            await page.locator("#batches a", has_text="nightly-ok").click()
            await page.wait_for_url(f"{base}/batches/nightly-ok")
            seen["followed"] = await page.inner_text("body")
            seen["dialogs"] = dialogs  # an alert() blocks the page: one would have come before goto returned
        finally:
            await browser.close()
    return seen


async def test_the_status_page_shows_figures_and_dli_messages_as_text(stack: Any) -> None:
    """Batch IDs, counts, codes; DLI's HTML shown literally, no element injected, no alert, no secret."""
    async with stack(jobs=100, missing_ids=frozenset({7})) as s:
        port = free_port()
        env = settings_env(
            s.settings,
            http_host="127.0.0.1",
            http_port=port,
            chunk_size=10,
            rate_limit=200,
            poll_interval=0.05,
            verify_grace_seconds=2,
            retry_initial_backoff=0.02,
        )
        process = await start_cli(env, "serve", stderr=asyncio.subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                daemon = Daemon(session, base)
                await eventually(daemon.page_text, "the daemon listening", ignore=NOT_YET)
                await _run_batches(daemon, s.simulator, s.bucket)
                async with session.get(f"{base}/batches/nightly-ok") as response:
                    assert response.headers["Link"] == '</>; rel="status"'
            seen = await _look(base)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)
    check_page(seen)


def check_page(seen: dict[str, Any]) -> None:
    assert seen["dom"] == {"scripts": 0, "bold": 0, "images": 0, "refresh": True}
    assert seen["dialogs"] == []
    [ok] = seen["ok_row"]
    assert ok[0] == "nightly-ok" and ok[3] == "completed_with_failures"
    assert ok[5:8] == ["40/40 (100%)", "39", "1"]
    [refused] = seen["refused_row"]
    assert refused[5:8] == ["2/2 (100%)", "0", "2"]
    assert len(seen["failures"]) == 2  # each refused job alone, after bisection
    for cells in seen["failures"]:
        assert cells[3] == "DLI.0001"
        assert EXPORT_MESSAGE in cells[4]  # literally: `<script>`, `<b>` and `&amp;` as text
    [[_, where, jobs, code, *_]] = seen["unknown_job"]
    assert (where, jobs, code) == ("chunk 0", "7", "DLI.0002")
    [letter] = seen["letters"]
    assert f"DLI.0003: DLI answered HTTP 403: {LIST_MESSAGE}" in letter[1]
    assert any(LIST_MESSAGE in text for text in seen["text"].splitlines())
    assert any("/s" in row for row in seen["rates"]), seen["rates"]  # the daemon's pace toward DLI
    assert '"batch_id": "nightly-ok"' in seen["followed"] or '"batch_id":"nightly-ok"' in seen["followed"]
    for secret in (DEV_SK, DEV_AK):
        assert secret not in seen["html"]

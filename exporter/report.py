"""The batch report (JSON) and manifest (JSON Lines), streamed chunk by chunk.

A batch may hold a million IDs, so neither file is built in memory: rows are written as the ledger
streams chunks out.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from exporter.migration.report import JobMaps, migration_header
from exporter.models import BatchInfo, ChunkRecord, ChunkState, ErrorInfo, Segment
from exporter.ports import ReportFile

__all__ = [
    "LocalReportWriter",
    "ReportPaths",
    "chunk_rows",
    "report_header",
    "report_rows",
    "stream_report",
    "write_report_files",
]


class ReportPaths:
    """Where the report and the manifest of one batch were written."""

    __slots__ = ("manifest", "report")

    def __init__(self, report: Path, manifest: Path) -> None:
        self.report = report
        self.manifest = manifest


def report_header(info: BatchInfo, extra_totals: dict[str, int] | None = None) -> dict[str, Any]:
    """Everything of the report but its chunks (and a migration's job map)."""
    header: dict[str, Any] = {
        "batch_id": info.batch_id,
        "project_id": info.project_id,
        "obs_dir": info.obs_dir,
        "campaign": info.campaign,
        "region": info.region,
        "state": info.state.value,
        "totals": info.totals.model_dump(),
        "duplicates_dropped": info.duplicates_dropped,
        "created_at": info.created_at,
        "finished_at": info.finished_at,
        "error": info.error.model_dump() if info.error else None,
    }
    if info.migration is not None:
        header["migration"] = migration_header(info)
        header["totals"] = {**header["totals"], **(extra_totals or {})}
    return header


def chunk_rows(chunk: ChunkRecord) -> list[dict[str, Any]]:
    """Rows of the report for one chunk: the chunk itself, or one row per segment when it was split."""
    if len(chunk.segments) <= 1:
        segment = chunk.segments[0] if chunk.segments else Segment(job_ids=chunk.job_ids)
        return [_row(chunk, None, segment, chunk.state, chunk.error or segment.error)]
    return [
        _row(chunk, part, segment, segment.state, segment.error)
        for part, segment in enumerate(chunk.segments)
    ]


def _row(
    chunk: ChunkRecord, part: int | None, segment: Segment, state: ChunkState, error: ErrorInfo | None
) -> dict[str, Any]:
    return {
        "index": chunk.index,
        "part": part,
        "job_ids": segment.job_ids,
        "state": state.value,
        "zip_files": [z.model_dump(exclude={"error"}) for z in segment.zip_files],
        "attempts": chunk.attempts,
        "error": error.model_dump() if error else None,
        "request_id": segment.request_id,
    }


async def report_rows(chunks: AsyncIterator[ChunkRecord], maps: JobMaps | None = None) -> AsyncIterator[str]:
    """Each row of `chunks[]` as compact JSON, in chunk order (also the manifest's lines); a migration's
    rows carry their jobs' `job_map` (old and new IDs), merged from the steps in the same order."""
    steps = maps.by_chunk() if maps is not None else None
    pending: tuple[int, list[dict[str, Any]]] | None = None
    async for chunk in chunks:
        while steps is not None and (pending is None or pending[0] < chunk.index):
            pending = await anext(steps, None)
            if pending is None:
                steps = None
        mapped = pending[1] if pending is not None and pending[0] == chunk.index else None
        for row in chunk_rows(chunk):
            if maps is not None:
                ids = set(row["job_ids"])
                row["job_map"] = [m for m in mapped or [] if m["old_job_id"] in ids]
            yield json.dumps(row, separators=(",", ":"))


def _report_opening(info: BatchInfo, extra_totals: dict[str, int] | None = None) -> str:
    header = json.dumps(report_header(info, extra_totals), separators=(",", ":"))
    return header[:-1] + ',"chunks":['


async def _job_map_tail(maps: JobMaps | None) -> AsyncIterator[str]:
    """`],"job_map":[...]}` after the chunks of a migration's report, else just the closing."""
    if maps is None:
        yield "]}\n"
        return
    yield '],"job_map":['
    separator = ""
    async for row in maps.rows():
        yield separator + json.dumps(row, separators=(",", ":"))
        separator = ","
    yield "]}\n"


async def stream_report(
    info: BatchInfo,
    chunks: AsyncIterator[ChunkRecord],
    job_map: JobMaps | None = None,
    extra_totals: dict[str, int] | None = None,
) -> AsyncIterator[str]:
    """The JSON report as text pieces: header, then `chunks[]` one row at a time (then `job_map[]`)."""
    yield _report_opening(info, extra_totals)
    separator = ""
    async for row in report_rows(chunks, job_map):
        yield separator + row
        separator = ","
    async for piece in _job_map_tail(job_map):
        yield piece


class _AtomicPair:
    """Report and manifest written to temp files off the event loop, renamed into place at the end."""

    def __init__(self, paths: ReportPaths) -> None:
        self._final = (paths.report, paths.manifest)
        self._temp = (paths.report.with_suffix(".json.tmp"), paths.manifest.with_suffix(".jsonl.tmp"))
        self._handles = [path.open("w", encoding="utf-8") for path in self._temp]

    def write(self, report: str, manifest: str) -> None:
        self._handles[0].write(report)
        self._handles[1].write(manifest)

    def commit(self) -> None:
        for handle in self._handles:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        for temp, final in zip(self._temp, self._final, strict=True):
            temp.replace(final)

    def abort(self) -> None:
        for handle in self._handles:
            handle.close()
        for temp in self._temp:
            temp.unlink(missing_ok=True)


_FLUSH_CHARACTERS = 256 * 1024  # per file and slice: few thread hops, and a million-ID report stays small


async def write_report_files(
    directory: Path,
    info: BatchInfo,
    chunks: AsyncIterator[ChunkRecord],
    job_map: JobMaps | None = None,
    extra_totals: dict[str, int] | None = None,
) -> ReportPaths:
    """Write `<batch>.json` and `<batch>.jsonl` atomically; file I/O runs in a thread, in slices."""
    paths = ReportPaths(directory / f"{info.batch_id}.json", directory / f"{info.batch_id}.jsonl")
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    files = await asyncio.to_thread(_AtomicPair, paths)
    try:
        report: list[str] = [_report_opening(info, extra_totals)]
        manifest: list[str] = []
        pending = 0
        separator = ""
        async for row in report_rows(chunks, job_map):
            report.append(separator + row)
            manifest.append(row + "\n")
            separator = ","
            pending += len(row)
            if pending >= _FLUSH_CHARACTERS:
                await asyncio.to_thread(files.write, "".join(report), "".join(manifest))
                report, manifest, pending = [], [], 0
        report.extend([piece async for piece in _job_map_tail(job_map)])
        await asyncio.to_thread(files.write, "".join(report), "".join(manifest))
        await asyncio.to_thread(files.commit)
    except BaseException:
        await asyncio.shield(asyncio.to_thread(files.abort))
        raise
    return paths


class LocalReportWriter:
    """`ReportWriter` into `EXPORTER_REPORT_DIR`: `<batch>.json` and `<batch>.jsonl`."""

    __slots__ = ("_directory",)

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def __repr__(self) -> str:
        return f"<LocalReportWriter {self._directory}>"

    async def write(
        self,
        info: BatchInfo,
        chunks: AsyncIterator[ChunkRecord],
        job_map: JobMaps | None = None,
        totals: dict[str, int] | None = None,
    ) -> list[ReportFile]:
        paths = await write_report_files(self._directory, info, chunks, job_map, totals)
        return [
            ReportFile(paths.report, "application/json"),
            ReportFile(paths.manifest, "application/x-ndjson"),
        ]

    async def write_campaign(
        self, campaign_id: str, report: dict[str, Any], lines: AsyncIterator[str]
    ) -> list[ReportFile]:
        """`campaign-<id>.json` and `campaign-<id>.jsonl` (streamed in slices), each renamed into place."""
        # Not with_suffix: a campaign ID may hold dots (`v1.2`), which would be taken for a suffix.
        report_path = self._directory / f"campaign-{campaign_id}.json"
        lines_path = self._directory / f"campaign-{campaign_id}.jsonl"
        await asyncio.to_thread(self._directory.mkdir, parents=True, exist_ok=True)
        await _stream_atomically(lines_path, lines)
        await asyncio.to_thread(_replace_with, report_path, json.dumps(report) + "\n")
        return [ReportFile(report_path, "application/json"), ReportFile(lines_path, "application/x-ndjson")]


async def _stream_atomically(path: Path, lines: AsyncIterator[str]) -> None:
    """Lines to `path.tmp` a slice at a time (off the event loop), fsynced and renamed at the end."""
    temp = path.with_name(path.name + ".tmp")
    handle = await asyncio.to_thread(temp.open, "w", encoding="utf-8")
    try:
        piece: list[str] = []
        size = 0
        async for line in lines:
            piece.append(line + "\n")
            size += len(line)
            if size >= _FLUSH_CHARACTERS:
                await asyncio.to_thread(handle.write, "".join(piece))
                piece, size = [], 0
        await asyncio.to_thread(handle.write, "".join(piece))
        await asyncio.to_thread(_close_synced, handle)
        await asyncio.to_thread(temp.replace, path)
    except BaseException:
        handle.close()
        temp.unlink(missing_ok=True)
        raise


def _close_synced(handle: TextIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _replace_with(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    with temp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)

"""Child processes whose CPU time is measured exactly.

Every benchmark runs the exporter, the simulator, the S3 server and each baseline in a process of its own
(a 2-core machine: one shared interpreter would measure the GIL, not the exporter). A child is reaped with
`os.wait4`, which hands back the kernel's own CPU seconds (user + system) for that process. While it
runs, psutil reads the same counters so far. Peak memory is not taken from here (see `bench.procs.exporter`).
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["BenchError", "Child", "Usage", "kill_leftovers"]

_POLL_SECONDS = 0.02
_TAIL_BYTES = 4000
_started: list[Child] = []  # every child of this process, so none outlives a failed benchmark


class BenchError(RuntimeError):
    """A benchmark could not run (a process died, a server never came up): the run fails, loudly."""


@dataclass(frozen=True, slots=True)
class Usage:
    """What the kernel says about a finished process."""

    returncode: int
    cpu_seconds: float
    wall_seconds: float


def _usage_from(status: int, rusage: resource.struct_rusage, wall: float) -> Usage:
    returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    # No ru_maxrss: Linux carries the parent's high-water mark into it across fork and exec (see
    # bench.procs.exporter, which logs the exporter's own peak instead).
    return Usage(returncode=returncode, cpu_seconds=rusage.ru_utime + rusage.ru_stime, wall_seconds=wall)


class Child:
    """One started process with its output in files; reaped by `wait4`, never by the asyncio loop."""

    __slots__ = ("_popen", "_process", "_started", "_usage", "name", "stderr_path", "stdout_path")

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        logdir: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.stdout_path = logdir / f"{name}.out"
        self.stderr_path = logdir / f"{name}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._popen = subprocess.Popen(
                list(args), env={**os.environ, **env}, stdout=out, stderr=err, cwd=cwd
            )
        self._started = time.monotonic()
        self._process = psutil.Process(self._popen.pid)
        self._usage: Usage | None = None
        _started.append(self)

    def __repr__(self) -> str:
        state = "running" if self._usage is None else f"exited {self._usage.returncode}"
        return f"<Child {self.name} pid={self.pid} {state}>"

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def usage(self) -> Usage | None:
        return self._usage

    def cpu_seconds(self) -> float:
        """CPU time used so far (exact total once the process has been reaped)."""
        if self._usage is not None:
            return self._usage.cpu_seconds
        try:
            times = self._process.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def poll(self) -> Usage | None:
        """Reap the process if it has ended; its Usage, or None while it runs."""
        if self._usage is None:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid == 0:
                return None
            self._usage = _usage_from(status, rusage, time.monotonic() - self._started)
            self._popen.returncode = self._usage.returncode  # Popen must not try to reap it again
        return self._usage

    async def wait(self, limit_seconds: float) -> Usage:
        """Wait (bounded) for the process to end; BenchError if it does not."""
        deadline = time.monotonic() + limit_seconds
        while (usage := self.poll()) is None:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not finish within {limit_seconds:g}s\n{self.tail()}")
            await asyncio.sleep(_POLL_SECONDS)
        return usage

    def send(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    async def stop(self, grace: float = 10.0) -> Usage:
        """SIGTERM, then SIGKILL after `grace` seconds; always reaps. A process that outlives the grace is
        sent SIGUSR1 first: the exporter logs every task's stack, so its stderr says where it hung."""
        self.send(signal.SIGTERM)
        try:
            return await self.wait(grace)
        except BenchError:
            self.send(signal.SIGUSR1)
            await asyncio.sleep(1.0)
            self.send(signal.SIGKILL)
            return await self.wait(5.0)

    def tail(self) -> str:
        """The end of the process's stderr, for error messages."""
        return _tail(self.stderr_path)

    def read_stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            data = handle.read()
    except OSError:
        return ""
    return data.decode(errors="replace")


def kill_leftovers() -> list[str]:
    """SIGKILL and reap every child still running (after an error); the names of those it had to kill."""
    killed = []
    for child in _started:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)
            killed.append(child.name)
    _started.clear()
    return killed

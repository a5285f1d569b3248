"""`make bench`: every benchmark, each in a process of its own, then the table and the plots.

Usage: `python -m bench.run_all [NAME ...]` (default: all, in issue order). A benchmark that misses its
target still counts as a success: targets are reported, not asserted. The exit status is 1 only when a
benchmark could not run (it crashed, a server did not start, it ran past its time limit).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bench import report
from bench.common import PYTHON, REPO_ROOT

BENCHMARKS = (
    "rate_limit",
    "overhead",
    "vs_sdk",
    "memory",
    "verify",
    "replicas",
    "crash",
    "campaign",
    "migration",
    "adaptive",
)
LIMIT_SECONDS = 300


def _run(name: str) -> bool:
    """Run one benchmark with its output on ours; True when it ran to the end."""
    (report.RESULTS_DIR / f"{name}.json").unlink(missing_ok=True)  # never report a stale figure
    print(f"\n### bench.{name}", flush=True)
    # A session of its own, so that on a time-out the benchmark *and* the servers it started are stopped.
    process = subprocess.Popen([PYTHON, "-m", f"bench.{name}"], cwd=REPO_ROOT, start_new_session=True)
    try:
        return process.wait(timeout=LIMIT_SECONDS) == 0
    except subprocess.TimeoutExpired:
        print(f"bench.{name}: gave up after {LIMIT_SECONDS}s", file=sys.stderr)
        return False
    finally:
        _stop_group(process)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """If anything of the benchmark's process group still runs: SIGTERM, then SIGKILL after a grace."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(process.pid):
            break
        os.killpg(process.pid, signum)
        deadline = time.monotonic() + 5.0
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
            process.poll()  # reap the benchmark itself, so it does not linger as a zombie
    process.poll()


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    failed = [name for name in names if not _run(name)]
    print(f"\n### all benchmarks done in {time.monotonic() - started:.0f}s", flush=True)
    report.main()
    if failed:
        print(f"benchmarks that could not run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Profiles of the exporter processes a benchmark starts, for when a target is missed.

`BENCH_PROFILE=1 python -m bench.<name>` runs every exporter process under py-spy (`--gil`: only samples
where the interpreter holds the GIL, i.e. the CPU the exporter itself spends) and writes collapsed stacks
to `bench/results/profiles/<label>.txt`; `python -m bench.profiles` prints the functions that take the
most samples. Under the profiler a benchmark's CPU and memory figures include py-spy: use them to find
hot spots, not to quote.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.report import RESULTS_DIR

__all__ = ["PROFILES_DIR", "Hotspot", "profiler_prefix", "summarize"]

PROFILES_DIR = RESULTS_DIR / "profiles"
_SAMPLES_PER_SECOND = 200
_LINE_NUMBER = re.compile(r":\d+\)$")


def profiler_prefix(label: str) -> list[str]:
    """py-spy's command line to put before an exporter command, or [] when profiling is off."""
    if not os.environ.get("BENCH_PROFILE"):
        return []
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise RuntimeError("BENCH_PROFILE is set but py-spy is not installed (pip install py-spy)")
    PROFILES_DIR.mkdir(parents=True, exist_ok=True)
    output = PROFILES_DIR / f"{label}.txt"
    return [
        py_spy,
        "record",
        "--gil",
        "--format",
        "raw",
        "-r",
        str(_SAMPLES_PER_SECOND),
        "-o",
        str(output),
        "--",
    ]


@dataclass(frozen=True, slots=True)
class Hotspot:
    """A function's share of all samples: on top of the stack (self) or anywhere in it (inclusive)."""

    function: str
    self_share: float
    inclusive_share: float


def summarize(lines: Iterable[str], top: int = 25) -> list[Hotspot]:
    """The `top` functions by inclusive share, from py-spy's collapsed stacks (`f1;f2;f3 COUNT`)."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.strip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        functions = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        own[functions[-1]] += count
        for function in set(functions):
            anywhere[function] += count
    if total == 0:
        return []
    return [
        Hotspot(function, own[function] / total, count / total)
        for function, count in anywhere.most_common(top)
    ]


def main(argv: list[str]) -> int:
    top = int(argv[0]) if argv else 40
    paths = sorted(PROFILES_DIR.glob("*.txt"))
    if not paths:
        print(f"no profiles in {PROFILES_DIR}: run a benchmark with BENCH_PROFILE=1")
        return 0
    for path in paths:
        print(f"\n== {path.name}   (self% / inclusive%, share of samples holding the GIL)")
        with path.open(encoding="utf-8") as handle:
            for spot in summarize(handle, top):
                print(f"{spot.self_share:6.1%} {spot.inclusive_share:6.1%}  {spot.function}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

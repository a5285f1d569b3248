"""The benchmarks' own arithmetic and reporting: rates from sampled counters, checks against targets, the
Markdown table and the plots. The benchmarks themselves run with `make bench`, not here."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.common import Sample, peak_rss_mb
from bench.figures import (
    Check,
    Direction,
    crossing_time,
    percentile,
    safe_ratio,
    steady_rate,
    value_at,
    window_rates,
)
from bench.overhead import steady_figures
from bench.profiles import summarize
from bench.report import BenchResult, load_results, render_table, write_plots, write_result


def _result(
    number: int = 1, value: float = 0.97, scale_note: str = "", series: dict[str, Any] | None = None
) -> BenchResult:
    return BenchResult(
        number=number,
        name=f"bench{number}",
        title="Rate-limit saturation",
        checks=[
            Check("achieved rate / R", value, 0.95, Direction.AT_LEAST),
            Check("429 share", 2.0, 1.0, Direction.AT_MOST, unit="%"),
        ],
        figures={"R (req/s)": 100},
        date="2026-11-29T10:00:00+00:00",
        machine={"platform": "Linux-test", "cpu_count": 2, "python": "3.11.7"},
        scale_note=scale_note,
        series=series or {},
    )


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    """p50 of 1..4 is 2.5 and p99 lies just under the maximum, as numpy's default method gives."""
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([1, 2, 3, 4], 99) == pytest.approx(3.97)
    assert percentile([7], 99) == 7
    assert math.isnan(percentile([], 50))


def test_percentile_refuses_a_share_outside_0_to_100() -> None:
    """A typo like 990 is an error, not a silently wrong figure."""
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], 990)


def test_crossing_time_interpolates_between_samples() -> None:
    """A counter going 0 -> 100 between t=1 and t=2 passed 25 at t=1.25; never reached gives NaN."""
    samples = [(0.0, 0.0), (1.0, 0.0), (2.0, 100.0)]
    assert crossing_time(samples, 25) == pytest.approx(1.25)
    assert crossing_time(samples, 0) == 0.0
    assert math.isnan(crossing_time(samples, 101))


def test_steady_rate_ignores_a_slow_start_and_tail() -> None:
    """A run that idles 10 s, then counts 1,000 in 10 s, then stalls reports 100/s between 5% and 95%."""
    samples = [(0.0, 0.0), (10.0, 0.0), (20.0, 1000.0), (40.0, 1000.0)]
    assert steady_rate(samples, total=1000) == pytest.approx(100.0)
    assert math.isnan(steady_rate(samples, total=5000))


def test_value_at_interpolates_and_clamps() -> None:
    """CPU sampled at 0 s (1.0) and 2 s (3.0) was 2.0 at 1 s; outside the samples the nearest one holds."""
    samples = [(0.0, 1.0), (2.0, 3.0)]
    assert value_at(samples, 1.0) == pytest.approx(2.0)
    assert value_at(samples, -5.0) == 1.0
    assert value_at(samples, 9.0) == 3.0


def test_window_rates_for_plots() -> None:
    """Counts sampled every 0.5 s become one rate per full second."""
    samples = [(0.0, 0.0), (0.5, 40.0), (1.0, 100.0), (1.5, 150.0), (2.0, 180.0)]
    assert window_rates(samples, 1.0) == [(1.0, 100.0), (2.0, 80.0)]


def test_safe_ratio_over_zero() -> None:
    """x/0 is infinite and 0/0 is NaN, so a table never shows a made-up ratio."""
    assert safe_ratio(1, 0) == math.inf
    assert math.isnan(safe_ratio(0, 0))


def test_check_reads_the_same_way_for_both_directions() -> None:
    """vs_target >= 1 means met whether the target is a floor (rate) or a ceiling (429 share)."""
    floor = Check("rate / R", 0.5, 0.95, Direction.AT_LEAST)
    ceiling = Check("429 share", 0.5, 1.0, Direction.AT_MOST, unit="%")
    assert not floor.met
    assert floor.vs_target == pytest.approx(0.5 / 0.95)
    assert (ceiling.met, ceiling.vs_target) == (True, 2.0)
    assert ceiling.target_text == "≤ 1.00%"
    assert Check("zero 429s", 0.0, 1.0, Direction.AT_MOST).met


def test_check_survives_json_with_nan() -> None:
    """A figure that could not be measured is stored as null and comes back as NaN, not met."""
    check = Check("rate", math.nan, 1.0, Direction.AT_LEAST)
    data = check.to_json()
    assert data["value"] is None and data["met"] is False
    assert math.isnan(Check.from_json(data).value)


def test_steady_figures_take_cpu_over_the_same_stretch_as_the_rate() -> None:
    """1,000 exports in 10 s with 2 CPU seconds over that stretch: 100/s and 2 ms per request."""
    samples = [
        Sample(t, int(count), 0, 0, {"exporter": cpu, "simulator": cpu / 2})
        for t, count, cpu in [(0.0, 0, 0.0), (1.0, 0, 1.0), (11.0, 1000, 3.0), (12.0, 1000, 3.1)]
    ]
    figures = steady_figures(samples, 1000, "exporter")
    assert figures.rate == pytest.approx(100.0)
    assert figures.cpu_ms_per_request == pytest.approx(2.0)
    assert figures.simulator_cpu_share == pytest.approx(0.1)


def test_table_has_one_row_per_check_with_the_verdict(tmp_path: Path) -> None:
    """Results written as JSON load back and render with machine, date, targets, misses and scale notes."""
    write_result(_result(2, 0.97, scale_note="fewer calls"), tmp_path)
    write_result(_result(1, 0.50), tmp_path)
    results = load_results(tmp_path)
    table = render_table(results)
    assert [r.number for r in results] == [1, 2]
    assert "Measured 2026-11-29 on Linux-test (2 CPUs, Python 3.11.7)." in table
    assert "| 1 | Rate-limit saturation | achieved rate / R | 0.500 | ≥ 0.950 | 0.53 | **missed** |" in table
    assert "| 2 | Rate-limit saturation | achieved rate / R | 0.970 | ≥ 0.950 | 1.02 | met |" in table
    assert "- 2. fewer calls" in table
    assert render_table([]).startswith("No benchmark results yet")


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    """The summary plot and a bar plot from a result's series come out as PNG files."""
    bars = {"bars": [{"ylabel": "req/s", "bars": {"raw": 100.0, "exporter": 60.0}}]}
    paths = write_plots([_result(2, 0.6, series=bars)], tmp_path)
    assert [p.name for p in paths] == ["summary.png", "bench2.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def test_profile_summary_shares_of_collapsed_stacks() -> None:
    """Collapsed stacks `a;b 3` and `a;c 1` give b 75% self and a 100% inclusive, line numbers merged."""
    lines = ["main (app.py:1);work (app.py:7) 3\n", "main (app.py:2);sign (signer.py:9) 1\n", "garbage\n"]
    spots = {spot.function: spot for spot in summarize(lines)}
    assert spots["main (app.py)"].inclusive_share == 1.0
    assert spots["main (app.py)"].self_share == 0.0
    assert spots["work (app.py)"].self_share == 0.75
    assert summarize([]) == []


def test_an_exporter_process_logs_its_own_peak_rss_at_exit(tmp_path: Path) -> None:
    """The memory benchmark reads the exporter's own VmHWM, not wait4's figure that carries the parent's."""
    stderr = tmp_path / "exporter.err"
    with stderr.open("wb") as sink:
        done = subprocess.run(
            [sys.executable, "-m", "bench.procs.exporter", "--help"],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0
    peak = peak_rss_mb(stderr)
    assert 5 < peak < 500, peak  # a Python process with the exporter imported; MB, not KiB or bytes

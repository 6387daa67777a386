"""How ``make bench``'s HTTP part cuts each app's load into slices and judges its goals: on the
ratios of paths measured side by side in each round."""

from __future__ import annotations

import pytest
from bench.http import HttpSettings
from bench.report import Goal, print_goals
from bench.wrk import WrkResult, combined


def _settings(duration: int, slice_seconds: int) -> HttpSettings:
    return HttpSettings(
        rounds=3,
        duration=duration,
        warmup=0,
        connections=32,
        threads=2,
        products=1000,
        slice_seconds=slice_seconds,
    )


@pytest.mark.parametrize(
    ("duration", "slice_seconds", "slices"),
    [(5, 1, [1, 1, 1, 1, 1]), (5, 2, [2, 2, 1]), (5, 5, [5]), (3, 10, [3])],
)
def test_each_app_gets_the_whole_duration_in_slices(
    duration: int, slice_seconds: int, slices: list[int]
) -> None:
    assert _settings(duration, slice_seconds).slices() == slices


def _run(requests: int, seconds: float, p50: float, p99: float, timeouts: int = 0) -> WrkResult:
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": timeouts}
    return WrkResult(requests, seconds, errors, p50, p99)


def test_slices_of_one_app_add_up_to_one_run() -> None:
    runs = [
        _run(1000, 1.0, 10.0, 50.0),
        _run(3000, 1.0, 30.0, 90.0, 2),
        _run(2000, 1.0, 20.0, 70.0),
    ]

    result = combined(runs)

    assert result.requests == 6000
    assert result.per_second == 2000
    assert result.error_count == 2
    assert result.p50_ms == 20.0
    assert result.p99_ms == 90.0


def test_a_goal_is_judged_on_the_rounds_ratios_not_on_the_ratio_of_medians(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # (s) ran at 0.98 of (a) beside it in two rounds of three; the medians of the two paths
    # come from different rounds (2,000 from round 1, 1,900 from round 2): 0.95.
    results = {"get": {"a": [2000.0, 2500.0, 1500.0], "s": [1960.0, 1900.0, 1470.0]}}

    print_goals([Goal("setup(app)", "get", "s", "a", 0.97)], results)

    line = capsys.readouterr().out.splitlines()[-1]
    assert "s/a = 0.980" in line
    assert "(at least 0.97: met; rounds 0.760-0.980, ratio of medians 0.950)" in line


def test_a_goal_missed_by_the_rounds_ratios_is_not_met(capsys: pytest.CaptureFixture[str]) -> None:
    results = {"get": {"a": [2000.0, 2000.0, 2000.0], "s": [1880.0, 1920.0, 1960.0]}}

    print_goals([Goal("setup(app)", "get", "s", "a", 0.97)], results)

    assert "s/a = 0.960   (at least 0.97: NOT met" in capsys.readouterr().out

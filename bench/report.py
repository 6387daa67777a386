"""Printing results: one line per measurement, then medians, spreads and ratios per path, and
the goals the numbers are held to."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "CHURN_NOTE_THRESHOLD",
    "Goal",
    "print_goals",
    "print_summary",
    "rate",
    "round_ratios",
]

CHURN_NOTE_THRESHOLD = 20
"""New connections per round above which the summary points out connection churn. A pool of
5 + 10 overflow may reopen up to 10 connections per round just because load stops between runs."""


def rate(value: float) -> str:
    """A throughput for humans: ``12,345``."""
    return f"{value:,.0f}"


def print_summary(
    title: str,
    unit: str,
    labels: Mapping[str, str],
    results: Mapping[str, Sequence[float]],
    ratios: Sequence[tuple[str, str]],
    connections: Mapping[str, Sequence[int]] | None = None,
    cpu: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, float]:
    """Print the median, min and max of each path and the asked-for ratios of medians.

    Args:
        title: heading of the block.
        unit: what the numbers count, e.g. ``req/s``.
        labels: display name of each path, by key (also fixes the order).
        results: the per-round values of each path, by key.
        ratios: ``(numerator, denominator)`` pairs of keys.
        connections: the connections each path opened per round, by key (optional).
        cpu: CPU microseconds per operation of each path per round, by key (optional); each
            ratio is then also printed as the inverse ratio of their medians (the CPU each
            operation of the denominator took over that of the numerator: above 1 when the
            numerator is cheaper), which varies less than throughput on a shared machine.

    Returns:
        The median of each path, by key.
    """
    medians = {key: statistics.median(results[key]) for key in labels if results.get(key)}
    cpu_medians = {key: statistics.median(values) for key, values in (cpu or {}).items() if values}
    print(f"\n{title}")
    width = max(len(label) for label in labels.values())
    header = f"  {'path':<{width}}  {'median':>10}  {'min':>10}  {'max':>10}"
    if cpu is not None:
        header += f"  {'CPU us/op':>9}"
    if connections is not None:
        header += f"  {'new conns/round':>15}"
    print(f"{header}   ({unit})")
    for key, label in labels.items():
        values = results.get(key)
        if not values:
            continue
        line = (
            f"  {label:<{width}}  {rate(medians[key]):>10}  {rate(min(values)):>10}"
            f"  {rate(max(values)):>10}"
        )
        if cpu is not None:
            line += f"  {cpu_medians[key]:>9,.0f}" if key in cpu_medians else f"  {'':>9}"
        if connections is not None and connections.get(key):
            line += f"  {statistics.median(connections[key]):>15g}"
        print(line)
    for numerator, denominator in ratios:
        if numerator in medians and denominator in medians:
            line = f"  {numerator}/{denominator} = {medians[numerator] / medians[denominator]:.3f}"
            if numerator in cpu_medians and denominator in cpu_medians:
                line += (
                    f"   (by CPU per op: {cpu_medians[denominator] / cpu_medians[numerator]:.3f})"
                )
            print(line)
    for key, counts in (connections or {}).items():
        if counts and statistics.median(counts) > CHURN_NOTE_THRESHOLD:
            print(
                f"  note: {labels[key]} opened ~{statistics.median(counts):g} connections per "
                "round: its pool closed connections under load and opened new ones (churn), "
                "and that cost is part of its number"
            )
    return medians


@dataclass(frozen=True, slots=True)
class Goal:
    """A ratio of two paths measured in the same run, and the least it should be."""

    description: str
    group: str
    """Which block of results the two paths belong to (an endpoint, say)."""
    numerator: str
    denominator: str
    at_least: float


def round_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """The ratio of two paths in each round (the two measured in the same round)."""
    return [
        numerator / denominator
        for numerator, denominator in zip(numerators, denominators, strict=True)
    ]


def print_goals(
    goals: Sequence[Goal], results: Mapping[str, Mapping[str, Sequence[float]]]
) -> None:
    """Print each goal with the median of its rounds' ratios and whether it is met.

    A round's ratio compares two paths measured in the same round, side by side: the same
    hash seed, the same minutes of a machine whose speed drifts. Its median over the rounds
    says more than the ratio of the two paths' medians, which may come from different rounds
    (that one, and the rounds' spread, are printed next to it).

    Args:
        goals: what to check.
        results: each path's value per round, by group and then by path key.
    """
    print("\nGoals (medians of the ratios of paths measured side by side in each round)")
    width = max(len(goal.description) for goal in goals)
    for goal in goals:
        group = results.get(goal.group, {})
        numerators = group.get(goal.numerator)
        denominators = group.get(goal.denominator)
        if not numerators or not denominators:
            continue
        ratios = round_ratios(numerators, denominators)
        ratio = statistics.median(ratios)
        of_medians = statistics.median(numerators) / statistics.median(denominators)
        verdict = "met" if ratio >= goal.at_least else "NOT met"
        print(
            f"  {goal.description:<{width}}  {goal.numerator}/{goal.denominator} = {ratio:.3f}"
            f"   (at least {goal.at_least:.2f}: {verdict}; rounds {min(ratios):.3f}"
            f"-{max(ratios):.3f}, ratio of medians {of_medians:.3f})"
        )

"""Printing results: one line per measurement, then medians, spreads and ratios per path."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

__all__ = ["CHURN_NOTE_THRESHOLD", "print_summary", "rate"]

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
) -> dict[str, float]:
    """Print the median, min and max of each path and the asked-for ratios of medians.

    Args:
        title: heading of the block.
        unit: what the numbers count, e.g. ``req/s``.
        labels: display name of each path, by key (also fixes the order).
        results: the per-round values of each path, by key.
        ratios: ``(numerator, denominator)`` pairs of keys.
        connections: the connections each path opened per round, by key (optional).

    Returns:
        The median of each path, by key.
    """
    medians = {key: statistics.median(results[key]) for key in labels if results.get(key)}
    print(f"\n{title}")
    width = max(len(label) for label in labels.values())
    header = f"  {'path':<{width}}  {'median':>10}  {'min':>10}  {'max':>10}"
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
        if connections is not None and connections.get(key):
            line += f"  {statistics.median(connections[key]):>15g}"
        print(line)
    for numerator, denominator in ratios:
        if numerator in medians and denominator in medians:
            ratio = medians[numerator] / medians[denominator]
            print(f"  {numerator}/{denominator} = {ratio:.3f}")
    for key, counts in (connections or {}).items():
        if counts and statistics.median(counts) > CHURN_NOTE_THRESHOLD:
            print(
                f"  note: {labels[key]} opened ~{statistics.median(counts):g} connections per "
                "round: its pool closed connections under load and opened new ones (churn), "
                "and that cost is part of its number"
            )
    return medians

"""Order statistics and interleaved A/B runs: the arithmetic every benchmark shares.

Why interleave: the machine is shared, and its load drifts over seconds. Running all of A and then
all of B charges the drift to one side; alternating rounds A B | B A | A B ... charges it to both,
and pairing each round's A with the same round's B before taking the median of the ratios keeps a
noisy round from moving the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics.

    The same definition as numpy's default, so figures agree with anyone re-computing them.
    Raises ValueError on an empty sequence or a ``q`` outside [0, 100].
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside [0, 100]")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round-by-round ratios of two equally long series (a zero denominator is skipped)."""
    if len(numerators) != len(denominators):
        raise ValueError(f"unpaired series: {len(numerators)} and {len(denominators)} values")
    return [a / b for a, b in zip(numerators, denominators) if b]


def interleaved(variants: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Run every variant once per round, alternating the order (A B, B A, A B, ...).

    Returns each variant's results in round order, so that ``results[a][i]`` and
    ``results[b][i]`` were measured next to each other.
    """
    names = list(variants)
    results: dict[str, list[T]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            results[name].append(variants[name]())
    return results

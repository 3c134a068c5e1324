"""Anytime-valid bounds of the mean of non-negative bounded values: betting confidence sequences.

Waudby-Smith & Ramdas (2023), "Estimating means of bounded random variables by betting" (JRSS B),
one-sided: for each candidate mean ``m`` of values scaled to [0, 1], a gambler bets that the mean
is above ``m`` with the capital ``K_t(m) = prod_i (1 + lambda_i (x_i - m))``; ``lambda_i`` is a
predictable plug-in bet (chosen from the values before ``i`` only), capped at ``CAP / m``. Under a
mean of at most ``m`` the capital is a non-negative supermartingale whatever the bets, so by
Ville's inequality it ever reaches ``1/alpha`` with probability at most ``alpha``: the ``m`` where
it did are excluded, at every sample size at once. The bound is therefore valid however often it
is looked at (every night) and needs no minimum sample: few values give a wide bound, not a wrong
one. The bets only decide how soon it narrows: ``horizon`` tunes them to a sample size where a
decision is wanted (the plug-in bet of a fixed-size interval up to it, shrinking as 1/sqrt(i)
after); without it they are WSR's ``i log(1 + i)`` bets, spread over all sample sizes.

Pure numpy, no AWS; not on the ``/score`` import path (the retrain's holdback guard uses it).
Why the holdback guard uses it: docs/pricing-loop.md ("Two guards that roll back a model that loses").

>>> round(lower_bound([1.0, 0.0] * 40, 1.0, 0.025), 2), round(upper_bound([1.0, 0.0] * 40, 1.0, 0.025), 2)
(0.32, 0.7)
>>> lower_bound([], 1.0, 0.025), upper_bound([], 1.0, 0.025)
(0.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: The bet never stakes more than this share of what a value at 0 would lose (WSR use 1/2 or
#: 3/4): a high cap lets a run of zeros (a holdback that books nothing) count at once.
CAP = 0.75
#: The bound is found by refining a bracket: this many candidate means a round, this many rounds
#: (a resolution of 1/32^4 of the scale, below a cent on any hotel price).
_POINTS, _ROUNDS = 33, 4


def lower_bound(values: Sequence[float], bound: float, alpha: float, horizon: int | None = None) -> float:
    """A lower bound of the mean of ``values`` (each in [0, ``bound``]) that holds with
    probability ``1 - alpha`` at every sample size together: the running intersection of the
    betting confidence sequence, in the values' own units. No value: 0."""
    if not values or bound <= 0:
        return 0.0
    x = np.clip(np.asarray(values, dtype=float) / bound, 0.0, 1.0)
    return _lower(x, alpha, horizon) * bound


def upper_bound(values: Sequence[float], bound: float, alpha: float, horizon: int | None = None) -> float:
    """The mirror of ``lower_bound``: the lower bound of ``bound - value``, turned back. No
    value: ``bound``."""
    if not values or bound <= 0:
        return max(bound, 0.0)
    x = np.clip(np.asarray(values, dtype=float) / bound, 0.0, 1.0)
    return (1.0 - _lower(1.0 - x, alpha, horizon)) * bound


def _bets(x: FloatArray, alpha: float, horizon: int | None) -> FloatArray:
    """WSR's predictable plug-in bets: ``sqrt(2 log(1/alpha) / (sigma_{i-1}^2 t_i))``, with the
    running variance of the values before ``i`` (started at 1/4) and ``t_i = i log(1 + i)``, or
    ``max(i, horizon)`` when tuned to a horizon."""
    n = len(x)
    i = np.arange(1, n + 1, dtype=float)
    mean = (0.5 + np.cumsum(x)) / (i + 1)
    spread = (0.25 + np.cumsum((x - mean) ** 2)) / (i + 1)
    previous = np.concatenate(([0.25], spread[:-1]))  # sigma^2 before value i: predictable
    spread_over = i * np.log1p(i) if horizon is None else np.maximum(i, float(horizon))
    bets: FloatArray = np.sqrt(2.0 * math.log(1.0 / alpha) / (previous * spread_over))
    return bets


def _excluded(x: FloatArray, bets: FloatArray, m: FloatArray, threshold: float) -> NDArray[np.bool_]:
    """Whether each candidate mean ``m`` is excluded: its capital has ever reached 1/alpha."""
    with np.errstate(divide="ignore"):
        cap = np.where(m > 0, CAP / np.maximum(m, 1e-300), np.inf)
    stake = np.minimum(bets[:, None], cap[None, :])
    log_capital = np.cumsum(np.log1p(stake * (x[:, None] - m[None, :])), axis=0)
    return np.asarray((log_capital >= threshold).any(axis=0))


def _lower(x: FloatArray, alpha: float, horizon: int | None) -> float:
    """The running-intersection lower bound on [0, 1]. Each factor ``1 + min(lambda, CAP/m)(x - m)``
    is positive and falls as ``m`` rises, so the capital does too: the excluded means are an
    interval from 0, and its end is found by refining a bracket (the excluded end is returned,
    so the bound never lies above the true end)."""
    bets = _bets(x, alpha, horizon)
    threshold = math.log(1.0 / alpha)
    lo, hi = 0.0, 1.0
    if not _excluded(x, bets, np.array([lo]), threshold)[0]:
        return 0.0
    for _ in range(_ROUNDS):
        m: FloatArray = np.linspace(lo, hi, _POINTS, dtype=np.float64)
        kept = np.flatnonzero(~_excluded(x, bets, m, threshold))
        if not len(kept):
            return float(m[-1])
        lo, hi = float(m[kept[0] - 1]), float(m[kept[0]])
    return lo

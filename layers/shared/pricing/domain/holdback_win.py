"""Whether the live model has shown, in realised revenue, that it earns more than the rules holdback.

Checked every night on everything since the deploy, so the test must hold under repeated looks:
the model arm's anytime-valid lower bound of revenue per quote and the holdback's anytime-valid
upper bound (``pricing.domain.confidence_sequence``, at ``MODEL_ALPHA`` and ``HOLDBACK_ALPHA``)
are computed on the arms' realised revenues in time order, each scaled by the highest price its
arm quoted. The model wins when its lower bound is above the holdback's upper bound: with
probability at least ``1 - WIN_ALPHA`` both bounds hold at every night together, so a model that
earns no more than rules is taken for a winner on some night with at most that probability. Kept apart from
``pricing.domain.holdback``, which the scorer imports, because it needs numpy. Why this test:
docs/pricing-loop.md ("Two guards that roll back a model that loses").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from pricing.domain.confidence_sequence import lower_bound, upper_bound
from pricing.domain.holdback import ArmComparison

#: Over every night's look together, the chance of calling a model that earns no more a winner:
#: split unevenly, because the holdback's few quotes are what the decision waits for.
WIN_ALPHA = 0.05
MODEL_ALPHA, HOLDBACK_ALPHA = 0.01, 0.04
#: The bets are tuned to decide around this many holdback quotes (4 days at 5% of 160 quotes a
#: day) and the model's quotes of about the same days; any bets keep the bounds valid.
HOLDBACK_HORIZON, MODEL_HORIZON = 30, 500


def with_win_bounds(
    arms: ArmComparison,
    model_revenues: Sequence[float],
    model_prices: Sequence[float],
    holdback_revenues: Sequence[float],
    holdback_prices: Sequence[float],
) -> ArmComparison:
    """``arms`` with the anytime bounds of the win, from each arm's revenues (price if booked,
    else 0) and quoted prices in time order since the deploy."""
    model_scale = max(model_prices, default=0.0)
    holdback_scale = max(holdback_prices, default=0.0)
    win_lower = lower_bound(model_revenues, model_scale, MODEL_ALPHA, MODEL_HORIZON)
    win_upper = upper_bound(holdback_revenues, holdback_scale, HOLDBACK_ALPHA, HOLDBACK_HORIZON) if holdback_revenues else float("inf")
    return replace(arms, win_lower=win_lower, win_upper=win_upper)

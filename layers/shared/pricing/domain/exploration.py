"""Bounded, logged price exploration: the loop must sometimes quote a price near its optimum.

With probability ``rate`` (epsilon-greedy) a quote is priced at a neighbour of the policy's
price: one of ``ARMS`` (the price times ``(1 + LADDER_STEP) ** k``, k = -2, -1, +1, +2) inside
min/max, or the allowed grid's prices one and two places away. Every neighbour is equally likely,
so the propensity is exact (``1 - rate`` for the policy price, ``rate / arms`` for a neighbour)
and travels in the quote id (``<token>.x<arm>p<propensity>[b<policy price>]``). The draw is a
stable hash of the quote id. A ``direction`` (``DOWN``/``UP``) keeps only the neighbours on that
side: while rules price, the retrain points it where its refused candidate would price
(``direction_of``). Why: docs/pricing-loop.md ("Exploration inside the guardrails", "Directed
while rules price").

>>> price, e = explore(100.0, Guardrails(), 0.1, "q-1")
>>> e.arm, e.propensity, price
(0, 0.9, 100.0)
>>> parse_quote_id(tag_quote_id("abc~exp~control", Exploration(0.1, -1, 0.025, 100.0, 4)))
Exploration(rate=None, arm=-1, propensity=0.025, policy_price=100.0, arms=None, direction=0)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pricing.domain.guardrails import Guardrails

#: Default share of quotes priced at a neighbour of the policy's price.
DEFAULT_RATE = 0.10
#: Never more than this: exploration is a cost, not a pricing strategy.
MAX_RATE = 0.25
LADDER_STEP = 0.08
ARMS = (-2, -1, 1, 2)
DOWN, BOTH, UP = -1, 0, 1
#: A direction only when at least this share of the candidate's prices lie on one side of rules'.
DIRECTED_SHARE = 2 / 3
_TAG = re.compile(r"\.x(-?\d+)p([0-9]*\.?[0-9]+)(?:b([0-9]*\.?[0-9]+))?$")


@dataclass(frozen=True)
class Exploration:
    """How one quote's price relates to the policy's: which arm, and how likely it was."""

    rate: float | None
    arm: int  # 0: the policy's own price
    propensity: float
    policy_price: float | None
    arms: int | None  # admissible neighbours there were to choose from
    direction: int = BOTH

    @property
    def explored(self) -> bool:
        return self.arm != 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "explored": self.explored,
            "rate": self.rate,
            "arm": self.arm,
            "propensity": round(self.propensity, 6),
            "policy_price": self.policy_price,
            "direction": {DOWN: "down", UP: "up"}.get(self.direction, "both"),
        }


NOT_EXPLORED = Exploration(0.0, 0, 1.0, None, 0)


def uniform_of(quote_id: str) -> float:
    """A stable, uniform number in [0, 1) for this quote."""
    digest = hashlib.sha256(b"explore\x1f" + quote_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def neighbours(policy_price: float, guardrails: Guardrails, direction: int = BOTH) -> list[tuple[int, float]]:
    """The admissible (arm, price) neighbours of ``policy_price``, in arm order (only those on
    ``direction``'s side when it is set)."""
    arms = ARMS if direction == BOTH else tuple(a for a in ARMS if a * direction > 0)
    out: list[tuple[int, float]] = []
    if guardrails.allowed_prices is not None:
        members = guardrails.allowed_members()
        if policy_price not in members:
            return out
        at = members.index(policy_price)
        for arm in arms:
            if 0 <= at + arm < len(members):
                out.append((arm, members[at + arm]))
        return out
    seen = {policy_price}
    for arm in arms:
        price, clamped = guardrails.enforce(policy_price * (1 + LADDER_STEP) ** arm)
        if not clamped and price not in seen:
            seen.add(price)
            out.append((arm, price))
    return out


def explore(policy_price: float, guardrails: Guardrails, rate: float, quote_id: str, direction: int = BOTH) -> tuple[float, Exploration]:
    """The price to quote and how it was chosen (see the module docstring)."""
    rate = min(max(rate, 0.0), MAX_RATE)
    if rate <= 0.0:
        return policy_price, Exploration(0.0, 0, 1.0, policy_price, 0)
    options = neighbours(policy_price, guardrails, direction)
    if not options:
        return policy_price, Exploration(rate, 0, 1.0, policy_price, 0, direction)
    u = uniform_of(quote_id)
    if u >= rate:
        return policy_price, Exploration(rate, 0, 1.0 - rate, policy_price, len(options), direction)
    arm, price = options[min(int(u / rate * len(options)), len(options) - 1)]
    return price, Exploration(rate, arm, rate / len(options), policy_price, len(options), direction)


def next_direction(candidate: int, current: int) -> int:
    """Tonight's direction from the refused candidate's (``direction_of``) and the one in force:
    a candidate without a side keeps the current one, one with a side sets it. One night's fit
    without a preference is weak evidence, and a direction that flips with every noisy fit
    explores neither side long enough to show anything (docs/pricing-loop.md)."""
    return current if candidate == BOTH else candidate


def direction_of(candidate_prices: Sequence[float], policy_prices: Sequence[float]) -> int:
    """Where a candidate would move prices from the policy's: ``DOWN`` when at least
    ``DIRECTED_SHARE`` of its prices are lower, ``UP`` when as many are higher, else ``BOTH``.
    Prices within 1% of each other count on neither side."""
    pairs = list(zip(candidate_prices, policy_prices))
    if not pairs:
        return BOTH
    lower = sum(1 for c, p in pairs if c < 0.99 * p)
    higher = sum(1 for c, p in pairs if c > 1.01 * p)
    if lower >= DIRECTED_SHARE * len(pairs):
        return DOWN
    if higher >= DIRECTED_SHARE * len(pairs):
        return UP
    return BOTH


def tag_quote_id(quote_id: str, e: Exploration) -> str:
    """``quote_id`` with the exploration tag on its token (before any ``~experiment~variant``)."""
    head, sep, rest = quote_id.partition("~")
    tag = f".x{e.arm}p{e.propensity:.6g}"
    if e.explored and e.policy_price is not None:
        tag += f"b{e.policy_price:.2f}"
    return head + tag + sep + rest


def parse_quote_id(quote_id: str | None) -> Exploration | None:
    """The exploration a quote id records, or None when it records none (an older or foreign id)."""
    if not quote_id:
        return None
    match = _TAG.search(quote_id.partition("~")[0])
    if match is None:
        return None
    try:
        arm, propensity = int(match.group(1)), float(match.group(2))
        policy = float(match.group(3)) if match.group(3) else None
    except ValueError:
        return None
    if not 0.0 < propensity <= 1.0:
        return None
    return Exploration(None, arm, propensity, policy, None)

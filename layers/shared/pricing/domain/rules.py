"""Rule-based pricing: a transparent chain of multipliers on a base price.

This is the control arm of experiments and the fallback whenever no usable conversion model is
available, so it must always produce a sensible price from nothing but the quote itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from pricing.domain.quote import Quote

#: Base price when neither the property's configuration nor competitor prices give one.
DEFAULT_BASE_PRICE = 100.0

SEASON_FACTORS = {"summer": 1.15, "winter": 1.05, "spring": 1.0, "autumn": 0.95, "fall": 0.95}
WEEKDAY_FACTORS = {4: 1.10, 5: 1.10, 6: 0.95}  # Friday, Saturday premium; Sunday discount
REFUNDABLE_FACTOR = 1.05
AGGRESSIVE_FACTOR = 1.08  # aggressive = chase rate (higher price, accept lower occupancy)
CONSERVATIVE_FACTOR = 0.95  # conservative = protect occupancy (closer to or below market)
LOS_DISCOUNT_PER_NIGHT = 0.02
LOS_DISCOUNT_CAP = 0.12


@dataclass(frozen=True)
class RulePrice:
    price: float
    base: float
    base_source: str
    reasons: tuple[str, ...]


def base_price(quote: Quote, configured_base: float | None) -> tuple[float, str]:
    comp = quote.competitors
    comp_p50 = comp.p50 if comp is not None and quote.toggles.use_competitors else None
    if configured_base is not None and comp_p50 is not None:
        # The property's own level anchors the price; the market pulls it part of the way.
        return 0.7 * configured_base + 0.3 * comp_p50, "property base blended with competitor median"
    if configured_base is not None:
        return configured_base, "property base price"
    if comp_p50 is not None:
        return comp_p50, "competitor median"
    return DEFAULT_BASE_PRICE, "default base price"


def occupancy_factor(occupancy: float) -> float:
    """0.85 when empty, 1.05 half full, 1.25 when full: scarcity raises the price."""
    return 0.85 + 0.4 * min(occupancy, 1.0)


def lead_time_factor(lead_days: int, occupancy: float) -> float:
    if lead_days <= 2:
        # Last minute: empty rooms perish tonight, full hotels can charge a premium.
        return 1.08 if occupancy >= 0.8 else 0.92
    if lead_days <= 7:
        return 0.97
    if lead_days >= 60:
        return 1.03
    return 1.0


def rule_based_price(quote: Quote, configured_base: float | None = None) -> RulePrice:
    base, source = base_price(quote, configured_base)
    price = base
    reasons = [f"Base {base:.2f} from {source}"]

    def apply(factor: float, why: str) -> None:
        nonlocal price
        if abs(factor - 1.0) > 1e-9:
            price *= factor
            reasons.append(f"{why}: x{factor:.2f}")

    apply(occupancy_factor(quote.occupancy), f"Occupancy {quote.occupancy:.0%}")
    apply(lead_time_factor(quote.lead_days, quote.occupancy), f"Lead time {quote.lead_days} days")
    apply(WEEKDAY_FACTORS.get(quote.weekday, 1.0), f"Day of week {quote.weekday}")
    if quote.toggles.apply_seasonality and quote.season:
        apply(SEASON_FACTORS.get(quote.season.strip().lower(), 1.0), f"Season {quote.season}")
    nights = min(quote.los, 1 + int(LOS_DISCOUNT_CAP / LOS_DISCOUNT_PER_NIGHT))
    apply(1.0 - LOS_DISCOUNT_PER_NIGHT * (nights - 1), f"Length of stay {quote.los} nights")
    if quote.refundable:
        apply(REFUNDABLE_FACTOR, "Refundable rate")
    if quote.toggles.aggressive:
        apply(AGGRESSIVE_FACTOR, "Aggressive strategy")
    if quote.toggles.conservative:
        apply(CONSERVATIVE_FACTOR, "Conservative strategy")
    return RulePrice(price=price, base=base, base_source=source, reasons=tuple(reasons))

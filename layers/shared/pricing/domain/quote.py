"""Value objects describing one price quote: what is asked, and what the market looks like."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any


@dataclass(frozen=True)
class Toggles:
    aggressive: bool = False
    conservative: bool = False
    use_ml: bool = True
    use_competitors: bool = True
    apply_seasonality: bool = True


@dataclass(frozen=True)
class CompetitorSnapshot:
    """Competitor price quantiles for one property and night, with where they came from."""

    p10: float | None
    p50: float | None
    p90: float | None
    count: int | None = None
    source: str = "request"
    staleness_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "p10": self.p10,
            "p50": self.p50,
            "p90": self.p90,
            "count": self.count,
            "source": self.source,
            "staleness_seconds": self.staleness_seconds,
        }


@dataclass(frozen=True)
class Quote:
    """A validated request for a nightly price."""

    user_id: str
    property_id: str
    stay_date: date
    quote_date: date
    capacity: int
    remaining: int
    overbook_limit: int = 0
    product_type: str = "standard"
    refundable: bool = False
    los: int = 1
    season: str | None = None
    day_of_week: int | None = None
    min_price: float | None = None
    max_price: float | None = None
    allowed_price_grid: tuple[float, ...] | None = None
    competitors: CompetitorSnapshot | None = None
    toggles: Toggles = field(default_factory=Toggles)

    @property
    def lead_days(self) -> int:
        return (self.stay_date - self.quote_date).days

    @property
    def occupancy(self) -> float:
        """Share of sellable rooms already sold (0 = empty, 1 = full; overbooking can exceed 1)."""
        sold = self.capacity - self.remaining
        return max(0.0, min(1.0 + self.overbook_limit / self.capacity, sold / self.capacity))

    @property
    def weekday(self) -> int:
        """Day of week of the stay (Monday = 0): the caller's value, else the stay date's."""
        return self.day_of_week if self.day_of_week is not None else self.stay_date.weekday()

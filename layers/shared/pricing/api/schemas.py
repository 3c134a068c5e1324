"""The wire contract of /score (spec/API.md), as Pydantic models, and its mapping to the domain.

Unknown fields are ignored, as the contract says. Booleans are strict (``"yes"`` is not true)
and numbers must be finite: a lax parser would price a typo.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, StrictBool, StrictInt, model_validator

from pricing.domain.guardrails import MAX_PRICE, MIN_PRICE
from pricing.domain.limits import MAX_PROPERTY_ID_LENGTH, PROPERTY_ID_PATTERN
from pricing.domain.pricing import Recommendation
from pricing.domain.quote import CompetitorSnapshot, Quote, Toggles

MAX_LEAD_DAYS = 730

# Printable text: control characters in an id end up in logs, Sentry tags and terminals.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"

# Not only dots: "." and ".." are path segments clients resolve (see pricing.domain.limits).
PropertyId = Annotated[str, Field(min_length=1, max_length=MAX_PROPERTY_ID_LENGTH, pattern=PROPERTY_ID_PATTERN)]
# Strict: "120" or true is a caller's bug, not a price. Bounded: a price under a cent rounds to a
# free room, and one near the float limit overflows the grid arithmetic to infinity.
Price = Annotated[float, Strict(), Field(ge=MIN_PRICE, le=MAX_PRICE, allow_inf_nan=False)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Entity(_Body):
    userId: str = Field(min_length=1, max_length=128, pattern=PRINTABLE_PATTERN)
    propertyId: PropertyId


class Product(_Body):
    type: str = Field(default="standard", min_length=1, max_length=64)
    refundable: StrictBool = False
    los: StrictInt = Field(default=1, ge=1, le=365)


class Inventory(_Body):
    capacity: StrictInt = Field(ge=1, le=100_000)
    remaining: StrictInt = Field(ge=0)
    overbook_limit: StrictInt = Field(default=0, ge=0, le=100_000)

    @model_validator(mode="after")
    def _remaining_fits(self) -> Inventory:
        if self.remaining > self.capacity + self.overbook_limit:
            raise ValueError("remaining must be at most capacity + overbook_limit")
        return self


class Market(_Body):
    comp_price_p10: Price | None = None
    comp_price_p50: Price | None = None
    comp_price_p90: Price | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Market:
        given = [p for p in (self.comp_price_p10, self.comp_price_p50, self.comp_price_p90) if p is not None]
        if given != sorted(given):
            raise ValueError("competitor prices must satisfy p10 <= p50 <= p90")
        return self


class Costs(_Body):
    min_price: Price | None = None
    max_price: Price | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Costs:
        if self.min_price is not None and self.max_price is not None:
            if self.min_price > self.max_price:
                raise ValueError("min_price must not exceed max_price")
            if math.ceil(round(self.min_price * 100, 6)) > math.floor(round(self.max_price * 100, 6)):
                raise ValueError("min_price..max_price holds no whole-cent price")
        return self


class Context(_Body):
    season: str | None = Field(default=None, max_length=64)
    day_of_week: StrictInt | None = Field(default=None, ge=0, le=6)
    weather: dict[str, Any] | None = None


class ToggleSet(_Body):
    aggressive: StrictBool = False
    conservative: StrictBool = False
    use_ml: StrictBool = True
    use_competitors: StrictBool = True
    apply_seasonality: StrictBool = True

    @model_validator(mode="after")
    def _not_both(self) -> ToggleSet:
        if self.aggressive and self.conservative:
            raise ValueError("aggressive and conservative cannot both be true")
        return self


class ScoreRequest(_Body):
    entity: Entity
    stay_date: date
    quote_time: AwareDatetime
    product: Product = Field(default_factory=Product)
    inventory: Inventory
    market: Market | None = None
    costs: Costs | None = None
    context: Context | None = None
    toggles: ToggleSet = Field(default_factory=ToggleSet)
    allowed_price_grid: list[Price] | None = Field(default=None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _consistent(self) -> ScoreRequest:
        lead = (self.stay_date - self.quote_time.date()).days
        if not 0 <= lead <= MAX_LEAD_DAYS:
            raise ValueError(f"stay_date must be 0 to {MAX_LEAD_DAYS} days after quote_time (got {lead})")
        if self.allowed_price_grid is not None and self.costs is not None:
            lo, hi = self.costs.min_price, self.costs.max_price
            if not any((lo is None or p >= lo) and (hi is None or p <= hi) for p in self.allowed_price_grid):
                raise ValueError("no price of allowed_price_grid lies within costs.min_price..max_price")
        return self

    def competitor_snapshot(self) -> CompetitorSnapshot | None:
        m = self.market
        if m is None or all(p is None for p in (m.comp_price_p10, m.comp_price_p50, m.comp_price_p90)):
            return None
        return CompetitorSnapshot(p10=m.comp_price_p10, p50=m.comp_price_p50, p90=m.comp_price_p90, source="request")

    def to_quote(self) -> Quote:
        """The domain's quote; its ``competitors`` are the request's own market prices, if any."""
        ctx = self.context or Context()
        costs = self.costs or Costs()
        t = self.toggles
        return Quote(
            user_id=self.entity.userId,
            property_id=self.entity.propertyId,
            stay_date=self.stay_date,
            quote_date=self.quote_time.date(),
            capacity=self.inventory.capacity,
            remaining=self.inventory.remaining,
            overbook_limit=self.inventory.overbook_limit,
            product_type=self.product.type,
            refundable=self.product.refundable,
            los=self.product.los,
            season=ctx.season,
            day_of_week=ctx.day_of_week,
            min_price=costs.min_price,
            max_price=costs.max_price,
            allowed_price_grid=tuple(self.allowed_price_grid) if self.allowed_price_grid else None,
            competitors=self.competitor_snapshot(),
            toggles=Toggles(
                aggressive=t.aggressive,
                conservative=t.conservative,
                use_ml=t.use_ml,
                use_competitors=t.use_competitors,
                apply_seasonality=t.apply_seasonality,
            ),
        )


def quote_response(quote: Quote, recommendation: Recommendation) -> dict[str, Any]:
    """The /score response body for a priced quote (spec/API.md)."""
    competitors = quote.competitors
    return recommendation.to_response(competitors.as_dict() if competitors else None)

"""The per-property conversion model: P(book | price, features), a logistic regression.

The fitted model is a plain JSON artifact (named coefficients over named features, the price
scale, the price-to-market ratios it is trusted on, the training statistics drift compares
against), evaluated in pure Python so scoring needs neither numpy nor scikit-learn. Artifacts
``conversion-logit/v2`` price relative to the market (``price / competitor median``, else the
typical median trained on with ``no_market`` set), with a slope that varies with lead time,
weekend and occupancy; ``conversion-logit/v1`` (market-blind) still loads. The model and why:
docs/pricing-loop.md ("A demand model that sees the market").

>>> m = ConversionModel.from_artifact({"format": "conversion-logit/v1", "property_id": "p",
...     "version": "v1", "reference_price": 100.0, "price_range": [50.0, 200.0],
...     "coefficients": {"intercept": 2.0, "price_ratio": -3.0}})
>>> round(m.probability(100.0, ModelFeatures(lead_days=10, occupancy=0.5)), 4)
0.2689
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ARTIFACT_FORMAT_V1 = "conversion-logit/v1"
ARTIFACT_FORMAT_V2 = "conversion-logit/v2"
ARTIFACT_FORMAT = ARTIFACT_FORMAT_V2  # what training writes
FORMATS = (ARTIFACT_FORMAT_V1, ARTIFACT_FORMAT_V2)

# Feature order is part of the artifact contract: training builds its design matrix with
# ``design_row`` and scoring evaluates the same function, so they cannot disagree. A v1 artifact
# uses the first seven (its other coefficients are zero, which changes no sum).
FEATURE_NAMES = (
    "intercept",
    "price_ratio",
    "lead_scaled",
    "occupancy",
    "weekend",
    "refundable",
    "los_scaled",
    "no_market",
    "price_x_lead",
    "price_x_weekend",
    "price_x_occupancy",
)
FEATURE_NAMES_V1 = FEATURE_NAMES[:7]
#: The features that depend on the price: the ratio and its interactions (see ``design_row``).
PRICE_FEATURES = ("price_ratio", "price_x_lead", "price_x_weekend", "price_x_occupancy")
PRICE_FEATURE = FEATURE_NAMES.index("price_ratio")

#: How far beyond the trained price range a model's predictions are still trusted.
EXTRAPOLATION_MARGIN = 0.10
#: Lead times beyond this (in days) are scored as this: the model never saw further.
MAX_LEAD_DAYS = 365.0


class ModelFormatError(ValueError):
    """An artifact that is corrupt, of an unknown format, or not a usable conversion model."""


@dataclass(frozen=True)
class ModelFeatures:
    """The non-price inputs of the conversion model for one quote.

    ``market_price`` is the competitor median the quote was made against (None: no competitor
    data, or ``use_competitors`` off).
    """

    lead_days: float
    occupancy: float
    weekend: bool = False
    refundable: bool = False
    los: int = 1
    market_price: float | None = None


def _lead_scaled(f: ModelFeatures) -> float:
    return min(f.lead_days, MAX_LEAD_DAYS) / 30.0


def design_row(price: float, anchor: float, f: ModelFeatures, no_market: bool = False) -> tuple[float, ...]:
    """The feature vector, in ``FEATURE_NAMES`` order, of a quote at ``price``.

    ``anchor`` is what the price is measured against (``ConversionModel.anchor``); ``no_market``
    says the anchor is the model's typical market level because the quote had none.
    """
    ratio = price / anchor
    lead = _lead_scaled(f)
    weekend = 1.0 if f.weekend else 0.0
    return (
        1.0,
        ratio,
        lead,
        f.occupancy,
        weekend,
        1.0 if f.refundable else 0.0,
        (min(f.los, 30) - 1) / 7.0,
        1.0 if no_market else 0.0,
        ratio * lead,
        ratio * weekend,
        ratio * f.occupancy,
    )


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class ConversionModel:
    property_id: str
    version: str
    coefficients: Mapping[str, float]
    reference_price: float
    price_range: tuple[float, float]
    trained_at: str | None = None
    training: Mapping[str, Any] = field(default_factory=dict)
    format: str = ARTIFACT_FORMAT_V1
    #: v2: the anchor of a quote without competitor data (the typical competitor median trained on).
    market_reference: float | None = None
    #: v2: the trained range of price / anchor (1st..99th percentile).
    ratio_range: tuple[float, float] | None = None

    @property
    def market_aware(self) -> bool:
        return self.format == ARTIFACT_FORMAT_V2

    def uses_market(self, features: ModelFeatures) -> bool:
        """Whether this quote's price is measured against its own competitor median."""
        return self.market_aware and features.market_price is not None and features.market_price > 0

    def anchor(self, features: ModelFeatures) -> float:
        """What the price feature divides the price by, for this quote."""
        market = features.market_price
        if market is not None and self.uses_market(features):
            return float(market)
        if self.market_aware:
            return self.market_reference or self.reference_price
        return self.reference_price

    def row(self, price: float, features: ModelFeatures) -> tuple[float, ...]:
        return design_row(price, self.anchor(features), features, self.market_aware and not self.uses_market(features))

    def price_slope(self, features: ModelFeatures) -> float:
        """d logit / d (price / anchor) for this quote: the ratio's coefficient plus its interactions."""
        c = self.coefficients.get
        return (
            c("price_ratio", 0.0)
            + c("price_x_lead", 0.0) * _lead_scaled(features)
            + c("price_x_weekend", 0.0) * (1.0 if features.weekend else 0.0)
            + c("price_x_occupancy", 0.0) * features.occupancy
        )

    def probability(self, price: float, features: ModelFeatures) -> float:
        """P(book) at ``price``: the logistic of ``design_row``'s features times the coefficients
        (computed as ``probabilities`` computes it, so the two agree bit for bit)."""
        return self.probabilities((price,), features)[0]

    def probabilities(self, prices: Iterable[float], features: ModelFeatures) -> list[float]:
        """``probability`` at each of ``prices``: a whole candidate grid in one call.

        The terms that do not depend on the price are summed once per grid; the price enters
        only through ``slope * price / anchor``, so each candidate costs one multiply-add and a
        sigmoid. On the /score path, with two grids of ~100 prices, that is most of the cost.
        """
        anchor = self.anchor(features)
        row = design_row(anchor, anchor, features, self.market_aware and not self.uses_market(features))
        c = self.coefficients
        base = 0.0
        for name, x in zip(FEATURE_NAMES, row):
            if name not in PRICE_FEATURES:
                base += c.get(name, 0.0) * x
        slope = self.price_slope(features) / anchor
        return [sigmoid(base + slope * price) for price in prices]

    @property
    def price_coefficient(self) -> float:
        return self.coefficients.get("price_ratio", 0.0)

    def _slope_corners(self) -> list[float]:
        lead_max = float(self.training.get("lead_scaled_max") or MAX_LEAD_DAYS / 30.0)
        corners = []
        for lead in (0.0, lead_max):
            for weekend in (False, True):
                for occupancy in (0.0, 1.0):
                    corners.append(self.price_slope(ModelFeatures(lead * 30.0, occupancy, weekend)))
        return corners

    @property
    def max_price_slope(self) -> float:
        """The steepest-upward price slope over the trained lead times, weekend or not, empty or full."""
        return max(self._slope_corners())

    @property
    def demand_falls_with_price(self) -> bool:
        """A conversion model whose demand rises with price would push prices to the ceiling:
        the slope must be negative for every lead time, weekday and occupancy trained on (it is
        linear in each, so the corners decide)."""
        return self.max_price_slope < 0

    @property
    def trusted_range(self) -> tuple[float, float]:
        """The absolute price range trusted (v1; for v2 the prices trained on, for reporting)."""
        lo, hi = self.price_range
        return lo * (1 - EXTRAPOLATION_MARGIN), hi * (1 + EXTRAPOLATION_MARGIN)

    def trusted_prices(self, features: ModelFeatures) -> tuple[float, float]:
        """The prices this quote may be priced at: the trained price-to-market ratios (v2) or
        the trained prices (v1), plus the margin."""
        if not self.market_aware or self.ratio_range is None:
            return self.trusted_range
        anchor = self.anchor(features)
        lo, hi = self.ratio_range
        return lo * anchor * (1 - EXTRAPOLATION_MARGIN), hi * anchor * (1 + EXTRAPOLATION_MARGIN)

    def to_artifact(self) -> dict[str, Any]:
        doc = {
            "format": self.format,
            "property_id": self.property_id,
            "version": self.version,
            "features": list(FEATURE_NAMES if self.market_aware else FEATURE_NAMES_V1),
            "coefficients": dict(self.coefficients),
            "reference_price": self.reference_price,
            "price_range": list(self.price_range),
            "trained_at": self.trained_at,
            "training": dict(self.training),
        }
        if self.market_aware:
            doc["market_reference"] = self.market_reference
            doc["ratio_range"] = None if self.ratio_range is None else list(self.ratio_range)
        return doc

    @classmethod
    def from_artifact(cls, doc: Any) -> ConversionModel:
        """Parse and check an artifact (v1 or v2); anything unusable raises ``ModelFormatError``."""
        if not isinstance(doc, Mapping):
            raise ModelFormatError("artifact is not a JSON object")
        fmt = doc.get("format")
        if fmt not in FORMATS:
            raise ModelFormatError(f"unsupported artifact format {fmt!r}")
        try:
            coefficients = {str(k): float(v) for k, v in dict(doc["coefficients"]).items()}
            reference_price = float(doc["reference_price"])
            lo, hi = (float(x) for x in doc["price_range"])
            property_id, version = str(doc["property_id"]), str(doc["version"])
            market_reference = ratio_range = None
            if fmt == ARTIFACT_FORMAT_V2:
                market_reference = float(doc["market_reference"])
                if doc.get("ratio_range") is not None:
                    r_lo, r_hi = (float(x) for x in doc["ratio_range"])
                    ratio_range = (r_lo, r_hi)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"artifact field missing or malformed: {exc}") from None
        known = FEATURE_NAMES if fmt == ARTIFACT_FORMAT_V2 else FEATURE_NAMES_V1
        unknown = set(coefficients) - set(known)
        if unknown:
            raise ModelFormatError(f"artifact uses unknown features {sorted(unknown)}")
        values = [
            *coefficients.values(),
            reference_price,
            lo,
            hi,
            *(ratio_range or ()),
            *(() if market_reference is None else (market_reference,)),
        ]
        if not all(math.isfinite(v) for v in values):
            raise ModelFormatError("artifact holds a non-finite number")
        if reference_price <= 0 or not 0 < lo <= hi:
            raise ModelFormatError("artifact price scale is not positive")
        if market_reference is not None and market_reference <= 0:
            raise ModelFormatError("artifact market reference is not positive")
        if ratio_range is not None and not 0 < ratio_range[0] <= ratio_range[1]:
            raise ModelFormatError("artifact ratio range is not positive")
        model = cls(
            property_id=property_id,
            version=version,
            coefficients=coefficients,
            reference_price=reference_price,
            price_range=(lo, hi),
            trained_at=doc.get("trained_at"),
            training=dict(doc.get("training") or {}),
            format=fmt,
            market_reference=market_reference,
            ratio_range=ratio_range,
        )
        if not model.demand_falls_with_price:
            raise ModelFormatError("model demand does not fall with price")
        return model

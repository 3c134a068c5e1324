"""The per-property conversion model: P(book | price, features), a logistic regression.

The fitted model travels as a plain JSON artifact (format ``conversion-logit/v1``): named
coefficients over named features, the reference price the price feature is scaled by, the price
range the model saw in training (it is never trusted far outside it), and the training statistics
drift detection compares against. Scoring evaluates it in pure Python, so the latency path needs
neither numpy nor scikit-learn.

>>> m = ConversionModel.from_artifact({"format": "conversion-logit/v1", "property_id": "p",
...     "version": "v1", "reference_price": 100.0, "price_range": [50.0, 200.0],
...     "coefficients": {"intercept": 2.0, "price_ratio": -3.0}})
>>> round(m.probability(100.0, ModelFeatures(lead_days=10, occupancy=0.5)), 4)
0.2689
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

ARTIFACT_FORMAT = "conversion-logit/v1"

# Feature order is part of the artifact contract: training builds its design matrix with
# ``design_row`` and scoring evaluates the same function, so they cannot disagree.
FEATURE_NAMES = ("intercept", "price_ratio", "lead_scaled", "occupancy", "weekend", "refundable", "los_scaled")
#: The only feature that depends on the price: ``price / reference_price`` (see ``design_row``).
PRICE_FEATURE = FEATURE_NAMES.index("price_ratio")

#: How far beyond the trained price range a model's predictions are still trusted.
EXTRAPOLATION_MARGIN = 0.10


class ModelFormatError(ValueError):
    """An artifact that is corrupt, of an unknown format, or not a usable conversion model."""


@dataclass(frozen=True)
class ModelFeatures:
    """The non-price inputs of the conversion model for one quote."""

    lead_days: float
    occupancy: float
    weekend: bool = False
    refundable: bool = False
    los: int = 1


def design_row(price: float, reference_price: float, f: ModelFeatures) -> tuple[float, ...]:
    """The feature vector, in ``FEATURE_NAMES`` order, of a quote at ``price``."""
    return (
        1.0,
        price / reference_price,
        min(f.lead_days, 365.0) / 30.0,
        f.occupancy,
        1.0 if f.weekend else 0.0,
        1.0 if f.refundable else 0.0,
        (min(f.los, 30) - 1) / 7.0,
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

    def probability(self, price: float, features: ModelFeatures) -> float:
        row = design_row(price, self.reference_price, features)
        z = sum(self.coefficients.get(name, 0.0) * x for name, x in zip(FEATURE_NAMES, row))
        return sigmoid(z)

    def probabilities(self, prices: Iterable[float], features: ModelFeatures) -> list[float]:
        """``probability`` at each of ``prices``: a whole candidate grid in one call.

        Bit-for-bit the same numbers as ``probability`` (the same terms summed in the same order),
        but the terms that do not depend on the price are computed once per grid instead of once
        per candidate: on the /score path, with two grids of ~100 prices, that was most of the cost.
        """
        ref = self.reference_price
        terms = [self.coefficients.get(name, 0.0) * x for name, x in zip(FEATURE_NAMES, design_row(ref, ref, features))]
        at, weight = PRICE_FEATURE, self.coefficients.get("price_ratio", 0.0)
        out = []
        for price in prices:
            terms[at] = weight * (price / ref)
            out.append(sigmoid(sum(terms)))
        return out

    @property
    def price_coefficient(self) -> float:
        return self.coefficients.get("price_ratio", 0.0)

    @property
    def demand_falls_with_price(self) -> bool:
        """A conversion model whose demand rises with price would push prices to the ceiling."""
        return self.price_coefficient < 0

    @property
    def trusted_range(self) -> tuple[float, float]:
        lo, hi = self.price_range
        return lo * (1 - EXTRAPOLATION_MARGIN), hi * (1 + EXTRAPOLATION_MARGIN)

    def to_artifact(self) -> dict:
        return {
            "format": ARTIFACT_FORMAT,
            "property_id": self.property_id,
            "version": self.version,
            "features": list(FEATURE_NAMES),
            "coefficients": dict(self.coefficients),
            "reference_price": self.reference_price,
            "price_range": list(self.price_range),
            "trained_at": self.trained_at,
            "training": dict(self.training),
        }

    @classmethod
    def from_artifact(cls, doc: Any) -> "ConversionModel":
        """Parse and check an artifact; anything unusable raises ``ModelFormatError``."""
        if not isinstance(doc, Mapping):
            raise ModelFormatError("artifact is not a JSON object")
        if doc.get("format") != ARTIFACT_FORMAT:
            raise ModelFormatError(f"unsupported artifact format {doc.get('format')!r}")
        try:
            coefficients = {str(k): float(v) for k, v in dict(doc["coefficients"]).items()}
            reference_price = float(doc["reference_price"])
            lo, hi = (float(x) for x in doc["price_range"])
            property_id, version = str(doc["property_id"]), str(doc["version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"artifact field missing or malformed: {exc}") from None
        unknown = set(coefficients) - set(FEATURE_NAMES)
        if unknown:
            raise ModelFormatError(f"artifact uses unknown features {sorted(unknown)}")
        values = [*coefficients.values(), reference_price, lo, hi]
        if not all(math.isfinite(v) for v in values):
            raise ModelFormatError("artifact holds a non-finite number")
        if reference_price <= 0 or not 0 < lo <= hi:
            raise ModelFormatError("artifact price scale is not positive")
        model = cls(
            property_id=property_id,
            version=version,
            coefficients=coefficients,
            reference_price=reference_price,
            price_range=(lo, hi),
            trained_at=doc.get("trained_at"),
            training=dict(doc.get("training") or {}),
        )
        if not model.demand_falls_with_price:
            raise ModelFormatError("model demand does not fall with price")
        return model

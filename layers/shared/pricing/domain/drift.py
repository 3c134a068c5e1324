"""Drift: has the market moved away from the data the live model learned from?

Two questions, both answered against what the live model's artifact recorded at training time:

* **Feature drift** -- the Population Stability Index of each model feature, over the fixed
  decile bins of the training sample (``training.reference``):
  ``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` with ``e_i`` the training share of bin i and
  ``a_i`` the recent share. The conventional reading: below 0.1 stable, 0.1-0.25 a moderate
  shift worth watching, 0.25 and above a significant shift.
* **Performance drift** -- the live model's log loss on recent outcomes against its log loss at
  training time; a relative rise above ``LOG_LOSS_RISE`` means it no longer predicts bookings as
  well as it did.

Both refuse to conclude on fewer than ``MIN_DRIFT_SAMPLE`` recent outcomes: PSI over a few dozen
points swings past 0.25 by chance alone, and a false alarm costs a retrain and a model churn.

>>> round(psi([0.5, 0.5], [0.5, 0.5]), 6)
0.0
>>> round(psi([0.5, 0.5], [0.9, 0.1]), 3)
0.879
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pricing.domain.conversion_model import FEATURE_NAMES, ConversionModel
from pricing.domain.outcomes import Outcome
from pricing.domain.training import DRIFT_FEATURES, design_matrix, evaluate

FloatArray = NDArray[np.float64]

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
MIN_DRIFT_SAMPLE = 100
#: Relative rise of the live model's log loss that counts as performance drift (10%).
LOG_LOSS_RISE = 0.10
#: Empty bins are floored at this share so ln(a/e) stays finite.
PSI_FLOOR = 1e-4

STABLE, MODERATE, SIGNIFICANT = "stable", "moderate", "significant"


def psi(expected: Sequence[float], actual: Sequence[float], floor: float = PSI_FLOOR) -> float:
    """Population Stability Index between two distributions over the same bins."""
    if len(expected) != len(actual):
        raise ValueError("expected and actual must have the same bins")
    total = 0.0
    for e, a in zip(expected, actual):
        e, a = max(e, floor), max(a, floor)
        total += (a - e) * math.log(a / e)
    return total


def psi_level(value: float) -> str:
    if value >= PSI_SIGNIFICANT:
        return SIGNIFICANT
    if value >= PSI_MODERATE:
        return MODERATE
    return STABLE


def bin_shares(values: FloatArray, edges: Sequence[float]) -> list[float]:
    """Share of ``values`` in each of the bins ``(-inf, e0], (e0, e1], ..., (ek, inf)``."""
    counts = np.bincount(np.searchsorted(np.asarray(edges, dtype=float), values, side="left"), minlength=len(edges) + 1)
    return [float(c) / len(values) for c in counts]


@dataclass(frozen=True)
class DriftReport:
    """Drift of recent outcomes against a live model's training data."""

    sample_size: int
    psi: Mapping[str, float] = field(default_factory=dict)
    recent_log_loss: float | None = None
    training_log_loss: float | None = None
    insufficient_sample: bool = False

    @property
    def max_psi(self) -> float:
        return max(self.psi.values(), default=0.0)

    @property
    def drifted_features(self) -> list[str]:
        return sorted(name for name, value in self.psi.items() if value >= PSI_SIGNIFICANT)

    @property
    def performance_drift(self) -> bool:
        if self.recent_log_loss is None or not self.training_log_loss:
            return False
        return self.recent_log_loss > self.training_log_loss * (1 + LOG_LOSS_RISE)

    @property
    def detected(self) -> bool:
        """Significant feature drift or performance drift, on a sample large enough to say so."""
        return not self.insufficient_sample and (bool(self.drifted_features) or self.performance_drift)

    def reasons(self) -> list[str]:
        out = [f"PSI {self.psi[name]:.3f} >= {PSI_SIGNIFICANT} on {name}" for name in self.drifted_features]
        if self.performance_drift:
            out.append(f"log loss {self.recent_log_loss:.4f} vs {self.training_log_loss:.4f} at training (+{LOG_LOSS_RISE:.0%} allowed)")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "sample_size": self.sample_size,
            "insufficient_sample": self.insufficient_sample,
            "psi": {name: round(value, 6) for name, value in sorted(self.psi.items())},
            "psi_levels": {name: psi_level(value) for name, value in sorted(self.psi.items())},
            "max_psi": round(self.max_psi, 6),
            "drifted_features": self.drifted_features,
            "recent_log_loss": None if self.recent_log_loss is None else round(self.recent_log_loss, 6),
            "training_log_loss": self.training_log_loss,
            "performance_drift": self.performance_drift,
            "detected": self.detected,
        }


def measure_drift(model: ConversionModel, recent: Sequence[Outcome], min_sample: int = MIN_DRIFT_SAMPLE) -> DriftReport:
    """PSI per feature and performance drift of ``recent`` against ``model``'s training data.

    ``recent`` should be outcomes the model did not train on (after ``training.data_end``).
    Features without reference bins in the artifact (an older artifact) are not measured.
    """
    training_log_loss = model.training.get("holdout_log_loss", model.training.get("log_loss"))
    training_log_loss = float(training_log_loss) if training_log_loss is not None else None
    if len(recent) < min_sample:
        return DriftReport(sample_size=len(recent), training_log_loss=training_log_loss, insufficient_sample=True)
    x = design_matrix(recent, model)
    reference = model.training.get("reference") or {}
    values = {}
    for column, name in enumerate(FEATURE_NAMES):
        bins = reference.get(name) if name in DRIFT_FEATURES else None  # an older artifact binned prices too
        if not bins:
            continue
        values[name] = psi(bins["proportions"], bin_shares(x[:, column], bins["edges"]))
    return DriftReport(
        sample_size=len(recent),
        psi=values,
        recent_log_loss=evaluate(model, recent).log_loss,
        training_log_loss=training_log_loss,
    )

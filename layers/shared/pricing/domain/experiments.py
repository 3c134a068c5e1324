"""A/B experiments: deterministic assignment and the statistics that read them.

Assignment hashes (experiment id, unit id) with SHA-256, so a unit keeps its variant across
containers, deploys and retries without any stored state. The readouts refuse to conclude on
too little data rather than report noise as a result.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Iterable

CONTROL, TREATMENT, NO_EXPERIMENT = "control", "treatment", "none"
#: What each variant prices with. Control is the incumbent rule-based pricing.
VARIANT_METHODS = {CONTROL: "rule_based", TREATMENT: "ml_elasticity"}


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    treatment_share: float = 0.5
    property_ids: frozenset[str] | None = None  # None: every property
    unit: str = "user"  # "user" or "property": what is randomised
    active: bool = True

    def covers(self, property_id: str) -> bool:
        return self.active and (self.property_ids is None or property_id in self.property_ids)


@dataclass(frozen=True)
class Assignment:
    experiment_id: str | None
    variant: str

    @property
    def method(self) -> str | None:
        return VARIANT_METHODS.get(self.variant)


def bucket(experiment_id: str, unit_id: str) -> float:
    """A stable, uniform number in [0, 1) for this unit in this experiment."""
    digest = hashlib.sha256(f"{experiment_id}\x1f{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign(experiments: Iterable[Experiment], property_id: str, user_id: str) -> Assignment:
    """The variant of the first (by id) active experiment covering the property, if any."""
    for exp in sorted(experiments, key=lambda e: e.experiment_id):
        if exp.covers(property_id):
            unit_id = property_id if exp.unit == "property" else user_id
            variant = TREATMENT if bucket(exp.experiment_id, unit_id) < exp.treatment_share else CONTROL
            return Assignment(exp.experiment_id, variant)
    return Assignment(None, NO_EXPERIMENT)


@dataclass(frozen=True)
class ZTestResult:
    rate_control: float
    rate_treatment: float
    z: float
    p_value: float


def two_proportion_z_test(
    conversions_control: int, n_control: int, conversions_treatment: int, n_treatment: int, min_n: int = 100
) -> ZTestResult | None:
    """Pooled two-proportion z-test (two-sided); None when either arm has fewer than ``min_n``."""
    if n_control < min_n or n_treatment < min_n:
        return None
    p1, p2 = conversions_control / n_control, conversions_treatment / n_treatment
    pooled = (conversions_control + conversions_treatment) / (n_control + n_treatment)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    if se == 0:
        return ZTestResult(p1, p2, 0.0, 1.0)
    z = (p2 - p1) / se
    return ZTestResult(p1, p2, z, math.erfc(abs(z) / math.sqrt(2)))


def sample_ratio_mismatch_p_value(
    n_control: int, n_treatment: int, treatment_share: float = 0.5, min_total: int = 100
) -> float | None:
    """Chi-square goodness-of-fit (1 df) of the observed split against the designed one.

    A small p-value (say < 0.001) means assignment or logging is broken, not that a variant wins.
    None when there are fewer than ``min_total`` units.
    """
    total = n_control + n_treatment
    if total < min_total:
        return None
    expected = (total * (1 - treatment_share), total * treatment_share)
    chi2 = sum((o - e) ** 2 / e for o, e in zip((n_control, n_treatment), expected))
    return math.erfc(math.sqrt(chi2 / 2))


# Quote ids carry their A/B attribution ("<token>~<experiment_id>~<variant>"), so /learn can
# attribute an outcome to the arm that priced it without a per-quote write on the scoring path.
QUOTE_ID_SEPARATOR = "~"


def quote_id_for(token: str, assignment: Assignment) -> str:
    if assignment.experiment_id is None:
        return token
    return QUOTE_ID_SEPARATOR.join((token, assignment.experiment_id, assignment.variant))


def attribution_of(quote_id: str | None) -> Assignment | None:
    """The experiment and variant a quote id was issued under, if it names one."""
    if not quote_id:
        return None
    parts = quote_id.split(QUOTE_ID_SEPARATOR)
    if len(parts) != 3 or not parts[1] or parts[2] not in (CONTROL, TREATMENT):
        return None
    return Assignment(parts[1], parts[2])


def experiment_from_record(record: dict[str, Any]) -> Experiment:
    """An experiment from its stored form; raises ValueError when the record is malformed."""
    share = float(record.get("treatment_share", 0.5))
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"treatment_share {share} outside [0, 1]")
    properties = record.get("property_ids")
    experiment_id = str(record["experiment_id"])
    if QUOTE_ID_SEPARATOR in experiment_id:
        raise ValueError(f"experiment id may not contain {QUOTE_ID_SEPARATOR!r}")
    return Experiment(
        experiment_id=experiment_id,
        treatment_share=share,
        property_ids=frozenset(properties) if properties else None,
        unit=str(record.get("unit", "user")),
        active=bool(record.get("active", True)),
    )

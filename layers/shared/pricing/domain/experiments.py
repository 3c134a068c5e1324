"""A/B experiments: deterministic assignment and the statistics that read them.

Assignment hashes (experiment id, unit id) with SHA-256, so a unit keeps its variant across
containers, deploys and retries without any stored state. The readouts refuse to conclude on
too little data rather than report noise as a result.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
    starts_at: datetime | None = None  # None: from its creation
    ends_at: datetime | None = None  # None: until stopped

    def covers(self, property_id: str) -> bool:
        return self.active and (self.property_ids is None or property_id in self.property_ids)

    def running_at(self, now: datetime) -> bool:
        """Active and inside its dates: only such an experiment assigns anyone."""
        return self.active and (self.starts_at is None or self.starts_at <= now) and (self.ends_at is None or now < self.ends_at)


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


def sample_ratio_mismatch_p_value(n_control: int, n_treatment: int, treatment_share: float = 0.5, min_total: int = 100) -> float | None:
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
        starts_at=parse_instant(record["start_date"]) if record.get("start_date") else None,
        ends_at=parse_instant(record["end_date"]) if record.get("end_date") else None,
    )


def parse_instant(text: str) -> datetime:
    """An RFC 3339 date-time, or a ``YYYY-MM-DD`` date (its midnight); UTC when no zone is given.

    Raises ValueError."""
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# -- the readout ------------------------------------------------------------------------------
#
# An experiment is read from the outcomes attributed to it (the quote ids carry experiment and
# variant): one outcome is one quote that was answered and reported, booked or not. Per arm:
# conversion rate (bookings / quotes), ADR (average booked price, the final price when given),
# and RevPAR-style revenue per quote (booked revenue / quotes) -- the figure pricing maximises.

#: Below this many attributed outcomes in either arm no p-value is given ("not enough data").
MIN_OUTCOMES_PER_ARM = 100
#: Below this many in both arms together the split is not checked.
MIN_OUTCOMES_FOR_SRM = 100
SIGNIFICANCE_LEVEL = 0.05
#: A sample-ratio p-value below this means assignment or logging is broken.
SRM_ALERT_P_VALUE = 0.001


@dataclass
class ArmTally:
    """Running sums over one arm's outcomes (add them one by one: no list is kept)."""

    count: int = 0
    bookings: int = 0
    revenue: float = 0.0
    revenue_squares: float = 0.0

    def add(self, accepted: bool, booked_price: float) -> None:
        self.count += 1
        if accepted:
            self.bookings += 1
            self.revenue += booked_price
            self.revenue_squares += booked_price * booked_price

    @property
    def conversion_rate(self) -> float | None:
        return self.bookings / self.count if self.count else None

    @property
    def adr(self) -> float | None:
        return self.revenue / self.bookings if self.bookings else None

    @property
    def revpar(self) -> float | None:
        return self.revenue / self.count if self.count else None

    @property
    def revenue_variance(self) -> float | None:
        """Sample variance of revenue per quote (0 for a non-booking)."""
        if self.count < 2:
            return None
        mean = self.revenue / self.count
        return max(0.0, (self.revenue_squares - self.count * mean * mean) / (self.count - 1))

    def as_dict(self) -> dict[str, Any]:
        def r(v: float | None, digits: int) -> float | None:
            return None if v is None else round(v, digits)

        return {
            "count": self.count,
            "bookings": self.bookings,
            "conversion_rate": r(self.conversion_rate, 6),
            "adr": r(self.adr, 2),
            "revpar": r(self.revpar, 4),
        }


def welch_z_test(mean1: float, var1: float, n1: int, mean2: float, var2: float, n2: int) -> float:
    """Two-sided p-value of a difference in means with unequal variances (Welch), by the normal
    approximation: with at least ``MIN_OUTCOMES_PER_ARM`` per arm the t and normal tails agree to
    the second decimal, and the layer carries no t distribution."""
    se = math.sqrt(var1 / n1 + var2 / n2)
    if se == 0:
        return 1.0
    return math.erfc(abs((mean2 - mean1) / se) / math.sqrt(2))


def _lift(treatment: float | None, control: float | None) -> float | None:
    if treatment is None or control is None or control == 0:
        return None
    return round((treatment - control) / control * 100, 2)


def readout(experiment_id: str, control: ArmTally, treatment: ArmTally, treatment_share: float) -> dict[str, Any]:
    """The experiment's results: per arm, lift of treatment (ML) over control (rules) in percent,
    significance, and the sample-ratio check.

    Significance: conversion by the pooled two-proportion z-test, revenue per quote by Welch's
    test (normal approximation), each two-sided; "significant" means conversion p < 0.05 and no
    sample-ratio mismatch. Below ``MIN_OUTCOMES_PER_ARM`` outcomes in an arm both p-values are
    None and ``status`` says "not enough data".
    """
    z = two_proportion_z_test(control.bookings, control.count, treatment.bookings, treatment.count, min_n=MIN_OUTCOMES_PER_ARM)
    srm_p = sample_ratio_mismatch_p_value(control.count, treatment.count, treatment_share, min_total=MIN_OUTCOMES_FOR_SRM)
    mismatch = srm_p is not None and srm_p < SRM_ALERT_P_VALUE
    total = control.count + treatment.count
    if z is None:
        status = (
            f"not enough data: each arm needs at least {MIN_OUTCOMES_PER_ARM} attributed outcomes "
            f"(ml {treatment.count}, rule_based {control.count})"
        )
        revpar_p = None
    else:
        status = "sample ratio mismatch: the split differs from the configured one" if mismatch else "ok"
        revpar_p = welch_z_test(
            control.revpar or 0.0,
            control.revenue_variance or 0.0,
            control.count,
            treatment.revpar or 0.0,
            treatment.revenue_variance or 0.0,
            treatment.count,
        )
    return {
        "experiment_id": experiment_id,
        "status": status,
        "ml": treatment.as_dict(),
        "rule_based": control.as_dict(),
        "lift": {
            "conversion_rate": _lift(treatment.conversion_rate, control.conversion_rate),
            "adr": _lift(treatment.adr, control.adr),
            "revpar": _lift(treatment.revpar, control.revpar),
        },
        "significance": {
            "conversion_pvalue": None if z is None else round(z.p_value, 6),
            "conversion_test": "pooled two-proportion z-test, two-sided",
            "revpar_pvalue": None if revpar_p is None else round(revpar_p, 6),
            "revpar_test": "Welch's test on revenue per quote (normal approximation), two-sided",
            "is_significant": bool(z is not None and z.p_value < SIGNIFICANCE_LEVEL and not mismatch),
            "alpha": SIGNIFICANCE_LEVEL,
            "min_outcomes_per_arm": MIN_OUTCOMES_PER_ARM,
        },
        "sample_ratio": {
            "expected_ml_share": treatment_share,
            "observed_ml_share": round(treatment.count / total, 6) if total else None,
            "pvalue": None if srm_p is None else round(srm_p, 6),
            "test": "chi-square goodness of fit, 1 df",
            "mismatch": mismatch,
        },
    }
